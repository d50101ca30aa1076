"""The platform column of the store (schema 4): written with each cell, covered by its
checksum, NULL in cells stored before; a schema-3 store is upgraded in place or, read-only,
read as it is, and its cells still verify."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from conftest import store_record, store_rows

from oebench.core.platforms import cell_platform
from oebench.record.schema import FS_ROW_COLUMNS
from oebench.record.store import ResultStore, ScoreArray
from oebench.record.tables import SCHEMA_VERSION

ARRAYS = [ScoreArray("msp", "id", False, [1.0, 2.0]), ScoreArray("msp", "noise", True, [3.0])]
CPU = {"torch": "2.14.1", "device": "cpu", "cpu_capability": "AVX2", "cpu_vendor": "GenuineIntel"}


def record(key: str, **changes) -> dict:
    return store_record(key, config="{}", plugins="{}", **changes)


def platform_text(**changes) -> str:
    return json.dumps(cell_platform(CPU | changes, None), sort_keys=True)


def make_schema_3(path: Path) -> None:
    """A store as oebench wrote it before cells had platforms: two verified cells."""
    with ResultStore(path) as store:
        store.save_cell(record("k1", platform=None), store_rows(75.0), ARRAYS)
        store.save_cell(record("k2", platform=None, cell_index=1), store_rows(60.0), ARRAYS)
    conn = sqlite3.connect(path)
    for column in FS_ROW_COLUMNS:  # schema 5's
        conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
    conn.execute("ALTER TABLE cells DROP COLUMN platform")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


def test_a_cells_platform_is_stored_and_part_of_its_checksum(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        store.save_cell(record("k1", platform=platform_text()), store_rows(75.0), ARRAYS)
        assert (
            json.loads(store.cell("k1")["platform"])["signature"] == "cpu:AVX2 Intel torch 2.14.1"
        )
        assert {row["platform"] for row in store.rows()} == {platform_text()}
        assert all(check.problem is None for check in store.check())
    conn = sqlite3.connect(path)  # another platform written over it: not served as the same
    conn.execute("UPDATE cells SET platform = ?", (platform_text(cpu_capability="AVX512"),))
    conn.commit()
    conn.close()
    with ResultStore(path) as store:
        assert "differs from what was saved" in str([c.problem for c in store.check()])


def test_a_schema_3_store_is_upgraded_and_its_cells_still_verify(tmp_path):
    path = tmp_path / "v3.sqlite"
    make_schema_3(path)
    with ResultStore(path) as store:
        assert store.has("k1") and store.has("k2") and len(store.rows()) == 4
        checks = list(store.check())
        assert [c.problem for c in checks] == [None, None] and all(c.verifiable for c in checks)
        assert {row["platform"] for row in store.rows()} == {None}
        store.save_cell(record("k3", platform=platform_text()), store_rows(50.0), ARRAYS)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert conn.execute("SELECT count(*) FROM cells WHERE platform IS NULL").fetchone()[0] == 2
    upgraded = [conn.execute(f"PRAGMA table_info({t})").fetchall() for t in ("cells", "results")]
    conn.close()
    ResultStore(tmp_path / "new.sqlite").close()
    conn = sqlite3.connect(tmp_path / "new.sqlite")
    made = [conn.execute(f"PRAGMA table_info({t})").fetchall() for t in ("cells", "results")]
    assert upgraded == made  # as if made new
    conn.close()


def test_a_read_only_schema_3_store_is_read_and_verified_as_it_is(tmp_path, monkeypatch):
    path = tmp_path / "v3.sqlite"
    make_schema_3(path)
    real = os.access
    monkeypatch.setattr(
        "oebench.record.store.os.access",
        lambda p, mode: False if mode & os.W_OK and Path(p) in (path, tmp_path) else real(p, mode),
    )
    with ResultStore(path, create=False) as store:
        assert store.immutable and store.checksums
        assert len(store.rows()) == 4 and store.cell("k1")["platform"] is None
        assert [c.problem for c in store.check()] == [None, None]
        assert {a.detector for a in store.scores(["k1"])["k1"]} == {"msp"}
    conn = sqlite3.connect(path)  # nothing was written
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()
