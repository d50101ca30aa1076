"""The plan -> execute -> record engine: local, Dask and Ray executors give byte-identical
results; a killed Dask worker's cell is retried and stored exactly once."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY, run_cli
from stepped import SteppedRun

from oebench.bench.parse import load_benchmark
from oebench.errors import UserError
from oebench.execute.drive import run_here
from oebench.execute.executors import Job, _require, run_job
from oebench.execute.runner import Runner

SEEDS = ("--seed", "0", "--seed", "1")


def _env(tmp_path: Path, name: str) -> dict[str, str]:
    """A store and a cache of the run's own: every executor computes from scratch."""
    return {
        "OEBENCH_CACHE_DIR": str(tmp_path / f"cache-{name}"),
        "OEBENCH_STORE": str(tmp_path / f"{name}.sqlite"),
    }


def _csv(tmp_path: Path, name: str, *extra: str) -> bytes:
    csv = tmp_path / f"{name}.csv"
    result = run_cli("run", str(TINY), *SEEDS, "--csv", str(csv), *extra, env=_env(tmp_path, name))
    assert result.returncode == 0, result.stderr[-3000:]
    return csv.read_bytes()


@pytest.fixture(scope="module")
def local_csv(tmp_path_factory) -> bytes:
    return _csv(tmp_path_factory.mktemp("local"), "local")


def test_plan_orders_fine_tunes_after_their_baselines_checkpoint():
    bench = replace(load_benchmark(str(TINY)), seeds=[0, 1])
    plan = Runner(bench, device="cpu").plan()
    tasks = plan.tasks
    assert [(t.kind, t.training, t.seed) for t in tasks] == [
        ("train", "baseline", 0), ("cell", "baseline", 0), ("cell", "oe", 0),
        ("train", "baseline", 1), ("cell", "baseline", 1), ("cell", "oe", 1),
    ]  # fmt: skip
    by = {(t.kind, t.training, t.seed): t for t in tasks}
    for seed in (0, 1):
        names = [("train", "baseline"), ("cell", "baseline"), ("cell", "oe")]
        train, base, oe = (by[kind, name, seed] for kind, name in names)
        assert train.key == f"{base.key}/train" and train.after == ()
        # the fine-tune waits for the baseline's weights, not for the baseline's scores
        assert base.after == oe.after == (train.key,)
        assert (train.priority, oe.priority, base.priority) == (2, 1, 0)
    assert plan.keys() == [t.key for t in tasks if t.kind == "cell"]
    assert len(set(plan.keys())) == 4
    job = Job(bench, tasks[2], "cpu", True, None)
    assert pickle.loads(pickle.dumps(job)).task == tasks[2]  # travels to any worker


def test_a_worker_with_other_code_or_data_refuses_the_task():
    bench = load_benchmark(str(TINY))
    task = Runner(bench, device="cpu").plan().tasks[0]
    other = load_benchmark(str(TINY))
    other = replace(other, detectors=other.detectors[:1])  # as a worker with other settings
    result = run_job(Job(other, task, "cpu", False, None))
    assert result.rows == []
    assert "another cell key than the driver" in result.error
    assert "names/detectors" in result.error  # says what differs


def test_dask_with_two_workers_gives_byte_identical_csv(tmp_path, local_csv):
    assert _csv(tmp_path, "dask", "--executor", "dask", "--workers", "2") == local_csv


def test_ray_gives_byte_identical_csv(tmp_path, local_csv):
    assert _csv(tmp_path, "ray", "--executor", "ray", "--workers", "2") == local_csv


#: a test plugin for every process of a run: a Dask worker says on stderr when it starts on a
#: checkpoint; the first to do so where $OEBENCH_TEST_HOLD names a file no worker has made
#: yet stays there, mid-task and holding the checkpoint's lock, until the test kills it
WORKER_PLUGIN = """
import os
import threading

import oebench.execute.cell_models as cell_models

_load_or_train = cell_models.TrainedModels._load_or_train


def _first_to_hold():
    hold = os.environ.get("OEBENCH_TEST_HOLD")
    if not hold:
        return False
    try:
        os.close(os.open(hold, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # another worker is held (or was, and was killed)
        return False
    return True


def _said(self, key, cell, model, shape):
    held = _first_to_hold()
    os.write(2, f"@training {os.getpid()} {cell.label}\\n".encode())
    if held:
        threading.Event().wait()  # until the test kills this worker
    return _load_or_train(self, key, cell, model, shape)


cell_models.TrainedModels._load_or_train = _said
"""


def _worker_plugin(fake_dist) -> str:
    """PYTHONPATH with WORKER_PLUGIN installed (the driver and its workers load it)."""
    plugin = {"worker_steps": WORKER_PLUGIN}
    root = fake_dist("oebench-worker-steps", plugin, {"worker-steps": "worker_steps"})
    return os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)


def test_killed_dask_worker_is_retried_and_every_cell_stored_once(tmp_path, local_csv, fake_dist):
    import psutil

    env = _env(tmp_path, "killed")
    env |= {"PYTHONPATH": _worker_plugin(fake_dist), "OEBENCH_TEST_HOLD": str(tmp_path / "held")}
    csv = tmp_path / "killed.csv"
    args = ["run", str(TINY), *SEEDS, "--csv", str(csv), "--executor", "dask", "--workers", "2"]
    run = SteppedRun(args, [], env)
    line = run.wait_line(lambda line: line.startswith("@training "))  # held while training
    assert line is not None, "no worker was seen training: " + run.stderr[-3000:]
    killed = int(line.split()[1])
    assert killed in [p.pid for p in psutil.Process(run.proc.pid).children(recursive=True)]
    os.kill(killed, signal.SIGKILL)
    code, err = run.finish(timeout=600)
    assert code == 0, err[-3000:]
    assert csv.read_bytes() == local_csv
    with sqlite3.connect(tmp_path / "killed.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM cells").fetchone() == (4,)
        rows = db.execute("SELECT cell, detector, ood_dataset FROM results").fetchall()
    assert len(rows) == len(set(rows)) == 4 * 2 * 5  # cells x detectors x (4 sets + mean)


