"""Wall time of a benchmark's evaluation with one detector vs the whole suite.

    python benchmarks/perf_eval.py [BENCHMARK]          # default: quickstart

Checkpoints are trained (or taken from the cache) first; each timed run then starts from an
empty output cache, so it includes the one forward pass per model and dataset plus every
detector's fit and scoring. ODIN is timed separately: it needs gradient passes through the
model for every input, which no cache can share.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from oebench.benchmark import Ref, load_benchmark
from oebench.outputs import OutputCache
from oebench.runner import Runner


def timed(name: str, detectors: list[str], models_dir: str) -> float:
    """Seconds for one full evaluation with ``detectors``, forward passes included."""
    bench = load_benchmark(name)
    bench.detectors = [Ref(d) for d in detectors]
    runner = Runner(bench, device="cpu")
    with tempfile.TemporaryDirectory() as fresh:
        runner.outputs = OutputCache(__import__("pathlib").Path(fresh))
        start = time.perf_counter()
        runner.run()
        return time.perf_counter() - start


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "quickstart"
    bench = load_benchmark(name)
    suite = [d.name for d in bench.detectors]
    Runner(bench, device="cpu").run()  # train or load checkpoints; warm imports
    models_dir = os.environ.get("OEBENCH_CACHE_DIR", "")
    one = min(timed(name, ["msp"], models_dir) for _ in range(3))
    no_odin = [d for d in suite if d != "odin"]
    all_but = min(timed(name, no_odin, models_dir) for _ in range(3))
    everything = min(timed(name, suite, models_dir) for _ in range(3))
    print(f"benchmark {name}: {len(suite)} detectors, best of 3 runs each")
    print(f"  one detector (msp):            {one:6.2f} s")
    print(f"  whole suite without ODIN ({len(no_odin)}): {all_but:6.2f} s  = {all_but / one:.2f}x")
    print(
        f"  whole suite with ODIN ({len(suite)}):     {everything:6.2f} s  = {everything / one:.2f}x"
    )


if __name__ == "__main__":
    main()
