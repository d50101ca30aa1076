"""The driver loop (oebench.execute.drive) with a fake worker: no torch, no data."""

from __future__ import annotations

import pytest

from oebench.bench.matrix import Cell
from oebench.bench.parse import parse_benchmark
from oebench.bench.plan import Plan, Task, TaskResult, make_plan
from oebench.core.progress import Progress
from oebench.errors import UserError
from oebench.execute.drive import Executor, LocalExecutor, drive, run_here

TOML = """
name = "drive"
seeds = [0, 1]
id_datasets = ["mnist-5k"]
models = ["small-cnn"]
detectors = ["msp"]
ood_datasets = ["faces"]

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
outliers = "photo-crops"
from = "baseline"
"""


class Bars(Progress):
    """Progress that remembers every bar and step."""

    def __init__(self, log: list):
        self.events = log
        self.lines: list[str] = []

    def start(self, description, total):
        self.events.append(("start", description, total))
        return lambda advance=1, status="": self.events.append(("advance", advance, status))

    def log(self, message):
        self.lines.append(message)


class FakeWorker:
    """A Worker: plans BENCH with made-up keys and "executes" a task by naming it."""

    device_name = "cpu"
    use_cache = True
    cache_root = None

    def __init__(self, results: dict[str, TaskResult] | None = None):
        self.bench = parse_benchmark(TOML)
        #: what happened, in order: prepare, check, executed tasks, the progress bar
        self.events: list = []
        self.progress = Bars(self.events)
        self.failures: list[str] = []
        self.failed_cells: list[str] = []
        self.results = results or {}
        b = self.bench
        self.cells = [
            Cell(seed, b.id_datasets[0], b.models[0], t, f"{t.name}-{seed}", {"n": i}, i % 2)
            for i, (seed, t) in enumerate((s, t) for s in b.seeds for t in b.trainings)
        ]

    def prepare(self) -> None:
        self.events.append(("prepare",))

    def plan(self) -> Plan:
        return make_plan(self.bench, self.cells)

    def check_models_for(self, tasks: list[Task]) -> None:
        self.events.append(("check", [t.key for t in tasks]))

    def execute_task(self, task: Task) -> TaskResult:
        self.events.append(("execute", task.key))
        made = self.results.get(task.key)
        if made is not None:
            return made
        provenance = {"trained": True, "train_seconds": 1.5} if task.kind == "train" else {}
        return TaskResult(task.key, rows=[{"cell": task.key}], provenance=provenance)

    def executed(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "execute"]


def run(worker, skip=lambda task: False, executor=None, on_planned=None):
    seen: list[tuple[str, list]] = []
    keys = drive(
        worker,
        executor or LocalExecutor(),
        skip,
        lambda task, result: seen.append((task.key, result.rows)),
        on_planned,
    )
    return keys, seen


def test_every_task_runs_in_plan_order_and_each_cell_reaches_on_result():
    worker = FakeWorker()
    keys, seen = run(worker)
    assert keys == ["baseline-0", "oe-0", "baseline-1", "oe-1"]
    assert worker.executed() == [
        "baseline-0/train", "baseline-0", "oe-0", "baseline-1/train", "baseline-1", "oe-1",
    ]  # fmt: skip
    assert [key for key, _ in seen] == keys  # the train tasks are not results
    assert worker.events[:2] == [("prepare",), ("check", worker.executed())]
    assert ("start", "benchmark drive", 4) in worker.events


def test_a_cell_whose_checkpoint_a_train_task_made_says_it_was_trained():
    _, seen = run(FakeWorker())
    rows = dict(seen)
    assert rows["oe-0"] == [{"cell": "oe-0"}]  # another cell's checkpoint: not credited
    assert rows["baseline-0"] == [{"cell": "baseline-0", "trained": True, "train_seconds": 1.5}]


def test_skipped_cells_are_not_executed_but_counted_in_the_progress():
    worker = FakeWorker()
    keys, seen = run(worker, skip=lambda task: task.key.endswith("-0"))
    assert worker.executed() == ["baseline-1/train", "baseline-1", "oe-1"]
    assert keys == ["baseline-0", "oe-0", "baseline-1", "oe-1"]  # the whole plan, in order
    assert [key for key, _ in seen] == ["baseline-1", "oe-1"]
    bar = worker.events[worker.events.index(("start", "benchmark drive", 4)) :]
    assert bar[1] == ("advance", 2, "")  # the stored cells, at once
    assert bar[2:] == [  # the bar names the task that runs next, not the one that ended
        ("advance", 0, "training baseline / seed 1"),
        ("execute", "baseline-1/train"),
        ("advance", 0, "running baseline / seed 1"),
        ("execute", "baseline-1"),
        ("advance", 1, "running oe / seed 1"),
        ("execute", "oe-1"),
        ("advance", 1, "done"),
    ]