def test_cluster_options_need_a_cluster_executor(tmp_path):
    result = run_cli("run", str(TINY), "--address", "tcp://h:1", env=_env(tmp_path, "x"))
    assert result.returncode == 2
    assert "--address needs --executor dask or ray" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_engine_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(UserError, match=r"pip install 'oebench\[ray\]'"):
        _require("ray")


def test_training_weights_do_not_depend_on_the_machines_thread_count(tmp_path):
    import torch

    from oebench.execute.checkpoints import CheckpointCache

    states = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)  # what another machine or executor would have
            bench = load_benchmark(str(TINY))
            bench = replace(bench, trainings=bench.trainings[:1])
            runner = Runner(bench, device="cpu", cache_root=tmp_path / f"c{threads}")
            run_here(runner)
            cache = CheckpointCache(tmp_path / f"c{threads}")
            (path,) = cache.root.glob("*.pt")
            states.append(torch.load(path, weights_only=True)["state_dict"])
    finally:
        torch.set_num_threads(before)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_benchmark_file_names_the_executor_and_the_command_line_wins():
    from oebench.bench.parse import parse_benchmark
    from oebench.session import executor_settings

    text = TINY.read_text() + '\n[executor]\nname = "dask"\nworkers = 2\n'
    bench = parse_benchmark(text)
    assert executor_settings(bench, None, None, None).name == "dask"
    assert executor_settings(bench, None, None, None).workers == 2
    assert executor_settings(bench, "ray", 3, None).workers == 3
    assert executor_settings(bench, "ray", 3, None).name == "ray"
    with pytest.raises(UserError, match=r"\[executor\]: name = \"spark\""):
        parse_benchmark(TINY.read_text() + '\n[executor]\nname = "spark"\n')


def test_ctrl_c_cancels_the_dask_cluster_cleanly(tmp_path, fake_dist):
    import psutil

    env = {**_env(tmp_path, "interrupted"), "PYTHONPATH": _worker_plugin(fake_dist)}
    args = ["run", str(TINY), *SEEDS, "--executor", "dask", "--workers", "2"]
    run = SteppedRun(args, [], env, terminal_sigint=True)
    line = run.wait_line(lambda line: line.startswith("@training "))  # the cluster is working
    assert line is not None, "the cluster never started working: " + run.stderr[-3000:]
    workers = psutil.Process(run.proc.pid).children(recursive=True)
    assert int(line.split()[1]) in [w.pid for w in workers]
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish(timeout=120)
    assert code == 130, err[-3000:]
    assert "Interrupted:" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"worker processes left running: {alive}"


def test_a_cell_whose_checkpoint_a_train_task_made_says_it_was_trained(tmp_path):
    from oebench.execute.drive import LocalExecutor, drive
    from oebench.record.recorder import Recorder
    from oebench.record.store import ResultStore

    bench = load_benchmark(str(TINY))
    runner = Runner(bench, device="cpu", cache_root=tmp_path / "cache")
    with ResultStore(tmp_path / "s.sqlite") as store:
        recorder = Recorder(store, bench)
        drive(runner, LocalExecutor(), recorder.skip, recorder.record)
        rows = recorder.rows()
    trained = {r["training"]: (r["trained"], r["train_seconds"]) for r in rows}
    assert trained["baseline"][0] and trained["baseline"][1] > 0  # by its train task
    assert trained["oe"][0] and trained["oe"][1] > 0


def test_shards_split_each_cells_forward_passes_into_tasks_after_its_model():
    bench = load_benchmark(str(TINY))
    plan = Runner(bench, device="cpu", shards=3).plan()
    kinds = [(t.kind, t.training, t.shard) for t in plan.tasks]
    assert kinds == [
        ("train", "baseline", (0, 1)),
        *[("forward", "baseline", (i, 3)) for i in range(3)],
        ("cell", "baseline", (0, 3)),
        ("train", "oe", (0, 1)),
        *[("forward", "oe", (i, 3)) for i in range(3)],
        ("cell", "oe", (0, 3)),
    ]  # fmt: skip
    by = {t.key: t for t in plan.tasks}
    for cell in (t for t in plan.tasks if t.kind == "cell"):
        assert [by[a].kind for a in cell.after] == ["forward"] * 3
        assert all(by[a].after == (f"{cell.key}/train",) for a in cell.after)
    assert plan.keys() == Runner(bench, device="cpu").plan().keys()  # the same cells


def test_shards_need_the_cache():
    with pytest.raises(UserError, match="--shards needs the cache"):
        Runner(load_benchmark(str(TINY)), device="cpu", use_cache=False, shards=2)


def test_sharded_forward_passes_on_dask_give_byte_identical_csv(tmp_path):
    fitted = ("--detectors", "msp,knn,mahalanobis,vim", "--set", "training.eval_batch_size=64")
    whole = _csv(tmp_path, "whole", *fitted)
    sharded = _csv(tmp_path, "sharded", *fitted, "--executor", "dask", "--workers", "2",
                   "--shards", "3")  # fmt: skip
    assert sharded == whole
    left = sorted(p.name for p in (tmp_path / "cache-sharded" / "outputs").iterdir())
    assert left == sorted(p.name for p in (tmp_path / "cache-whole" / "outputs").iterdir())
