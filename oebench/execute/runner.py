"""Runs a benchmark matrix: train (or load) each model once, one forward pass per dataset,
every detector on the cached outputs, metrics per OOD set."""

from __future__ import annotations

import functools
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from oebench.bench.matrix import Benchmark, Cell, Ref, Training, canonical_hash
from oebench.bench.validation import chance_warning
from oebench.contracts.checks import checked_metrics
from oebench.contracts.detector import Detector, Head, Outputs
from oebench.core.failures import describe_exception
from oebench.core.progress import Progress
from oebench.errors import PluginFailed, UserError
from oebench.execute.cell_models import TrainedModels, training_version
from oebench.execute.sources import Sources
from oebench.keys.fingerprints import cell_fingerprints, code_digest
from oebench.metrics import METRICS, ood_metrics
from oebench.registry.lookup import (
    check_options,
    create_detector,
    create_objective,
    get_component,
)


def resolve_device(name: str = "auto") -> Any:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)


class Runner:
    def __init__(
        self,
        bench: Benchmark,
        device: str = "auto",
        progress: Progress | None = None,
        use_cache: bool = True,
        cache_root: Any = None,
    ):
        from oebench.execute.outputs import OutputCache

        self.bench = bench
        self.device_name = device
        self.progress = progress or Progress()
        self.outputs = OutputCache(cache_root, enabled=use_cache)
        #: each cell's model: built, trained or loaded, and its weights' digest
        self.models = TrainedModels(self, use_cache, cache_root)
        self.checkpoints = self.models.checkpoints
        self._prepared = False
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
        from oebench.bench.validation import check_benchmark
        from oebench.contracts.data import check_modalities, skipped_detectors

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
        if any(self.models.noted(self.cell_for(task)) is None for task in tasks):
            self.models.check()

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
        from oebench.bench.plan import TaskResult

        self.prepare()
        start = time.perf_counter()
        try:
            noted = self.models.noted(cell)  # a checkpoint already there: nothing to load
            _, seconds, cached = (None, noted[1], True) if noted else self.models.build(cell)
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

        from oebench.bench.plan import TaskResult

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
        from oebench.keys.weights import torch_version

        return {
            "oebench_version": oebench.__version__,
            "torch_version": torch_version(),
            "plugins": self.plugin_versions(cell),
            # ``cache``: every output and score came from the cache; no device was used
            "device": str(self._device) if self._device is not None else "cache",
        }

    def plugin_versions(self, cell: Cell) -> dict[str, str | None]:
        """Name -> version of every plugin that registered a component this cell uses."""
        from oebench.registry.plugins import get_plugin_manager

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
        from oebench.execute.drive import LocalExecutor, drive

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
            "training_version": training_version(),
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
    def run_cell(self, cell: Cell) -> list[dict]:
        from oebench.contracts.data import skipped_detectors

        source = self.sources.source("dataset", cell.id_ref)
        shape = tuple(source.shape)
        noted = self.models.noted(cell)
        if noted is None:
            placed, digest, train_seconds, cached = self.models.placed(cell)
            model: Callable[[], Any] = lambda: placed  # noqa: E731
        else:  # the model is built only if some output or score is not cached
            (digest, train_seconds), cached = noted, True
            model = functools.cache(lambda: self.models.placed(cell, expect=digest)[0])

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

    def trained_model(self, cell: Cell) -> tuple[Any, float, bool]:
        """The cell's model with its trained weights: (model, training seconds, cached)."""
        return self.models.build(cell)

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
        from oebench.execute.outputs import iterate_batches

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
        from oebench.execute.outputs import forward

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
        from oebench.contracts.checks import ContractError, checked_scores

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
        from oebench.execute.outputs import iterate_batches

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
