"""GPU check: WRN-40-2 training/scoring throughput against the hardware, the input pipeline,
the quickstart end to end, a projected `oe-cifar10` wall time, and float32 vs bf16 rankings.

    python benchmarks/perf/gpu_check.py --out gpu-results            # on a CUDA machine
    python benchmarks/perf/gpu_check.py --smoke --device cpu          # seconds, to check it runs

Needs torch, torchvision, numpy, pandas, scikit-learn, pluggy, click, rich and an installed
oebench (``pip install --no-deps -e .``); the quickstart also needs ``mlxtend``. No network.
Every section writes into ``<out>/gpu.json`` as soon as it ends, so a run cut short keeps what
it measured; a section that fails records its error and the next one runs.

Sections
1. ``peak``: an 8192^3 bf16 matrix product, the ceiling achieved TFLOP/s are compared with.
2. ``train_step``: OE training steps (128 ID + 256 outliers in one forward pass, augmentation,
   SGD + cosine; exactly ``oebench.execute.training.train``) in fp32 and bf16 autocast, eager and
   ``torch.compile``; FLOPs per step counted by ``torch.utils.flop_counter`` (forward and
   backward), so TFLOP/s are achieved, not estimated.
3. ``scoring``: ``oebench.execute.outputs.forward`` over 50,000 CIFAR-shaped images, batch 2048.
4. ``epoch``: one full OE fine-tune epoch at CIFAR-10 scale (50,000 ID images, outliers from a
   300,000-image ``.npy`` read by the real ``300k-random-images`` source), GPU utilisation
   sampled by nvidia-smi, and the time not explained by the measured step time (data wait).
5. ``projection``: `oe-cifar10` wall time (100 baseline + 10 OE epochs) from measured steps.
6. ``quickstart``: ``oebench run`` on the GPU, bf16 (amp auto) and fp32 (amp off), CSVs kept.
7. ``ranking``: a CIFAR-shaped benchmark on synthetic data (WRN-40-2, baseline + OE, 13
   detectors) trained in fp32 and in bf16: detector rankings and metric differences.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS: dict[str, Any] = {}
T0 = time.perf_counter()
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
SHAPE = (3, 32, 32)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def save(out: Path) -> None:
    (out / "gpu.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def section(name: str, out: Path, fn: Any, *args: Any) -> None:
    """Run one section; record its result or its error, and save."""
    log(f"--- {name}")
    start = time.perf_counter()
    try:
        RESULTS[name] = fn(*args)
    except Exception as exc:  # keep going: the other sections still measure
        RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        log(f"{name} failed: {exc}")
    RESULTS.setdefault("_seconds", {})[name] = round(time.perf_counter() - start, 1)
    log(f"{name}: {json.dumps(RESULTS[name], default=str)[:1500]}")
    save(out)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bf16(device: torch.device, n: int) -> dict[str, Any]:
    """Achieved bf16 matrix-product rate: the ceiling for this machine."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    seconds = (time.perf_counter() - start) / reps
    return {"n": n, "tflops": round(2 * n**3 / seconds / 1e12, 1)}


def make_model(num_classes: int = 10) -> Any:
    import oebench
    from oebench.contracts.model import Classifier

    torch.manual_seed(0)
    net = oebench.create_model("wrn-40-2", num_classes, SHAPE)
    return Classifier(net, CIFAR_MEAN, CIFAR_STD)


def step_flops(model: Any, n_in: int, n_out: int, device: torch.device) -> float:
    """FLOPs of one OE training step (forward + backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    import oebench

    model = model.to(device).train()
    objective = oebench.create_objective("oe" if n_out else "cross-entropy")
    x = torch.rand(n_in + n_out, *SHAPE, device=device)
    y = torch.randint(0, 10, (n_in,), device=device)
    with FlopCounterMode(display=False) as counter:
        logits = model(x)
        loss = objective(logits[:n_in], y, logits[n_in:] if n_out else None)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def params(**kw: Any) -> dict[str, Any]:
    """oebench's training defaults for one epoch of the CIFAR recipe (augmented), eager fp32."""
    from oebench.bench.matrix import DEFAULT_TRAINING

    base = {**DEFAULT_TRAINING, "epochs": 1, "augment": True, "amp": "off", "compile": False}
    return {**base, **kw}


