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
    METRIC_COLUMNS,
    OPTIONAL,
    ROW_TYPES,
    STORE_CELL_TYPES,
)

#: 1: the first; 2: metric settings and calibration columns; 3: each cell's checksum
SCHEMA_VERSION = 3
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


def _table(name: str, definitions: list[str]) -> str:
    return f"CREATE TABLE {name} (\n    " + ",\n    ".join(definitions) + "\n)"


#: every statement that makes a new store's tables, in order
TABLES: tuple[str, ...] = (
    _table("benchmarks", ["digest TEXT PRIMARY KEY", "name TEXT NOT NULL", "text TEXT NOT NULL"]),
    _table(
        "cells",
        [
            column_sql(c, t, CELL_CONSTRAINTS.get(c))
            for c, t in {**CELL_TYPES, **STORE_CELL_TYPES}.items()
        ],
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


#: the upgrade from each older schema version to the next
MIGRATIONS = {1: _to_2, 2: _to_3}


def migrate(conn: sqlite3.Connection) -> None:
    """Upgrade a store of an older schema version (1 or 2) to ``SCHEMA_VERSION`` in place, in
    one transaction (unless another process just did)."""
    with immediate(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version in MIGRATIONS:
            MIGRATIONS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version = {version}")
