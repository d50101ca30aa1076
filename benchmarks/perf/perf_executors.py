"""Wall time of the same benchmark on the local, Dask and Ray executors (issue 9's figures).

    python benchmarks/perf/perf_executors.py                      # quickstart, 3 seeds
    python benchmarks/perf/perf_executors.py --runs dask-2 local  # some of them
    python benchmarks/perf/perf_executors.py --benchmark tests/data/tiny.toml --seeds 2

Each run is a cold ``oebench run`` in a fresh subprocess with its own empty cache and store,
so every executor trains and scores everything; the script prints wall seconds, the ratio to
the local run, the CPU seconds of the processes the run waited for (workers a cluster leaves
to exit after the run, and Ray's daemons, are not counted, so a cluster's figure is a lower
bound), whether each CSV is byte-identical to the local one, and the load average (other work
on the machine distorts the figures). On N cores a run cannot take less than its CPU seconds
/ N, which bounds what more workers can gain. ``dask-2-malloc`` gives the workers Dask's default
``MALLOC_TRIM_THRESHOLD_=65536`` (through the environment they inherit), to show what leaving
it out is worth.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {
    "local": [],
    "dask-1": ["--executor", "dask", "--workers", "1"],
    "dask-2": ["--executor", "dask", "--workers", "2"],
    "dask-2-malloc": ["--executor", "dask", "--workers", "2"],
    "ray-2": ["--executor", "ray", "--workers", "2"],
}


def cpu_seconds() -> float:
    """User + system seconds of the waited-for child processes so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run(name: str, bench: str, seeds: int, folder: Path) -> tuple[float, float, bytes]:
    """One cold run; returns (wall seconds, CPU seconds, CSV bytes)."""
    csv = folder / f"{name}.csv"
    env = {
        **os.environ,
        "OEBENCH_CACHE_DIR": str(folder / f"cache-{name}"),
        "OEBENCH_STORE": str(folder / f"{name}.sqlite"),
    }
    if name == "dask-2-malloc":
        env["MALLOC_TRIM_THRESHOLD_"] = "65536"  # what Dask's default sets; workers inherit it
    seed_args = [a for s in range(seeds) for a in ("--seed", str(s))]
    command = ["oebench", "run", bench, *seed_args, "--csv", str(csv), *RUNS[name]]
    start, cpu = time.perf_counter(), cpu_seconds()
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
    return seconds, cpu_seconds() - cpu, csv.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="quickstart")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", nargs="*", default=["local", "dask-1", "dask-2"])
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="oebench-executors-"))
    results, local = {}, None
    for name in ["local", *[r for r in args.runs if r != "local"]]:
        seconds, cpu, csv = run(name, args.benchmark, args.seeds, folder)
        local = csv if name == "local" else local
        results[name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 1)}
        results[name]["same_csv"] = csv == local
        print(
            f"{name:14s} {seconds:7.1f} s  x{seconds / results['local']['seconds']:.2f} of local"
            f"  CPU {cpu:6.1f} s  CSV {'identical' if csv == local else 'DIFFERENT'}"
            f"  load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    if args.json:
        meta = {"benchmark": args.benchmark, "seeds": args.seeds, "cpus": os.cpu_count()}
        Path(args.json).write_text(json.dumps(meta | {"runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
