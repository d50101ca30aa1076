"""The result schema: every column of a cell record and of a result row, named once, in order.

A cell is one trained model of the benchmark matrix (seed x ID dataset x model x training);
a result row is one detector on one OOD test set of a cell, or the ``mean`` over its sets.
The store's tables, the long CSV, the filters and the leaderboards take their names from here.
Columns map to their Python type; ``OPTIONAL`` ones may be missing (None) in a stored row.
"""

from __future__ import annotations

from oebench.metrics import METRICS

#: the metrics of a result row (percentages); ``STD_COLUMNS`` hold their std over repeats
METRIC_COLUMNS: tuple[str, ...] = METRICS
STD_COLUMNS = tuple(f"{m}_std" for m in METRIC_COLUMNS)
#: the metric settings a cell was evaluated with (stored with the cell; schema 2)
EXTRA_CELL_COLUMNS = ("recall", "fpr_rule")
#: the platforms that decided a cell's last bits, as JSON text (``signature``, ``training``,
#: ``scoring``; see oebench.core.platforms.cell_platform): schema 4, NULL in older cells
PLATFORM_COLUMNS = ("platform",)
#: per result row: the expected AP of a random detector (OOD share of the evaluated samples),
#: ID calibration errors, and the OE paper's mixed ID + OOD calibration errors (schema 2)
EXTRA_ROW_COLUMNS = (
    "aupr_baseline",
    "ece",
    "rms_calib",
    "mad_calib",
    "rms_calib_mixed",
    "mad_calib_mixed",
)

#: per result row of a ``protocol = "full-spectrum"`` benchmark (schema 5, NULL elsewhere): each
#: metric with the covariate-shifted ID sets counted as ID (``fs_auroc``, ...), and the ID
#: classifier's accuracy and ECE on those sets, and how many images they hold
FS_METRIC_COLUMNS = tuple(f"fs_{m}" for m in METRIC_COLUMNS)
FS_ROW_COLUMNS = (*FS_METRIC_COLUMNS, "csid_accuracy", "csid_ece", "n_csid")

#: a cell record: where it sits in the matrix, then its provenance
CELL_TYPES: dict[str, type] = {
    "key": str,
    "benchmark": str,
    "benchmark_path": str,
    "benchmark_digest": str,
    "seed": int,
    "id_dataset": str,
    "model": str,
    "training": str,
    "objective": str,
    "outlier_source": str,
    "protocol": str,
    "cell_index": int,
    "config": str,
    "oebench_version": str,
    "plugins": str,
    "torch_version": str,
    "device": str,
    "train_seconds": float,
    "score_seconds": float,
    "trained": bool,
    "created_at": str,
    "recall": float,
    "fpr_rule": str,
    "platform": str,
}
#: what the store keeps with a cell besides its record: the checksum over its record, rows
#: and score arrays (``oebench.record.checksums``; schema 3, NULL in cells stored before)
STORE_CELL_TYPES: dict[str, type] = {"checksum": str}
#: a result row of a cell
ROW_TYPES: dict[str, type] = {
    "detector": str,
    "ood_dataset": str,
    "row_index": int,
    **dict.fromkeys(METRIC_COLUMNS, float),
    **dict.fromkeys(STD_COLUMNS, float),
    "id_accuracy": float,
    "n_id": int,
    "n_ood": int,
    **dict.fromkeys(EXTRA_ROW_COLUMNS, float),
    **dict.fromkeys(FS_ROW_COLUMNS[:-1], float),
    "n_csid": int,
}
CELL_COLUMNS = tuple(CELL_TYPES)
ROW_COLUMNS = tuple(ROW_TYPES)
#: columns that may be None: stds of single runs, and what cells stored before schemas 2 and 4
#: lack
OPTIONAL = frozenset(
    {
        *STD_COLUMNS, "id_accuracy", *EXTRA_CELL_COLUMNS, *PLATFORM_COLUMNS, *EXTRA_ROW_COLUMNS,
        *FS_ROW_COLUMNS,
    }
)  # fmt: skip

#: what places one result in the matrix; when stored cells overlap, the newest row wins (in
#: tables ``benchmark`` names the version group, ``quickstart[lam=1]``: oebench.report.versions)
COORDINATES = ("benchmark", "id_dataset", "model", "training", "detector", "ood_dataset", "seed")
#: the columns that name a comparison row of a leaderboard
GROUP_COLUMNS = ("benchmark", "id_dataset", "model", "detector")
#: the order of result rows: matrix order within a benchmark, the same for a run and the store
ORDER_COLUMNS = ("benchmark", "seed", "cell_index", "cell", "row_index")
#: the long results table (``--csv``), in this order; ``*_std`` columns follow when present
CSV_COLUMNS = [
    "id_dataset",
    "model",
    "training",
    "outlier_source",
    "detector",
    "ood_dataset",
    *METRIC_COLUMNS,
    "id_accuracy",
    "seed",
    "benchmark",
    "objective",
    "protocol",
    "n_id",
    "n_ood",
    *EXTRA_CELL_COLUMNS,
    *EXTRA_ROW_COLUMNS,
]
#: the cell columns that label each per-sample score (``--save-scores``, ``load_scores``)
SCORE_COLUMNS = ("cell", "benchmark", "id_dataset", "model", "training", "seed")
#: how a metric column is titled in tables
LABELS = {
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
    "fpr95": "FPR95",
    "fpr95_id": "FPR95-ID",
    "detection_error": "Det.Err",
}
