"""The benchmark matrix as plain values: components (``Ref``), trainings and the benchmark.

What a benchmark file becomes once parsed (``oebench.bench.parse`` reads the files); the plan,
the runner and validation work on these values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One training setting: its type, range and default (``oebench.bench.validation`` builds
    the ``TrainingSettings`` schema from these). ``keyed`` settings are in every training's
    params (from ``[training]`` or their default), hence in every cache key; the others only
    where a benchmark sets them. A float setting is always finite (no ``inf``, no ``nan``)."""

    kind: Any  # a type, a tuple of the allowed values, or Any (checked elsewhere)
    default: Any = None
    keyed: bool = False
    optional: bool = False  # None is allowed too
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None


#: upper bounds: beyond them a value is a typo (``epochs = 1e18``), not a benchmark
MAX_EPOCHS = 100_000
MAX_BATCH = 100_000
MAX_IMAGES = 2**31 - 1
MAX_THREADS = 4096

#: every setting of a training (``[training]`` and ``[[trainings]]``), declared once
TRAINING_SETTINGS: dict[str, Setting] = {
    "epochs": Setting(int, 6, keyed=True, ge=1, le=MAX_EPOCHS),
    "batch_size": Setting(int, 128, keyed=True, ge=1, le=MAX_BATCH),
    "outlier_batch_size": Setting(int, 256, keyed=True, ge=1, le=MAX_BATCH),
    "lr": Setting(float, 0.1, keyed=True, gt=0),
    "momentum": Setting(float, 0.9, keyed=True, ge=0, lt=1),
    "nesterov": Setting(bool, True, keyed=True),
    "weight_decay": Setting(float, 5e-4, keyed=True, ge=0),
    "augment": Setting(bool, False, keyed=True),
    "max_train": Setting(int, None, keyed=True, optional=True, ge=1, le=MAX_IMAGES),
    "eval_batch_size": Setting(int, None, keyed=True, optional=True, ge=1, le=MAX_BATCH),
    # CPU threads of a training (0: every core): the weights depend on it (conv gradients are
    # summed in per-thread chunks), so it is fixed, not the core count, and part of every key
    "threads": Setting(int, 1, keyed=True, ge=0, le=MAX_THREADS),
    "amp": Setting(("auto", "bf16", "off"), "auto"),
    "channels_last": Setting(bool, True),
    "compile": Setting(bool, False),
    #: outlier mining (checked by ``oebench.bench.sampling.check_sampling``)
    "outlier_sampling": Setting(Any),
    #: evaluate the model's own weights (e.g. a `checkpoint`): no training, no cached weights
    "evaluate_only": Setting(bool, False),
    #: flip each outlier image horizontally at random (the reference's SVHN OE recipe)
    "outlier_flip": Setting(bool, False),
    #: "portable": CPU kernels pinned to what every x86-64 CPU runs (oebench.core.platforms),
    #: so other CPUs give the same weights; keyed only where a benchmark sets it
    "numerics": Setting(("native", "portable"), "native"),
    #: deterministic algorithms (torch, cuDNN, cuBLAS) during the training; keyed where set
    "deterministic": Setting(bool, False),
    #: how many distinct auxiliary outliers the training may see: a count (int >= 1) or a
    #: fraction of the source (float in (0, 1]); a fixed subset drawn once per training with
    #: its seed (oebench.execute.sampling.budget_subset); keyed only where a benchmark sets it
    "outlier_budget": Setting(Any, optional=True),
    #: drop the outliers the overlap audit finds in an ID or OOD test set (execute/overlap.py)
    "exclude_overlap": Setting(bool, False),
}
#: the settings every training's params hold unless set: hashed into every cache key
DEFAULT_TRAINING: dict[str, Any] = {
    name: s.default for name, s in TRAINING_SETTINGS.items() if s.keyed
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

    def __hash__(self) -> int:
        # options may hold lists or tables (``data_files = [...]``): hash their canonical text
        return hash((self.name, canonical_hash(self.kwargs), self.label))


@dataclass(frozen=True)
class Training:
    """How one model variant is trained: the baseline, or OE with an outlier source."""

    name: str
    objective: Ref
    outliers: Ref | None = None
    init: str | None = None  # name of the training to fine-tune from
    settings: tuple[tuple[str, Any], ...] = ()
    #: for one source of an ``outliers = [...]`` list (named ``<family>/<source>``): the
    #: ``[[trainings]]`` entry's name and the source's label; "" for a single-source training
    family: str = ""
    source: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class PublishedRow:
    """One row of a ``[published]`` table: where it sits in the matrix (``model`` and
    ``id_dataset`` empty: any) and its numbers, metric -> value in %."""

    training: str
    detector: str
    ood_dataset: str  # an OOD set's key, "mean" or a group mean "mean:<group>"
    values: tuple[tuple[str, float], ...]
    model: str = ""
    id_dataset: str = ""
    #: the published numbers' spread (std over the paper's runs), in points; None: not given
    spread: float | None = None


@dataclass(frozen=True)
class Published:
    """The numbers a paper reports for a benchmark (``[published]``; ``oebench.report.against``
    compares results with them). Never part of a cell's key: editing them recomputes nothing."""

    source: str
    rows: tuple[PublishedRow, ...]
    runs: int | None = None


@dataclass(frozen=True)
class Benchmark:
    """A benchmark matrix with its settings; change one with ``dataclasses.replace``."""

    name: str
    id_datasets: list[Ref]
    models: list[Ref]
    trainings: list[Training]
    detectors: list[Ref]
    ood_datasets: list[Ref]
    seeds: list[int] = field(default_factory=lambda: [0])
    protocol: str = "full"
    resamples: int = 10
    #: OOD recall level of the ``fpr95`` column and its threshold rule (see oebench.metrics)
    recall: float = 0.95
    fpr_rule: str = "nearest"
    description: str = ""
    source: str = ""
    text: str = ""
    defaults: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAINING))
    #: near-/far-OOD groups: group name -> OOD set keys (see oebench.bench.groups)
    ood_groups: dict[str, list[str]] = field(default_factory=dict)
    #: where cells run by default (``[executor]``: name, workers, address, gpus_per_task, shards);
    #: never part of a cell's key, since every executor gives the same numbers
    executor: dict[str, Any] = field(default_factory=dict)
    #: the paper's numbers for this benchmark (``[published]``); never part of a cell's key
    published: Published | None = None
    #: covariate-shifted ID test sets (``protocol = "full-spectrum"``): labelled sets of the ID
    #: classes that count as ID in the full-spectrum metrics (OpenOOD v1.5's FS-OOD)
    csid_datasets: list[Ref] = field(default_factory=list)
    #: ``ensemble = true``: one more cell per training, a deep ensemble of its models over the
    #: seeds (``oebench.scoring``), stored under ``ENSEMBLE_SEED``
    ensemble: bool = False

    def __hash__(self) -> int:
        # the list and dict fields are not hashable: equal benchmarks have equal name and text
        return hash((self.name, self.text))

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

    def training(self, name: str) -> Training:
        """The training called ``name`` (a KeyError when there is none)."""
        for t in self.trainings:
            if t.name == name:
                return t
        raise KeyError(name)

    def lineage(self, training: Training) -> list[Training]:
        """``training`` and the trainings it starts from (``from``), nearest first."""
        chain = [training]
        while chain[-1].init is not None:
            chain.append(self.training(chain[-1].init))
        return chain


def canonical_hash(obj: Any) -> str:
    """A stable short hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


#: the seed column of an ensemble cell's rows: it is every seed's models at once
ENSEMBLE_SEED = -1


@dataclass
class Cell:
    """One trained model of the matrix; its rows cover every detector x OOD set. An ensemble
    cell (``seed == ENSEMBLE_SEED``) combines the cells of ``members`` (their keys)."""

    seed: int
    id_ref: Ref
    model_ref: Ref
    training: Training
    key: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    #: position in the matrix for one seed (ID dataset x model x training), for ordering rows
    index: int = 0
    #: an ensemble cell's member cells' keys (one per seed); () for a cell of one model
    members: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``mnist-5k / small-cnn / oe / seed 0`` (``/ ensemble`` for an ensemble cell)."""
        which = "ensemble" if self.members else f"seed {self.seed}"
        return f"{self.id_ref.key} / {self.model_ref.key} / {self.training.name} / {which}"
