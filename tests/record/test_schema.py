"""One definition of the result schema (oebench.record.schema), and no copy that drifts from it."""

from __future__ import annotations

import sqlite3

import pandas as pd

from oebench.metrics import METRICS
from oebench.record import schema as columns
from oebench.record.store import ResultStore
from oebench.record.tables import CELL_TABLE_TYPES
from oebench.report.tables import results_frame


def test_metric_and_std_columns_follow_the_metrics():
    assert columns.METRIC_COLUMNS == METRICS
    assert tuple(f"{m}_std" for m in METRICS) == columns.STD_COLUMNS
    assert set(columns.LABELS) == set(METRICS)


def test_row_and_cell_columns_in_order_with_types():
    assert columns.ROW_COLUMNS[:3] == ("detector", "ood_dataset", "row_index")
    extra = (*columns.EXTRA_ROW_COLUMNS, *columns.FS_ROW_COLUMNS)  # schema 2's, then 5's
    assert columns.ROW_COLUMNS[-len(extra) :] == extra
    assert columns.CELL_COLUMNS[-3:-1] == columns.EXTRA_CELL_COLUMNS == ("recall", "fpr_rule")
    assert columns.CELL_COLUMNS[-1:] == columns.PLATFORM_COLUMNS == ("platform",)
    assert columns.ROW_TYPES["auroc"] is float and columns.CELL_TYPES["seed"] is int
    assert set(columns.ROW_COLUMNS) | set(columns.CELL_COLUMNS) >= columns.OPTIONAL


def test_the_store_tables_are_made_from_the_schema_columns(tmp_path):
    """The cells and results tables hold the schema's columns, in order, with their types."""
    ResultStore(tmp_path / "s.sqlite").close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    tables = ("cells", "results")
    info = {t: {r[1]: r for r in db.execute(f"PRAGMA table_info({t})")} for t in tables}
    db.close()
    assert list(info["cells"]) == list(CELL_TABLE_TYPES)  # as an upgraded store has them
    assert set(CELL_TABLE_TYPES) == {*columns.CELL_COLUMNS, *columns.STORE_CELL_TYPES}
    assert list(CELL_TABLE_TYPES)[-2:] == ["checksum", "platform"]  # schema 3's, then 4's
    assert list(info["results"]) == ["cell", *columns.ROW_COLUMNS]
    sql = {str: "TEXT", int: "INTEGER", bool: "INTEGER", float: "REAL"}
    for table, types in (("cells", columns.CELL_TYPES), ("results", columns.ROW_TYPES)):
        assert {c: info[table][c][2] for c in types} == {c: sql[t] for c, t in types.items()}
    nullable = {c for table in info.values() for c, row in table.items() if not row[3]}
    assert nullable == {"key", *columns.OPTIONAL, *columns.METRIC_COLUMNS, "checksum"}
    keys = {t: [c for c, row in info[t].items() if row[5]] for t in info}
    assert keys == {"cells": ["key"], "results": ["cell", "detector", "ood_dataset"]}


def test_every_csv_and_coordinate_column_is_a_stored_column():
    stored = {*columns.ROW_COLUMNS, *columns.CELL_COLUMNS}
    assert set(columns.CSV_COLUMNS) <= stored
    assert set(columns.COORDINATES) <= stored
    assert set(columns.GROUP_COLUMNS) <= set(columns.COORDINATES)


def test_results_frame_orders_columns_by_the_schema():
    row = {c: 0.0 for c in reversed(columns.CSV_COLUMNS)} | {"auroc_std": 1.0, "cell": "k"}
    frame = results_frame(pd.DataFrame([row]))
    assert list(frame.columns) == [*columns.CSV_COLUMNS, "auroc_std"]
