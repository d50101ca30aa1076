"""What the store keeps about a finished cell: its place in the matrix, its configuration and
the provenance its worker sent back (one value per column of ``schema.CELL_COLUMNS``, plus the
benchmark's text)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def cell_record(bench: Any, task: Any, result: Any) -> dict[str, Any]:
    """What the store keeps about a finished cell: configuration, and the provenance its
    worker sent back with the result (versions, device, platforms, host, timings)."""
    first = result.rows[0]
    prov = result.provenance
    source = Path(bench.source) if bench.source else None
    path = str(source.resolve()) if source is not None and source.exists() else bench.source
    kept = ("host", "pid", "wall_seconds", "executor", "overlap")  # overlap: execute/overlap.py
    worker = {k: prov[k] for k in kept if k in prov}
    return {
        "key": task.key,
        "benchmark": bench.name,
        "benchmark_path": path,
        "benchmark_digest": bench.digest,
        "benchmark_text": bench.text,
        "seed": task.seed,
        "id_dataset": first["id_dataset"],
        "model": first["model"],
        "training": first["training"],
        "objective": first["objective"],
        "outlier_source": first["outlier_source"],
        "protocol": first["protocol"],
        "cell_index": task.index,
        "config": json.dumps(task.config | {"worker": worker}, sort_keys=True, default=str),
        "oebench_version": prov["oebench_version"],
        "plugins": json.dumps(prov["plugins"], sort_keys=True),
        "torch_version": prov["torch_version"],
        "device": prov["device"],
        "train_seconds": first["train_seconds"],
        "score_seconds": first["score_seconds"],
        "trained": int(bool(first["trained"])),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "recall": first.get("recall"),
        "fpr_rule": first.get("fpr_rule"),
        "platform": json.dumps(prov["platform"], sort_keys=True) if prov.get("platform") else None,
    }
