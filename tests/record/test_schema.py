"""One definition of the result schema (oebench.record.schema), and no copy that drifts from it."""

from __future__ import annotations

import sqlite3

import pandas as pd

from oebench.metrics import METRICS
from oebench.record import schema as columns
from oebench.record import store
from oebench.report.tables import results_frame


def test_metric_and_std_columns_follow_the_metrics():
    assert columns.METRIC_COLUMNS == METRICS
    assert tuple(f"{m}_std" for m in METRICS) == columns.STD_COLUMNS
    assert set(columns.LABELS) == set(METRICS)


def test_row_and_cell_columns_in_order_with_types():
    assert columns.ROW_COLUMNS[:3] == ("detector", "ood_dataset", "row_index")
    assert columns.ROW_COLUMNS[-len(columns.EXTRA_ROW_COLUMNS) :] == columns.EXTRA_ROW_COLUMNS
    assert columns.CELL_COLUMNS[-2:] == columns.EXTRA_CELL_COLUMNS == ("recall", "fpr_rule")
    assert columns.ROW_TYPES["auroc"] is float and columns.CELL_TYPES["seed"] is int
    assert set(columns.ROW_COLUMNS) | set(columns.CELL_COLUMNS) >= columns.OPTIONAL


def test_the_store_keeps_the_schema_columns():
    """The store's own names (to be imported from oebench.record.schema) and its tables agree."""
    assert store.METRIC_COLUMNS == columns.METRIC_COLUMNS
    assert tuple(store.ROW_COLUMNS) == columns.ROW_COLUMNS
    assert tuple(store.CELL_COLUMNS) == columns.CELL_COLUMNS
    db = sqlite3.connect(":memory:")
    db.executescript(store.SCHEMA)
    results = {r[1]: r[2] for r in db.execute("PRAGMA table_info(results)")}
    cells = {r[1]: r[2] for r in db.execute("PRAGMA table_info(cells)")}
    assert list(results) == ["cell", *columns.ROW_COLUMNS]
    assert list(cells)[: len(columns.CELL_COLUMNS)] == list(columns.CELL_COLUMNS)
    sql = {str: "TEXT", int: "INTEGER", bool: "INTEGER", float: "REAL"}
    assert {c: sql[t] for c, t in columns.ROW_TYPES.items()} == {
        c: results[c] for c in columns.ROW_COLUMNS
    }
    assert {c: sql[t] for c, t in columns.CELL_TYPES.items()} == {
        c: cells[c] for c in columns.CELL_COLUMNS
    }


def test_every_csv_and_coordinate_column_is_a_stored_column():
    stored = {*columns.ROW_COLUMNS, *columns.CELL_COLUMNS}
    assert set(columns.CSV_COLUMNS) <= stored
    assert set(columns.COORDINATES) <= stored
    assert set(columns.GROUP_COLUMNS) <= set(columns.COORDINATES)


def test_results_frame_orders_columns_by_the_schema():
    row = {c: 0.0 for c in reversed(columns.CSV_COLUMNS)} | {"auroc_std": 1.0, "cell": "k"}
    frame = results_frame(pd.DataFrame([row]))
    assert list(frame.columns) == [*columns.CSV_COLUMNS, "auroc_std"]