def timed_steps(
    amp: str, compiled: bool, device: torch.device, steps: int, n_out: int = 256
) -> dict[str, Any]:
    """Seconds per training step of the real loop, after a warm-up (and compilation)."""
    import oebench
    from oebench.contracts.data import TensorImages
    from oebench.execute.training import train

    model = make_model()
    objective = oebench.create_objective("oe" if n_out else "cross-entropy")
    n_ids = 128 * steps
    ids = TensorImages(
        torch.randint(0, 256, (n_ids, *SHAPE), dtype=torch.uint8), torch.randint(0, 10, (n_ids,))
    )
    outs = TensorImages(torch.randint(0, 256, (max(n_out, 1) * steps, *SHAPE), dtype=torch.uint8))
    p = params(amp=amp, compile=compiled, outlier_batch_size=max(n_out, 1))
    warm = TensorImages(ids.images[: 128 * 5], ids.labels[: 128 * 5])
    start = time.perf_counter()
    train(model, warm, objective, p, 0, SHAPE, device, outs if n_out else None)
    warm_seconds = time.perf_counter() - start
    seconds = train(model, ids, objective, p, 0, SHAPE, device, outs if n_out else None)
    return {"step_ms": 1e3 * seconds / steps, "warmup_s": round(warm_seconds, 1)}


def train_step(device: torch.device, steps: int, do_compile: bool, peak: float) -> dict[str, Any]:
    flops = step_flops(make_model(), 128, 256, device)
    flops_base = step_flops(make_model(), 128, 0, device)
    out: dict[str, Any] = {
        "gflop_per_oe_step": round(flops / 1e9, 1),
        "gflop_per_baseline_step": round(flops_base / 1e9, 1),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    configs = [("fp32", "off", False), ("bf16", "bf16", False)]
    if do_compile:
        configs = [("bf16-compiled", "bf16", True), ("fp32-compiled", "off", True)]
    for name, amp, compiled in configs:
        r = timed_steps(amp, compiled, device, steps)
        r["images_per_s"] = round(384 / (r["step_ms"] / 1e3))
        r["tflops"] = round(flops / (r["step_ms"] / 1e3) / 1e12, 2)
        r["pct_of_peak"] = round(100 * r["tflops"] / peak, 2) if peak else None
        r["step_ms"] = round(r["step_ms"], 2)
        out[f"oe_{name}"] = r
        log(f"train {name}: {r}")
    for name, amp in () if do_compile else (("fp32", "off"), ("bf16", "bf16")):
        r = timed_steps(amp, False, device, steps, n_out=0)
        r["step_ms"] = round(r["step_ms"], 2)
        out[f"baseline_{name}"] = r
    return out


def scoring(device: torch.device, n: int, peak: float) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from oebench.contracts.data import TensorImages
    from oebench.execute.outputs import forward

    model = make_model().to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *SHAPE, device=device))
    per_image = float(counter.get_total_flops())
    data = TensorImages(torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8))
    out: dict[str, Any] = {"images": n, "gflop_per_image": round(per_image / 1e9, 3)}
    for name, dtype in (("fp32", None), ("bf16-autocast", torch.bfloat16)):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            forward(model, data, SHAPE, device, 2048)  # warm-up, data copied to the device
            sync(device)
            start = time.perf_counter()
            forward(model, data, SHAPE, device, 2048)
            sync(device)
        seconds = time.perf_counter() - start
        tflops = per_image * n / seconds / 1e12
        out[name] = {
            "images_per_s": round(n / seconds),
            "tflops": round(tflops, 2),
            "pct_of_peak": round(100 * tflops / peak, 2) if peak else None,
        }
    return out


