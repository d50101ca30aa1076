"""Fault injection: killed runs, damaged caches and stores, hostile plugins, failing disks.

The assertion throughout: no wrong number is stored, and nothing already computed is lost.
"""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli
from stepped import STEPS, SteppedRun

import oebench
from oebench.bench.matrix import Ref
from oebench.bench.parse import load_benchmark
from oebench.contracts.checks import ContractError, check_split, checked_scores
from oebench.contracts.data import TensorImages
from oebench.execute.drive import LocalExecutor, drive, run_here
from oebench.execute.runner import Runner
from oebench.record.recorder import Recorder
from oebench.record.schema import CELL_COLUMNS
from oebench.record.store import ResultStore, StoreError
from oebench.registry.plugins import get_plugin_manager
from oebench.report.results import load_results
from oebench.report.tables import results_frame

CLI = "from oebench.cli import main; main()"
#: a smaller tiny benchmark: two cells (baseline, oe), two detectors, two real OOD sets
FAULTS_TOML = """
name = "faults"
seeds = [0]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 8 }]
detectors = ["msp", "energy"]
ood_datasets = [{ name = "letters", n = 200 }, { name = "textures", n = 200 }]

[training]
epochs = 1
max_train = 512
batch_size = 128
lr = 0.1

[[trainings]]
name = "baseline"
objective = "cross-entropy"

[[trainings]]
name = "oe"
objective = "oe"
outliers = { name = "photo-crops", n = 512 }
from = "baseline"
lr = 0.01
outlier_batch_size = 128
"""
NUMBERS = ["training", "detector", "ood_dataset", "auroc", "aupr_in", "aupr_out", "fpr95"]


@pytest.fixture
def bench_file(tmp_path):
    path = tmp_path / "faults.toml"
    path.write_text(FAULTS_TOML)
    return path


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own, so damaging it cannot touch other tests."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(cache))
    return cache


def numbers(rows) -> pd.DataFrame:
    df = results_frame(rows)[NUMBERS]
    return df.sort_values(NUMBERS[:3]).reset_index(drop=True)


def run_rows(path, store=None, **changes) -> tuple[Runner, list[dict]]:
    """Run a benchmark file in-process (recording into ``store`` when given)."""
    bench = replace(load_benchmark(str(path)), **changes)
    runner = Runner(bench, device="cpu")
    if store is None:
        return runner, run_here(runner)
    recorder = Recorder(store, bench)
    drive(runner, LocalExecutor(), recorder.skip, recorder.record)
    return runner, recorder.rows()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The faults benchmark's numbers from a clean run, and its two checkpoint files
    (baseline, oe); trained into the shared test cache that conftest gives every test, so
    the other tests here find the weights there."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "faults.toml").write_text(FAULTS_TOML)
    models = shared_cache(tmp_path_factory) / "models"
    before = set(models.glob("*.pt"))
    old = os.environ.get("OEBENCH_CACHE_DIR")
    os.environ["OEBENCH_CACHE_DIR"] = str(shared_cache(tmp_path_factory))
    try:
        _, rows = run_rows(folder / "faults.toml")
    finally:
        if old is None:
            del os.environ["OEBENCH_CACHE_DIR"]
        else:
            os.environ["OEBENCH_CACHE_DIR"] = old
    new = sorted(set(models.glob("*.pt")) - before, key=lambda p: p.stat().st_mtime_ns)
    assert len(new) == 2, "the faults benchmark must train its two models here"
    return Reference(numbers(rows), tuple(new))


class Reference(NamedTuple):
    numbers: pd.DataFrame
    #: the baseline's and the oe model's checkpoint files
    checkpoints: tuple[Path, Path]


def shared_cache(tmp_path_factory) -> Path:
    """The cache folder conftest's autouse fixture gives every test."""
    return tmp_path_factory.getbasetemp() / "oebench-cache"


def stored_numbers(store_path) -> pd.DataFrame:
    return numbers(load_results(store_path))


