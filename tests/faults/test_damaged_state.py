"""Damaged state is detected, discarded and recomputed (or reported in one line), never believed:
weight notes and cached vocabularies swapped or edited, stored cells with a flipped byte or
missing rows, damaged digest files, `oebench cache clear` on a folder oebench did not make, a
store whose folder cannot be made (issue 20, item 6 and the damaged-state cases)."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli, store_record, store_rows

from oebench.core.files import CACHE_MARKER
from oebench.execute.checkpoints import CheckpointCache
from oebench.keys.weights import WeightNotes
from oebench.record.schema import FS_ROW_COLUMNS
from oebench.record.store import ResultStore, ScoreArray, StoreError, encode_scores
from oebench.record.tables import SCHEMA_VERSION
from oebench.report.results import load_results


def invoke(*args: str):
    """The CLI in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from oebench.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines(result.stderr)) == 1, result.stderr
    return result.stderr


def csv_rows(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


# -- weight notes ------------------------------------------------------------------------------
KEY, OTHER = "a" * 20, "b" * 20


@pytest.fixture
def two_notes(tmp_path):
    """Notes on two checkpoints whose files exist (only their sha256 is read)."""
    cache = CheckpointCache(tmp_path)
    cache.root.mkdir(parents=True)
    cache.path(KEY).write_bytes(b"weights of a")
    cache.path(OTHER).write_bytes(b"weights of b")
    notes = WeightNotes(cache)
    notes.note_trained(KEY, "digest-a", 1.0)
    notes.note_trained(OTHER, "digest-b", 2.0)
    return cache, notes


def swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def test_damaged_state_notes_swapped_with_their_checkpoints_are_not_believed(two_notes, capfd):
    cache, notes = two_notes
    swap(cache.path(KEY), cache.path(OTHER))
    swap(notes.root / f"{KEY}.json", notes.root / f"{OTHER}.json")
    capfd.readouterr()
    assert notes.trained(KEY) is None and notes.trained(OTHER) is None  # not the other's digest
    err = lines(capfd.readouterr().err)
    assert len(err) == 2 and all("written for another key" in line for line in err)
    assert not (notes.root / f"{KEY}.json").exists()  # removed: made again after loading


def test_damaged_state_a_note_naming_another_digest_is_not_believed(two_notes, capfd):
    _, notes = two_notes
    path = notes.root / f"{KEY}.json"
    note = json.loads(path.read_text())
    path.write_text(json.dumps(note | {"digest": "digest-b"}))
    capfd.readouterr()
    assert notes.trained(KEY) is None
    assert "checksum mismatch" in capfd.readouterr().err
    notes.note_trained(KEY, "digest-a", 1.0)  # the next load writes it again, believed
    assert notes.trained(KEY) == ("digest-a", 1.0)


@pytest.mark.parametrize(
    "fields",
    [
        {"seconds": None},  # float(None): the TypeError traceback of every command before
        {"seconds": "soon"},
        {"digest": None},
        {"format": 1, "seconds": None},  # a note of the format before, damaged
    ],
)
def test_damaged_state_a_malformed_note_is_no_traceback(two_notes, fields):
    _, notes = two_notes
    notes.note_init("k", "1n1t")
    for name in (KEY, "init-k"):
        path = notes.root / f"{name}.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    assert notes.trained(KEY) is None and notes.init_digest("k") is None
    assert notes.trained(OTHER) == ("digest-b", 2.0)


def test_damaged_state_checkpoints_and_notes_swapped_rerun_scores_the_right_weights(tmp_path):
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cache"), "OEBENCH_STORE": str(tmp_path / "s")}
    first = run_cli("run", str(TINY), "--csv", str(tmp_path / "a.csv"), env=env)
    assert first.returncode == 0, first.stderr
    models = tmp_path / "cache" / "models"
    a, b = sorted(p.stem for p in models.glob("*.pt"))
    swap(models / f"{a}.pt", models / f"{b}.pt")
    swap(models / "notes" / f"{a}.json", models / "notes" / f"{b}.json")
    rerun = run_cli("run", str(TINY), "--rerun", "--csv", str(tmp_path / "b.csv"), env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert csv_rows(tmp_path / "a.csv") == csv_rows(tmp_path / "b.csv")
    assert "written for another key" in rerun.stderr
    note = models / "notes" / f"{a}.json"  # a changed digest: before, every run failed on it
    note.write_text(note.read_text().replace('"digest": "', '"digest": "0'))
    again = run_cli("run", str(TINY), "--rerun", "--csv", str(tmp_path / "c.csv"), env=env)
    assert again.returncode == 0, again.stderr
    assert csv_rows(tmp_path / "a.csv") == csv_rows(tmp_path / "c.csv")
    assert [line for line in lines(again.stderr) if "weight note" in line] == [
        f"oebench: warning: ignoring the weight note {note} (checksum mismatch: the note was "
        "damaged or edited); the model is loaded and the note made again"
    ]


# -- cached vocabularies -------------------------------------------------------------------------
def fortunes(root: Path, name: str, entries: list[str]) -> None:
    (root / name).write_text("\n%\n".join(entries) + "\n%\n")


def test_damaged_state_swapped_cached_vocabularies_are_rebuilt(tmp_path, monkeypatch, capfd):
    from oebench.contracts import text
    from oebench.registry.lookup import create_dataset

    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("a", "a2"):
        fortunes(tmp_path, name, ["alpha beta", "alpha gamma", "beta", "alpha", "delta"] * 2)
    for name in ("b", "b2"):
        fortunes(tmp_path, name, ["omega psi", "omega chi", "psi", "omega", "tau"] * 2)

    def source(first: str):
        categories = [first, f"{first}2"]
        return create_dataset("fortunes", categories=categories, root=str(tmp_path), length=3)

    built = {c: source(c).vocabulary() for c in "ab"}
    assert built["a"].words != built["b"].words
    folder = tmp_path / "cache" / "vocab"
    links = sorted(folder.glob("from-*.json"))
    assert len(links) == 2
    swap(*links)  # each text source now names the other's vocabulary
    monkeypatch.setattr(text, "_VOCABULARIES", {})  # a new process
    capfd.readouterr()
    assert {c: source(c).vocabulary() for c in "ab"} == built
    err = lines(capfd.readouterr().err)
    assert len(err) == 2 and all("ignoring the cached vocabulary file" in line for line in err)
    monkeypatch.setattr(text, "_VOCABULARIES", {})
    swap(*sorted(p for p in folder.glob("*.json") if not p.name.startswith("from-")))
    assert {c: source(c).vocabulary() for c in "ab"} == built
    monkeypatch.setattr(text, "_VOCABULARIES", {})
    capfd.readouterr()
    assert {c: source(c).vocabulary() for c in "ab"} == built  # repaired: read, no warning
    assert capfd.readouterr().err == ""


# -- file digests ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage",
    [
        lambda data, path: {path: 5},  # the TypeError of every command before
        lambda data, path: "{not json",
        lambda data, path: data | {"files": {path: [*data["files"][path][:4], "0" * 64, "x"]}},
        lambda data, path: {path: [1, 2, 3, 4, "0" * 64]} | {"other": None},
    ],
)
def test_damaged_state_a_damaged_digest_file_is_discarded_with_one_warning(
    tmp_path, monkeypatch, capfd, damage
):
    from oebench.core import datafiles
    from oebench.core.files import file_sha256

    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datafiles, "_DIGESTS", {})
    monkeypatch.setattr(datafiles, "_REPORTED", set(), raising=False)
    data_file = tmp_path / "data.bin"
    data_file.write_bytes(b"some data")
    truth = file_sha256(data_file)
    assert datafiles.content_digest(data_file) == truth
    digests = tmp_path / "cache" / "file-digests.json"
    damaged = damage(json.loads(digests.read_text()), str(data_file.resolve()))
    digests.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    monkeypatch.setattr(datafiles, "_DIGESTS", {})  # a new process
    capfd.readouterr()
    assert datafiles.content_digest(data_file) == truth
    err = lines(capfd.readouterr().err)
    assert len(err) == 1 and "ignoring the file digest cache" in err[0]
    monkeypatch.setattr(datafiles, "_DIGESTS", {})
    assert datafiles.content_digest(data_file) == truth  # the file was written whole again
    assert capfd.readouterr().err == ""


