"""A run in one process (oebench.execute.runner): cells keyed once, tasks mapped back to their
cells, and a process that keys a cell otherwise refusing it."""

from dataclasses import replace

import pytest
from conftest import TINY

from oebench.bench.parse import load_benchmark
from oebench.errors import UserError
from oebench.execute.runner import Runner


@pytest.fixture(scope="module")
def bench():
    return replace(load_benchmark(str(TINY)), seeds=[0, 1])


@pytest.fixture
def runner(bench):
    return Runner(bench, device="cpu")


def test_the_cells_are_keyed_once_per_runner(runner):
    first = list(runner.cells())
    again = list(runner.cells())
    assert len(first) == 4
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert runner.matrix is runner.matrix
    assert runner.plan().keys() == [c.key for c in first]
    # another runner of the same benchmark keys the same cells (a worker, a later run)
    assert [c.key for c in Runner(runner.bench, device="cpu").cells()] == [c.key for c in first]


def test_cell_for_gives_the_planned_cell(runner):
    cells = {c.key: c for c in runner.cells()}
    for task in runner.plan().tasks:
        assert runner.cell_for(task) is cells[task.cell_key]


def test_a_worker_that_did_not_plan_keys_the_task_s_cell_itself(bench, runner):
    task = runner.plan().tasks[2]  # the oe cell of seed 0
    worker = Runner(bench, device="cpu")
    mine = worker.cell_for(task)
    assert mine.key == task.cell_key and mine.config == task.config
    assert mine is not task.cell


def test_a_task_keyed_otherwise_is_refused_naming_what_differs(bench, runner):
    task = next(t for t in runner.plan().tasks if t.training == "oe")
    worker = Runner(bench, device="cpu")
    with pytest.raises(UserError, match=r"another cell key than the driver \(\? differ\)"):
        worker.cell_for(replace(task, cell_key="other"))
    # the planning runner too: the key is not one of its cells, and its own differs
    with pytest.raises(UserError, match="cell mnist-5k / small-cnn / oe / seed 0: this process"):
        runner.cell_for(replace(task, cell_key="other"))

    training = task.config["training"]
    params = {**training["params"], "lr": 1.0}  # as a driver with another setting keyed it
    config = task.config | {"training": {**training, "params": params}}
    edited = replace(task, cell=replace(task.cell, config=config), cell_key="edited")
    with pytest.raises(UserError, match=r"\(training/params/lr differ\); install the same"):
        worker.cell_for(edited)


def test_a_worker_with_other_settings_names_them(bench, runner):
    task = runner.plan().tasks[1]
    other = Runner(replace(bench, detectors=bench.detectors[:1]), device="cpu")
    with pytest.raises(UserError) as caught:
        other.cell_for(task)
    # the first three paths: the detector list, the dropped detector's code, the labels
    assert "(detectors, fingerprints/code/detector:energy, names/detectors differ)" in str(
        caught.value
    )


def test_sibling_is_the_keyed_cell_with_another_training(runner):
    cells = list(runner.cells())
    for cell in cells:
        base = runner.sibling(cell, "baseline")
        assert base in cells and base.training.name == "baseline"
        assert (base.seed, base.id_ref, base.model_ref) == (cell.seed, cell.id_ref, cell.model_ref)
    oe_seed_1 = cells[3]
    assert runner.sibling(oe_seed_1, "baseline") is cells[2]
    assert runner.sibling(cells[0], "oe") is cells[1]


def test_the_shared_cache_folder_is_none_without_a_cache(bench, tmp_path):
    assert Runner(bench, device="cpu", use_cache=False).cache_root is None
    assert Runner(bench, device="cpu", cache_root=tmp_path).cache_root == str(tmp_path)