# -- checkpoints -------------------------------------------------------------------------------
def flip_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor of a torch.save zip (stored, no CRC
    check on load), so the file still loads."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28 : header + 30], "little")
    offset = header + 30 + name_len + extra_len + info.file_size // 2
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def test_flipped_and_swapped_checkpoints_are_detected_and_retrained(
    bench_file, own_cache, reference, capfd
):
    (own_cache / "models").mkdir(parents=True)
    base, oe = (own_cache / "models" / p.name for p in reference.checkpoints)
    for source, copy in zip(reference.checkpoints, (base, oe), strict=True):
        copy.write_bytes(source.read_bytes())
    before = torch.load(oe, weights_only=True)["state_dict"]
    flip_tensor_byte(oe)
    after = torch.load(oe, weights_only=True)["state_dict"]  # still loads: silent on old code
    assert any(not torch.equal(before[k], after[k]) for k in before)
    base.write_bytes(oe.read_bytes())  # a swapped file: valid, but another cell's weights
    capfd.readouterr()

    _, rows = run_rows(bench_file)
    err = capfd.readouterr().err
    assert f"ignoring cached checkpoint {base}" in err and "another cell" in err
    assert f"ignoring cached checkpoint {oe}" in err
    assert numbers(rows).equals(reference.numbers)  # retrained, the same numbers as a clean run
    first, second = sorted((own_cache / "outputs").glob("*.npz"))[:2]
    first.write_bytes(second.read_bytes())  # swapped forward-pass outputs are noticed too
    _, rows = run_rows(bench_file)
    err = capfd.readouterr().err
    assert "ignoring cached checkpoint" not in err  # the rewritten checkpoints are good
    assert f"ignoring corrupt cache file {first.name}" in err and "another cache key" in err
    assert numbers(rows).equals(reference.numbers)


def save_small_cnn(path: Path, seed: int) -> None:
    from oebench.registry.lookup import create_model

    torch.manual_seed(seed)
    net = create_model("small-cnn", 10, (1, 28, 28), width=8)
    torch.save(net.state_dict(), path)


def test_replaced_checkpoint_model_file_is_keyed_by_content(tmp_path, own_cache):
    """Issue 8: a `checkpoint` model's file replaced in place gets new weights and a new key."""
    weights = tmp_path / "net.pt"
    save_small_cnn(weights, seed=1)
    bench_path = tmp_path / "ckpt.toml"
    bench_path.write_text(
        FAULTS_TOML.split("[training]")[0].replace(
            '{ name = "small-cnn", width = 8 }',
            f'{{ name = "checkpoint", arch = "small-cnn", path = "{weights}", width = 8 }}',
        )
        + "[training]\nepochs = 1\nmax_train = 256\nbatch_size = 128\nlr = 0.01\n"
        + '[[trainings]]\nname = "baseline"\nobjective = "cross-entropy"\n'
    )
    runner, first = run_rows(bench_path)
    key = next(runner.cells()).key
    stat = weights.stat()
    save_small_cnn(weights, seed=2)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    assert weights.stat().st_size == stat.st_size
    runner, second = run_rows(bench_path)
    assert next(runner.cells()).key != key  # the store will not serve the old cell either
    assert all(r["trained"] for r in second)  # not the old file's cached weights
    assert not np.allclose(numbers(first).auroc, numbers(second).auroc)
    (own_cache / "models").rename(tmp_path / "old-models")  # a cold cache agrees
    _, cold = run_rows(bench_path)
    assert numbers(cold).equals(numbers(second))


def test_file_content_digest_sees_a_replacement_with_the_same_size_and_mtime(tmp_path):
    from oebench.core.datafiles import content_digest

    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * 100)
    first = content_digest(path)
    stat = path.stat()
    path.write_bytes(b"b" * 100)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert content_digest(path) != first
    assert content_digest(path) == content_digest(path)


# -- plugins with bad outputs --------------------------------------------------------------------
class Short(oebench.Detector):
    def score(self, outputs):
        return np.zeros(50)


class Wide(oebench.Detector):
    def score(self, outputs):
        return np.zeros((len(outputs.logits), 2))


class Nan(oebench.Detector):
    def score(self, outputs):
        scores = -outputs.logits.max(axis=1).astype(np.float64)
        scores[3] = np.nan
        return scores


class Text(oebench.Detector):
    def score(self, outputs):
        return np.array(["x"] * len(outputs.logits))


class Exits(oebench.Detector):
    def score(self, outputs):
        raise SystemExit(3)


class Infinite(oebench.Detector):
    """±inf are valid scores ("certainly OOD / ID"): accepted."""

    def score(self, outputs):
        scores = -outputs.logits.max(axis=1).astype(np.float64)
        scores[:5] = np.inf
        return scores


