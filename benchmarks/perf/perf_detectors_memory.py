"""Wall time and peak memory of fitting and scoring each logit/feature detector at scale.

Random class-structured post-ReLU features (default 50,000 x 512 train with 100 classes, 10,000
test rows, float32 as the engine stores them) and a random linear head. Each detector runs in its
own subprocess so that its peak resident memory is its own; the table shows the process peak and
the peak above the resident memory at the start (data, numpy and torch already loaded).

    python benchmarks/perf/perf_detectors_memory.py [--train 50000 --test 10000 --dim 512]
        [--classes 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MIB = 1024 * 1024


def make_data(n_train: int, n_test: int, dim: int, classes: int, seed: int = 0):
    """Train/test Outputs (float32 logits and features, int labels) and a float64 Head."""
    from oebench.contracts.detector import Head, Outputs

    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim)) * 0.5
    head = Head(rng.normal(size=(classes, dim)) / np.sqrt(dim), rng.normal(size=classes) * 0.1)

    def outputs(n: int) -> Outputs:
        labels = rng.integers(0, classes, size=n)
        feats = np.empty((n, dim), dtype=np.float32)
        logits = np.empty((n, classes), dtype=np.float32)
        for start in range(0, n, 4096):
            y = labels[start : start + 4096]
            f = np.maximum(means[y] + rng.normal(size=(len(y), dim)), 0.0)
            feats[start : start + 4096] = f
            logits[start : start + 4096] = f @ head.weight.T + head.bias
        return Outputs(logits, feats, labels)

    return outputs(n_train), outputs(n_test), head


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MiB, where Linux provides it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(name: str, args: argparse.Namespace) -> dict:
    """Fit and score one detector in this process; times and memory in a dict."""
    import torch  # noqa: F401  (loaded up front so that its import is not charged to detectors)

    import oebench

    train, test, head = make_data(args.train, args.test, args.dim, args.classes)
    det = oebench.create_detector(name)
    reset = _reset_peak()
    start_rss = _status_mib("VmRSS")
    start_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if det.needs & {"fit", "head"}:  # as the engine does
        det.fit(train if "fit" in det.needs else None, head if "head" in det.needs else None)
    t1 = time.perf_counter()
    scores = det.score(test)
    t2 = time.perf_counter()
    assert scores.shape == (args.test,) and np.isfinite(scores).all()
    peak = _status_mib("VmHWM") if reset else None
    if peak is None:  # no resettable peak: the high-water mark since the process began
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = start_rss if reset and start_rss is not None else start_peak
    return {
        "detector": name,
        "fit_s": t1 - t0,
        "score_s": t2 - t1,
        "peak_rss_mib": peak,
        "start_rss_mib": base,
        "extra_mib": max(peak - base, 0.0),
    }


def detector_names() -> list[str]:
    import oebench

    return [n for n in oebench.list_detectors() if "model" not in oebench.create_detector(n).needs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--one", help="measure one detector in this process (prints JSON)")
    parser.add_argument("--only", nargs="*", help="detectors to measure (default: all but model)")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    sizes = [
        "--train",
        str(args.train),
        "--test",
        str(args.test),
        "--dim",
        str(args.dim),
        "--classes",
        str(args.classes),
    ]
    print(f"train {args.train} x {args.dim} ({args.classes} classes), test {args.test} rows")
    print(f"{'detector':22} {'fit s':>8} {'score s':>8} {'peak RSS MiB':>13} {'extra MiB':>10}")
    for name in args.only or detector_names():
        run = subprocess.run(
            [sys.executable, __file__, "--one", name, *sizes],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{name:22} {r['fit_s']:8.2f} {r['score_s']:8.2f} {r['peak_rss_mib']:13.0f} "
            f"{r['extra_mib']:10.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
