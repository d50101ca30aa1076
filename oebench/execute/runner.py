"""A run in one process: the benchmark checked once, its cells keyed once, planned as tasks,
and each task executed here (by the driver's local executor or on a cluster's worker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from oebench.bench.matrix import Benchmark, Cell
from oebench.bench.plan import Plan, Task, TaskResult, make_plan
from oebench.core.progress import Progress, reporting_to
from oebench.errors import UserError
from oebench.execute.cell import CellWork
from oebench.execute.cell_models import TrainedModels
from oebench.execute.context import Context
from oebench.execute.engine import engine
from oebench.execute.outputs import OutputCache
from oebench.execute.sources import Sources
from oebench.keys.cells import differences, ensemble_cells, keyed, matrix_cells


class Runner:
    """Runs a benchmark's tasks here; what the driver (``oebench.execute.drive``) works with."""

    def __init__(
        self,
        bench: Benchmark,
        device: str = "auto",
        progress: Progress | None = None,
        use_cache: bool = True,
        cache_root: Any = None,
        shards: int = 1,
        memory_limit: int | None = None,
    ):
        if shards > 1 and not use_cache:
            raise UserError("--shards needs the cache, where the shards meet: drop --no-cache")
        self.bench = bench
        #: each cell's forward passes in this many ``forward`` tasks (``make_plan``)
        self.shards = shards
        #: bytes a cell may use at its peak (``--memory``; None: what the machine has free)
        self.memory_limit = memory_limit
        #: whether cells run on this machine, so that its free memory bounds them (not on a
        #: cluster elsewhere, whose workers' memory is not known here)
        self.runs_here = True
        self.device_name = device
        self.use_cache = use_cache
        self.context = Context(bench, Sources(bench), progress or Progress(), device)
        #: the datasets and outlier sources this run reads, each made and loaded once
        self.sources = self.context.sources
        self.outputs = OutputCache(cache_root, enabled=use_cache)
        #: each cell's model: built, trained or loaded, and its weights' digest
        self.models = TrainedModels(self.context, self.sibling, use_cache, cache_root)
        self.checkpoints = self.models.checkpoints
        self.work = CellWork(self.context, self.outputs, self.models)
        #: one message per detector that raised; its rows are missing from the results
        self.failures: list[str] = []
        #: one message per cell that produced no result (not stored; run again to retry)
        self.failed_cells: list[str] = []
        self._prepared = False
        self._matrix: list[Cell] | None = None

    @property
    def progress(self) -> Progress:
        return self.context.progress

    @progress.setter
    def progress(self, progress: Progress) -> None:
        self.context.progress = progress

    @property
    def device(self) -> Any:
        return self.context.device

    @property
    def cache_root(self) -> str | None:
        """The cache folder workers share (None when caching is off)."""
        return str(self.checkpoints.root.parent) if self.checkpoints.enabled else None

    # -- the matrix --------------------------------------------------------------------------
    @property
    def matrix(self) -> list[Cell]:
        """Every cell in run order, configured and keyed once per runner."""
        if self._matrix is None:
            with self.progress.activity("keying the cells: code and data fingerprints"):
                cells = matrix_cells(self.bench, self.sources, engine())
                self._matrix = cells + ensemble_cells(self.bench, cells)
        return self._matrix

    def cells(self) -> Iterator[Cell]:
        return iter(self.matrix)

    def sibling(self, cell: Cell, training: str) -> Cell:
        """The keyed cell of ``cell``'s seed, ID dataset and model with another training."""
        where = (cell.seed, cell.id_ref, cell.model_ref, training)
        return next(
            c for c in self.matrix if (c.seed, c.id_ref, c.model_ref, c.training.name) == where
        )

    def plan(self) -> Plan:
        return make_plan(self.bench, self.matrix, self.shards)

    # -- before any work ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the benchmark, once, before the first task."""
        if not self._prepared:
            with self.progress.activity("checking the benchmark: names, options, data files"):
                self.validate()
            if self.device_name not in ("auto", "cpu"):  # `--device cuda` without a GPU: now
                _ = self.device
            self._prepared = True

    def validate(self) -> None:
        """Check every name, option and data file before any work starts."""
        from oebench.bench.modalities import check_modalities, skipped_detectors
        from oebench.bench.validation import check_benchmark

        check_modalities(self.bench)  # text data with an image model etc.: one line, first
        check_benchmark(self.bench, models=False)  # every problem at once, in one message
        b = self.bench
        for ref in b.id_datasets[:1]:  # e.g. input-gradient detectors (ODIN) on text
            kind = getattr(self.sources.source("dataset", ref), "modality", "image")
            for key in skipped_detectors(b, kind):
                self.progress.log(f"note: detector {key!r} does not apply to {kind} data: skipped")
        for kind, ref in self.sources.all():
            self.sources.files(kind, ref)  # missing files fail here, before any training
        for ref in b.ood_datasets:  # network-space sets vs every ID normalisation
            check = getattr(self.sources.source("dataset", ref), "check_norm", None)
            for id_ref in b.id_datasets if check is not None else []:
                id_source = self.sources.source("dataset", id_ref)
                check(id_source.mean, id_source.std, id_source.shape[0])

    def check_models_for(self, tasks: list[Task]) -> None:
        """Before any work: the values that depend on the data's sizes, then build every model
        once (see ``TrainedModels.check``), unless the weights of every task's cell are noted:
        a warm run that may need no model, nor data (its sizes were checked when the noted
        weights' outputs were made)."""
        models = [t for t in tasks if t.kind != "ensemble"]  # an ensemble builds none itself
        if any(self.models.noted(self.cell_for(task)) is None for task in models):
            self.check_sizes()
            with self.progress.activity("building the models"):
                self.models.check()
            if self.runs_here or self.memory_limit is not None:
                with self.progress.activity("estimating the memory each cell needs"):
                    self.check_memory(models, 1, self.memory_limit)

    def check_memory(self, tasks: list[Task], at_once: int, limit: int | None) -> None:
        """A one-line ``UserError`` before any work when ``at_once`` of the tasks' cells do not
        fit in memory (``limit`` bytes, else what the device has free): each cell at the larger
        of its training step and its scoring (``oebench.execute.memory``)."""
        from oebench.execute.memory import check_fits, scoring_peaks

        cells = list({t.cell_key: self.cell_for(t) for t in tasks if t.kind != "ensemble"}.values())
        batch = self.context.eval_batch()
        scoring = scoring_peaks(self.sources, self.bench, cells, batch, self.use_cache)
        check_fits(self.sources, cells, at_once, self.device, limit, scoring)

    def check_sizes(self) -> None:
        """A detector's ``min_train`` (knn's k), an OOD set's ``n`` and a count
        ``outlier_budget`` against the sizes of the splits (loaded as the first seed's cells
        load them, and kept for them)."""
        from oebench.bench.validation import raise_problems, size_problems

        b, sources = self.bench, self.sources
        id_source = sources.source("dataset", b.id_datasets[0])
        shape = tuple(id_source.shape)

        def size(ref: Any, split: str) -> int | None:
            test = split == "test"  # an OOD set, at the ID shape; else an ID training split
            norm = sources.norm("dataset", ref, id_source) if test else None
            try:
                where = (split, shape if test else None, b.seeds[0], norm)
                with self.progress.activity(f"checking the sizes of the data: {ref.key} {split}"):
                    return len(sources.load("dataset", ref, *where))
            except (UserError, TypeError):  # a split that does not load: its cells say so
                return None

        def outlier_size(ref: Any) -> int | None:
            try:
                with self.progress.activity(f"checking the sizes of the data: {ref.key}"):
                    return len(sources.load("outlier source", ref, "train", shape, b.seeds[0]))
            except (UserError, TypeError):
                return None

        lines = size_problems(
            b, lambda ref: size(ref, "train"), lambda ref: size(ref, "test"), outlier_size
        )
        raise_problems(lines, b.source)

    # -- a task --------------------------------------------------------------------------------
    def cell_for(self, task: Task) -> Cell:
        """The cell of a plan's task, as this process keys it: a worker with other code or
        data than the driver refuses the task rather than store numbers under a wrong key."""
        if self._matrix is not None or task.kind == "ensemble":  # the planner, or a sibling
            found = next((c for c in self.matrix if c.key == task.cell_key), None)
            if found is not None:
                return found
        mine = keyed(self.bench, task.cell, self.sources, engine())
        if mine.key != task.cell_key:
            differ = ", ".join(differences(task.cell.config, mine.config)[:3]) or "?"
            raise UserError(
                f"cell {task.label}: this process computes another cell key than the driver "
                f"({differ} differ); install the same oebench, plugins and data on every worker"
            )
        return mine

    def execute_task(self, task: Task) -> TaskResult:
        """Run a plan's task here: train a checkpoint others start from, or a whole cell."""
        self.prepare()
        cell = self.cell_for(task)
        with reporting_to(self.progress):  # plugins' ``oebench.api.track`` bars
            if task.kind == "ensemble":
                members = [next(c for c in self.matrix if c.key == k) for k in cell.members]
                result = self.work.ensemble(cell, members)
            elif task.kind == "forward":
                result = self.work.forward_shard(cell, task.shard)
            else:
                self.work.shards = task.shard[1]
                work = self.work.train_only if task.kind == "train" else self.work.execute
                result = work(cell)
        result.key = task.key
        return result