BAD = {"short": Short, "wide": Wide, "nan": Nan, "text": Text, "exits": Exits}


@pytest.fixture
def bad_plugin():
    class Plugin:
        @oebench.hookimpl
        def register_detectors(self, register):
            for name, cls in {**BAD, "infinite": Infinite}.items():
                register(name, cls)

    get_plugin_manager().register(Plugin(), name="hostile-plugin")
    yield "hostile-plugin"
    get_plugin_manager().unregister(name="hostile-plugin")


def test_checked_scores_accepts_numbers_and_rejects_the_rest():
    assert checked_scores([1, 2, 3], 3).dtype == np.float64
    assert np.isinf(checked_scores([np.inf, -np.inf, 0.0], 3)).sum() == 2
    for bad, match in [
        (np.zeros(2), "2 scores for 3"),
        (np.zeros((3, 1)), r"shape \(3, 1\)"),
        (np.array([0.0, np.nan, 1.0]), "1 NaN"),
        (np.array(["a", "b", "c"]), "dtype"),
        (np.array([1 + 1j, 0, 0]), "dtype"),
        (np.array([True, False, True]), "dtype"),
    ]:
        with pytest.raises(ContractError, match=match):
            checked_scores(bad, 3)


def test_bad_detector_outputs_are_blamed_and_the_rest_is_stored(
    bench_file, reference, bad_plugin, tmp_path
):
    store = ResultStore(tmp_path / "s.sqlite")
    detectors = [Ref("msp"), *(Ref(name) for name in BAD), Ref("infinite")]
    runner, rows = run_rows(bench_file, store, detectors=detectors)
    for name, why in [
        ("short", "50 scores for 1000 samples on mnist-5k"),
        ("wide", "shape (1000, 2)"),
        ("nan", "1 NaN score(s)"),
        ("text", "dtype <U1"),
        ("exits", "SystemExit: 3"),
    ]:
        found = [m for m in runner.failures if f"detector {name!r}" in m]
        assert len(found) == 2, runner.failures  # both cells
        assert f"(plugin {bad_plugin!r})" in found[0] and why in found[0]
    assert not runner.failed_cells
    stored = load_results(store.path)
    assert set(stored.detector) == {"msp", "infinite"}
    msp = numbers(stored[stored.detector == "msp"])
    assert msp.equals(reference.numbers[reference.numbers.detector == "msp"].reset_index(drop=True))


def test_a_cell_where_every_detector_fails_is_reported_and_the_others_run(
    bench_file, reference, bad_plugin, tmp_path
):
    store = ResultStore(tmp_path / "s.sqlite")
    runner, rows = run_rows(bench_file, store, detectors=[Ref("short"), Ref("nan")])
    assert rows == [] and store.count() == 0  # nothing wrong stored
    assert len(runner.failed_cells) == 2  # both cells ran and were reported
    assert all("every detector failed; nothing is stored" in m for m in runner.failed_cells)


def test_cli_exit_1_for_a_detector_with_bad_outputs(bench_file, reference, fake_dist, tmp_path):
    site = fake_dist(
        "oebench-hostile",
        {
            "hostile_detector": "import numpy as np\nimport oebench\n\n"
            "class Short(oebench.Detector):\n"
            "    def score(self, outputs):\n        return np.zeros(50)\n\n"
            "@oebench.hookimpl\ndef register_detectors(register):\n"
            "    register('short', Short)\n"
        },
        {"hostile": "hostile_detector"},
    )
    result = run_cli(
        "run", str(bench_file), "--detectors", "msp,short", env={"PYTHONPATH": str(site)}
    )
    assert result.returncode == 1, result.stderr
    assert "detector 'short' (plugin 'hostile')" in result.stderr
    assert "50 scores for 1000 samples" in result.stderr and "Traceback" not in result.stderr
    stored = load_results()
    assert set(stored.detector) == {"msp"} and len(stored.cell.unique()) == 2


