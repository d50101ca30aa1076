"""Runs a benchmark matrix: train (or load) each model once, one forward pass per dataset,
every detector on the cached outputs, metrics per OOD set."""

from __future__ import annotations

import contextlib
import functools
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oebench.contracts import checked_metrics
from oebench.detectors import Detector, Head, Outputs
from oebench.errors import PluginFailed, UserError, describe_exception
from oebench.matrix import Benchmark, Ref, Training, canonical_hash
from oebench.metrics import METRICS, ood_metrics
from oebench.progress import Progress
from oebench.registry import (
    check_options,
    create_detector,
    create_model,
    create_objective,
    get_component,
)
from oebench.sources import Sources
from oebench.validation import chance_warning


def resolve_device(name: str = "auto") -> Any:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)


@dataclass
class Cell:
    """One trained model of the matrix; its rows cover every detector x OOD set."""

    seed: int
    id_ref: Ref
    model_ref: Ref
    training: Training
    key: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    #: position in the matrix for one seed (ID dataset x model x training), for ordering rows
    index: int = 0


class Runner:
    def __init__(
        self,
        bench: Benchmark,
        device: str = "auto",
        progress: Progress | None = None,
        use_cache: bool = True,
        cache_root: Any = None,
    ):
        from oebench.outputs import OutputCache
        from oebench.training import CheckpointCache
        from oebench.weights import WeightNotes

        self.bench = bench
        self.device_name = device
        self.progress = progress or Progress()
        self.outputs = OutputCache(cache_root, enabled=use_cache)
        self.checkpoints = CheckpointCache(cache_root, enabled=use_cache)
        #: the digests of weights already seen, so that a cached cell needs no model
        self.notes = WeightNotes(self.checkpoints)
        self._states: dict[str, dict] = {}
        #: cell key -> checkpoint key, and checkpoint key -> the training's seconds
        self._checkpoint_keys: dict[str, str] = {}
        self._seconds: dict[str, float] = {}
        self._prepared = self._models_checked = False
        self._device: Any = None
        #: the datasets and outlier sources this run reads, each made and loaded once
        self.sources = Sources(bench)
        #: called as ``score_sink(cell, detector_key, dataset_key, scores)`` for every score
        #: array; ``dataset_key`` is ``"id"`` for the ID test set
        self.score_sink: Callable[[Cell, str, str, np.ndarray], None] | None = None
        #: one message per detector that raised; its rows are missing from the results
        self.failures: list[str] = []
        #: one message per cell that produced no result (not stored; run again to retry)
        self.failed_cells: list[str] = []

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every name and option before any work starts."""
        from oebench.data import check_modalities, skipped_detectors
        from oebench.validation import check_benchmark

        check_modalities(self.bench)  # text data with an image model etc.: one line, first
        check_benchmark(self.bench, models=False)  # every problem at once, in one message
        b = self.bench
        for ref in b.id_datasets[:1]:  # e.g. input-gradient detectors (ODIN) on text
            kind = getattr(self.sources.source("dataset", ref), "modality", "image")
            for key in skipped_detectors(b, kind):
                self.progress.log(f"note: detector {key!r} does not apply to {kind} data: skipped")
        for ref in b.id_datasets + b.ood_datasets:
            check_options(get_component("dataset", ref.name), ref.kwargs)
        for ref in b.models:
            check_options(get_component("model", ref.name), ref.kwargs, "num_classes", "shape")
        for ref in b.detectors:
            check_options(get_component("detector", ref.name), ref.kwargs)
        for t in b.trainings:
            check_options(get_component("objective", t.objective.name), t.objective.kwargs)
            objective = create_objective(t.objective.name, **t.objective.kwargs)
            if objective.uses_outliers and t.outliers is None:
                raise UserError(
                    f"training {t.name!r}: objective {t.objective.name!r} needs "
                    "'outliers' (an outlier source)"
                )
            if t.outliers is not None:
                check_options(get_component("outlier source", t.outliers.name), t.outliers.kwargs)
        for kind, ref in self.sources.all():
            self.sources.files(kind, ref)  # missing files fail here, before any training
        for ref in b.ood_datasets:  # network-space sets vs every ID normalisation
            check = getattr(self.sources.source("dataset", ref), "check_norm", None)
            for id_ref in b.id_datasets if check is not None else []:
                id_source = self.sources.source("dataset", id_ref)
                check(id_source.mean, id_source.std, id_source.shape[0])
        for ref in b.id_datasets:
            source = self.sources.source("dataset", ref)
            if not source.num_classes or "train" not in source.splits:
                raise UserError(
                    f"dataset {ref.key!r} cannot be an ID dataset: it has no labelled train split"
                )

    # -- the matrix ----------------------------------------------------------------------------
    def cells(self) -> Iterator[Cell]:
        """The matrix in run order, each cell with its configuration and key filled in."""
        b = self.bench
        for seed in b.seeds:
            index = 0
            for id_ref in b.id_datasets:
                for model_ref in b.models:
                    for training in b.trainings:
                        cell = Cell(seed, id_ref, model_ref, training, index=index)
                        self._configure(cell)
                        yield cell
                        index += 1

    def prepare(self) -> None:
        """Validate the benchmark, once, before the first cell."""
        if not self._prepared:
            self.validate()
            if self.device_name not in ("auto", "cpu"):  # `--device cuda` without a GPU: now
                _ = self.device
            self._prepared = True

    @property
    def device(self) -> Any:
        """The torch device, picked when first needed (a cell whose outputs and scores are
        all cached needs none, nor torch)."""
        if self._device is None:
            self._device = resolve_device(self.device_name)
        return self._device

    def check_models_for(self, tasks: list[Any]) -> None:
        """Before any work: build every model once (see ``_check_models``) unless the weights
        of every task's cell are noted, i.e. a warm run that may need no model at all."""
        if any(self._noted_weights(self.cell_for(task)) is None for task in tasks):
            self._check_models()

    def _check_models(self) -> None:
        """Build every model once with its options (a test forward pass), before the first
        model of the run is made: only then is torch needed."""
        from oebench.validation import model_problems, raise_problems

        if not self._models_checked:
            raise_problems(model_problems(self.bench), self.bench.source)
            self._models_checked = True

    def cell_for(self, task: Any) -> Cell:
        """The cell a plan's task stands for, configured here (its key must match)."""
        b = self.bench
        training = next(t for t in b.trainings if t.name == task.training)
        cell = Cell(
            task.seed, b.id_datasets[task.id_index], b.models[task.model_index], training,
            index=task.index,
        )  # fmt: skip
        self._configure(cell)
        if cell.key != (task.cell_key or task.key):
            differ = ", ".join(_differences(task.config, cell.config)[:3]) or "?"
            raise UserError(
                f"cell {task.label}: this process computes another cell key than the driver "
                f"({differ} differ); install the same oebench, plugins and data on every worker"
            )
        return cell

    def execute_task(self, task: Any) -> Any:
        """Run a plan's task here: train a checkpoint others start from, or a whole cell."""
        cell = self.cell_for(task)
        result = self.train_only(cell) if task.kind == "train" else self.execute(cell)
        result.key = task.key
        return result

    def train_only(self, cell: Cell) -> Any:
        """Train (or find) the cell's checkpoint, so that the cells starting from it can go."""
        from oebench.plan import TaskResult

        self.prepare()
        start = time.perf_counter()
        try:
            noted = self._noted_weights(cell)  # a checkpoint already there: nothing to load
            _, seconds, cached = (None, noted[1], True) if noted else self.trained_model(cell)
        except UserError:
            raise
        except (Exception, SystemExit) as exc:  # the cell itself reports it again, by name
            return TaskResult(cell.key, failed=describe_exception(exc))
        wall = round(time.perf_counter() - start, 3)
        return TaskResult(
            cell.key,
            provenance={"trained": not cached, "train_seconds": seconds, "wall_seconds": wall},
        )

    def execute(self, cell: Cell) -> Any:
        """Run one cell and return its TaskResult: rows, scores, messages, provenance."""
        import os
        import socket

        from oebench.plan import TaskResult

        self.prepare()
        result = TaskResult(cell.key)
        sink, progress = self.score_sink, self.progress
        failures = len(self.failures)
        self.score_sink = lambda c, det, ds, values: result.scores.append((det, ds, values))
        self.progress = _Logged(progress, result.logs)
        start = time.perf_counter()
        try:
            result.rows = self._run_cell_safely(cell)
        finally:
            self.score_sink, self.progress = sink, progress
        result.failures = self.failures[failures:]
        if not result.rows:
            result.failed = self.failed_cells[-1]
        result.provenance = self.provenance(cell) | {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "wall_seconds": round(time.perf_counter() - start, 3),
        }
        return result

    def provenance(self, cell: Cell) -> dict[str, Any]:
        """Versions of oebench, torch and every plugin the cell uses, and the device."""
        import oebench
        from oebench.weights import torch_version

        return {
            "oebench_version": oebench.__version__,
            "torch_version": torch_version(),
            "plugins": self.plugin_versions(cell),
            # ``cache``: every output and score came from the cache; no device was used
            "device": str(self._device) if self._device is not None else "cache",
        }

    def plugin_versions(self, cell: Cell) -> dict[str, str | None]:
        """Name -> version of every plugin that registered a component this cell uses."""
        from oebench.plugins import get_plugin_manager

        bench = self.bench
        used = [("dataset", cell.id_ref.name), ("model", cell.model_ref.name)]
        used += [("detector", d.name) for d in bench.detectors]
        used += [("dataset", o.name) for o in bench.ood_datasets]
        training: Any = cell.training
        while training is not None:
            used.append(("objective", training.objective.name))
            if training.outliers is not None:
                used.append(("outlier source", training.outliers.name))
            training = next((t for t in bench.trainings if t.name == training.init), None)
        infos = get_plugin_manager().infos
        plugins = sorted({get_component(kind, name).plugin for kind, name in used})
        return {p: (infos[p].version if p in infos else None) for p in plugins}

    def run(
        self,
        skip: Callable[[Cell], bool] | None = None,
        on_cell: Callable[[Cell, list[dict]], None] | None = None,
    ) -> list[dict]:
        """Run every cell here (unless ``skip`` says it is done), as ``oebench run`` does with
        the local executor; ``on_cell`` receives each cell's rows, ``score_sink`` its scores."""
        from oebench.execute import LocalExecutor, drive

        rows: list[dict] = []

        def record(task: Any, result: Any) -> None:
            cell = self.cell_for(task)
            for detector, dataset, values in result.scores if self.score_sink else []:
                self.score_sink(cell, detector, dataset, values)
            rows.extend(result.rows)
            if on_cell is not None and result.rows:
                on_cell(cell, result.rows)

        skipped = (lambda task: skip(self.cell_for(task))) if skip else (lambda task: False)
        drive(self, LocalExecutor(), skipped, record)
        return rows

    def _run_cell_safely(self, cell: Cell) -> list[dict]:
        """``run_cell``; a cell that fails (or yields no rows) is reported, not stored."""
        try:
            rows = self.run_cell(cell)
        except PluginFailed as exc:
            rows, reason = [], str(exc)
        except UserError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin's bug must not stop the other cells
            rows, reason = [], describe_exception(exc, where=True)
        else:
            reason = "every detector failed" if not rows else ""
        if not rows:
            message = f"cell {self.describe(cell)}: {reason}; nothing is stored for it"
            self.failed_cells.append(message)
            self.progress.log(message)
        return rows

    @staticmethod
    def describe(cell: Cell) -> str:
        """``mnist-5k / small-cnn / oe / seed 0``."""
        t = cell.training.name
        return f"{cell.id_ref.key} / {cell.model_ref.key} / {t} / seed {cell.seed}"

    def _configure(self, cell: Cell) -> None:
        """Fill in the cell's configuration and its content key."""
        b = self.bench
        cell.config = {
            "benchmark": b.name,
            "seed": cell.seed,
            "id_dataset": cell.id_ref.config(),
            "model": cell.model_ref.config(),
            "training": self._training_config(cell.training),
            "detectors": [d.config() for d in b.detectors],
            "ood_datasets": [o.config() for o in b.ood_datasets],
            "protocol": b.protocol,
            "resamples": b.resamples,
            # only when not the default, so that existing cell keys stay valid
            **(
                {"fpr": [b.recall, b.fpr_rule]}
                if (b.recall, b.fpr_rule) != (0.95, "nearest")
                else {}
            ),
            "training_version": _training_version(),
            "names": self._names(cell),
            # the code of every component and the files of every data source the cell uses:
            # an edited detector or a replaced dataset file gives the cell another key
            "fingerprints": cell_fingerprints(b, cell, self.sources.files),
        }
        files = self.sources.model_files(cell.model_ref)
        if files:  # a file a model reads (a `checkpoint`'s weights) is keyed by its content
            cell.config["model_files"] = files
        cell.key = canonical_hash(cell.config)

    def _names(self, cell: Cell) -> dict[str, Any]:
        """The labels a cell's result rows carry, so that renaming one changes the key."""
        t = cell.training
        return {
            "id_dataset": cell.id_ref.key,
            "model": cell.model_ref.key,
            "training": t.name,
            "objective": t.objective.key,
            "outlier_source": t.outliers.key if t.outliers else "",
            "detectors": [d.key for d in self.bench.detectors],
            "ood_datasets": [o.key for o in self.bench.ood_datasets],
        }

    def _training_config(self, t: Training) -> dict[str, Any]:
        init = next((x for x in self.bench.trainings if x.name == t.init), None)
        return {
            "objective": t.objective.config(),
            "outliers": t.outliers.config() if t.outliers else None,
            # settings that cannot change the weights stay out of the checkpoint key
            "params": {
                k: v for k, v in t.params.items() if k not in ("eval_batch_size", "compile")
            },
            "init": self._training_config(init) if init else None,
        }

    # -- one cell ------------------------------------------------------------------------------
    def trained_model(self, cell: Cell) -> tuple[Any, float, bool]:
        """The cell's model with its trained weights: (model, training seconds, cached)."""
        import torch

        from oebench.models import Classifier
        from oebench.outputs import model_digest
        from oebench.weights import init_note_key

        self._check_models()
        source = self.sources.source("dataset", cell.id_ref)
        shape = tuple(source.shape)
        torch.manual_seed(cell.seed)
        net = create_model(cell.model_ref.name, source.num_classes, shape, **cell.model_ref.kwargs)
        model = Classifier(net, source.mean, source.std)
        self.notes.note_init(init_note_key(cell.config), model_digest(model))
        train_seconds, cached = self._train(cell, model, shape)
        return model, train_seconds, cached

    def _placed_model(self, cell: Cell, expect: str | None = None) -> tuple[Any, str, float, bool]:
        """The trained model on the device, in eval mode: (model, digest, seconds, cached).
        The digest is noted for the next run; ``expect``: the digest a note promised."""
        import torch

        from oebench.outputs import model_digest

        model, seconds, cached = self.trained_model(cell)
        model.to(self.device).eval()
        if self.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        digest = model_digest(model)
        if expect is not None and digest != expect:
            raise RuntimeError(
                f"the weights of {self.describe(cell)} hash to {digest}, not to the {expect} "
                f"noted in {self.notes.root}; delete that folder and run again"
            )
        key = self._checkpoint_keys.get(cell.key)
        if key in self._seconds:  # the checkpoint's own seconds (0 here when trained earlier)
            self.notes.note_trained(key, digest, self._seconds[key])
        return model, digest, seconds, cached

    def _noted_weights(self, cell: Cell) -> tuple[str, float] | None:
        """(digest, training seconds) of the cell's weights from the notes, without building
        the model; None when they cannot be trusted (see oebench.weights)."""
        from oebench.weights import init_note_key

        if not self.notes.enabled:
            return None
        init = self.notes.init_digest(init_note_key(cell.config))
        if init is None:
            return None
        if cell.training.params.get("evaluate_only"):
            return init, 0.0
        shape = tuple(self.sources.source("dataset", cell.id_ref).shape)
        return self.notes.trained(self._checkpoint_key(cell, init, shape))

    def run_cell(self, cell: Cell) -> list[dict]:
        from oebench.data import skipped_detectors

        source = self.sources.source("dataset", cell.id_ref)
        shape = tuple(source.shape)
        noted = self._noted_weights(cell)
        if noted is None:
            placed, digest, train_seconds, cached = self._placed_model(cell)
            model: Callable[[], Any] = lambda: placed  # noqa: E731
        else:  # the model is built only if some output or score is not cached
            (digest, train_seconds), cached = noted, True
            model = functools.cache(lambda: self._placed_model(cell, expect=digest)[0])

        start = time.perf_counter()
        id_test = ("dataset", cell.id_ref, "test", None, cell.seed)
        id_out = self._outputs(model, digest, id_test, shape)
        accuracy = 100.0 * float(np.mean(id_out.logits.argmax(1) == id_out.labels))
        warning = chance_warning(self.describe(cell), accuracy, source.num_classes)
        if warning:
            self.progress.log(warning)
        passes = self.progress.start(
            f"forward passes [{cell.training.name}, seed {cell.seed}]",
            len(self.bench.ood_datasets),
        )
        oods = {}
        for ref in self.bench.ood_datasets:
            norm = self.sources.norm("dataset", ref, source)
            where = ("dataset", ref, "test", shape, cell.seed, norm)
            oods[ref.key] = (where, self._outputs(model, digest, where, shape))
            passes(1, ref.key)
        skip = set(skipped_detectors(self.bench, getattr(source, "modality", "image")))
        detectors = [
            (ref, create_detector(ref.name, **ref.kwargs))
            for ref in self.bench.detectors
            if ref.key not in skip
        ]
        id_train = ("dataset", cell.id_ref, "train", None, cell.seed)
        train_out = functools.cache(lambda: self._outputs(model, digest, id_train, shape))

        rows = []
        fitting = self.progress.start(
            f"detectors: fit + score [{cell.training.name}, seed {cell.seed}]", len(detectors)
        )
        for ref, det in detectors:
            fitting(0, ref.key)
            try:
                det_rows, scores = self._detector_rows(
                    cell, ref, det, model, digest, (id_test, id_out), oods, train_out, accuracy
                )
            except UserError:
                raise
            except (Exception, SystemExit) as exc:  # a broken detector must not take others down
                self._detector_failed(cell, ref, exc)
                fitting(1)
                continue
            fitting(1)
            rows += det_rows
            if self.score_sink is not None:
                for dataset_key, values in scores:
                    self.score_sink(cell, ref.key, dataset_key, values)
        score_seconds = time.perf_counter() - start
        calib = _calibration(id_out, {k: out for k, (_, out) in oods.items()})
        for position, row in enumerate(rows):
            row.update(calib.get(row["ood_dataset"], calib["mean"]))
            row.update(
                train_seconds=round(train_seconds, 3),
                score_seconds=round(score_seconds, 3),
                trained=not cached,
                cell_index=cell.index,
                row_index=position,
            )
        return rows

    def _detector_rows(
        self,
        cell: Cell,
        ref: Ref,
        det: Detector,
        model: Callable[[], Any],
        digest: str,
        id_data: tuple,
        oods: dict,
        train_out: Callable[[], Outputs],
        accuracy: float,
    ) -> tuple[list[dict], list[tuple[str, np.ndarray]]]:
        """Fit one detector, score ID and every OOD set: its rows and its score arrays.
        Scores are cached; the detector is fitted only when some score is not."""
        shape = tuple(self.sources.source("dataset", cell.id_ref).shape)
        # cached scores depend on the detector's options, its code and what it was fitted to
        made_by = {
            "options": det.config(),  # before fitting, which may add attributes
            "code": code_digest(get_component("detector", ref.name).factory),
            "fit": self.sources.fingerprint("dataset", cell.id_ref, "train", None, cell.seed)
            if "fit" in det.needs
            else None,
        }
        prepare = functools.cache(lambda: self._fit(det, ref, model, cell, shape, train_out))
        id_scores = self._score(det, model, digest, id_data[1], id_data[0], shape, made_by, prepare)
        scores, rows, per_set = [("id", id_scores)], [], []
        for ood_key, (where, out) in oods.items():
            ood_scores = self._score(det, model, digest, out, where, shape, made_by, prepare)
            scores.append((ood_key, ood_scores))
            metrics = checked_metrics(
                self._evaluate(id_scores, ood_scores, cell.seed, ood_key), ood_key
            )
            per_set.append(metrics)
            rows.append(
                self._row(cell, ref, ood_key, metrics, accuracy, len(id_scores), len(ood_scores))
            )
        mean = {m: float(np.mean([p[m] for p in per_set])) for m in per_set[0]}
        rows.append(self._row(cell, ref, "mean", mean, accuracy, len(id_scores), 0))
        return rows, scores

    def _detector_failed(self, cell: Cell, ref: Ref, exc: BaseException) -> None:
        """Record a detector that raised, naming it and the plugin that registered it."""
        plugin = get_component("detector", ref.name).plugin
        message = (
            f"detector {ref.key!r} (plugin {plugin!r}) failed on {self.describe(cell)}: "
            f"{describe_exception(exc)}"
        )
        self.failures.append(message)
        self.progress.log(message)

    def _training_data_fingerprints(self, t: Training, cell: Cell, shape: tuple) -> list[str]:
        """Fingerprints of the ID training split and outliers behind a training and its init."""
        prints = [self.sources.fingerprint("dataset", cell.id_ref, "train", None, cell.seed)]
        if t.outliers is not None:
            prints.append(
                self.sources.fingerprint("outlier source", t.outliers, "train", shape, cell.seed)
            )
        init = next((x for x in self.bench.trainings if x.name == t.init), None)
        return prints + (self._training_data_fingerprints(init, cell, shape) if init else [])

    def _train(self, cell: Cell, model: Any, shape: tuple) -> tuple[float, bool]:
        """Load the cell's weights from the checkpoint cache, or train them; returns (s, cached)."""
        from oebench.outputs import model_digest

        t = cell.training
        if t.params.get("evaluate_only"):
            return 0.0, True  # the model's own weights (e.g. `checkpoint`), never trained
        key = self._checkpoint_key(cell, model_digest(model), shape)
        self._checkpoint_keys[cell.key] = key
        if key in self._states:
            model.load_state_dict(self._states[key])
            return 0.0, True
        with cache_lock(self.checkpoints, key):  # workers sharing a cache train it once
            return self._load_or_train(key, cell, model, shape)

    def _checkpoint_key(self, cell: Cell, init_weights: str, shape: tuple) -> str:
        """What the cell's trained weights are cached under: all that makes them."""
        return canonical_hash(
            {
                "version": _training_version(),
                "seed": cell.seed,
                "id": cell.config["id_dataset"],
                "model": cell.config["model"],
                "model_files": cell.config.get("model_files"),
                # the weights training starts from (a checkpoint's, or the seeded init)
                "init_weights": init_weights,
                "training": cell.config["training"],
                "data": self._training_data_fingerprints(cell.training, cell, shape),
                # the model's, the objectives' (init chain included) and the training loop's own
                # code; never a detector's, so editing a detector retrains nothing
                "code": weights_code(cell.config["fingerprints"]),
            }
        )

    def _load_or_train(self, key: str, cell: Cell, model: Any, shape: tuple) -> tuple[float, bool]:
        """The checkpoint ``key`` from the cache, else trained now and saved."""
        from oebench.training import train

        t = cell.training
        saved = self.checkpoints.load(key)
        if saved is not None:
            model.load_state_dict(saved["state_dict"])
            self._states[key] = saved["state_dict"]
            self._seconds[key] = float(saved.get("seconds", 0.0))
            return self._seconds[key], True
        if t.init is not None:
            init_cell = Cell(
                cell.seed,
                cell.id_ref,
                cell.model_ref,
                next(x for x in self.bench.trainings if x.name == t.init),
            )
            self._configure(init_cell)
            self._train(init_cell, model, shape)
        train_set = self.sources.load("dataset", cell.id_ref, "train", None, cell.seed)
        objective = create_objective(t.objective.name, **t.objective.kwargs)
        outliers = None
        if t.outliers is not None:
            outliers = self.sources.load("outlier source", t.outliers, "train", shape, cell.seed)
        params = t.params
        steps = self.progress.start(
            f"train {cell.model_ref.key} on {cell.id_ref.key} [{t.name}, seed {cell.seed}]",
            params["epochs"]
            * -(
                -min(len(train_set), params.get("max_train") or len(train_set))
                // params["batch_size"]
            ),
        )
        with torch_threads(params.get("threads", 0)):  # same weights on any machine/executor
            seconds = train(
                model,
                train_set,
                objective,
                params,
                cell.seed,
                shape,
                self.device,
                outliers,
                on_step=lambda step, total: steps(1),
                on_stats=lambda loss, acc: steps(0, f"loss {loss:.3f}, train acc {acc:.1f}%"),
                partial=self.checkpoints.partial(key),  # per-epoch state: resumable
            )
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.checkpoints.save(key, state, seconds)
        self._states[key] = state
        self._seconds[key] = seconds
        return seconds, False

    def _fit(
        self,
        det: Detector,
        ref: Ref,
        model: Callable[[], Any],
        cell: Cell,
        shape: tuple,
        train_out: Callable[[], Outputs],
    ) -> None:
        """Fit a detector: ID training outputs and the head as it needs them, then the ID
        *training* images, batch by batch, to a model detector's ``fit_inputs``."""
        from oebench.outputs import iterate_batches

        if det.needs & {"fit", "head"}:
            det.fit(
                train_out() if "fit" in det.needs else None,
                self._head(model(), ref) if "head" in det.needs else None,
            )
        if {"model", "fit"} <= det.needs and callable(getattr(det, "fit_inputs", None)):
            data = self.sources.load("dataset", cell.id_ref, "train", None, cell.seed)
            batches = iterate_batches(data, self._eval_batch(), shape, self.device)
            det.fit_inputs(model(), (x for x, _ in batches))

    def _outputs(
        self, model: Callable[[], Any], digest: str, where: tuple, shape: tuple
    ) -> Outputs:
        """Logits and features of the model on the split ``where`` names: cached, else one
        pass (``model()`` builds the model only then)."""
        from oebench.outputs import forward

        key = canonical_hash(
            {"model": digest, "data": self.sources.fingerprint(*where), "shape": shape}
        )
        return self.outputs.get_or_compute(
            key,
            lambda: forward(
                model(), self.sources.load(*where), shape, self.device, self._eval_batch()
            ),
        )

    def _eval_batch(self) -> int:
        """``eval_batch_size`` of the benchmark, else 500 on CPU and 2048 on a GPU."""
        size = self.bench.defaults.get("eval_batch_size")
        return int(size) if size else (2048 if self.device.type == "cuda" else 500)

    def _score(
        self,
        det: Detector,
        model: Callable[[], Any],
        digest: str,
        out: Outputs,
        where: tuple,
        shape: tuple,
        made_by: dict,
        prepare: Callable[[], None],
    ) -> np.ndarray:
        """A detector's scores, checked (one real number, ±inf allowed, per sample) and cached
        under the weights, the data and ``made_by``; ``prepare()`` fits it on a miss."""
        from oebench.contracts import ContractError, checked_scores

        n = len(out.logits)

        def compute() -> Outputs:
            prepare()
            try:
                raw = self._raw_scores(det, model, out, where, shape)
                return Outputs(checked_scores(raw, n)[:, None])
            except ContractError as exc:
                raise ContractError(f"{exc} on {where[1].key} ({where[2]})") from None

        key = canonical_hash(
            {
                "model": digest,
                "data": self.sources.fingerprint(*where),
                "shape": shape,
                "made_by": made_by,
            }
        )
        return checked_scores(self.outputs.get_or_compute(key, compute).logits[:, 0], n)

    def _raw_scores(
        self, det: Detector, model: Callable[[], Any], out: Outputs, where: tuple, shape: tuple
    ) -> Any:
        """What the fitted detector returns: from the outputs, or from the model's inputs."""
        from oebench.outputs import iterate_batches

        if "model" not in det.needs:
            return det.score(out)
        data = self.sources.load(*where)
        batches = iterate_batches(data, self._eval_batch(), shape, self.device)
        return det.score_inputs(model(), (x for x, _ in batches))

    @staticmethod
    def _head(model: Any, ref: Ref) -> Head:
        fc = model.head_linear()
        if fc is None:
            raise UserError(f"detector {ref.key!r} needs the model's final nn.Linear named 'fc'")
        return Head(
            fc.weight.detach().cpu().double().numpy(),
            fc.bias.detach().cpu().double().numpy()
            if fc.bias is not None
            else np.zeros(fc.out_features),
        )

    def _evaluate(
        self, id_scores: np.ndarray, ood_scores: np.ndarray, seed: int, ood_key: str
    ) -> dict[str, float]:
        """Metrics under the benchmark's protocol (``full``, or ``oe-paper`` re-sampling)."""
        b = self.bench
        if b.protocol == "full":
            result = ood_metrics(id_scores, ood_scores, b.recall, b.fpr_rule)
            return result | {"aupr_baseline": _ap_baseline(len(id_scores), len(ood_scores))}
        n = max(1, len(id_scores) // 5)
        rng = np.random.default_rng([seed, zlib.crc32(ood_key.encode())])
        runs = []
        for _ in range(b.resamples):
            idx = rng.choice(len(ood_scores), size=min(n, len(ood_scores)), replace=False)
            runs.append(ood_metrics(id_scores, ood_scores[idx], b.recall, b.fpr_rule))
        result = {m: float(np.mean([r[m] for r in runs])) for m in METRICS}
        result.update({f"{m}_std": float(np.std([r[m] for r in runs])) for m in METRICS})
        result["aupr_baseline"] = _ap_baseline(len(id_scores), min(n, len(ood_scores)))
        return result

    def _row(
        self, cell: Cell, det: Ref, ood: str, metrics: dict, accuracy: float, n_id: int, n_ood: int
    ) -> dict:
        t = cell.training
        return {
            "benchmark": self.bench.name,
            "id_dataset": cell.id_ref.key,
            "model": cell.model_ref.key,
            "training": t.name,
            "objective": t.objective.key,
            "outlier_source": t.outliers.key if t.outliers else "",
            "detector": det.key,
            "ood_dataset": ood,
            "seed": cell.seed,
            **{m: metrics[m] for m in metrics},
            "id_accuracy": accuracy,
            "protocol": self.bench.protocol,
            "recall": self.bench.recall,
            "fpr_rule": self.bench.fpr_rule,
            "n_id": n_id,
            "n_ood": n_ood,
            "cell": cell.key,
        }


class _Logged(Progress):
    """A progress sink that also keeps every logged line (for a task's result)."""

    def __init__(self, inner: Progress, lines: list[str]):
        self.inner, self.lines = inner, lines

    def start(self, description: str, total: int) -> Callable[..., None]:
        return self.inner.start(description, total)

    def log(self, message: str) -> None:
        self.lines.append(message)
        self.inner.log(message)


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths (``training/params/lr``) where two JSON-like configurations differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if a == b else [path.lstrip("/") or "configuration"]


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op CPU threads (0: leave torch's choice), then restore."""
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_lock(cache: Any, key: str) -> Any:
    """An inter-process lock on a cache entry (a no-op for a disabled cache)."""
    if not cache.enabled:
        return contextlib.nullcontext()
    from filelock import FileLock

    path = Path(cache.path(key))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable cache: no one can save it, so no one waits for it
        return contextlib.nullcontext()
    return FileLock(str(path) + ".lock")


def _calibration(id_out: Outputs, oods: dict[str, Outputs]) -> dict[str, dict[str, float]]:
    """Per OOD set: ID calibration (ECE, RMS, MAD) and the paper's mixed ID + OOD RMS / MAD;
    under ``mean``, the mean over OOD sets (whole OOD sets, whatever the protocol; see
    oebench.calibration)."""
    from oebench.calibration import calibration, mixed_calibration

    own = calibration(id_out.logits, id_out.labels)
    per = {k: own | mixed_calibration(id_out.logits, id_out.labels, out.logits)
           for k, out in oods.items()}  # fmt: skip
    keys = ("rms_calib_mixed", "mad_calib_mixed")
    mean = {k: float(np.mean([p[k] for p in per.values()])) for k in keys} if per else {}
    return per | {"mean": own | mean}


def _ap_baseline(n_id: int, n_ood: int) -> float:
    """The AUPR-Out of a detector that guesses: the OOD share, in % (the reference's baseline)."""
    return 100.0 * n_ood / (n_ood + n_id)


# fingerprints live in oebench.fingerprints; the runner's names stay for existing callers
from oebench.fingerprints import (  # noqa: E402
    _file_digest,  # noqa: F401
    cell_fingerprints,
    code_digest,
    weights_code,
)
from oebench.fingerprints import training_code as _training_code  # noqa: E402,F401


def _training_version() -> int:
    from oebench.training import TRAINING_VERSION

    return TRAINING_VERSION
