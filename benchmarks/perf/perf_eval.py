"""Wall time of a benchmark's evaluation with one detector vs the whole suite.

    python benchmarks/perf/perf_eval.py [BENCHMARK]          # default: quickstart

Checkpoints are trained (or taken from the cache) first; each timed run then starts from an
empty output cache, so it includes the one forward pass per model and dataset plus every
detector's fit and scoring. ODIN is timed separately: it needs gradient passes through the
model for every input, which no cache can share.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from oebench.bench.matrix import Ref
from oebench.bench.parse import load_benchmark
from oebench.execute.drive import run_here
from oebench.execute.outputs import OutputCache
from oebench.execute.runner import Runner


def timed(name: str, detectors: list[str]) -> float:
    """Seconds for one full evaluation with ``detectors``, forward passes included."""
    bench = replace(load_benchmark(name), detectors=[Ref(d) for d in detectors])
    runner = Runner(bench, device="cpu")
    with tempfile.TemporaryDirectory() as fresh:
        runner.outputs = OutputCache(Path(fresh))
        start = time.perf_counter()
        run_here(runner)
        return time.perf_counter() - start


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "quickstart"
    suite = [d.name for d in load_benchmark(name).detectors]
    run_here(Runner(load_benchmark(name), device="cpu"))  # train or load checkpoints
    no_odin = [d for d in suite if d != "odin"]
    rows = [
        ("one detector (msp)", ["msp"]),
        (f"suite without ODIN ({len(no_odin)})", no_odin),
        (f"whole suite ({len(suite)})", suite),
    ]
    times = {label: min(timed(name, dets) for _ in range(3)) for label, dets in rows}
    one = times[rows[0][0]]
    print(f"benchmark {name}: best of 3 runs, each from an empty output cache")
    for label, seconds in times.items():
        print(f"  {label:28s} {seconds:6.2f} s  {seconds / one:5.2f}x")


if __name__ == "__main__":
    main()
