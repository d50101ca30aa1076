"""Choosing a setting (λ, temperature, k, ...) on validation data only, as the OE paper tunes.

``sweep`` runs a benchmark's *validation* version once per value: the ID dataset replaced by
``holdout`` (its training split minus a held-out part; the held-out part is the ID test set)
and the OOD sets by ``val-ood`` sets made from those held-out images. The value whose mean
``metric`` over the validation OOD sets is best wins; ``chosen`` is then the original
benchmark with that value, its text carrying a ``# sweep:`` comment that records the choice
(the results store keeps every benchmark's text).

A setting is named by a path: ``trainings.<name>.objective.<option>`` (e.g.
``trainings.oe.objective.lam``), ``trainings.<name>.<setting>`` (e.g. ``trainings.oe.lr``)
or ``detectors.<key>.<option>`` (e.g. ``detectors.energy.temperature``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from oebench.bench.matrix import Benchmark, Ref, Training
from oebench.errors import UserError
from oebench.metrics import LOWER_IS_BETTER, METRICS

#: the validation OOD sets, as in the OE paper's appendix
VALIDATION_SETS = (
    "uniform",
    "arith-mean",
    "geo-mean",
    "jigsaw",
    "speckle",
    "pixelate",
    "rgb-shift",
    "invert",
)


@dataclass
class SweepResult:
    """Validation score per value, the winning value, and the benchmark to run with it."""

    path: str
    metric: str
    detector: str
    scores: dict[Any, float]
    best: Any
    chosen: Benchmark


def parse_values(text: str) -> list[Any]:
    """``"0.1,0.5,1"`` -> ``[0.1, 0.5, 1]`` (TOML scalars: numbers, booleans, bare strings)."""
    import tomllib

    values = []
    for item in (v.strip() for v in text.split(",")):
        try:
            values.append(tomllib.loads(f"v = {item}")["v"])
        except tomllib.TOMLDecodeError:
            values.append(item)
    if not values or "" in values:
        raise UserError(f"sweep values {text!r}: give comma-separated values, e.g. 0.1,0.5,1")
    return values


def with_value(bench: Benchmark, path: str, value: Any) -> Benchmark:
    """The benchmark with the setting at ``path`` set to ``value``."""
    parts = path.split(".")
    if parts[0] == "trainings" and len(parts) in (3, 4):
        if parts[1] not in [t.name for t in bench.trainings]:
            raise UserError(f"sweep path {path!r}: no training named {parts[1]!r}")
        trainings = [_set_training(t, parts[2:], value) if t.name == parts[1] else t
                     for t in bench.trainings]  # fmt: skip
        return replace(bench, trainings=trainings)
    if parts[0] == "detectors" and len(parts) == 3:
        if parts[1] not in [d.key for d in bench.detectors]:
            raise UserError(f"sweep path {path!r}: no detector {parts[1]!r} in the benchmark")
        detectors = [_set_option(d, parts[2], value) if d.key == parts[1] else d
                     for d in bench.detectors]  # fmt: skip
        return replace(bench, detectors=detectors)
    raise UserError(
        f"sweep path {path!r}: use trainings.<name>.objective.<option>, "
        "trainings.<name>.<setting> or detectors.<key>.<option>"
    )


def _set_option(ref: Ref, option: str, value: Any) -> Ref:
    options = {**ref.kwargs, option: value}
    return replace(ref, options=tuple(sorted(options.items())))


def _set_training(t: Training, rest: list[str], value: Any) -> Training:
    if rest[0] == "objective" and len(rest) == 2:
        return replace(t, objective=_set_option(t.objective, rest[1], value))
    if len(rest) == 1:
        return replace(t, settings=tuple(sorted({**t.params, rest[0]: value}.items())))
    raise UserError(f"sweep path: cannot set {'.'.join(rest)!r} of training {t.name!r}")


def validation_benchmark(
    bench: Benchmark, fraction: float = 0.1, sets: tuple[str, ...] = VALIDATION_SETS
) -> Benchmark:
    """The benchmark on validation data: held-out ID images and OOD sets made from them."""
    if len(bench.id_datasets) != 1:
        raise UserError("sweep: the benchmark must have exactly one ID dataset")
    ref = bench.id_datasets[0]
    base = {"dataset": ref.name, "fraction": fraction, **ref.kwargs}
    holdout = Ref("holdout", tuple(sorted(base.items())), ref.key)
    oods = [Ref("val-ood", tuple(sorted({**base, "transform": s}.items())), f"val-{s}")
            for s in sets]  # fmt: skip
    return replace(
        bench, name=f"{bench.name}-validation", id_datasets=[holdout], ood_datasets=oods,
        ood_groups={},
    )  # fmt: skip


def sweep(
    bench: Benchmark,
    path: str,
    values: list[Any],
    metric: str = "auroc",
    detector: str | None = None,
    fraction: float = 0.1,
    sets: tuple[str, ...] = VALIDATION_SETS,
    device: str = "auto",
    progress: Any = None,
) -> SweepResult:
    """Run the validation benchmark per value; pick the best mean ``metric`` of ``detector``."""
    from oebench.execute.runner import Runner

    if metric not in METRICS:
        raise UserError(f"sweep metric {metric!r}: one of {', '.join(METRICS)}")
    detector = detector or (path.split(".")[1] if path.startswith("detectors.") else None)
    detector = detector or bench.detectors[0].key
    if detector not in [d.key for d in bench.detectors]:
        raise UserError(f"sweep detector {detector!r} is not in the benchmark")
    training = path.split(".")[1] if path.startswith("trainings.") else None
    validation = validation_benchmark(bench, fraction, sets)
    scores: dict[Any, float] = {}
    for value in values:
        rows = Runner(with_value(validation, path, value), device, progress).run()
        picked = [r[metric] for r in rows if r["detector"] == detector
                  and r["ood_dataset"] == "mean" and training in (None, r["training"])]  # fmt: skip
        scores[value] = sum(picked) / len(picked)
    pick = min if metric in LOWER_IS_BETTER else max
    best = pick(values, key=lambda v: scores[v])  # the first of equal scores wins
    chosen = with_value(bench, path, best)
    record = {"path": path, "chosen": best, "metric": metric, "detector": detector,
              "validation": {json.dumps(v): s for v, s in scores.items()},
              "sets": list(sets), "holdout": fraction}  # fmt: skip
    chosen.text = f"{bench.text.rstrip()}\n# sweep: {json.dumps(record, sort_keys=True)}\n"
    return SweepResult(path, metric, detector, scores, best, chosen)
