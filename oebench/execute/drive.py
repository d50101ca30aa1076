"""The driver loop: plan the matrix, skip what is stored, run the rest on an executor and
hand each result to the recorder as it arrives; and the in-process executor.

The driver depends on the small ``Worker`` protocol (``oebench.execute.runner.Runner`` is
one); the distributed executors (Dask, Ray) live in ``oebench.execute.executors``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from oebench.bench.matrix import Benchmark, Cell
from oebench.bench.plan import Plan, Task, TaskResult
from oebench.core.progress import Progress
from oebench.errors import UserError


class Worker(Protocol):
    """What the driver and the executors need of the process that plans and runs tasks."""

    bench: Benchmark
    device_name: str
    use_cache: bool
    progress: Progress
    failures: list[str]
    failed_cells: list[str]

    @property
    def cache_root(self) -> str | None: ...

    def prepare(self) -> None: ...

    def plan(self) -> Plan: ...

    def check_models_for(self, tasks: list[Task]) -> None: ...

    def execute_task(self, task: Task) -> TaskResult: ...


class Executor:
    """Runs tasks and yields their results as they finish (any order)."""

    name = "executor"

    def run(self, worker: Worker, tasks: list[Task]) -> Iterator[TaskResult]:
        raise NotImplementedError

    def running(self, tasks: list[Task], done: set[str]) -> list[Task]:
        """The tasks that may be running now, given the keys of those ``done``: every one
        whose trainings are done (the driver's bar names them)."""
        return [t for t in tasks if t.key not in done and all(a in done for a in t.after)]


class LocalExecutor(Executor):
    """Every task in this process, in plan order, with live progress."""

    name = "local"

    def running(self, tasks: list[Task], done: set[str]) -> list[Task]:
        return next(([t] for t in tasks if t.key not in done), [])

    def run(self, worker: Worker, tasks: list[Task]) -> Iterator[TaskResult]:
        for task in tasks:
            result = worker.execute_task(task)
            result.provenance["executor"] = self.name
            yield result


def drive(
    worker: Worker,
    executor: Executor,
    skip: Callable[[Task], bool],
    on_result: Callable[[Task, TaskResult], None],
    on_planned: Callable[[], None] | None = None,
) -> list[str]:
    """Plan the worker's matrix, run what ``skip`` leaves on ``executor`` and hand each cell's
    result to ``on_result`` as it arrives (in the driver); returns the cells' keys in order.
    ``on_planned`` is called once the stored cells are known, before any work."""
    worker.prepare()
    plan = worker.plan()
    todo = _needed(plan.tasks, {t.key for t in plan.tasks if t.is_cell and not skip(t)})
    if todo:  # a model that cannot be built with its options: one line, before any work
        worker.check_models_for(todo)
    if on_planned is not None:
        on_planned()
    advance = worker.progress.start(f"benchmark {worker.bench.name}", plan.cells())
    advance(plan.cells() - sum(t.is_cell for t in todo))
    by_key = {task.key: task for task in todo}
    trainings: dict[str, dict] = {}
    done: set[str] = set()
    says = _Running(plan.tasks)
    if todo:
        advance(0, says(executor.running(todo, done)))
    for result in executor.run(worker, todo):
        task = by_key[result.key]
        if result.error:
            raise UserError(result.error)
        done.add(task.key)
        if task.kind in ("train", "forward"):  # a failure here is reported by its cells
            if task.kind == "train":
                trainings[task.cell_key] = result.provenance
            advance(0, says(executor.running(todo, done)))
            continue
        _credit_training(result, trainings.get(task.key))
        if executor.name != "local":  # the local worker said these as they happened
            for line in result.logs:
                worker.progress.log(line)
        worker.failures += result.failures
        worker.failed_cells += [result.failed] if result.failed else []
        on_result(task, result)
        advance(1, says(executor.running(todo, done)))
    return plan.keys()


class _Running:
    """What the benchmark's bar says runs now: ``running oe / seed 1`` (only the parts of
    the cells' labels that differ between cells), ``training ...`` for a task that trains a
    checkpoint others start from, ``+N`` when several run at once, ``done`` at the end."""

    def __init__(self, tasks: list[Task]):
        parts = [t.label.split(" / ") for t in tasks if t.is_cell]
        width = max(map(len, parts), default=0)
        self.varying = [i for i in range(width) if len({tuple(p[i : i + 1]) for p in parts}) > 1]

    def short(self, label: str) -> str:
        parts = label.split(" / ")
        kept = [parts[i] for i in self.varying if i < len(parts)]
        return " / ".join(kept) if kept else label

    def __call__(self, running: list[Task]) -> str:
        if not running:
            return "done"
        first = running[0]
        what = {"train": "training", "forward": "forward pass"}.get(first.kind, "running")
        more = f" (+{len(running) - 1})" if len(running) > 1 else ""
        return f"{what} {self.short(first.label)}{more}"


def run_here(
    worker: Worker,
    skip: Callable[[Cell], bool] | None = None,
    on_cell: Callable[[Cell, list[dict]], None] | None = None,
    score_sink: Callable[[Cell, str, str, Any], None] | None = None,
) -> list[dict]:
    """Run every cell in this process (unless ``skip`` says it is done), without a store:
    every cell's rows, in plan order; ``on_cell`` and ``score_sink`` see each cell's rows and
    score arrays (``dataset`` is ``"id"`` for the ID test set)."""
    rows: list[dict] = []

    def record(task: Task, result: TaskResult) -> None:
        assert task.cell is not None
        for detector, dataset, values in result.scores if score_sink else []:
            score_sink(task.cell, detector, dataset, values)
        rows.extend(result.rows)
        if on_cell is not None and result.rows:
            on_cell(task.cell, result.rows)

    skipped = (lambda task: skip(task.cell)) if skip else (lambda task: False)
    drive(worker, LocalExecutor(), skipped, record)
    return rows


def _credit_training(result: TaskResult, training: dict | None) -> None:
    """A cell whose checkpoint a ``train`` task made in this run says it was trained, and
    how long it took (the cell itself only loaded it)."""
    if training and training.get("trained"):
        for row in result.rows:
            row.update(trained=True, train_seconds=round(training["train_seconds"], 3))


def _needed(tasks: list[Task], cells: set[str]) -> list[Task]:
    """The ``cells`` to run and the trainings they wait for, in plan order (an ensemble waits
    for its member cells only where they run too: stored ones are not run again)."""
    by_key = {task.key: task for task in tasks}
    needed, stack = set(), list(cells)
    while stack:
        key = stack.pop()
        if key not in needed:
            needed.add(key)
            stack += [a for a in by_key[key].after if by_key[a].kind != "cell" or a in cells]
    return [task for task in tasks if task.key in needed]
