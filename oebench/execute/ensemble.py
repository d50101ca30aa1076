"""One ensemble cell: a training's models over the benchmark's seeds scored together
(``ensemble = true``; the scores are ``oebench.scoring``'s). Each member's outputs come from
the output cache where its own cell made them (else one forward pass of its checkpoint)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from oebench.bench.matrix import Cell, Ref
from oebench.bench.plan import TaskResult
from oebench.contracts.checks import checked_metrics
from oebench.contracts.detector import Outputs
from oebench.execute.detect import CellData
from oebench.scoring import ENSEMBLE_SCORES, ensemble_logits, ensemble_scores

if TYPE_CHECKING:
    from oebench.execute.cell import CellWork


def ensemble_rows(work: CellWork, cell: Cell, members: list[Cell]) -> TaskResult:
    """The ensemble cell's rows (every score x OOD set, and the means) and score arrays."""
    result = TaskResult(cell.key)
    start = time.perf_counter()
    datas, train_seconds = [], 0.0
    for member in members:
        data, seconds, _ = work._data(member, result)
        datas.append(data)
        train_seconds += seconds
    first = datas[0]
    sets = {"id": [d.id_test[1] for d in datas]}
    sets |= {k: [d.oods[k][1] for d in datas] for k in first.oods}
    _same_images(sets)
    scores = {k: ensemble_scores([o.logits for o in outs]) for k, outs in sets.items()}
    combined = ensemble_logits([o.logits for o in sets["id"]])
    labels = first.id_test[1].labels
    accuracy = 100.0 * float(np.mean(combined.argmax(1) == labels))
    data = CellData(
        cell, first.shape, first.model, "", (first.id_test[0], Outputs(combined, None, labels)),
        {k: (first.oods[k][0], Outputs(ensemble_logits([o.logits for o in outs])))
         for k, outs in sets.items() if k != "id"},
        first.outputs_of, accuracy,
    )  # fmt: skip
    seed = min(m.seed for m in members)  # the oe-paper protocol's re-sampling draws
    for name in ENSEMBLE_SCORES:
        result.rows += _rows(work, data, Ref(name), {k: s[name] for k, s in scores.items()}, seed)
        result.scores += [(name, k, s[name]) for k, s in scores.items()]
    _finish(work, result, data, train_seconds, time.perf_counter() - start)
    return result


def _same_images(sets: dict[str, list[Outputs]]) -> None:
    """Every member scored the same images (same counts; the same labels on the ID set)."""
    for key, outs in sets.items():
        if len({len(o.logits) for o in outs}) != 1:
            raise ValueError(f"ensemble members scored different numbers of images on {key}")
    ids = sets["id"]
    if any(not np.array_equal(o.labels, ids[0].labels) for o in ids[1:]):
        raise ValueError("ensemble members' ID test sets differ (labels)")


def _rows(work: CellWork, data: CellData, ref: Ref, scores: dict, seed: int) -> list[dict]:
    detectors = work.detectors
    id_scores, rows, per_set = scores["id"], [], []
    for key in data.oods:
        found = detectors._evaluate(id_scores, scores[key], seed, key)
        metrics = checked_metrics(found, key)
        per_set.append(metrics)
        rows.append(detectors._row(data, ref, key, metrics, len(id_scores), len(scores[key])))
    mean = {m: float(np.mean([p[m] for p in per_set])) for m in per_set[0]}
    rows.append(detectors._row(data, ref, "mean", mean, len(id_scores), 0))
    return rows


def _finish(
    work: CellWork, result: TaskResult, data: CellData, train_seconds: float, seconds: float
) -> None:
    """Calibration of the ensemble's prediction, timings and provenance, as a cell's."""
    import os
    import socket

    from oebench.execute.cell import _calibration

    calib = _calibration(data.id_test[1], {k: out for k, (_, out) in data.oods.items()})
    for position, row in enumerate(result.rows):
        row.update(calib.get(row["ood_dataset"], calib["mean"]))
        row.update(train_seconds=round(train_seconds, 3), score_seconds=round(seconds, 3),
                   trained=False, cell_index=data.cell.index, row_index=position)  # fmt: skip
    provenance: dict[str, Any] = work.provenance(data.cell)
    result.provenance = provenance | {
        "host": socket.gethostname(), "pid": os.getpid(), "wall_seconds": round(seconds, 3),
    }  # fmt: skip
