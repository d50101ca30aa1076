"""GPU rehearsal: one call on a lent GPU machine (<= 8 min) that says where an `oe-cifar10` OE
step's time goes, what the cheap speed-ups give, how many cells share one device, and what
the full 10-seed `oe-cifar10` would take.

    python benchmarks/perf/gpu_rehearsal.py --out gpu-out          # on a CUDA machine
    python benchmarks/perf/gpu_rehearsal.py --device cpu --tiny    # seconds, to check it runs

Data are synthetic at full size: 50,000 CIFAR-format ID images (32x32x3 uint8) and a
300,000-image ``.npy`` in a temp folder, read by the real ``300k-random-images`` source; the
recipe is `benchmarks/oe-cifar10.toml`'s (WRN-40-2, 128 ID + 256 outliers a step, SGD +
Nesterov, cosine, flip + crop), epochs cut to a few hundred steps. Sections, each written into
``<out>/gpu-rehearsal-<device>.json`` as soon as it ends (an error is recorded and the next one
runs; one past its time budget is skipped):

a. ``host_time``: one OE step in timed sub-steps (gather, copy, augment, forward, backward,
   optimizer, scheduler), each synchronised, plus the real ``train`` loop's step time.
b. ``variants``: step time eager vs ``torch.compile(mode="reduce-overhead")`` (CUDA only),
   fp32 vs bf16 autocast, SGD for-loop vs foreach vs fused.
c. ``concurrent``: 1 vs N cells (spawned processes, 1/N of the device memory each) training
   at once on one device: images/s in total.
d. ``scoring``: ``oebench.execute.outputs.forward`` images/s, fp32 and bf16, batch 2048.
e. ``utilisation``: nvidia-smi GPU utilisation while the real loop runs, FLOPs per step from
   ``torch.utils.flop_counter``, TFLOP/s and % of a measured bf16 matmul peak.
f. ``projection``: full `oe-cifar10` x 10 seeds (100 baseline + 10 OE epochs of 391 steps
   each) from the measured step times, with 1 and with the best N concurrent cells.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402  (its model, FLOP counter, timed loop, scorer and sampler)

SHAPE = gpu_check.SHAPE
RESULTS: dict[str, Any] = {}
#: total seconds the sections may take, and each section's share (of what is left)
BUDGET_S = 450
SHARES = {"host_time": 0.12, "variants": 0.35, "concurrent": 0.4, "scoring": 0.3,
          "utilisation": 0.5, "projection": 1.0}  # fmt: skip


class Sizes:
    """The data and step counts: full size, or ``--tiny`` (seconds on a CPU)."""

    def __init__(self, tiny: bool):
        self.tiny = tiny
        self.n_id, self.n_out = (512, 2048) if tiny else (50_000, 300_000)
        self.bs, self.obs = (8, 16) if tiny else (128, 256)
        self.steps = 3 if tiny else 60
        self.score_n = 256 if tiny else 50_000
        self.peak_n = 256 if tiny else 8192
        self.workers = (1, 2) if tiny else (1, 2, 3, 4)


def tiny_model(num_classes: int = 10) -> Any:
    """``--tiny``: a small CNN in place of WRN-40-2 (seconds on a CPU, same code paths)."""
    import oebench
    from oebench.contracts.model import Classifier

    torch.manual_seed(0)
    net = oebench.create_model("small-cnn", num_classes, SHAPE, width=8)
    return Classifier(net, gpu_check.CIFAR_MEAN, gpu_check.CIFAR_STD)


def use_sizes(tiny: bool) -> Sizes:
    """The sizes, and the model every section (gpu_check's included) builds."""
    if tiny:
        gpu_check.make_model = tiny_model
    return Sizes(tiny)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: torch.device) -> None:
    gpu_check.sync(device)