class GpuSampler:
    """Samples GPU utilisation with nvidia-smi while a block runs."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
                self.values.append(float(text.splitlines()[0]))
            except Exception:
                return
            self._stop.wait(0.2)

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def epoch(device: torch.device, n_train: int, n_outliers: int, tmp: Path) -> dict[str, Any]:
    """One OE fine-tune epoch at CIFAR-10 scale through the real outlier-file source."""
    import oebench
    from oebench.contracts.data import TensorImages
    from oebench.execute.training import train

    rng = np.random.default_rng(0)
    root = tmp / "300k"
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "300K_random_images.npy", rng.integers(0, 256, (n_outliers, 32, 32, 3), "uint8"))
    start = time.perf_counter()
    outliers = oebench.create_outlier_source("300k-random-images", root=str(root))
    outliers = outliers.load("train", shape=SHAPE, seed=0)
    load_seconds = time.perf_counter() - start
    ids = TensorImages(
        torch.randint(0, 256, (n_train, *SHAPE), dtype=torch.uint8),
        torch.randint(0, 10, (n_train,)),
    )
    objective = oebench.create_objective("oe")
    out: dict[str, Any] = {
        "id_images": n_train,
        "outliers": n_outliers,
        "outlier_load_s": round(load_seconds, 2),
    }
    steps = math.ceil(n_train / 128)
    for name, amp in (("fp32", "off"), ("bf16", "bf16")):
        model = make_model()
        warm = TensorImages(ids.images[:640], ids.labels[:640])
        train(model, warm, objective, params(amp=amp, lr=0.001), 0, SHAPE, device, outliers)
        with GpuSampler() as sampler:
            seconds = train(
                model, ids, objective, params(amp=amp, lr=0.001), 0, SHAPE, device, outliers
            )
        util = sampler.values
        out[name] = {
            "epoch_s": round(seconds, 2),
            "steps": steps,
            "step_ms": round(1e3 * seconds / steps, 2),
            "gpu_util_mean": round(float(np.mean(util)), 1) if util else None,
            "gpu_util_samples": len(util),
        }
    return out


def projection(steps: dict[str, Any]) -> dict[str, Any]:
    """`oe-cifar10` on one GPU: 100 baseline epochs of 391 steps + 10 OE epochs of 391 steps."""
    out = {}
    for name in ("fp32", "bf16"):
        base = steps.get(f"baseline_{name}", {}).get("step_ms")
        oe = steps.get(f"oe_{name}", {}).get("step_ms")
        if base and oe:
            seconds = 100 * 391 * base / 1e3 + 10 * 391 * oe / 1e3
            out[name] = {
                "baseline_epoch_s": round(391 * base / 1e3, 1),
                "oe_epoch_s": round(391 * oe / 1e3, 1),
                "seed_minutes": round(seconds / 60, 1),
                "ten_seeds_hours": round(10 * seconds / 3600, 2),
            }
    return out


def run_cli(args: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "from oebench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tempfile.gettempdir(),  # not the checkout: import the installed oebench
    )
    return proc.returncode, time.perf_counter() - start, proc.stdout[-3000:] + proc.stderr[-3000:]


def quickstart(device: torch.device, out: Path, tmp: Path, smoke: bool) -> dict[str, Any]:
    """The quickstart on this device, bf16 (amp auto) and fp32 (amp off), and on the CPU."""
    import oebench_benchmarks

    toml = Path(oebench_benchmarks.__file__).parent / "quickstart.toml"
    text = toml.read_text()
    if smoke:
        text = text.replace("epochs = 8", "epochs = 1").replace("epochs = 2", "epochs = 1")
    result = {}
    runs = [("amp-auto", None, device.type), ("fp32", "off", device.type), ("cpu", None, "cpu")]
    for name, amp, where in runs:
        bench = tmp / f"quickstart-{name}.toml"
        body = text if amp is None else text.replace("[training]", f'[training]\namp = "{amp}"', 1)
        bench.write_text(body)
        env = {
            "OEBENCH_CACHE_DIR": str(tmp / f"cache-{name}"),
            "OEBENCH_STORE": str(tmp / f"store-{name}.sqlite"),
        }
        csv = out / f"quickstart_{where}_{name}.csv"
        code, seconds, tail = run_cli(
            ["run", str(bench), "--device", where, "--csv", str(csv)], env
        )
        result[name] = {"exit": code, "wall_s": round(seconds, 1)}
        if code != 0:
            result[name]["tail"] = tail
    return result


def compare_quickstarts(out: Path, device: torch.device) -> dict[str, Any]:
    """Largest metric differences between the quickstart CSVs (device vs CPU, bf16 vs fp32)."""
    import pandas as pd

    files = {p.stem.removeprefix("quickstart_"): p for p in out.glob("quickstart_*.csv")}
    frames = {k: pd.read_csv(v) for k, v in files.items()}
    keys = ["training", "detector", "ood_dataset"]
    result = {}
    pairs = [
        (f"{device.type}_amp-auto", "cpu_cpu"),
        (f"{device.type}_fp32", "cpu_cpu"),
        (f"{device.type}_amp-auto", f"{device.type}_fp32"),
    ]
    for a, b in pairs:
        if a in frames and b in frames and a != b:
            m = frames[a].merge(frames[b], on=keys, suffixes=("_a", "_b"))
            mean = m[m.ood_dataset == "mean"]
            result[f"{a} vs {b}"] = {
                metric: round(float((mean[f"{metric}_a"] - mean[f"{metric}_b"]).abs().max()), 2)
                for metric in ("auroc", "fpr95", "id_accuracy")
            }
    return result


def _synthetic_plugin(n_train: int, n_test: int) -> Any:
    """A plugin with a CIFAR-shaped synthetic ID set, its outliers and a near-OOD set."""
    from oebench import hookimpl
    from oebench.contracts.data import ImageSource, TensorImages

    def templates(seed: int, k: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(k, 3, 4, 4, generator=g)
        return torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear") * 0.6 + 0.2

    def draw(base: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = base[labels] + 0.15 * torch.randn(len(labels), *SHAPE, generator=g)
        x = x + 0.1 * torch.randn(len(labels), 1, 1, 1, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    class Synth(ImageSource):
        splits = ("train", "test")
        shape = SHAPE
        mean, std = CIFAR_MEAN, CIFAR_STD

        def __init__(self, first: int = 0, classes: int = 10, labelled: bool = True):
            self.first, self.classes, self.labelled = first, classes, labelled
            self.num_classes = classes if labelled else None

        def load(self, split, *, shape=None, seed=0):
            n = n_train if split == "train" else n_test
            g = torch.Generator().manual_seed(1000 + (split == "test"))
            labels = torch.randint(0, self.classes, (n,), generator=g)
            base = templates(7, 40)[self.first : self.first + self.classes]
            images = draw(base, labels, 10 * self.first + (split == "test"))
            return TensorImages(images, labels if self.labelled else None)

    class Plugin:
        @staticmethod
        @hookimpl
        def register_datasets(register):
            register("synth-cifar", lambda: Synth(0, 10), description="synthetic ID")
            register("synth-near", lambda: Synth(30, 10, False), description="held-out templates")

        @staticmethod
        @hookimpl
        def register_outlier_sources(register):
            register("synth-outliers", lambda: Synth(10, 20, False), description="templates")

    return Plugin


RANKING_TOML = """
name = "ranking-{amp}"
seeds = [0]
protocol = "full"
id_datasets = ["synth-cifar"]
models = ["wrn-40-2"]
detectors = [
    "msp", "max-logit", "energy", "entropy", "uniform-ce", "gen", "odin",
    "mahalanobis", "relative-mahalanobis", "knn", "vim", "react", "ash",
]
ood_datasets = ["gaussian", "rademacher", "blobs", "synth-near"]

