"""The benchmark as a graph of tasks (oebench.bench.plan): one task per cell, a ``train`` task
for each checkpoint another training starts from, dependencies first."""

from dataclasses import replace

from oebench.bench.matrix import Cell
from oebench.bench.parse import parse_benchmark
from oebench.bench.plan import Task, make_plan

TOML = """
name = "plan"
seeds = [0, 1]
id_datasets = ["mnist-5k", "fashion-mnist"]
models = ["small-cnn", { name = "small-cnn", width = 8, label = "narrow" }]
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

[[trainings]]
name = "oe-more"
objective = "oe"
outliers = "photo-crops"
from = "oe"
"""
BENCH = parse_benchmark(TOML)


def cell(seed=0, id_index=0, model_index=0, training="baseline", index=0) -> Cell:
    """A cell of BENCH with a made-up key and configuration (the plan only carries them)."""
    id_ref, model_ref = BENCH.id_datasets[id_index], BENCH.models[model_index]
    key = f"{seed}-{id_ref.key}-{model_ref.key}-{training}"
    config = {"made": key}
    return Cell(seed, id_ref, model_ref, BENCH.training(training), key, config, index)


def by_key(plan) -> dict[str, Task]:
    return {t.key: t for t in plan.tasks}


def test_a_training_from_another_waits_for_a_train_task_not_for_the_cell():
    base, oe = cell(training="baseline"), cell(training="oe", index=1)
    plan = make_plan(BENCH, [base, oe])
    assert [(t.key, t.kind, t.after) for t in plan.tasks] == [
        (f"{base.key}/train", "train", ()),
        (base.key, "cell", (f"{base.key}/train",)),
        (oe.key, "cell", (f"{base.key}/train",)),
    ]
    assert (len(plan), plan.cells()) == (3, 2)
    assert plan.keys() == [base.key, oe.key]


def test_a_chain_of_trainings_trains_each_checkpoint_once_after_its_own_start():
    cells = [cell(training=t, index=i) for i, t in enumerate(["baseline", "oe", "oe-more"])]
    base, oe, more = cells
    tasks = by_key(make_plan(BENCH, cells))
    assert tasks[f"{base.key}/train"].after == ()
    assert tasks[f"{oe.key}/train"].after == (f"{base.key}/train",)  # it starts from base
    assert tasks[oe.key].after == (f"{oe.key}/train",)  # its own checkpoint, made first
    assert tasks[more.key].after == (f"{oe.key}/train",)
    assert f"{more.key}/train" not in tasks  # nothing starts from it
    assert [t.kind for t in tasks.values()].count("train") == 2


def test_tasks_come_after_the_tasks_they_need_whatever_the_order_of_the_cells():
    base, oe, more = (cell(training=t) for t in ["baseline", "oe", "oe-more"])
    plan = make_plan(BENCH, [more, oe, base])  # every cell before the one it starts from
    order = [t.key for t in plan.tasks]
    for i, task in enumerate(plan.tasks):
        assert all(order.index(d) < i for d in task.after), (task.key, order)
    assert order == [f"{base.key}/train", f"{oe.key}/train", more.key, oe.key, base.key]
    assert plan.keys() == [more.key, oe.key, base.key]  # the cells in their run order


def test_only_cells_of_the_same_seed_dataset_and_model_are_linked():
    cells = [
        cell(seed=s, id_index=d, model_index=m, training=t)
        for s in (0, 1)
        for d in (0, 1)
        for m in (0, 1)
        for t in ("baseline", "oe")
    ]
    tasks = by_key(make_plan(BENCH, cells))
    for c in cells:
        if c.training.name == "oe":
            parent = cell(c.seed, BENCH.id_datasets.index(c.id_ref),
                          BENCH.models.index(c.model_ref), "baseline")  # fmt: skip
            assert tasks[c.key].after == (f"{parent.key}/train",)
    assert sum(t.kind == "train" for t in tasks.values()) == 8


def test_a_start_that_is_not_in_the_matrix_is_not_waited_for():
    oe = cell(training="oe")  # its baseline is not planned (e.g. run on its own)
    plan = make_plan(BENCH, [oe])
    assert [(t.key, t.kind, t.after) for t in plan.tasks] == [(oe.key, "cell", ())]


def test_a_task_carries_its_cell_and_the_cell_s_configuration():
    c = cell(seed=1, id_index=1, model_index=1, training="baseline", index=5)
    train, task = make_plan(BENCH, [c, cell(1, 1, 1, "oe", 6)]).tasks[:2]
    for t in (train, task):
        assert t.cell is c and t.config == {"made": c.key} and t.cell_key == c.key
        assert (t.seed, t.id_index, t.model_index, t.training, t.index) == (1, 1, 1, "baseline", 5)
        assert t.label == "fashion-mnist / narrow / baseline / seed 1" == c.label
    assert (train.key, task.key) == (f"{c.key}/train", c.key)
    assert Task("k", 0, 0, 0, "baseline", 0, "label").config == {}  # no cell: no configuration
    # the cell is not part of a task's identity (a worker compares tasks by their fields)
    assert replace(task, cell=None) == task


def test_trainings_others_wait_for_run_first_then_cells_that_waited():
    base, oe = cell(training="baseline"), cell(training="oe")
    plain = cell(model_index=1, training="oe-more")  # no start in this plan: waits for nothing
    tasks = by_key(make_plan(BENCH, [base, oe, plain]))
    assert tasks[f"{base.key}/train"].priority == 2
    assert tasks[oe.key].priority == 1  # waited for another cell's checkpoint
    assert tasks[base.key].priority == 0  # waited only for its own checkpoint
    assert tasks[plain.key].priority == 0


def test_a_cycle_still_plans_every_task_once():
    looped = replace(BENCH.training("oe"), name="loop", init="loop")  # cannot be written
    c = Cell(0, BENCH.id_datasets[0], BENCH.models[0], looped, "loop-key", {}, 0)
    bench = replace(BENCH, trainings=[*BENCH.trainings, looped])
    plan = make_plan(bench, [c])
    assert [(t.key, t.after) for t in plan.tasks] == [
        ("loop-key/train", ("loop-key/train",)),
        ("loop-key", ("loop-key/train",)),
    ]
