"""Why LogitNorm trains slowly on the quickstart: ID accuracy and logit norm per epoch.

    python benchmarks/perf/logitnorm_probe.py --lr 0.1 --tau 0.04 --epochs 8
    python benchmarks/perf/logitnorm_probe.py --objective cross-entropy   # the baseline

Trains `small-cnn` on MNIST-5k (the quickstart's ID data, package-shipped) with the quickstart's
[training] settings and prints, after every epoch, the train loss, the ID test accuracy, the
mean logit L2 norm ||z|| on the test split and the cosine schedule's learning rate. With
LogitNorm the loss is invariant to the scale of z, so its gradient shrinks as 1/||z||: the
effective learning rate falls as the norm grows (the diagnosis in the README).
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> dict:
    import torch

    import oebench.api as api
    from oebench.contracts.model import Classifier
    from oebench.execute.outputs import iterate_batches
    from oebench.execute.training import train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objective", default="logitnorm")
    p.add_argument("--tau", type=float, default=0.04)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--from-baseline",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="first train this many cross-entropy epochs at lr 0.1 (the quickstart baseline), "
        "then --epochs of the objective at --lr (the OE fine-tuning protocol)",
    )
    args = p.parse_args(argv)
    source = api.create_dataset("mnist-5k")
    shape = tuple(source.shape)
    train_set, test_set = source.load("train"), source.load("test")
    torch.manual_seed(args.seed)
    net = api.create_model("small-cnn", source.num_classes, shape)
    model = Classifier(net, source.mean, source.std)
    options = {"tau": args.tau} if args.objective == "logitnorm" else {}
    objective = api.create_objective(args.objective, **options)
    params = {
        "lr": args.lr, "momentum": 0.9, "nesterov": True, "weight_decay": args.weight_decay,
        "batch_size": 128, "outlier_batch_size": 256, "epochs": args.epochs, "augment": False,
    }  # fmt: skip
    rows: list[dict] = []

    def on_epoch(done: int, epochs: int) -> None:
        model.eval()
        correct, norms, n = 0, 0.0, 0
        with torch.no_grad():
            for x, y in iterate_batches(test_set, 512, shape, torch.device("cpu")):
                z = model(x)
                correct += int((z.argmax(1) == y).sum())
                norms += float(z.norm(dim=1).sum())
                n += len(y)
        model.train()
        rows.append({"epoch": done, "accuracy": 100 * correct / n, "logit_norm": norms / n})
        print(json.dumps(rows[-1]), flush=True)

    start = time.process_time()
    device = torch.device("cpu")
    if args.from_baseline:
        ce = api.create_objective("cross-entropy")
        base = {**params, "lr": 0.1, "epochs": args.from_baseline}
        train(model, train_set, ce, base, args.seed, shape, device, on_epoch=on_epoch)
    train(model, train_set, objective, params, args.seed, shape, device, on_epoch=on_epoch)
    result = {"args": vars(args), "epochs": rows, "cpu_s": time.process_time() - start}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
