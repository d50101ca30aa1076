"""Each OE-zoo method's training cost against plain OE: CPU seconds per fine-tune epoch and
peak memory, one paired run each (OE, then the method, each in a fresh process).

    python benchmarks/perf/oe_zoo_cost.py --out benchmarks/perf/results/oe-zoo-cost.json
    python benchmarks/perf/oe_zoo_cost.py --methods vos,doe --max-train 512    # a quick look

The setting is the quickstart's OE fine-tune: `small-cnn` on MNIST-5k (package-shipped),
128 ID + 256 `photo-crops` outliers per step, lr 0.005, from a freshly initialised network
(the cost of a step does not depend on the weights). A method is a training as written in
`oe-zoo.toml`: an objective with its options, or `oe` with an `outlier_sampling` rule.
CPU seconds (`time.process_time` of the training, not wall time: the machine is shared) and
peak RSS (`ru_maxrss` of the child process, which includes the ~0.5 GiB of torch itself).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

#: method -> (objective, options, outlier source or None, outlier_sampling or None)
METHODS: dict[str, tuple[str, dict, str | None, dict | None]] = {
    "oe": ("oe", {}, "photo-crops", None),
    "energy-margin": ("energy-margin", {}, "photo-crops", None),
    "mixoe": ("mixoe", {}, "photo-crops", None),
    "ntom": ("oe", {}, "photo-crops", {"name": "ntom", "pool": 20000, "quantile": 0.125}),
    "poem": ("oe", {}, "photo-crops", {"name": "poem"}),
    "logitnorm": ("logitnorm", {}, None, None),
    "vos": ("vos", {}, None, None),
    "npos": ("npos", {}, None, None),
    "doe": ("doe", {}, "photo-crops", None),
    "divoe": ("divoe", {}, "photo-crops", None),
    "dal": ("dal", {}, "photo-crops", None),
    "mcd": ("mcd", {}, "photo-crops", None),
    "udg": ("udg", {}, "photo-crops", None),
    "woods": ("woods", {}, "wild", None),
    "scone": ("scone", {}, "wild", None),
}
WILD = {"inliers": "mnist-5k", "outliers": "photo-crops", "pi": 0.5}


def child(method: str, max_train: int | None, epochs: int) -> dict:
    """One training in this process; returns its CPU seconds per epoch and peak RSS."""
    import resource
    import time

    import torch

    import oebench.api as api
    from oebench.contracts.model import Classifier
    from oebench.execute.training import train

    name, options, source, sampling = METHODS[method]
    torch.manual_seed(0)
    data = api.create_dataset("mnist-5k")
    shape = tuple(data.shape)
    train_set = data.load("train")
    outliers = None
    if source is not None:
        made = api.create_outlier_source(source, **(WILD if source == "wild" else {}))
        outliers = made.load("train", shape=shape, seed=0)
    model = Classifier(api.create_model("small-cnn", data.num_classes, shape), data.mean, data.std)
    params = {
        "lr": 0.005, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
        "batch_size": 128, "outlier_batch_size": 256, "epochs": epochs,
        "max_train": max_train, "outlier_sampling": sampling,
    }  # fmt: skip
    objective = api.create_objective(name, **options)
    torch.set_num_threads(1)
    start = time.process_time()
    train(model, train_set, objective, params, 0, shape, torch.device("cpu"), outliers)
    cpu = time.process_time() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"cpu_s_per_epoch": cpu / epochs, "peak_rss_mib": peak_mib}


def run_child(method: str, max_train: int | None, epochs: int) -> dict:
    """``child`` in a fresh interpreter, so peak RSS is the method's own."""
    argv = [sys.executable, __file__, "--child", method, "--epochs", str(epochs)]
    if max_train is not None:
        argv += ["--max-train", str(max_train)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(m for m in METHODS if m != "oe"))
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.max_train, args.epochs)))
        return {}
    rows = []
    for method in args.methods.split(","):
        base = run_child("oe", args.max_train, args.epochs)  # paired: OE right before
        own = run_child(method, args.max_train, args.epochs)
        row = {"method": method, "oe": base, "method_run": own}
        if "error" not in base and "error" not in own:
            row["cpu_ratio"] = own["cpu_s_per_epoch"] / base["cpu_s_per_epoch"]
            row["rss_ratio"] = own["peak_rss_mib"] / base["peak_rss_mib"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"platform": platform.platform(), "processor": platform.processor(), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
