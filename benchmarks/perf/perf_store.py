"""Results-store cost at CIFAR scale: bytes and seconds per cell, reading, bootstrap intervals.

    python benchmarks/perf/perf_store.py                  # 20 detectors, 10k ID + 6 x 5k OOD scores
    python benchmarks/perf/perf_store.py --cells 12 --detectors 13

Synthetic cells shaped like an ``oe-cifar10`` run: every cell stores its result rows and the
per-sample scores of each detector (zlib-compressed float64) in one transaction.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from oebench.record.schema import CELL_COLUMNS, METRIC_COLUMNS
from oebench.record.store import ResultStore, ScoreArray
from oebench.report.bootstrap import replicates, rng_for


def fake_cell(i: int, detectors: int, n_id: int, oods: int, n_ood: int, rng: np.random.Generator):
    """A record, its rows and its score arrays, shaped like a real cell."""
    record = {c: "x" for c in CELL_COLUMNS} | {
        "key": f"cell{i}",
        "benchmark": "perf",
        "benchmark_digest": "d",
        "benchmark_text": "",
        "seed": i,
        "cell_index": 0,
        "train_seconds": 1.0,
        "score_seconds": 1.0,
        "trained": 1,
    }
    rows, scores = [], []
    for d in range(detectors):
        scores.append(ScoreArray(f"det{d}", "id", False, rng.normal(0, 1, n_id)))
        for o in range(oods + 1):
            name = f"ood{o}" if o < oods else "mean"
            row = {m: float(rng.uniform(0, 100)) for m in METRIC_COLUMNS}
            rows.append(row | {"detector": f"det{d}", "ood_dataset": name, "row_index": len(rows)})
            rows[-1] |= {"id_accuracy": 95.0, "n_id": n_id, "n_ood": n_ood}
            if o < oods:
                scores.append(ScoreArray(f"det{d}", name, True, rng.normal(1, 1, n_ood)))
    return record, rows, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--detectors", type=int, default=20)
    parser.add_argument("--n-id", type=int, default=10_000)
    parser.add_argument("--oods", type=int, default=6)
    parser.add_argument("--n-ood", type=int, default=5_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "perf.sqlite"
        cells = [
            fake_cell(i, args.detectors, args.n_id, args.oods, args.n_ood, rng)
            for i in range(args.cells)
        ]
        with ResultStore(path) as store:
            start = time.perf_counter()
            for record, rows, scores in cells:
                store.save_cell(record, rows, scores)
            write = (time.perf_counter() - start) / args.cells
            start = time.perf_counter()
            n_rows = len(store.rows())
            read_rows = time.perf_counter() - start
            start = time.perf_counter()
            arrays = store.scores([r["key"] for r, _, _ in cells])["cell0"]
            read_scores = time.perf_counter() - start
        ids = arrays[0].scores
        oods = [a.scores for a in arrays[1 : 1 + args.oods]]
        start = time.perf_counter()
        replicates(ids, oods, args.resamples, rng_for(0, "cell0", "det0"))
        boot = time.perf_counter() - start
        size = path.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("*-wal"))
    print(
        json.dumps(
            {
                "cells": args.cells,
                "store_mib_per_cell": round(size / 2**20 / args.cells, 2),
                "write_s_per_cell": round(write, 3),
                "read_rows_s": round(read_rows, 3),
                "rows": n_rows,
                "read_scores_s_all_cells": round(read_scores, 3),
                "bootstrap_s_per_cell_and_detector": round(boot, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
