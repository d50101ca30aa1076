"""Training and scoring throughput (images/s) of a model at CIFAR shape on synthetic tensors.

    python benchmarks/perf/perf_throughput.py                      # WRN-40-2, CPU here
    python benchmarks/perf/perf_throughput.py --device cuda --compile

Training steps are OE steps: a batch of ``--batch`` ID images concatenated with ``--outliers``
outlier images in one forward pass, SGD + cosine schedule, exactly the loop ``oebench run``
uses (``oebench.execute.training.train``). Scoring is the forward pass that fills the output cache.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import oebench
from oebench.contracts.data import TensorImages
from oebench.contracts.model import Classifier
from oebench.execute.outputs import forward
from oebench.execute.training import train


def flops_per_image(model: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    """Forward FLOPs of one image (2 x multiply-accumulates), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wrn-40-2")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--outliers", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--score-images", type=int, default=2000)
    p.add_argument("--eval-batch", type=int, default=500)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    shape = (3, 32, 32)
    torch.manual_seed(0)
    net = oebench.create_model(args.model, 10, shape)
    model = Classifier(net, (0.5,) * 3, (0.5,) * 3)
    flops = flops_per_image(model, shape)
    n_in = args.batch * args.steps
    ids = TensorImages(
        torch.randint(0, 256, (n_in, *shape), dtype=torch.uint8), torch.randint(0, 10, (n_in,))
    )
    outs = TensorImages(
        torch.randint(0, 256, (args.outliers * args.steps, *shape), dtype=torch.uint8)
    )
    objective = oebench.create_objective("oe")
    params = {
        "epochs": 1,
        "batch_size": args.batch,
        "outlier_batch_size": args.outliers,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "augment": True,
        "amp": args.amp,
        "compile": args.compile,
    }
    warm_ids = TensorImages(ids.images[: args.batch * 3], ids.labels[: args.batch * 3])
    train(model, warm_ids, objective, params, 0, shape, device, outs)  # warm-up / compile
    seconds = train(model, ids, objective, params, 0, shape, device, outs)
    train_images = args.steps * (args.batch + args.outliers)
    test = TensorImages(torch.randint(0, 256, (args.score_images, *shape), dtype=torch.uint8))
    forward(model, test, shape, device, args.eval_batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    forward(model, test, shape, device, args.eval_batch)
    score_seconds = time.perf_counter() - start
    train_ips = train_images / seconds
    score_ips = args.score_images / score_seconds
    result = {
        "model": args.model,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "amp": args.amp,
        "compile": args.compile,
        "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gflops_per_image_forward": round(flops / 1e9, 4),
        "train_images_per_s": round(train_ips, 1),
        "score_images_per_s": round(score_ips, 1),
        # training costs about 3x the forward FLOPs (forward + backward)
        "train_tflops_per_s": round(3 * flops * train_ips / 1e12, 3),
        "score_tflops_per_s": round(flops * score_ips / 1e12, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
