"""The results store: atomic cells, resume after SIGKILL, concurrent runs, bad store files."""

import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_cli, store_record, store_rows
from stepped import SteppedRun

from oebench.core import settings
from oebench.errors import UserError
from oebench.record.schema import (
    EXTRA_CELL_COLUMNS,
    EXTRA_ROW_COLUMNS,
    FS_ROW_COLUMNS,
)
from oebench.record.store import ResultStore, ScoreArray
from oebench.record.tables import SCHEMA_VERSION
from oebench.report.results import load_results
from oebench.report.tables import results_frame

CLI = "from oebench.cli import main; main()"
SEEDS = ("--seed", "0", "--seed", "1", "--seed", "2")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def stored_cells(path) -> int:
    """How many cells a store holds, read as another process would (0 while it is created)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute("SELECT count(*) FROM cells").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def key_counts(path) -> tuple[int, int, int]:
    """(cells, distinct cell keys, result rows) of a store."""
    conn = sqlite3.connect(path)
    try:
        cells, distinct = conn.execute("SELECT count(*), count(DISTINCT key) FROM cells").fetchone()
        rows = conn.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        conn.close()
    return cells, distinct, rows


def numbers(store) -> pd.DataFrame:
    return results_frame(load_results(store))


# -- the store on its own --------------------------------------------------------------------
def test_the_default_store_is_the_one_settings_name(monkeypatch, tmp_path):
    monkeypatch.setenv("OEBENCH_STORE", str(tmp_path / "mine.sqlite"))
    with ResultStore() as store:
        assert store.path == tmp_path / "mine.sqlite"
    with settings.override(store=tmp_path / "cli.sqlite"), ResultStore() as store:
        assert store.path == tmp_path / "cli.sqlite"


def test_a_stored_cell_is_never_duplicated_and_replaced_only_on_request(tmp_path):
    path = tmp_path / "s.sqlite"
    scores = [ScoreArray("msp", "id-set", False, np.arange(10.0))]
    with ResultStore(path) as store:
        assert store.save_cell(store_record("k1"), store_rows(50.0), scores)
        assert not store.save_cell(store_record("k1"), store_rows(60.0), scores)  # already there
        assert [r["auroc"] for r in store.rows()] == [50.0, 50.0]
        assert store.save_cell(store_record("k1"), store_rows(70.0), scores, replace=True)
        assert [r["auroc"] for r in store.rows()] == [70.0, 70.0]
        assert store.count() == 1
        assert np.array_equal(store.scores(["k1"])["k1"][0].scores, np.arange(10.0))
        broken = [ScoreArray("msp", "x", True, np.array(["not a number"]))]
        with pytest.raises(ValueError):  # a failure mid-transaction leaves nothing behind
            store.save_cell(store_record("k2"), store_rows(1.0), broken)
        assert store.count() == 1
    assert key_counts(path) == (1, 1, 2)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _junk(path):
    path.write_bytes(b"this is not a database " * 100)


def _other_sqlite(path):
    path.unlink()
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()


def _pragma(statement):
    def change(path):
        conn = sqlite3.connect(path)
        conn.execute(statement)
        conn.commit()
        conn.close()

    return change


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncated, "is corrupt or not an SQLite file"),
        (_junk, "is corrupt or not an SQLite file (file is not a database)"),
        (_other_sqlite, "not an oebench results store"),
        (_pragma("PRAGMA user_version = 99"), "schema version 99, newer than this oebench"),
        (_pragma("PRAGMA user_version = 0"), "old schema version 0"),
        (lambda path: path.write_bytes(b""), "is empty"),
        (lambda path: path.unlink(), "no results store at"),
    ],
)
def test_bad_store_files_are_one_line_errors(tmp_path, damage, expected):
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        for i in range(20):  # enough pages that half a file is damaged, not just short
            store.save_cell(store_record(f"k{i}"), store_rows(float(i)))
    damage(path)
    for args in (["leaderboard"], ["plot"], ["leaderboard", "--format", "csv"]):
        assert expected in one_line_error(run_cli(*args, "--store", str(path)))
    with pytest.raises(UserError, match="results store|oebench results store"):
        load_results(path)


def test_run_refuses_a_store_from_another_schema_before_any_work(tmp_path):
    path = tmp_path / "s.sqlite"
    ResultStore(path).close()
    _pragma(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")(path)
    line = one_line_error(run_cli("run", str(TINY), "--store", str(path)))
    assert f"schema version {SCHEMA_VERSION + 1}" in line


def test_a_schema_1_store_is_upgraded_in_place_and_keeps_its_rows(tmp_path):
    """Stores written before the calibration columns existed open, gain them, keep their rows."""
    path = tmp_path / "v1.sqlite"
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO benchmarks VALUES ('d', 'b', 'text')")
    for column in FS_ROW_COLUMNS:  # schema 5's
        conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
    conn.execute("ALTER TABLE cells DROP COLUMN platform")  # schema 4's
    conn.execute("ALTER TABLE cells DROP COLUMN checksum")  # schema 3's, after schema 2's
    for column in EXTRA_CELL_COLUMNS:
        conn.execute(f"ALTER TABLE cells DROP COLUMN {column}")
    for column in EXTRA_ROW_COLUMNS:
        conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT name FROM benchmarks").fetchall() == [("b",)]
    conn.close()
    ResultStore(tmp_path / "v2.sqlite").close()
    assert table_infos(path) == table_infos(tmp_path / "v2.sqlite")  # as if made at this version


def table_infos(path) -> dict[str, list[tuple]]:
    """Each table's columns: name, type, NOT NULL, default and key position."""
    conn = sqlite3.connect(path)
    try:
        tables = ("benchmarks", "cells", "results", "scores")
        return {t: conn.execute(f"PRAGMA table_info({t})").fetchall() for t in tables}
    finally:
        conn.close()