def test_the_training_a_needed_cell_waits_for_runs_even_when_its_own_cell_is_stored():
    worker = FakeWorker()
    _, seen = run(worker, skip=lambda task: task.key != "oe-0")
    assert worker.executed() == ["baseline-0/train", "oe-0"]
    assert ("check", ["baseline-0/train", "oe-0"]) in worker.events
    assert [key for key, _ in seen] == ["oe-0"]


def test_nothing_to_do_builds_no_model_and_runs_nothing():
    worker = FakeWorker()
    keys, seen = run(worker, skip=lambda task: True)
    assert worker.executed() == [] and seen == [] and len(keys) == 4
    assert not any(e[0] == "check" for e in worker.events)
    assert ("advance", 4, "") in worker.events


def test_on_planned_is_called_once_after_the_check_and_before_the_first_task():
    worker = FakeWorker()
    run(worker, on_planned=lambda: worker.events.append(("planned",)))
    names = [e[0] for e in worker.events]
    assert names.count("planned") == 1
    assert names.index("check") < names.index("planned") < names.index("execute")
    assert names.index("planned") < names.index("start")


def test_a_result_with_an_error_stops_the_run_with_a_user_error():
    worker = FakeWorker({"oe-0": TaskResult("oe-0", error="bad option on the worker")})
    seen: list[str] = []
    with pytest.raises(UserError, match="bad option on the worker"):
        drive(worker, LocalExecutor(), lambda t: False, lambda t, r: seen.append(t.key))
    assert seen == ["baseline-0"]  # what came before was recorded; nothing after ran
    assert worker.executed()[-1] == "oe-0"


def test_failures_and_failed_cells_are_collected_on_the_worker():
    worker = FakeWorker(
        {
            "baseline-0": TaskResult("baseline-0", rows=[{}], failures=["detector 'msp' raised"]),
            "oe-1": TaskResult("oe-1", failed="oe-1: no rows"),
        }
    )
    _, seen = run(worker)
    assert worker.failures == ["detector 'msp' raised"]
    assert worker.failed_cells == ["oe-1: no rows"]
    assert "oe-1" in dict(seen)  # a failed cell is still handed on (the recorder skips it)


def test_logs_of_a_remote_executor_are_shown_by_the_driver():
    class Remote(Executor):
        name = "remote"

        def run(self, worker, tasks):
            for task in reversed(tasks):  # results come in any order
                yield TaskResult(task.key, rows=[{}], logs=[f"log of {task.key}"])

    worker = FakeWorker()
    keys, seen = run(worker, skip=lambda task: task.seed == 1, executor=Remote())
    assert [key for key, _ in seen] == ["oe-0", "baseline-0"]
    assert worker.progress.lines == ["log of oe-0", "log of baseline-0"]
    assert keys == ["baseline-0", "oe-0", "baseline-1", "oe-1"]
    # the local executor's worker said its lines as they happened: not again
    local = FakeWorker({"oe-0": TaskResult("oe-0", logs=["said already"])})
    run(local)
    assert local.progress.lines == []


def test_the_local_executor_tags_its_results():
    worker = FakeWorker()
    tasks = worker.plan().tasks
    results = list(LocalExecutor().run(worker, tasks))
    assert [r.key for r in results] == [t.key for t in tasks]
    assert {r.provenance["executor"] for r in results} == {"local"}


def test_run_here_gives_the_rows_in_plan_order_and_the_score_arrays():
    scores = [("msp", "id", [0.1]), ("msp", "faces", [0.9])]
    worker = FakeWorker(
        {"oe-1": TaskResult("oe-1", rows=[{"cell": "oe-1", "n": 2}], scores=scores)}
    )
    cells, sunk = [], []
    rows = run_here(
        worker,
        skip=lambda c: c.seed == 0,
        on_cell=lambda c, rows: cells.append((c.key, len(rows))),
        score_sink=lambda c, detector, dataset, values: sunk.append((c.key, dataset, values)),
    )
    assert [r["cell"] for r in rows] == ["baseline-1", "oe-1"]
    assert cells == [("baseline-1", 1), ("oe-1", 1)]
    assert sunk == [("oe-1", "id", [0.1]), ("oe-1", "faces", [0.9])]
    assert "baseline-0" not in worker.executed()
    assert len(run_here(FakeWorker())) == 4  # no skip: every cell


def test_a_cluster_bar_names_the_cells_that_may_run_at_once():
    from oebench.execute.drive import Executor, _Running

    worker = FakeWorker()
    tasks = worker.plan().tasks
    ready = Executor().running(tasks, done=set())  # the two seeds' baseline trainings
    assert [t.key for t in ready] == ["baseline-0/train", "baseline-1/train"]
    assert _Running(tasks)(ready) == "training baseline / seed 0 (+1)"
    after = Executor().running(tasks, done={"baseline-0/train"})
    assert [t.key for t in after] == ["baseline-0", "oe-0", "baseline-1/train"]
    assert LocalExecutor().running(tasks, done={"baseline-0/train"}) == after[:1]