# -- dataset plugins that break the contract -----------------------------------------------------
def test_check_split_names_each_broken_contract():
    good = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    check_split(TensorImages(good, torch.tensor([0, 1, 2, 9])), "train", 10, 1)
    check_split(TensorImages(good.float() / 255), "test", None, 1)
    cases = [
        (TensorImages(good, torch.tensor([0, 1, 2, 10])), 10, r"\[0, 10\), found 0..10"),
        (TensorImages(good, torch.tensor([-1, 1, 2, 3])), 10, "found -1..3"),
        (TensorImages(good[:0]), None, "is empty"),
        (TensorImages(good.float().div(255).index_fill(0, torch.tensor([1]), np.nan)), None, "NaN"),
        (TensorImages(good.float()), None, r"\[0, 1\], found"),
        (TensorImages(good.repeat(1, 4, 1, 1)), None, "4 channels"),
        ([(torch.rand(8, 8), 0)], None, r"\(C, H, W\)"),
        ([(np.zeros((1, 8, 8)), 0)], None, "ndarray"),
    ]
    for data, classes, match in cases:
        with pytest.raises(ContractError, match=match):
            check_split(data, "test", classes, 1)


class NanPixels(oebench.ImageSource):
    shape = (1, 28, 28)

    def load(self, split, *, shape=None, seed=0):
        images = torch.full((10, 1, 28, 28), 0.5)
        images[2, 0, 3, 3] = float("nan")
        return TensorImages(images)


class Quits(oebench.ImageSource):
    shape = (1, 28, 28)

    def load(self, split, *, shape=None, seed=0):
        raise SystemExit(0)


def test_a_dataset_plugin_breaking_the_contract_is_named_and_stores_nothing(
    bench_file, reference, tmp_path
):
    class Plugin:
        @oebench.hookimpl
        def register_datasets(self, register):
            register("nan-pixels", NanPixels)
            register("quits", Quits)

    get_plugin_manager().register(Plugin(), name="broken-data")
    try:
        for name, why in [("nan-pixels", "1 NaN pixel value"), ("quits", "SystemExit: 0")]:
            store = ResultStore(tmp_path / f"{name}.sqlite")
            runner, rows = run_rows(bench_file, store, ood_datasets=[Ref("letters"), Ref(name)])
            assert rows == [] and store.count() == 0
            assert len(runner.failed_cells) == 2
            message = runner.failed_cells[0]
            assert f"dataset {name!r} (plugin 'broken-data')" in message and why in message
    finally:
        get_plugin_manager().unregister(name="broken-data")


# -- a cache that cannot be written --------------------------------------------------------------
@pytest.mark.parametrize("how", ["file-where-a-folder-should-be", "disk-full"])
def test_cache_write_failure_warns_once_and_the_results_are_stored(
    how, bench_file, reference, tmp_path, monkeypatch, capfd
):
    if how == "disk-full":
        monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("oebench.core.files.tempfile.mkstemp", full)
    else:
        blocker = tmp_path / "cache"
        blocker.write_text("a file, not a folder")
        monkeypatch.setenv("OEBENCH_CACHE_DIR", str(blocker))
    store = ResultStore(tmp_path / "s.sqlite")
    _, rows = run_rows(bench_file, store)
    assert numbers(rows).equals(reference.numbers)
    assert stored_numbers(store.path).equals(reference.numbers)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "cannot write the cache file" in line]
    assert len(warnings) == 2, err  # one per cache (models, outputs), naming the path
    assert any(str(tmp_path / "cache" / "models") in w for w in warnings)
    assert any(str(tmp_path / "cache" / "outputs") in w for w in warnings)
    assert "Traceback" not in err


# -- killed and interrupted runs -----------------------------------------------------------------
def cells_in(path) -> int:
    try:
        with ResultStore(path, create=False) as store:
            return store.count()
    except StoreError:  # not created yet, or killed while creating its schema
        return 0


def assert_only_right_numbers(store_path, reference) -> int:
    """Every stored row equals the clean run's; returns how many cells are stored."""
    if cells_in(store_path) == 0:
        return 0
    stored = stored_numbers(store_path)
    merged = stored.merge(reference.numbers, on=NUMBERS[:3], suffixes=("", "_ref"))
    assert len(merged) == len(stored)
    for m in NUMBERS[3:]:
        assert np.array_equal(merged[m], merged[f"{m}_ref"]), m
    return len(stored.training.unique())