# -- runs against the store ------------------------------------------------------------------
def test_sigkill_at_any_moment_then_rerun_matches_an_uninterrupted_run(tmp_path):
    store = tmp_path / "killed.sqlite"
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cold-cache")}  # the kill lands mid-training
    args = ["run", str(TINY), *SEEDS, "--store", str(store)]
    run = SteppedRun(args, ["stored", "step"], env)
    run.until(lambda step: step.startswith("stored"))  # a cell is committed
    run.go()
    run.until(lambda step: step.startswith("step train "))  # and the next model is training
    run.proc.kill()
    run.finish()
    kept = stored_cells(store)
    assert 1 <= kept < 6  # killed part-way

    resumed = run_cli(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} of 6 cells came from the results store" in resumed.stderr
    assert key_counts(store) == (6, 6, 6 * 10)  # 2 detectors x (4 OOD sets + mean) per cell

    reference = tmp_path / "reference.sqlite"  # trained afresh, sharing nothing with the above
    straight = run_cli("run", str(TINY), *SEEDS, "--store", str(reference), "--no-cache")
    assert straight.returncode == 0, straight.stderr
    pd.testing.assert_frame_equal(numbers(store), numbers(reference), check_exact=True)


def test_concurrent_runs_share_one_store(tmp_path):
    store = tmp_path / "shared.sqlite"
    env = {**os.environ, "OEBENCH_CACHE_DIR": str(tmp_path / "shared-cache")}  # shared too
    outs = [tmp_path / f"run{i}.csv" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLI, "run", str(TINY), "--seed", "0", "--seed", "1"]
            + ["--store", str(store), "--csv", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert key_counts(store) == (4, 4, 40)
    assert outs[0].read_text() == outs[1].read_text()
    board = run_cli("leaderboard", "--store", str(store), "--format", "csv")
    assert board.stdout == outs[0].read_text()


def test_seeds_added_later_join_the_leaderboard(tmp_path):
    store = str(tmp_path / "s.sqlite")
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cache")}  # keep other seeds out of the shared one
    assert run_cli("run", str(TINY), "--seed", "1", "--store", store, env=env).returncode == 0
    both = run_cli("run", str(TINY), "--seed", "0", "--seed", "1", "--store", store, env=env)
    assert both.returncode == 0, both.stderr
    assert "2 of 4 cells came from the results store" in both.stderr
    assert "2 seed(s)" in both.stdout
    df = load_results(store)
    assert sorted(df.seed.unique()) == [0, 1] and len(df) == 40
    assert list(df.seed.iloc[[0, -1]]) == [0, 1]  # rows in seed order, whatever the run order


def test_ctrl_c_stops_cleanly_and_says_what_was_kept(tmp_path):
    store = tmp_path / "interrupted.sqlite"
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cold-cache")}
    shown = tmp_path / "stdout.txt"
    with open(shown, "w") as stdout:
        args = ["run", str(TINY), *SEEDS, "--store", str(store)]
        run = SteppedRun(args, ["stored"], env, stdout=stdout, terminal_sigint=True)
        run.until(lambda step: step.startswith("stored"))  # the first cell is committed
        run.proc.send_signal(signal.SIGINT)  # as in a terminal, while the child waits there
        code, err = run.finish(timeout=120)
    out = shown.read_text()
    assert code == 130, err
    assert "Traceback" not in err
    kept = stored_cells(store)
    assert f"Interrupted: {kept} of 6 cells are kept in the results store" in err
    assert "run the same command again to resume" in err
    assert "baseline" in out  # the cells it finished are still shown
    assert key_counts(store) == (kept, kept, 10 * kept)
