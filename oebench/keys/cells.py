"""A cell's identity: the configuration that decides its numbers, and the key that hashes it.

Every cell of a run is configured and keyed once, here, when the matrix is made; the plan's
tasks carry the cells, and every later step (skip, record, the model check, the workers) reads
the key from them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from oebench.bench.matrix import ENSEMBLE_SEED, Benchmark, Cell, Ref, Training, canonical_hash
from oebench.keys.fingerprints import cell_fingerprints


class DataFiles(Protocol):
    """What a cell's key needs to know of the data: the files every source and model reads."""

    def files(self, kind: str, ref: Ref) -> list[tuple[str, Any]]:
        """(name, content digest) of every file a dataset or outlier source reads."""
        ...

    def model_files(self, ref: Ref) -> dict[str, str]:
        """Option -> sha256 of every file a model's options name."""
        ...


@dataclass(frozen=True)
class Engine:
    """The training engine a run uses: its version and the digest of its code."""

    version: int
    digest: str


def matrix_cells(bench: Benchmark, data: DataFiles, engine: Engine) -> list[Cell]:
    """The matrix in run order (seed x ID dataset x model x training), each cell keyed."""
    cells = []
    for seed in bench.seeds:
        index = 0
        for id_ref in bench.id_datasets:
            for model_ref in bench.models:
                for training in bench.trainings:
                    cell = Cell(seed, id_ref, model_ref, training, index=index)
                    cells.append(keyed(bench, cell, data, engine))
                    index += 1
    return cells


def ensemble_cells(bench: Benchmark, cells: list[Cell]) -> list[Cell]:
    """With ``ensemble = true``: per ID dataset, model and training, one cell combining that
    training's keyed ``cells`` over the seeds, keyed by its members' keys and what it reports."""
    from oebench.keys.fingerprints import code_digest
    from oebench.scoring import ensemble_scores

    if not bench.ensemble:
        return []
    out, index = [], 0
    for id_ref in bench.id_datasets:
        for model_ref in bench.models:
            for training in bench.trainings:
                members = [c for c in cells if (c.id_ref, c.model_ref, c.training.name) ==
                           (id_ref, model_ref, training.name)]  # fmt: skip
                config = {
                    "ensemble": [c.key for c in members],
                    "ood_datasets": [o.config() for o in bench.ood_datasets],
                    "protocol": bench.protocol,
                    "resamples": bench.resamples,
                    "fpr": [bench.recall, bench.fpr_rule],
                    "code": code_digest(ensemble_scores),
                }
                cell = Cell(ENSEMBLE_SEED, id_ref, model_ref, training, index=index,
                            members=tuple(c.key for c in members))  # fmt: skip
                out.append(replace(cell, config=config, key=canonical_hash(config)))
                index += 1
    return out


def keyed(bench: Benchmark, cell: Cell, data: DataFiles, engine: Engine) -> Cell:
    """``cell`` with its configuration and its content key filled in."""
    config = {
        "benchmark": bench.name,
        "seed": cell.seed,
        "id_dataset": cell.id_ref.config(),
        "model": cell.model_ref.config(),
        "training": training_config(bench, cell.training),
        "detectors": [d.config() for d in bench.detectors],
        "ood_datasets": [o.config() for o in bench.ood_datasets],
        "protocol": bench.protocol,
        "resamples": bench.resamples,
        # only when not the default, so that existing cell keys stay valid
        **(
            {"fpr": [bench.recall, bench.fpr_rule]}
            if (bench.recall, bench.fpr_rule) != (0.95, "nearest")
            else {}
        ),
        # covariate-shifted ID sets, only where given (existing keys stay valid)
        **(
            {"csid_datasets": [c.config() for c in bench.csid_datasets]}
            if bench.csid_datasets
            else {}
        ),
        "training_version": engine.version,
        "names": _names(bench, cell),
        # the code of every component and the files of every data source the cell uses:
        # an edited detector or a replaced dataset file gives the cell another key
        "fingerprints": cell_fingerprints(bench, cell, data.files, engine.digest),
    }
    files = data.model_files(cell.model_ref)
    if files:  # a file a model reads (a `checkpoint`'s weights) is keyed by its content
        config["model_files"] = files
    return replace(cell, config=config, key=canonical_hash(config))


def training_config(bench: Benchmark, t: Training) -> dict[str, Any]:
    """What a training is, its init chain included (settings that cannot change the weights
    stay out, so that they never retrain anything)."""
    init = bench.training(t.init) if t.init is not None else None
    return {
        "objective": t.objective.config(),
        "outliers": t.outliers.config() if t.outliers else None,
        "params": {k: v for k, v in t.params.items() if k not in ("eval_batch_size", "compile")},
        "init": training_config(bench, init) if init else None,
    }


def _names(bench: Benchmark, cell: Cell) -> dict[str, Any]:
    """The labels a cell's result rows carry, so that renaming one changes the key."""
    t = cell.training
    return {
        "id_dataset": cell.id_ref.key,
        "model": cell.model_ref.key,
        "training": t.name,
        "objective": t.objective.key,
        "outlier_source": t.outliers.key if t.outliers else "",
        "detectors": [d.key for d in bench.detectors],
        "ood_datasets": [o.key for o in bench.ood_datasets],
        **({"csid_datasets": [c.key for c in bench.csid_datasets]} if bench.csid_datasets else {}),
    }


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths (``training/params/lr``) where two JSON-like configurations differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if a == b else [path.lstrip("/") or "configuration"]