# -- stored cells ----------------------------------------------------------------------------
def flip_stored_double(path: Path, value: float) -> None:
    """Flip the lowest exponent bit of the first stored REAL equal to ``value`` in the file
    (SQLite keeps a REAL as 8 big-endian bytes): ``value`` reads as half of it."""
    raw = bytearray(path.read_bytes())
    at = raw.find(struct.pack(">d", value))
    assert at >= 0
    raw[at + 1] ^= 0x10
    path.write_bytes(bytes(raw))


def record(key: str, **changes) -> dict:
    return store_record(key, config="{}", plugins="{}", **changes)


def two_cells(path: Path) -> None:
    arrays = [ScoreArray("msp", "id", False, [1.0, 2.0]), ScoreArray("msp", "x", True, [3.0])]
    with ResultStore(path) as store:
        store.save_cell(record("k1", training="baseline"), store_rows(75.8), arrays)
        store.save_cell(record("k2", training="oe", cell_index=1), store_rows(60.0), arrays)


def test_damaged_state_a_flipped_byte_in_a_stored_metric_is_not_served(tmp_path, capfd):
    path = tmp_path / "s.sqlite"
    two_cells(path)
    flip_stored_double(path, 75.8)
    conn = sqlite3.connect(path)
    assert 37.9 in {r[0] for r in conn.execute("SELECT auroc FROM results")}  # as it reads now
    conn.close()
    capfd.readouterr()
    df = load_results(path)
    assert set(df.cell) == {"k2"} and 37.9 not in set(df.auroc)
    err = lines(capfd.readouterr().err)
    assert len(err) == 1 and "stored cell k1 (b / x / x / baseline / seed 0) is damaged" in err[0]
    with ResultStore(path) as store:
        assert not store.has("k1") and store.has("k2")
        assert store.count(["k1", "k2"]) == 1
        assert store.save_cell(record("k1", training="baseline"), store_rows(75.8))
        assert {r["auroc"] for r in store.rows(["k1"])} == {75.8}  # recomputed, stored anew
    assert invoke("store", "check", "--store", str(path))[0] == 0