def test_sigkill_at_random_points_loses_nothing_and_stores_no_wrong_number(
    bench_file, reference, tmp_path
):
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cache"), "OEBENCH_STORE": str(tmp_path / "s")}
    rng = random.Random(20261128)
    kept = 0
    # the child stops at every step (start-up, plugins, the benchmark file, torch's import,
    # each training step and batch, each score array written inside a cell's transaction,
    # each stored cell) and the kill lands at one drawn at random: in the first run, one of
    # its first steps (its first commit at the latest); in the second, one after it stored
    # a cell (while the next cell is committed at the latest)
    for phase in ("early", "after-first-cell"):
        run = SteppedRun(["run", str(bench_file)], STEPS, env)
        if phase == "after-first-cell":
            run.until(lambda step: step.startswith("stored"))
            run.go()
        step = run.until(lambda step: step.startswith("commit") or rng.random() < 0.1)
        run.proc.kill()
        run.finish()
        now = assert_only_right_numbers(env["OEBENCH_STORE"], reference)
        assert now >= kept, step  # nothing lost
        # a cell killed inside its transaction is not stored at all
        assert now == (0 if phase == "early" else 1), step
        kept = now
    done = run_cli("run", str(bench_file), env=env)
    assert done.returncode == 0, done.stderr
    assert assert_only_right_numbers(env["OEBENCH_STORE"], reference) == 2
    assert stored_numbers(env["OEBENCH_STORE"]).equals(reference.numbers)


#: what the "preamble" case finds (and what made this test fail on a loaded machine when it
#: sent its signal after a delay): the first lines of ``oebench.cli.run.run`` (its imports,
#: ``check_output_file``, ``settings.override``) come before its ``try``, so a Ctrl-C there
#: reaches ``Group.invoke`` as a bare KeyboardInterrupt and says only "Interrupted."
@pytest.mark.parametrize(
    "where",
    [
        "plugins",
        "preamble",
        "benchmark",
        "torch",
    ],
)
def test_sigint_in_the_first_second_reports_like_later_and_exits_130(bench_file, where, tmp_path):
    """Ctrl-C while plugins load, the benchmark is read or torch is imported: not click's
    "Aborted!" with exit 1, but the run's own message and 130."""
    # an empty cache: the run has to train, so it imports torch (a run served from a filled
    # cache needs no torch)
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "c"), "OEBENCH_STORE": str(tmp_path / "s")}
    run = SteppedRun(["run", str(bench_file)], [where], env, terminal_sigint=True)
    assert run.next_step() == where  # the child waits there, until the signal comes
    run.proc.send_signal(signal.SIGINT)
    code, err = run.finish(timeout=120)
    assert code == 130, err
    assert "Aborted!" not in err and "Traceback" not in err
    assert "Interrupted: 0 of " in err and "run the same command again to resume" in err


@pytest.mark.parametrize("signalled", [True, False])
def test_an_error_that_a_ctrl_c_caused_is_reported_as_the_interrupt(tmp_path, signalled):
    """Extension modules (pydantic building a schema) can turn Ctrl-C into an error of their
    own: after a SIGINT that is still "Interrupted" and 130; without one, a real error."""
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        import oebench.bench.parse

        def load(*args, **kwargs):
            try:
                if {signalled}:
                    os.kill(os.getpid(), signal.SIGINT)
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("SchemaError: KeyboardInterrupt") from None

        oebench.bench.parse.load_benchmark = load
        from oebench.cli import main
        sys.argv = ["oebench", "run", "quickstart"]
        main()
        """
    )
    env = os.environ | {"OEBENCH_STORE": str(tmp_path / "s")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    if signalled:
        assert out.returncode == 130 and "Traceback" not in out.stderr, out.stderr
        assert "Interrupted: 0 of " in out.stderr
    else:
        assert out.returncode == 1 and "RuntimeError: SchemaError" in out.stderr


def _store_with_one_cell(path) -> ResultStore:
    from conftest import store_record as _record
    from conftest import store_rows as _rows

    store = ResultStore(path)
    store.save_cell(_record("a"), _rows(50.0))
    return store


def test_count_never_includes_an_uncommitted_cell(tmp_path):
    """The old message said "1 of 2 cells are kept" while the store held 0: a transaction
    left open by an interrupt was counted."""
    from conftest import store_record as _record

    store = _store_with_one_cell(tmp_path / "s.sqlite")
    conn = store._connection
    conn.execute("BEGIN IMMEDIATE")  # as if Ctrl-C landed before COMMIT
    record = _record("b")
    columns, marks = ", ".join(CELL_COLUMNS), ", ".join("?" * len(CELL_COLUMNS))
    conn.execute(
        f"INSERT INTO cells ({columns}) VALUES ({marks})", [record[c] for c in CELL_COLUMNS]
    )
    assert store.count(["a", "b"]) == 1
    store.close()
    assert cells_in(tmp_path / "s.sqlite") == 1


def test_ctrl_c_inside_the_transaction_commits_the_cell_whole_first(tmp_path, monkeypatch):
    from conftest import store_record as _record

    import oebench.record.store as store_module

    store = _store_with_one_cell(tmp_path / "s.sqlite")
    real = store_module.encode_scores

    def interrupted(scores):  # runs inside the transaction, between INSERTs and COMMIT
        os.kill(os.getpid(), signal.SIGINT)
        return real(scores)

    monkeypatch.setattr(store_module, "encode_scores", interrupted)
    arrays = [store_module.ScoreArray("msp", "x", False, np.arange(3.0))]
    with pytest.raises(KeyboardInterrupt):
        store.save_cell(_record("b"), [], arrays)
    assert store.count() == 2
    assert store.scores(["b"])["b"][0].scores.tolist() == [0.0, 1.0, 2.0]


# -- damaged and read-only stores ----------------------------------------------------------------
def invoke(*args: str):
    """The CLI in-process (so that monkeypatches apply), stdout and stderr apart."""
    from click.testing import CliRunner

    from oebench.cli import cli

    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def stored(bench_file, reference, tmp_path):
    """A store holding the faults benchmark's two cells."""
    path = tmp_path / "stored.sqlite"
    with ResultStore(path) as store:
        run_rows(bench_file, store)
    return path


