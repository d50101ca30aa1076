"""Benchmark definitions: TOML files naming the matrix to run, parsed into plain dataclasses."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oebench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROTOCOLS = ("full", "oe-paper")
TRAINING_KEYS = {
    "epochs",
    "batch_size",
    "outlier_batch_size",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "augment",
    "max_train",
    "eval_batch_size",
    "amp",
    "channels_last",
    "compile",
}
DEFAULT_TRAINING: dict[str, Any] = {
    "epochs": 6,
    "batch_size": 128,
    "outlier_batch_size": 256,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "augment": False,
    "max_train": None,
    "eval_batch_size": None,
}


@dataclass(frozen=True)
class Ref:
    """A component named in a benchmark, with its options: ``"energy"`` or
    ``{name = "energy", temperature = 1000, label = "energy-T1000"}``."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.kwargs}


@dataclass(frozen=True)
class Training:
    """How one model variant is trained: the baseline, or OE with an outlier source."""

    name: str
    objective: Ref
    outliers: Ref | None = None
    init: str | None = None  # name of the training to fine-tune from
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.settings)


@dataclass
class Benchmark:
    name: str
    id_datasets: list[Ref]
    models: list[Ref]
    trainings: list[Training]
    detectors: list[Ref]
    ood_datasets: list[Ref]
    seeds: list[int] = field(default_factory=lambda: [0])
    protocol: str = "full"
    resamples: int = 10
    description: str = ""
    source: str = ""
    text: str = ""
    defaults: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAINING))

    def oe_from_scratch(self) -> Benchmark:
        """The same benchmark with every fine-tuned training started from scratch instead,
        with the ``[training]`` epochs and learning rate."""
        trainings = []
        for t in self.trainings:
            if t.init is not None:
                params = {**t.params, "epochs": self.defaults["epochs"], "lr": self.defaults["lr"]}
                t = replace(t, init=None, settings=tuple(sorted(params.items())))
            trainings.append(t)
        return replace(self, trainings=trainings)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def parse_ref(value: Any, where: str) -> Ref:
    if isinstance(value, str):
        return Ref(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        opts = {k: v for k, v in value.items() if k not in ("name", "label")}
        return Ref(
            value["name"],
            tuple(sorted(opts.items(), key=lambda kv: kv[0])),
            str(value.get("label", "")),
        )
    raise UserError(f"{where}: expected a name or a table with 'name', got {value!r}")


def _refs(data: dict, key: str, source: str) -> list[Ref]:
    values = data.get(key)
    if not isinstance(values, list) or not values:
        raise UserError(f"{source}: '{key}' must be a non-empty list")
    refs = [parse_ref(v, f"{source}: {key}") for v in values]
    keys = [r.key for r in refs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise UserError(f"{source}: '{key}' lists {', '.join(dupes)} twice; give one a 'label'")
    return refs


def _training(data: dict, defaults: dict, source: str) -> Training:
    where = f"{source}: trainings"
    if "name" not in data or "objective" not in data:
        raise UserError(f"{where}: every training needs 'name' and 'objective'")
    unknown = set(data) - TRAINING_KEYS - {"name", "objective", "outliers", "from"}
    if unknown:
        raise UserError(
            f"{where} {data['name']!r}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"settings: {', '.join(sorted(TRAINING_KEYS))}"
        )
    settings = {**defaults, **{k: v for k, v in data.items() if k in TRAINING_KEYS}}
    outliers = parse_ref(data["outliers"], where) if "outliers" in data else None
    return Training(
        str(data["name"]),
        parse_ref(data["objective"], where),
        outliers,
        data.get("from"),
        tuple(sorted(settings.items())),
    )


def parse_benchmark(text: str, source: str = "<string>") -> Benchmark:
    """Parse and validate a benchmark TOML document (component names are checked later)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: invalid TOML: {exc}") from None
    known = {
        "name",
        "description",
        "id_datasets",
        "models",
        "trainings",
        "detectors",
        "ood_datasets",
        "seeds",
        "protocol",
        "resamples",
        "training",
    }
    unknown = set(data) - known
    if unknown:
        raise UserError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    defaults = dict(DEFAULT_TRAINING)
    extra = set(data.get("training", {})) - TRAINING_KEYS
    if extra:
        raise UserError(f"{source}: [training] has unknown key(s) {', '.join(sorted(extra))}")
    defaults.update(data.get("training", {}))
    trainings = [_training(t, defaults, source) for t in data.get("trainings", [])]
    if not trainings:
        raise UserError(f"{source}: needs at least one [[trainings]] entry")
    names = [t.name for t in trainings]
    for t in trainings:
        if t.init is not None and t.init not in names[: names.index(t.name)]:
            raise UserError(
                f"{source}: training {t.name!r} starts from {t.init!r}, "
                "which must be an earlier training"
            )
    protocol = data.get("protocol", "full")
    if protocol not in PROTOCOLS:
        raise UserError(f"{source}: protocol must be one of {', '.join(PROTOCOLS)}")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
        raise UserError(f"{source}: 'seeds' must be a non-empty list of integers")
    return Benchmark(
        name=str(data.get("name", Path(source).stem)),
        id_datasets=_refs(data, "id_datasets", source),
        models=_refs(data, "models", source),
        trainings=trainings,
        detectors=_refs(data, "detectors", source),
        ood_datasets=_refs(data, "ood_datasets", source),
        seeds=seeds,
        protocol=protocol,
        resamples=int(data.get("resamples", 10)),
        description=str(data.get("description", "")),
        source=source,
        text=text,
        defaults=defaults,
    )


def load_benchmark(name_or_path: str) -> Benchmark:
    """A benchmark by registered name, or from a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"benchmark file not found: {path}")
        return parse_benchmark(path.read_text(), str(path))
    from oebench.registry import get_component

    comp = get_component("benchmark", name_or_path)
    target = comp.factory() if callable(comp.factory) else comp.factory
    if isinstance(target, Benchmark):
        return target
    text = Path(target).read_text()
    return parse_benchmark(text, str(target))


def canonical_hash(obj: Any) -> str:
    """A stable short hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