def make_data(sizes: Sizes, tmp: Path) -> tuple[Any, Any]:
    """The ID images in memory, the outliers through the real ``300k-random-images`` source."""
    import oebench
    from oebench.contracts.data import TensorImages

    rng = np.random.default_rng(0)
    root = tmp / "300k"
    root.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (sizes.n_out, 32, 32, 3), dtype=np.uint8)
    np.save(root / "300K_random_images.npy", images)
    del images
    source = oebench.create_outlier_source("300k-random-images", root=str(root))
    outliers = source.load("train", shape=SHAPE, seed=0)
    ids = TensorImages(
        torch.randint(0, 256, (sizes.n_id, *SHAPE), dtype=torch.uint8),
        torch.randint(0, 10, (sizes.n_id,)),
    )
    return ids, outliers


def recipe(sizes: Sizes, **kw: Any) -> dict[str, Any]:
    """`oe-cifar10`'s OE fine-tune settings, one epoch (cut by ``max_train``)."""
    p = gpu_check.params(lr=0.001, batch_size=sizes.bs, outlier_batch_size=sizes.obs)
    return {**p, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, **kw}


def real_steps(device: torch.device, sizes: Sizes, ids: Any, outs: Any, **kw: Any) -> float:
    """ms per step of ``oebench.execute.training.train`` on the real data, after a warm-up."""
    import oebench
    from oebench.execute.training import train

    objective = oebench.create_objective("oe")
    model = gpu_check.make_model()
    warm = recipe(sizes, max_train=2 * sizes.bs, **kw)
    train(model, ids, objective, warm, 0, SHAPE, device, outs)
    p = recipe(sizes, max_train=sizes.steps * sizes.bs, **kw)
    return 1e3 * train(model, ids, objective, p, 0, SHAPE, device, outs) / sizes.steps


def _parts(device: torch.device, sizes: Sizes, ids: Any, outs: Any, opt_kw: dict) -> Any:
    import oebench

    model = gpu_check.make_model().to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, nesterov=True,
                          weight_decay=5e-4, **opt_kw)  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched, oebench.create_objective("oe")


def host_time(device: torch.device, sizes: Sizes, ids: Any, outs: Any) -> dict[str, Any]:
    """Mean ms of each part of one OE step, synchronised after each part."""
    from oebench.execute.training import augment, to_device

    model, opt, sched, objective = _parts(device, sizes, ids, outs, {})
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        sync(device)
        start = time.perf_counter()
        value = fn()
        sync(device)
        times.setdefault(name, []).append(1e3 * (time.perf_counter() - start))
        return value

    for _ in range(sizes.steps + 2):
        i = torch.randint(0, len(ids), (sizes.bs,), generator=gen)
        j = torch.randint(0, len(outs), (sizes.obs,), generator=gen).tolist()
        xi, y = timed("gather_id", lambda i=i: (ids.images[i], ids.labels[i]))
        xo = timed("gather_outliers", lambda j=j: torch.stack([outs[k][0] for k in j]))
        x = timed("copy_to_device", lambda xi=xi, xo=xo: to_device(torch.cat([xi, xo]), device))
        yd = to_device(y, device)
        x = timed("augment", lambda x=x: augment(x.float() / 255, gen))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        logits = timed("forward", lambda x=x: model(x).float())
        loss = objective(logits[: sizes.bs], yd, logits[sizes.bs :])
        timed("backward", loss.backward)
        timed("optimizer", opt.step)
        timed("zero_grad", lambda: opt.zero_grad(set_to_none=True))
        timed("scheduler", sched.step)
    parts = {k: round(float(np.mean(v[2:])), 3) for k, v in times.items()}  # 2 warm-ups
    total = sum(parts.values())
    return {
        "ms": parts,
        "sum_ms": round(total, 3),
        "pct": {k: round(100 * v / total, 1) for k, v in parts.items()},
        "real_loop_step_ms": round(real_steps(device, sizes, ids, outs), 3),
    }


