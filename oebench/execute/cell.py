"""One cell's work: its model (trained, loaded or only noted), one forward pass per test set,
every detector, calibration; a failing detector or plugin is reported, never stored."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from oebench.bench.matrix import Cell, canonical_hash
from oebench.bench.plan import TaskResult
from oebench.bench.validation import chance_warning
from oebench.contracts.detector import Outputs
from oebench.core.failures import describe_exception
from oebench.errors import PluginFailed, UserError
from oebench.execute.cell_models import TrainedModels
from oebench.execute.context import Context
from oebench.execute.detect import (
    CellData,
    DetectorRun,
    DetectorTampered,
    eval_set_wheres,
    id_test_where,
)
from oebench.execute.outputs import OutputCache
from oebench.registry.lookup import create_detector, get_component


class CellWork:
    """Runs cells in this process: each returns a TaskResult (rows, scores, messages)."""

    def __init__(self, context: Context, outputs: OutputCache, models: TrainedModels):
        self.context = context
        self.outputs = outputs
        self.models = models
        self.detectors = DetectorRun(context, outputs)
        #: the shards the forward passes of the cell at hand are split into (``Task.shard``)
        self.shards = 1

    def train_only(self, cell: Cell) -> TaskResult:
        """Train (or find) the cell's checkpoint, so that the cells starting from it can go."""
        start = time.perf_counter()
        try:
            noted = self.models.noted(cell)  # a checkpoint already there: nothing to load
            _, seconds, cached = (None, noted[1], True) if noted else self.models.build(cell)
        except PluginFailed as exc:  # a broken plugin, a diverged training: its cells say so
            return TaskResult(cell.key, failed=str(exc))
        except UserError:
            raise
        except (Exception, SystemExit) as exc:  # the cell itself reports it again, by name
            return TaskResult(cell.key, failed=describe_exception(exc))
        wall = round(time.perf_counter() - start, 3)
        return TaskResult(
            cell.key,
            provenance={"trained": not cached, "train_seconds": seconds, "wall_seconds": wall},
        )

    def execute(self, cell: Cell) -> TaskResult:
        """Run one cell: its rows, score arrays, messages and provenance."""
        result = TaskResult(cell.key)
        start = time.perf_counter()
        try:
            result.rows = self._rows(cell, result)
            reason = "every detector failed" if not result.rows else ""
        except PluginFailed as exc:
            reason = str(exc)
        except UserError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin's bug must not stop the other cells
            reason = describe_exception(exc, where=True)
        if not result.rows:
            result.rows, result.scores = [], []
            result.failed = f"cell {cell.label}: {reason}; nothing is stored for it"
            self._log(result, result.failed)
        result.provenance = self.provenance(cell) | {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "wall_seconds": round(time.perf_counter() - start, 3),
        }
        return result

    def ensemble(self, cell: Cell, members: list[Cell]) -> TaskResult:
        """Run an ensemble cell (``oebench.execute.ensemble``); a failure is reported by the
        cell's name and stores nothing, as a cell's."""
        from oebench.execute.ensemble import ensemble_rows

        try:
            return ensemble_rows(self, cell, members)
        except UserError:
            raise
        except (Exception, SystemExit) as exc:
            result = TaskResult(cell.key)
            reason = str(exc) if isinstance(exc, PluginFailed) else describe_exception(exc)
            result.failed = f"cell {cell.label}: {reason}; nothing is stored for it"
            self._log(result, result.failed)
            return result

    def _log(self, result: TaskResult, message: str) -> None:
        """Say ``message`` now and keep it with the result (the driver of a remote worker
        shows it)."""
        result.logs.append(message)
        self.context.progress.log(message)

    def _rows(self, cell: Cell, result: TaskResult) -> list[dict]:
        """Every detector's rows of the cell (its scores go into ``result``)."""
        from oebench.bench.modalities import skipped_detectors

        data, train_seconds, cached = self._data(cell, result)
        ctx = self.context
        start = time.perf_counter()
        source = ctx.sources.source("dataset", cell.id_ref)
        skip = set(skipped_detectors(ctx.bench, getattr(source, "modality", "image")))
        refs = [ref for ref in ctx.bench.detectors if ref.key not in skip]
        detectors = [(ref, create_detector(ref.name, **ref.kwargs)) for ref in refs]
        rows: list[dict] = []
        fitting = ctx.progress.start(
            f"detectors: fit + score [{cell.training.name}, seed {cell.seed}]", len(detectors)
        )
        for ref, det in detectors:
            fitting(0, ref.key)
            try:
                det_rows, scores = self.detectors.rows(data, ref, det)
            except UserError:
                raise
            except (Exception, SystemExit) as exc:  # a broken detector must not take others down
                plugin = get_component("detector", ref.name).plugin
                message = (
                    f"detector {ref.key!r} (plugin {plugin!r}) {exc}; its rows of {cell.label} "
                    "are dropped, the other detectors' are kept"
                    if isinstance(exc, DetectorTampered)
                    else f"detector {ref.key!r} (plugin {plugin!r}) failed on {cell.label}: "
                    f"{describe_exception(exc)}"
                )
                result.failures.append(message)
                self._log(result, message)
                fitting(1)
                continue
            fitting(1)
            rows += det_rows
            result.scores += [(ref.key, dataset, values) for dataset, values in scores]
        score_seconds = time.perf_counter() - start + data.forward_seconds
        calib = _calibration(data.id_test[1], {k: out for k, (_, out) in data.oods.items()})
        shifted = _shifted([out for _, out in data.csid.values()])
        for position, row in enumerate(rows):
            row.update(calib.get(row["ood_dataset"], calib["mean"]), **shifted)
            row.update(
                train_seconds=round(train_seconds, 3),
                score_seconds=round(score_seconds, 3),
                trained=not cached,
                cell_index=cell.index,
                row_index=position,
            )
        return rows

    def _data(self, cell: Cell, result: TaskResult) -> tuple[CellData, float, bool]:
        """The cell's model and the outputs of its test sets: (data, train seconds, cached)."""
        ctx = self.context
        source = ctx.sources.source("dataset", cell.id_ref)
        shape = tuple(source.shape)
        model, digest, train_seconds, cached = self._model(cell)
        start = time.perf_counter()
        id_test = id_test_where(cell)
        id_out = self._outputs(model, digest, id_test, shape)
        self.models.check_logits(cell, id_out, id_test)  # NaN logits: the model's, no detector's
        accuracy = 100.0 * float(np.mean(id_out.logits.argmax(1) == id_out.labels))
        warning = chance_warning(cell.label, accuracy, source.num_classes)
        if warning:
            self._log(result, warning)
        passes = ctx.progress.start(
            f"forward passes [{cell.training.name}, seed {cell.seed}]",
            len(ctx.bench.ood_datasets) + len(ctx.bench.csid_datasets),
        )
        sets = {}
        for ref, where in eval_set_wheres(ctx.sources, ctx.bench, cell, source, shape):
            sets[ref.key] = (where, self._outputs(model, digest, where, shape))
            self.models.check_logits(cell, sets[ref.key][1], where)
            passes(1, ref.key)
        csid_keys = [ref.key for ref in ctx.bench.csid_datasets]
        oods = {k: v for k, v in sets.items() if k not in csid_keys}
        outputs_of = lambda where: self._outputs(model, digest, where, shape)  # noqa: E731
        data = CellData(
            cell, shape, model, digest, (id_test, id_out), oods, outputs_of, accuracy,
            forward_seconds=time.perf_counter() - start,
            csid={k: sets[k] for k in csid_keys},
        )  # fmt: skip
        return data, train_seconds, cached

    def _model(self, cell: Cell) -> tuple[Callable[[], Any], str, float, bool]:
        """The cell's model (a call builds it, only where some output or score is not cached),
        its weights' digest, its training seconds and whether its checkpoint was cached."""
        noted = self.models.noted(cell)
        if noted is None:
            placed, digest, train_seconds, cached = self.models.placed(cell)
            return (lambda: placed), digest, train_seconds, cached
        digest, train_seconds = noted
        build = functools.cache(lambda: self.models.placed(cell, expect=digest)[0])
        return build, digest, train_seconds, True

    def forward_shard(self, cell: Cell, shard: tuple[int, int]) -> TaskResult:
        """A ``forward`` task: shard ``i`` of ``n`` of every forward pass the cell makes (its
        ID training split too where a detector fits), into the cache for the cell to join."""
        from oebench.execute.detect import train_where

        start = time.perf_counter()
        ctx = self.context
        source = ctx.sources.source("dataset", cell.id_ref)
        shape = tuple(source.shape)
        try:
            model, digest, _, _ = self._model(cell)
            sets = eval_set_wheres(ctx.sources, ctx.bench, cell, source, shape)
            wheres = [id_test_where(cell)] + [where for _, where in sets]
            if any("fit" in create_detector(r.name, **r.kwargs).needs for r in ctx.bench.detectors):
                wheres.append(train_where(cell))
            for where in wheres:
                if self.outputs.path(self._key(digest, where, shape)).exists():
                    continue  # joined already
                rows = self._shard_rows(where, shard)
                self._computed(model, self._key(digest, where, shape, rows), where, shape, rows)
        except UserError:
            raise
        except (Exception, SystemExit) as exc:  # its cell computes the shard again, and says
            return TaskResult(cell.key, failed=describe_exception(exc))
        return TaskResult(cell.key, provenance={"wall_seconds": time.perf_counter() - start})

    def _shard_rows(self, where: tuple, shard: tuple[int, int]) -> range:
        """The rows of shard ``i`` of ``n`` of the split ``where``: whole evaluation batches, so
        that every batch holds the images it holds unsplit (and gives the same numbers)."""
        from oebench.execute.outputs import shard_rows

        return shard_rows(len(self.context.sources.load(*where)), self.context.eval_batch(), *shard)

    def _key(self, digest: str, where: tuple, shape: tuple, rows: range | None = None) -> str:
        data = self.context.sources.fingerprint(*where)
        part = {} if rows is None else {"rows": [rows.start, rows.stop]}
        return canonical_hash({"model": digest, "data": data, "shape": shape} | part)

    def _computed(
        self, model: Callable[[], Any], key: str, where: tuple, shape: tuple, rows: range | None
    ) -> Outputs:
        """The outputs of ``rows`` (None: all) of the split ``where``: cached, else one pass."""
        from oebench.execute.outputs import forward

        ctx = self.context

        def compute() -> Outputs:
            split = ctx.sources.load(*where)
            part = "" if rows is None else f" rows {rows.start}-{rows.stop}"
            with ctx.progress.activity(f"forward pass: {where[1].key} {where[2]}{part}"):
                return forward(model(), split, shape, ctx.device, ctx.eval_batch(),
                               self.outputs.spill(), rows)  # fmt: skip

        return self.outputs.get_or_compute(key, compute)

    def _outputs(
        self, model: Callable[[], Any], digest: str, where: tuple, shape: tuple
    ) -> Outputs:
        """Logits and features of the model on the split ``where`` names: cached, else one
        pass (``model()`` builds the model only then), or the shards' passes joined."""
        from oebench.execute.outputs import join_outputs

        key = self._key(digest, where, shape)
        if self.shards == 1:
            return self._computed(model, key, where, shape, None)

        parts: list[str] = []

        def joined() -> Outputs:
            outs = []
            for i in range(self.shards):
                rows = self._shard_rows(where, (i, self.shards))
                parts.append(self._key(digest, where, shape, rows))
                outs.append(self._computed(model, parts[-1], where, shape, rows))
            return join_outputs(outs, self.outputs.spill())

        found = self.outputs.get_or_compute(key, joined)
        for part in parts:
            self.outputs.discard(part)  # the whole holds them again
        return found

    def provenance(self, cell: Cell) -> dict[str, Any]:
        """Versions of oebench, torch and every plugin the cell uses, the device, and the
        platforms that decide the last bits (``oebench.core.platforms.cell_platform``): the
        one its weights were trained on (maybe another process's or machine's, from the
        checkpoint or its note) and this process's, where a model ran here."""
        import sys

        from oebench.core.platforms import cell_platform, platform_info
        from oebench.core.versions import VERSION
        from oebench.keys.weights import torch_version

        device = self.context.device_used
        # ``cache``: every output and score came from the cache; no device was used
        here = device != "cache" and "torch" in sys.modules
        scoring = platform_info(self.context.device) if here else None
        audit = self.models.overlap_report(cell)  # where this process trained the weights
        return {
            "oebench_version": VERSION,
            "torch_version": torch_version(),
            "plugins": self.plugin_versions(cell),
            "device": device,
            "platform": cell_platform(self.models.training_platform(cell), scoring),
        } | ({"overlap": audit} if audit is not None else {})

    def plugin_versions(self, cell: Cell) -> dict[str, str | None]:
        """Name -> version of every plugin that registered a component this cell uses."""
        from oebench.registry.plugins import get_plugin_manager

        bench = self.context.bench
        used = [("dataset", cell.id_ref.name), ("model", cell.model_ref.name)]
        used += [("detector", d.name) for d in bench.detectors]
        used += [("dataset", o.name) for o in bench.ood_datasets]
        for training in bench.lineage(cell.training):
            used.append(("objective", training.objective.name))
            if training.outliers is not None:
                used.append(("outlier source", training.outliers.name))
        infos = get_plugin_manager().infos
        plugins = sorted({get_component(kind, name).plugin for kind, name in used})
        return {p: (infos[p].version if p in infos else None) for p in plugins}


def _shifted(outs: list[Outputs]) -> dict[str, float | int]:
    """The ID classifier on the covariate-shifted ID sets, all together: accuracy (%), ECE and
    the count (nothing without such sets)."""
    if not outs:
        return {}
    from oebench.calibration import calibration

    logits = np.concatenate([o.logits for o in outs])
    labels = np.concatenate([o.labels for o in outs])
    accuracy = 100.0 * float(np.mean(logits.argmax(1) == labels))
    return {"csid_accuracy": accuracy, "csid_ece": calibration(logits, labels)["ece"],
            "n_csid": len(labels)}  # fmt: skip


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
