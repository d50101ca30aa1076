"""Settings swept on validation data: sweep paths, their values, and the validation version
of a benchmark (the sweep that runs them is ``oebench.execute.sweep``).

A setting is named by a path: ``trainings.<name>.objective.<option>`` (e.g.
``trainings.oe.objective.lam``), ``trainings.<name>.<setting>`` (e.g. ``trainings.oe.lr``)
or ``detectors.<key>.<option>`` (e.g. ``detectors.energy.temperature``).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from oebench.bench.matrix import Benchmark, Ref, Training
from oebench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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


def parse_values(text: str) -> list[Any]:
    """``"0.1,0.5,1"`` -> ``[0.1, 0.5, 1]`` (TOML scalars: numbers, booleans, bare strings)."""
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