def _loop_ms(device: torch.device, sizes: Sizes, amp: Any, opt_kw: dict, mode: str | None) -> float:
    """ms per step of a bare OE step (no data pipeline), eager or compiled."""
    model, opt, sched, objective = _parts(device, sizes, None, None, opt_kw)
    step_model = torch.compile(model, mode=mode) if mode else model
    x = torch.rand(sizes.bs + sizes.obs, *SHAPE, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (sizes.bs,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = step_model(x).float()
        objective(logits[: sizes.bs], y, logits[sizes.bs :]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    for _ in range(3 if mode else 2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(sizes.steps):
        step()
    sync(device)
    return round(1e3 * (time.perf_counter() - start) / sizes.steps, 3)


def variants(device: torch.device, sizes: Sizes, ids: Any, outs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sgd = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    for name, kw in sgd.items():
        try:
            out[f"fp32_eager_sgd_{name}_ms"] = _loop_ms(device, sizes, None, kw, None)
        except Exception as exc:  # fused SGD on a device without it
            out[f"fp32_eager_sgd_{name}_ms"] = None
            out[f"sgd_{name}_error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["bf16_eager_ms"] = _loop_ms(device, sizes, torch.bfloat16, {}, None)
    out["real_loop_fp32_ms"] = round(real_steps(device, sizes, ids, outs), 3)
    out["real_loop_bf16_ms"] = round(real_steps(device, sizes, ids, outs, amp="bf16"), 3)
    if device.type == "cuda":  # CUDA graphs need CUDA; on the CPU the section says so
        for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
            out[f"{name}_reduce_overhead_ms"] = _loop_ms(device, sizes, amp, {}, "reduce-overhead")
    else:
        out["reduce_overhead"] = "skipped: CUDA graphs need a CUDA device"
    return out


def _cell(args: tuple) -> dict[str, float]:
    """One concurrent cell (a spawned process): real-loop steps once every cell is ready."""
    device_name, tiny, workers, barrier, data_dir = args
    device = torch.device(device_name)
    torch.set_num_threads(max(1, (multiprocessing.cpu_count() // workers)))
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1 / workers, device)
    sizes = use_sizes(tiny)
    ids, outs = make_data(sizes, Path(data_dir) / f"w{multiprocessing.current_process().pid}")
    real_steps(device, Sizes(True) if tiny else sizes, ids, outs)  # warm-up
    barrier.wait()
    start = time.perf_counter()
    ms = real_steps(device, sizes, ids, outs)
    return {"step_ms": ms, "seconds": time.perf_counter() - start}


def concurrent(device: torch.device, sizes: Sizes, tmp: Path, budget: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, Any] = {}
    start = time.perf_counter()
    for n in sizes.workers:
        if time.perf_counter() - start > budget * 0.5 and n > 1:
            out[f"n{n}"] = "skipped: time budget"
            continue
        with ctx.Manager() as manager, ctx.Pool(n) as pool:
            barrier = manager.Barrier(n)
            args = [(str(device), sizes.tiny, n, barrier, str(tmp))] * n
            wall = time.perf_counter()
            cells = pool.map(_cell, args)
            wall = time.perf_counter() - wall
        images = n * sizes.steps * (sizes.bs + sizes.obs)
        slowest = max(c["seconds"] for c in cells)
        out[f"n{n}"] = {
            "step_ms_each": [round(c["step_ms"], 3) for c in cells],
            "images_per_s_total": round(images / slowest, 1),
            "wall_s_with_startup": round(wall, 1),
        }
    base = out["n1"]["images_per_s_total"]
    rates = {k: v["images_per_s_total"] for k, v in out.items() if isinstance(v, dict)}
    best = max(rates, key=rates.get)
    out["best"] = {"workers": int(best[1:]), "speedup": round(rates[best] / base, 3)}
    return out


def scoring(device: torch.device, sizes: Sizes, peak: float) -> dict[str, Any]:
    return gpu_check.scoring(device, sizes.score_n, peak)


def utilisation(device: torch.device, sizes: Sizes, ids: Any, outs: Any) -> dict[str, Any]:
    peak = gpu_check.peak_bf16(device, sizes.peak_n)["tflops"]
    flops = gpu_check.step_flops(gpu_check.make_model(), sizes.bs, sizes.obs, device)
    with gpu_check.GpuSampler() as sampler:
        ms = real_steps(device, sizes, ids, outs)
    tflops = flops / (ms / 1e3) / 1e12
    util = sampler.values
    return {
        "bf16_matmul_peak_tflops": peak,
        "gflop_per_step": round(flops / 1e9, 3),
        "step_ms": round(ms, 3),
        "tflops": round(tflops, 4),
        "pct_of_peak": round(100 * tflops / peak, 3) if peak else None,
        "gpu_util_mean": round(float(np.mean(util)), 1) if util else None,
        "gpu_util_samples": len(util),
    }


def projection(sizes: Sizes) -> dict[str, Any]:
    """10 seeds x (100 baseline + 10 OE epochs) x 391 steps at the measured OE step time (the
    baseline step, 128 images, counted at 1/3 of an OE step's 384: an upper bound near it)."""
    oe = RESULTS.get("host_time", {}).get("real_loop_step_ms")
    if not oe:
        raise RuntimeError("no measured step time (section host_time failed)")
    if sizes.tiny:  # tiny steps are smaller: scale to the recipe's 384 images a step
        oe *= 384 / (sizes.bs + sizes.obs)
    base = RESULTS.get("variants", {}).get("baseline_ms") or oe / 3
    one_seed = 391 * (100 * base + 10 * oe) / 1e3
    best = RESULTS.get("concurrent", {}).get("best", {"workers": 1, "speedup": 1.0})
    return {
        "oe_step_ms": round(oe, 3),
        "baseline_step_ms_assumed": round(base, 3),
        "one_seed_h": round(one_seed / 3600, 3),
        "ten_seeds_h_one_cell": round(10 * one_seed / 3600, 3),
        "concurrent_workers": best["workers"],
        "ten_seeds_h_concurrent": round(10 * one_seed / best["speedup"] / 3600, 3),
    }


def section(name: str, out: Path, deadline: float, fn: Any, *args: Any) -> None:
    """Run one section within its budget; record its result or its error, and save."""
    left = deadline - time.perf_counter()
    start = time.perf_counter()
    if left < 5:
        RESULTS[name] = {"error": "skipped: time budget spent"}
    else:
        log(f"--- {name} ({left:.0f} s left)")
        try:
            RESULTS[name] = fn(*args)
        except Exception as exc:  # keep going: the other sections still measure
            RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}",
                             "trace": traceback.format_exc()[-3000:]}  # fmt: skip
    RESULTS.setdefault("_seconds", {})[name] = round(time.perf_counter() - start, 1)
    log(f"{name}: {json.dumps(RESULTS[name], default=str)[:800]}")
    out.write_text(json.dumps(RESULTS, indent=2, default=str))


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: every section in seconds")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all sections")
    a = ap.parse_args(argv)
    device, sizes = torch.device(a.device), use_sizes(a.tiny)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpu-rehearsal-{device.type}{'-tiny' if a.tiny else ''}.json"
    deadline = time.perf_counter() + a.budget
    model = "small-cnn" if a.tiny else "wrn-40-2"
    RESULTS["_meta"] = {"device": str(device), "torch": torch.__version__, "model": model,
                        "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    if device.type == "cuda":
        RESULTS["_meta"]["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ids, outs = make_data(sizes, Path(tmp))
        RESULTS["_meta"]["data_s"] = round(time.perf_counter() - start, 1)
        peak = 0.0

        def until(name: str) -> float:
            left = deadline - time.perf_counter()
            return time.perf_counter() + left * SHARES[name]

        section("host_time", path, until("host_time"), host_time, device, sizes, ids, outs)
        section("variants", path, until("variants"), variants, device, sizes, ids, outs)
        budget = (deadline - time.perf_counter()) * SHARES["concurrent"]
        section("concurrent", path, until("concurrent"), concurrent, device, sizes, Path(tmp),
                budget)  # fmt: skip
        section("utilisation", path, until("utilisation"), utilisation, device, sizes, ids, outs)
        peak = RESULTS.get("utilisation", {}).get("bf16_matmul_peak_tflops") or 0.0
        section("scoring", path, until("scoring"), scoring, device, sizes, peak)
        section("projection", path, until("projection"), projection, sizes)
    log(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
