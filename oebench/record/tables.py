"""The store's SQLite tables: the cells and results tables generated from the result schema
(``oebench.record.schema``), the marks of the file format, creating them and upgrading a
store of an older schema version in place."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from oebench.record.schema import (
    CELL_TYPES,
    EXTRA_CELL_COLUMNS,
    EXTRA_ROW_COLUMNS,
    FS_ROW_COLUMNS,
    METRIC_COLUMNS,
    OPTIONAL,
    PLATFORM_COLUMNS,
    ROW_TYPES,
    STORE_CELL_TYPES,
)

#: 1: the first; 2: metric settings and calibration columns; 3: each cell's checksum;
#: 4: each cell's platforms; 5: the full-spectrum row columns
SCHEMA_VERSION = 5
APPLICATION_ID = 0x6F656221  # "oe" + "b!": marks a file as an oebench results store
SQL_TYPES: dict[type, str] = {str: "TEXT", int: "INTEGER", bool: "INTEGER", float: "REAL"}
#: columns that may hold NULL: the optional ones, the metrics (as every store has them), and
#: the checksum (NULL: a cell stored before schema 3, which cannot be verified)
NULLABLE = OPTIONAL | frozenset(METRIC_COLUMNS) | frozenset(STORE_CELL_TYPES)
#: the constraints of cells columns that are more than NOT NULL
CELL_CONSTRAINTS = {
    "key": "PRIMARY KEY",
    "benchmark_digest": "NOT NULL REFERENCES benchmarks(digest)",
}


def column_sql(name: str, kind: type, constraint: str | None = None) -> str:
    """``name TYPE NOT NULL`` (no NOT NULL for a ``NULLABLE`` column), or with ``constraint``."""
    if constraint is None:
        constraint = "" if name in NULLABLE else "NOT NULL"
    return f"{name} {SQL_TYPES[kind]} {constraint}".rstrip()


#: the cells table's columns in the order an upgrade from each older schema leaves them (an
#: added column comes last), so that a new store is the same as an upgraded one
CELL_TABLE_TYPES: dict[str, type] = {
    **{c: t for c, t in CELL_TYPES.items() if c not in PLATFORM_COLUMNS},
    **STORE_CELL_TYPES,
    **{c: CELL_TYPES[c] for c in PLATFORM_COLUMNS},
}


def _table(name: str, definitions: list[str]) -> str:
    return f"CREATE TABLE {name} (\n    " + ",\n    ".join(definitions) + "\n)"


#: every statement that makes a new store's tables, in order
TABLES: tuple[str, ...] = (
    _table("benchmarks", ["digest TEXT PRIMARY KEY", "name TEXT NOT NULL", "text TEXT NOT NULL"]),
    _table(
        "cells",
        [column_sql(c, t, CELL_CONSTRAINTS.get(c)) for c, t in CELL_TABLE_TYPES.items()],
    ),
    "CREATE INDEX cells_by_benchmark ON cells (benchmark, seed)",
    _table(
        "results",
        [
            "cell TEXT NOT NULL REFERENCES cells(key) ON DELETE CASCADE",
            *(column_sql(c, t) for c, t in ROW_TYPES.items()),
            "PRIMARY KEY (cell, detector, ood_dataset)",
        ],
    ),
    _table(
        "scores",
        [
            "cell TEXT NOT NULL REFERENCES cells(key) ON DELETE CASCADE",
            "detector TEXT NOT NULL",
            "dataset TEXT NOT NULL",
            "is_ood INTEGER NOT NULL",
            "n INTEGER NOT NULL",
            "data BLOB NOT NULL",
            "PRIMARY KEY (cell, detector, is_ood, dataset)",
        ],
    ),
)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE .. COMMIT: the block's writes land whole, or are rolled back when the
    block (or the COMMIT) raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite itself rolls back after some errors
            conn.execute("ROLLBACK")
        raise


def create_tables(conn: sqlite3.Connection) -> None:
    """Make an empty file a store of ``SCHEMA_VERSION`` (unless another process just did)."""
    with immediate(conn):
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            for statement in TABLES:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _to_2(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: the metric-setting, context and calibration columns (NULL for cells
    stored before; their numbers are unchanged)."""
    for column in EXTRA_CELL_COLUMNS:
        conn.execute(f"ALTER TABLE cells ADD COLUMN {column_sql(column, CELL_TYPES[column])}")
    for column in EXTRA_ROW_COLUMNS:
        conn.execute(f"ALTER TABLE results ADD COLUMN {column_sql(column, ROW_TYPES[column])}")


def _to_3(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: each cell's checksum; none is computed for the cells stored before
    (NULL: not verifiable, served with a note)."""
    for column, kind in STORE_CELL_TYPES.items():
        conn.execute(f"ALTER TABLE cells ADD COLUMN {column_sql(column, kind)}")


def _to_4(conn: sqlite3.Connection) -> None:
    """Schema 3 -> 4: the platforms each cell was trained and scored on (NULL for the cells
    stored before: unknown). Their checksums stay valid: NULL columns are not hashed."""
    for column in PLATFORM_COLUMNS:
        conn.execute(f"ALTER TABLE cells ADD COLUMN {column_sql(column, CELL_TYPES[column])}")


def _to_5(conn: sqlite3.Connection) -> None:
    """Schema 4 -> 5: the full-spectrum columns of result rows (NULL for the rows stored
    before, which had no covariate-shifted ID sets; their checksums stay valid)."""
    for column in FS_ROW_COLUMNS:
        conn.execute(f"ALTER TABLE results ADD COLUMN {column_sql(column, ROW_TYPES[column])}")


#: the upgrade from each older schema version to the next
MIGRATIONS = {1: _to_2, 2: _to_3, 3: _to_4, 4: _to_5}


#: the oldest schema version a read-only store may have and still be read as it is
OLDEST_READABLE = 2


def read_as_current(conn: sqlite3.Connection) -> None:
    """Read a store of an older schema (``OLDEST_READABLE`` or later) that cannot be upgraded
    (read-only) as a current one: a temporary view ``cells`` (only this connection's) shows
    the cells and results columns added since as NULL, as an upgrade would."""
    for table, columns in (("cells", CELL_TABLE_TYPES), ("results", ROW_TYPES)):
        have = {row[1] for row in conn.execute(f"PRAGMA main.table_info({table})")}
        missing = [c for c in columns if c not in have]
        if missing:
            added = ", ".join(f"NULL AS {c}" for c in missing)
            conn.execute(f"CREATE TEMP VIEW {table} AS SELECT *, {added} FROM main.{table}")


def migrate(conn: sqlite3.Connection) -> None:
    """Upgrade a store of an older schema version (1 to 4) to ``SCHEMA_VERSION`` in place, in
    one transaction (unless another process just did)."""
    with immediate(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version in MIGRATIONS:
            MIGRATIONS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version = {version}")