[training]
epochs = {epochs}
batch_size = 128
lr = 0.1
augment = true
amp = "{amp}"

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
outliers = "synth-outliers"
from = "baseline"
epochs = 1
lr = 0.01
outlier_batch_size = 256
"""


def ranking(device: torch.device, out: Path, tmp: Path, smoke: bool) -> dict[str, Any]:
    """fp32 vs bf16 training on a CIFAR-shaped synthetic benchmark: same detector ranking?"""
    import pandas as pd
    from scipy.stats import kendalltau

    import oebench
    from oebench.registry.plugins import get_plugin_manager

    n_train, n_test = (512, 256) if smoke else (20000, 5000)
    get_plugin_manager().register(_synthetic_plugin(n_train, n_test), name="gpu-check-synth")
    frames = {}
    walls = {}
    for amp in ("off", "bf16"):
        bench = tmp / f"ranking-{amp}.toml"
        bench.write_text(RANKING_TOML.format(amp=amp, epochs=1 if smoke else 4))
        csv = out / f"ranking_{amp}.csv"
        os.environ["OEBENCH_CACHE_DIR"] = str(tmp / f"rank-cache-{amp}")
        os.environ["OEBENCH_STORE"] = str(tmp / f"rank-store-{amp}.sqlite")
        start = time.perf_counter()
        oebench.run(str(bench), device=device.type).to_csv(csv, index=False)
        walls[amp] = round(time.perf_counter() - start, 1)
        frames[amp] = pd.read_csv(csv)
    result: dict[str, Any] = {"wall_s": walls}
    for training in ("baseline", "oe"):
        means = {}
        for amp, df in frames.items():
            sel = df[(df.training == training) & (df.ood_dataset == "mean")]
            means[amp] = sel.set_index("detector")[["auroc", "fpr95", "id_accuracy"]]
        a, b = means["off"], means["bf16"]
        tau, _ = kendalltau(a.auroc, b.auroc.reindex(a.index))
        result[training] = {
            "id_accuracy": [float(a.id_accuracy.iloc[0]), float(b.id_accuracy.iloc[0])],
            "kendall_tau_auroc": round(float(tau), 3),
            "max_abs_auroc_diff": round(float((a.auroc - b.auroc.reindex(a.index)).abs().max()), 2),
            "top3_fp32": list(a.auroc.sort_values(ascending=False).index[:3]),
            "top3_bf16": list(b.auroc.sort_values(ascending=False).index[:3]),
            "auroc_fp32": a.auroc.round(2).to_dict(),
            "auroc_bf16": b.auroc.reindex(a.index).round(2).to_dict(),
        }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-results")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--budget", type=float, default=1e9, help="seconds; compile only if time left")
    p.add_argument("--sections", default="peak,train_step,scoring,epoch,quickstart,ranking")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    wanted = set(args.sections.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="oebench-gpu-"))
    RESULTS["env"] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "python": sys.version.split()[0],
    }
    save(out)
    smoke = args.smoke
    if "peak" in wanted:
        section("peak", out, peak_bf16, device, 256 if smoke else 8192)
    peak = RESULTS.get("peak", {}).get("tflops") or 0.0
    if "train_step" in wanted:
        section(
            "train_step",
            out,
            train_step,
            device,
            3 if smoke else 40,
            False,
            peak,
        )
        RESULTS["projection"] = projection(RESULTS.get("train_step", {}))
        save(out)
    if "scoring" in wanted:
        section("scoring", out, scoring, device, 512 if smoke else 50000, peak)
    if "epoch" in wanted:
        section(
            "epoch", out, epoch, device, 640 if smoke else 50000, 1000 if smoke else 300000, tmp
        )
    if "quickstart" in wanted:
        section("quickstart", out, quickstart, device, out, tmp, smoke)
        RESULTS["quickstart_diff"] = compare_quickstarts(out, device)
        save(out)
    if "ranking" in wanted:
        section("ranking", out, ranking, device, out, tmp, smoke)
    left = args.budget - (time.perf_counter() - T0)
    if "train_step" in wanted and not args.no_compile and left > 150:
        section("train_step_compiled", out, train_step, device, 3 if smoke else 40, True, peak)
    elif "train_step" in wanted:
        RESULTS["train_step_compiled"] = {"skipped": f"{left:.0f} s left of --budget"}
        save(out)
    log(f"done; results in {out / 'gpu.json'}")


if __name__ == "__main__":
    main()