def damage_first_blob(path, detector: str = "energy") -> str:
    """Overwrite one stored score array with bytes that are not zlib data; returns its cell."""
    conn = sqlite3.connect(path)
    with conn:
        cell, rowid = conn.execute(
            "SELECT cell, min(rowid) FROM scores WHERE detector = ?", (detector,)
        ).fetchone()
        conn.execute("UPDATE scores SET data = ? WHERE rowid = ?", (b"not zlib", rowid))
    conn.close()
    return cell


def test_a_damaged_score_blob_is_named_and_everything_else_goes_on(stored, bench_file, tmp_path):
    cell = damage_first_blob(stored)
    result = invoke("leaderboard", "--store", str(stored), "--ci", "--resamples", "10")
    assert result.exit_code == 0, result.output
    assert f"cell {cell}" in result.stderr and "damaged" in result.stderr
    assert "msp" in result.stdout and "energy" in result.stdout  # means are still shown

    result = invoke("plot", "--store", str(stored), "-o", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    assert f"cell {cell}" in result.stderr
    names = [p.name for p in (tmp_path / "plots").glob("*.png")]
    assert sum("_msp_" in n for n in names) == 2  # ROC and histogram, both trainings
    assert sum("_energy_" in n for n in names) == 2  # the undamaged training only

    scores = tmp_path / "scores"
    result = invoke("run", str(bench_file), "--store", str(stored), "--save-scores", str(scores))
    assert result.exit_code == 0, result.output
    assert f"cell {cell}" in result.stderr
    damaged = pd.read_parquet(next(p for p in scores.glob("*.parquet") if cell in p.name))
    assert set(damaged.detector) == {"msp"}  # the damaged detector's scores left out whole
    assert {"msp", "energy"} <= set(
        pd.read_parquet(next(p for p in scores.glob("*.parquet") if cell not in p.name)).detector
    )


def test_a_read_only_store_without_wal_files_opens_immutable_for_queries(stored, monkeypatch):
    expected = stored_numbers(stored)
    assert not Path(f"{stored}-wal").exists()  # a clean close merged the WAL
    real = os.access
    monkeypatch.setattr(
        "oebench.record.store.os.access",
        lambda p, mode: (
            False if mode & os.W_OK and Path(p) in (stored, stored.parent) else real(p, mode)
        ),
    )
    with ResultStore(stored, create=False) as store:
        assert store.immutable
        assert numbers(store.rows()).equals(expected)
    result = invoke("leaderboard", "--store", str(stored))
    assert result.exit_code == 0, result.output
    assert not Path(f"{stored}-wal").exists() and not Path(f"{stored}-shm").exists()
    Path(f"{stored}-wal").write_bytes(b"x" * 100)  # unmerged results: no silent snapshot
    result = invoke("leaderboard", "--store", str(stored))
    assert result.exit_code == 2 and "read-only" in result.stderr


# -- output files --------------------------------------------------------------------------------
def test_outputs_into_a_missing_folder_fail_before_the_run(bench_file, tmp_path):
    store = tmp_path / "never.sqlite"
    result = invoke("run", str(bench_file), "--store", str(store), "--csv", f"{tmp_path}/no/r.csv")
    assert result.exit_code == 2 and "folder" in result.stderr and "does not exist" in result.stderr
    assert not store.exists()  # nothing ran
    result = invoke("leaderboard", "-o", str(tmp_path / "no" / "x.txt"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_outputs_refuse_symlinks_and_say_what_they_overwrote(stored, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "planted_roc.png").symlink_to(victim)
    result = invoke("plot", "--store", str(stored), "-o", str(plots))
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert victim.read_text() == "precious" and not list(plots.glob("faults*"))
    result = invoke("plot", "--store", str(stored), "-o", str(plots), "--force")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious" and not (plots / "planted_roc.png").exists()
    result = invoke("plot", "--store", str(stored), "-o", str(plots))
    written = len(list(plots.glob("*.png")))
    assert result.exit_code == 0 and f"Overwrote {written} existing file(s)" in result.stderr

    out = tmp_path / "board.csv"
    out.symlink_to(victim)
    result = invoke("leaderboard", "--store", str(stored), "--format", "csv", "-o", str(out))
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert victim.read_text() == "precious"
    out.unlink()
    out.write_text("old")
    result = invoke("leaderboard", "--store", str(stored), "--format", "csv", "-o", str(out))
    assert result.exit_code == 0 and f"{out} exists and will be overwritten" in result.stderr


# -- downloads -----------------------------------------------------------------------------------
def test_downloads_are_verified_under_a_temporary_name_then_renamed(tmp_path, monkeypatch):
    import hashlib

    import torchvision.datasets.utils as tvu

    from oebench.core.datafiles import fetch
    from oebench.errors import DataNotFoundError

    def killed(url, root, filename=None, md5=None):
        Path(root, filename).write_bytes(b"partial")
        raise ConnectionError("connection reset")

    monkeypatch.setattr(tvu, "download_url", killed)
    dest = tmp_path / "dl" / "file.bin"
    with pytest.raises(ConnectionError):
        fetch("https://x/file.bin", dest, sha256="0" * 64)
    assert list((tmp_path / "dl").iterdir()) == []  # no partial file under any name
    (tmp_path / "dl" / ".file.999.part.bin").write_bytes(b"left by a SIGKILL")

    def fine(url, root, filename=None, md5=None):
        Path(root, filename).write_bytes(b"payload")

    monkeypatch.setattr(tvu, "download_url", fine)
    with pytest.raises(DataNotFoundError, match="does not match"):
        fetch("https://x/file.bin", dest, sha256="0" * 64)
    assert list((tmp_path / "dl").iterdir()) == []
    good = hashlib.sha256(b"payload").hexdigest()
    assert fetch("https://x/file.bin", dest, sha256=good).read_bytes() == b"payload"
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["file.bin"]


def test_a_blank_300k_download_is_refused(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    from oebench.errors import DataNotFoundError
    from oebench.registry.lookup import create_outlier_source

    def black(url, root, filename=None, md5=None):
        with open(Path(root, filename), "wb") as fh:  # all black
            np.save(fh, np.zeros((1000, 32, 32, 3), np.uint8))

    monkeypatch.setattr(tvu, "download_url", black)
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    source = create_outlier_source("300k-random-images")
    with pytest.raises(DataNotFoundError, match="every sampled pixel is 0"):
        source.files()
    assert not list((tmp_path / "data").rglob("*.npy"))


def test_hf_download_failure_does_not_suggest_download(monkeypatch):
    import datasets

    from oebench.errors import DataNotFoundError
    from oebench.registry.lookup import create_dataset

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    with pytest.raises(DataNotFoundError) as info:
        create_dataset("hf", path="someone/some-set").hf_dict()
    assert "--download" not in str(info.value) and "could not be fetched" in str(info.value)
    monkeypatch.delenv("OEBENCH_DOWNLOAD")
    with pytest.raises(DataNotFoundError, match="Rerun with --download"):
        create_dataset("hf", path="someone/some-set").hf_dict()