def test_damaged_state_a_cell_with_missing_rows_is_not_served(tmp_path, capfd):
    path = tmp_path / "s.sqlite"
    two_cells(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM results WHERE cell = 'k2' AND ood_dataset = 'noise'")
        conn.execute("DELETE FROM results WHERE cell = 'k1'")
    conn.close()
    capfd.readouterr()
    with ResultStore(path) as store:
        assert store.rows() == [] and not store.has("k1") and not store.has("k2")
    err = capfd.readouterr().err
    assert "1 of its 2 result rows are missing" in err and "2 of its 2" in err
    code, out, _ = invoke("store", "check", "--store", str(path))
    assert code == 1
    assert [line.split(" (")[0] for line in lines(out)[:2]] == [
        "damaged: cell k1",
        "damaged: cell k2",
    ]
    assert "2 cells checked, 2 damaged" in lines(out)[-1]


def test_damaged_state_score_arrays_replaced_by_other_valid_ones_are_left_out(tmp_path, capfd):
    path = tmp_path / "s.sqlite"
    two_cells(path)
    conn = sqlite3.connect(path)
    with conn:  # valid zlib data of the right size: decodes, but not the scores that were saved
        conn.execute(
            "UPDATE scores SET data = ? WHERE cell = 'k1' AND dataset = 'id'",
            (encode_scores(np.array([2.0, 1.0])),),
        )
    conn.close()
    capfd.readouterr()
    with ResultStore(path) as store:
        assert store.scores(["k1", "k2"])["k1"] == [] and len(store.scores(["k2"])["k2"]) == 2
        assert store.damaged(["k1", "k2"]) == {("k1", "msp")}
        assert store.has("k1")  # its rows are whole: they are served
    assert "detector 'msp' in cell k1" in capfd.readouterr().err
    code, out, _ = invoke("store", "check", "--store", str(path))
    assert code == 1 and "score array differs" in out


def test_damaged_state_oebench_run_recomputes_a_damaged_stored_cell(tmp_path):
    store = tmp_path / "s.sqlite"
    args = ("run", str(TINY), "--store", str(store), "--csv")
    first = run_cli(*args, str(tmp_path / "a.csv"))
    assert first.returncode == 0, first.stderr
    conn = sqlite3.connect(store)
    value = conn.execute("SELECT auroc FROM results WHERE auroc > 1 LIMIT 1").fetchone()[0]
    conn.close()
    flip_stored_double(store, value)
    code, out, _ = invoke("store", "check", "--store", str(store))
    assert code == 1 and len(lines(out)) == 2 and "tiny / mnist-5k / small-cnn" in out
    again = run_cli(*args, str(tmp_path / "b.csv"))
    assert again.returncode == 0, again.stderr
    assert "is damaged (a stored value differs from what was saved)" in again.stderr
    assert csv_rows(tmp_path / "a.csv") == csv_rows(tmp_path / "b.csv")
    code, out, _ = invoke("store", "check", "--store", str(store))
    assert code == 0 and "2 cells checked, 0 damaged" in out


def make_schema_2(path: Path) -> None:
    """A store as oebench wrote it before cells had checksums."""
    two_cells(path)
    conn = sqlite3.connect(path)
    for column in FS_ROW_COLUMNS:  # schema 5's
        conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
    conn.execute("ALTER TABLE cells DROP COLUMN platform")  # schema 4's
    conn.execute("ALTER TABLE cells DROP COLUMN checksum")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_damaged_state_a_schema_2_store_is_upgraded_and_served_with_one_note(tmp_path, capfd):
    path = tmp_path / "v2.sqlite"
    make_schema_2(path)
    capfd.readouterr()
    with ResultStore(path) as store:
        assert len(store.rows()) == 4 and len(store.rows(["k1"])) == 2 and store.has("k1")
    err = lines(capfd.readouterr().err)
    assert len(err) == 1 and "served unverified" in err[0]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM cells WHERE checksum IS NULL").fetchone()[0] == 2
    conn.close()
    code, out, _ = invoke("store", "check", "--store", str(path))
    assert code == 0 and "2 stored before cells had checksums" in out


def test_damaged_state_a_read_only_schema_2_store_is_still_read(tmp_path, monkeypatch):
    path = tmp_path / "v2.sqlite"
    make_schema_2(path)
    real = os.access
    monkeypatch.setattr(
        "oebench.record.store.os.access",
        lambda p, mode: False if mode & os.W_OK and Path(p) in (path, tmp_path) else real(p, mode),
    )
    with ResultStore(path, create=False) as store:
        assert store.immutable and len(store.rows()) == 4
        assert {a.detector for a in store.scores(["k1"])["k1"]} == {"msp"}
    code, _, err = invoke("store", "check", "--store", str(path))
    assert code == 2 and "nothing to verify" in err


def test_damaged_state_a_store_whose_folder_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    store = tmp_path / "afile" / "s.sqlite"
    assert "cannot make its folder" in one_line_error(
        run_cli("run", str(TINY), "--store", str(store))
    )
    assert "no results store" in one_line_error(run_cli("leaderboard", "--store", str(store)))
    with pytest.raises(StoreError, match="cannot make its folder"):
        ResultStore(tmp_path / "afile" / "deeper" / "s.sqlite")


# -- cache clear -----------------------------------------------------------------------------------
def test_damaged_state_cache_clear_refuses_a_folder_oebench_did_not_make(tmp_path):
    projects = tmp_path / "projects"
    (projects / "models").mkdir(parents=True)
    mine = projects / "models" / "0123456789abcdef0123.pt"  # named like a checkpoint
    mine.write_bytes(b"a user's model")
    (projects / "outputs").mkdir()
    (projects / "outputs" / "0123456789abcdef0123.npz").write_bytes(b"a user's arrays")
    result = run_cli("cache", "clear", env={"OEBENCH_CACHE_DIR": str(projects)})
    assert CACHE_MARKER in one_line_error(result)
    assert mine.read_bytes() == b"a user's model"
    assert (projects / "outputs" / "0123456789abcdef0123.npz").exists()


def test_damaged_state_cache_clear_deletes_only_oebench_files_of_its_own_cache(
    tmp_path, monkeypatch
):
    from oebench.core.files import write_cache_file

    cache = tmp_path / "cache"
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(cache))
    ours = cache / "models" / "0123456789abcdef0123.pt"
    assert write_cache_file(None, ours, lambda tmp: Path(tmp).write_bytes(b"weights"))
    assert (cache / CACHE_MARKER).is_file()  # oebench made the folder: it is marked
    note = cache / "models" / "notes" / "init-0123456789abcdef0123.json"
    note.parent.mkdir()
    note.write_text("{}")
    kept = [cache / "models" / "resnet50.pt", cache / "outputs" / "notes.txt", cache / "mine"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")
    result = run_cli("cache", "clear")
    assert result.returncode == 0, result.stderr
    assert not ours.exists() and not note.exists() and not note.parent.exists()
    assert all(p.read_text() == "the user's" for p in kept)
    assert "kept 1 entries oebench did not write" in result.stdout


def test_damaged_state_oebench_marks_no_folder_that_already_held_files(tmp_path, monkeypatch):
    from oebench.core.files import write_cache_file

    projects = tmp_path / "projects"
    projects.mkdir()
    (projects / "thesis.tex").write_text("the user's")
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(projects))
    assert write_cache_file(None, projects / "outputs" / f"{'0' * 20}.npz", lambda t: None)
    assert not (projects / CACHE_MARKER).exists()
