"""Result columns added in schema 2, named once for the store and the reports."""

#: the metric settings a cell was evaluated with (stored with the cell)
EXTRA_CELL_COLUMNS = ("recall", "fpr_rule")
#: per result row: the expected AP of a random detector (OOD share of the evaluated samples),
#: ID calibration errors, and the OE paper's mixed ID + OOD calibration errors
EXTRA_ROW_COLUMNS = (
    "aupr_baseline",
    "ece",
    "rms_calib",
    "mad_calib",
    "rms_calib_mixed",
    "mad_calib_mixed",
)
