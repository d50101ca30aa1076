"""Choosing a setting (λ, temperature, k, ...) on validation data only, as the OE paper tunes.

``sweep`` runs a benchmark's *validation* version once per value: the ID dataset replaced by
``holdout`` (its training split minus a held-out part; the held-out part is the ID test set)
and the OOD sets by ``val-ood`` sets made from those held-out images. The value whose mean
``metric`` over the validation OOD sets is best wins; ``chosen`` is then the original
benchmark with that value, its text carrying a ``# sweep:`` comment that records the choice
(the results store keeps every benchmark's text).

A setting is named by a path (see ``oebench.bench.sweep``): ``trainings.oe.objective.lam``,
``trainings.oe.lr`` or ``detectors.energy.temperature``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from oebench.bench.matrix import Benchmark
from oebench.bench.sweep import VALIDATION_SETS, validation_benchmark, with_value
from oebench.errors import UserError
from oebench.metrics import LOWER_IS_BETTER, METRICS

if TYPE_CHECKING:
    from oebench.core.progress import Progress


@dataclass
class SweepResult:
    """Validation score per value, the winning value, and the benchmark to run with it."""

    path: str
    metric: str
    detector: str
    scores: dict[Any, float]
    best: Any
    chosen: Benchmark


def sweep(
    bench: Benchmark,
    path: str,
    values: list[Any],
    metric: str = "auroc",
    detector: str | None = None,
    fraction: float = 0.1,
    sets: tuple[str, ...] = VALIDATION_SETS,
    device: str = "auto",
    progress: Progress | None = None,
) -> SweepResult:
    """Run the validation benchmark per value; pick the best mean ``metric`` of ``detector``.
    ``progress`` gets a bar over the values and each value's run's bars."""
    from oebench.core.progress import Progress
    from oebench.execute.drive import run_here
    from oebench.execute.runner import Runner
    from oebench.registry.options import toml_text

    if metric not in METRICS:
        raise UserError(f"sweep metric {metric!r}: one of {', '.join(METRICS)}")
    detector = detector or (path.split(".")[1] if path.startswith("detectors.") else None)
    detector = detector or bench.detectors[0].key
    if detector not in [d.key for d in bench.detectors]:
        raise UserError(f"sweep detector {detector!r} is not in the benchmark")
    training = path.split(".")[1] if path.startswith("trainings.") else None
    validation = validation_benchmark(bench, fraction, sets)
    from oebench.core.platforms import prepare_process

    prepare_process((t.name, t.params) for t in validation.trainings)  # before torch: pins
    scores: dict[Any, float] = {}
    progress = progress or Progress()
    advance = progress.start(f"sweep {path}", len(values))
    name = path.rsplit(".", 1)[-1]  # the status says the value: ``temperature = 10``
    for value in values:
        advance(0, f"{name} = {toml_text(value)}")
        rows = run_here(Runner(with_value(validation, path, value), device, progress))
        picked = [r[metric] for r in rows if r["detector"] == detector
                  and r["ood_dataset"] == "mean" and training in (None, r["training"])]  # fmt: skip
        scores[value] = sum(picked) / len(picked)
        advance(1, f"{name} = {toml_text(value)}: {metric} {scores[value]:.2f}")
    pick = min if metric in LOWER_IS_BETTER else max
    best = pick(values, key=lambda v: scores[v])  # the first of equal scores wins
    record = {"path": path, "chosen": best, "metric": metric, "detector": detector,
              "validation": {json.dumps(v): s for v, s in scores.items()},
              "sets": list(sets), "holdout": fraction}  # fmt: skip
    text = f"{bench.text.rstrip()}\n# sweep: {json.dumps(record, sort_keys=True)}\n"
    chosen = replace(with_value(bench, path, best), text=text)
    return SweepResult(path, metric, detector, scores, best, chosen)
