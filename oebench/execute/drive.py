"""The driver loop: plan the matrix, skip what is stored, run the rest on an executor and
hand each result to the recorder as it arrives; and the in-process executor.

The distributed executors (Dask, Ray) live in ``oebench.execute.executors``; nothing here imports
the runner, which is handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from oebench.bench.plan import Task, TaskResult
from oebench.errors import UserError


class Executor:
    """Runs tasks and yields their results as they finish (any order)."""

    name = "executor"

    def run(self, runner: Any, tasks: list[Task]) -> Iterator[TaskResult]:
        raise NotImplementedError


class LocalExecutor(Executor):
    """Today's behaviour: every task in this process, in plan order, with live progress."""

    name = "local"

    def run(self, runner: Any, tasks: list[Task]) -> Iterator[TaskResult]:
        for task in tasks:
            result = runner.execute_task(task)
            result.provenance["executor"] = self.name
            yield result


def drive(
    runner: Any,
    executor: Executor,
    skip: Callable[[Task], bool],
    on_result: Callable[[Task, TaskResult], None],
    on_planned: Callable[[], None] | None = None,
) -> list[str]:
    """Plan the runner's matrix, run what ``skip`` leaves on ``executor`` and hand each cell's
    result to ``on_result`` as it arrives (in the driver); returns the cells' keys in order.
    ``on_planned`` is called once the stored cells are known, before any work."""
    from oebench.bench.plan import make_plan

    runner.prepare()
    plan = make_plan(runner)
    todo = _needed(plan.tasks, {t.key for t in plan.tasks if t.kind == "cell" and not skip(t)})
    if todo:  # a model that cannot be built with its options: one line, before any work
        runner.check_models_for(todo)
    if on_planned is not None:
        on_planned()
    advance = runner.progress.start(f"benchmark {runner.bench.name}", plan.cells())
    advance(plan.cells() - sum(t.kind == "cell" for t in todo))
    by_key = {task.key: task for task in todo}
    trainings: dict[str, dict] = {}
    for result in executor.run(runner, todo):
        task = by_key[result.key]
        if result.error:
            raise UserError(result.error)
        if task.kind == "train":  # a failed training is reported by its cells
            trainings[task.cell_key] = result.provenance
            continue
        _credit_training(result, trainings.get(task.key))
        if executor.name != "local":  # the local runner logged and counted these already
            for line in result.logs:
                runner.progress.log(line)
            runner.failures += result.failures
            runner.failed_cells += [result.failed] if result.failed else []
        on_result(task, result)
        advance(1, task.label)
    return plan.keys()


def _credit_training(result: TaskResult, training: dict | None) -> None:
    """A cell whose checkpoint a ``train`` task made in this run says it was trained, and
    how long it took (the cell itself only loaded it)."""
    if training and training.get("trained"):
        for row in result.rows:
            row.update(trained=True, train_seconds=round(training["train_seconds"], 3))


def _needed(tasks: list[Task], cells: set[str]) -> list[Task]:
    """The ``cells`` to run and the trainings they wait for, in plan order."""
    by_key = {task.key: task for task in tasks}
    needed, stack = set(), list(cells)
    while stack:
        key = stack.pop()
        if key not in needed:
            needed.add(key)
            stack += by_key[key].after
    return [task for task in tasks if task.key in needed]
