"""Leaderboard tables as DataFrames: the long results table and the with/without-OE comparison.

Rendering them is ``oebench.report.render`` (terminal) and ``oebench.report.text`` (CSV, JSON,
Markdown, LaTeX); the column names come from ``oebench.record.schema``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oebench.metrics import LOWER_IS_BETTER
from oebench.record.schema import (
    CSV_COLUMNS,
    FS_ROW_COLUMNS,
    GROUP_COLUMNS,
    ORDER_COLUMNS,
    STD_COLUMNS,
)

if TYPE_CHECKING:
    import pandas as pd

#: the metrics a leaderboard shows unless told otherwise
SHOWN = ("auroc", "aupr_out", "fpr95")
#: the columns of a comparison that split it into one leaderboard each
BOARD_COLUMNS = ("benchmark", "id_dataset", "model", "oe_training")


def sort_results(df: pd.DataFrame) -> pd.DataFrame:
    """Result rows in their canonical order (benchmark, seed, matrix position, row position)."""
    by = [c for c in ORDER_COLUMNS if c in df.columns]
    if not by:
        return df.reset_index(drop=True)
    return df.sort_values(by, kind="mergesort").reset_index(drop=True)


def results_frame(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """The long results table (CSV columns, std columns when any row has them), sorted.

    ``oebench run --csv`` and ``oebench leaderboard --format csv`` both write this frame.
    """
    import pandas as pd

    df = sort_results(pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows)
    std = [c for c in STD_COLUMNS if c in df and df[c].notna().any()]
    fs = [c for c in FS_ROW_COLUMNS if c in df and df[c].notna().any()]  # full-spectrum only
    return df[[c for c in CSV_COLUMNS + std + fs if c in df.columns]]


def seed_count(df: pd.DataFrame) -> int:
    """How many seeds ``df``'s rows come from (an ensemble cell's rows, seed -1, are all)."""
    return int(df.seed[df.seed >= 0].nunique()) if "seed" in df else 0


def split_trainings(df: pd.DataFrame) -> tuple[str | None, list[str]]:
    """The baseline training (no outliers, preferably named 'baseline') and the OE trainings."""
    plain = list(dict.fromkeys(df.loc[df.outlier_source == "", "training"]))
    oe = list(dict.fromkeys(df.loc[df.outlier_source != "", "training"]))
    baseline = "baseline" if "baseline" in plain else (plain[0] if plain else None)
    return baseline, oe + [t for t in plain if t != baseline]


def _group_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in GROUP_COLUMNS if c in df.columns]


def comparison(
    df: pd.DataFrame,
    metrics: tuple[str, ...] = SHOWN,
    ood: str = "mean",
    intervals: pd.DataFrame | None = None,
    sort: str | None = None,
) -> pd.DataFrame:
    """Without-OE | with-OE | delta per (benchmark, id_dataset, model, OE training, detector).

    ``ood='mean'`` uses the per-seed mean over OOD sets; another value picks one OOD set and
    ``'*'`` keeps every set. Values are means over seeds; ``*_std`` columns hold the spread
    over seeds (0 for one seed). ``intervals`` (keyed by the group columns and ``training``)
    adds columns such as ``auroc_ci_low``; ``sort`` orders detectors by a metric, best first.
    """
    import pandas as pd

    base, others = split_trainings(df)
    group = _group_keys(df) + (["ood_dataset"] if ood == "*" else [])
    sel = df[df.ood_dataset == ood] if ood != "*" else df
    stats = (
        sel.groupby(group + ["training"], sort=False)
        .agg(
            **{f"{m}": (m, "mean") for m in (*metrics, "id_accuracy")},
            **{f"{m}_std": (m, lambda s: float(s.std(ddof=0))) for m in (*metrics, "id_accuracy")},
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    if intervals is not None:
        stats = stats.merge(intervals, on=group + ["training"], how="left")
    frames = []
    for oe in others or [base]:
        left = stats[stats.training == base].drop(columns="training")
        if oe == base:
            merged = left.add_suffix("_baseline").rename(
                columns={f"{k}_baseline": k for k in group}
            )
            merged["oe_training"] = ""
        else:
            right = stats[stats.training == oe].drop(columns="training")
            merged = left.merge(right, on=group, suffixes=("_baseline", "_oe"), how="outer")
            for m in metrics:
                merged[f"{m}_delta"] = merged[f"{m}_oe"] - merged[f"{m}_baseline"]
            merged = merged.merge(_delta_std(sel, group, base, oe, metrics), on=group, how="left")
            merged["oe_training"] = oe
        frames.append(merged)
    table = pd.concat(frames, ignore_index=True)
    return order_by(table, sort) if sort else table


def _delta_std(
    sel: pd.DataFrame, group: list[str], base: str | None, oe: str, metrics: tuple[str, ...]
) -> pd.DataFrame:
    """Std over seeds of the per-seed difference OE − baseline (``{metric}_delta_std``)."""
    cols = list(metrics)
    a = sel[sel.training == base].set_index(group + ["seed"])[cols]
    b = sel[sel.training == oe].set_index(group + ["seed"])[cols]
    diff = (b - a).dropna(how="all").reset_index()
    spread = diff.groupby(group, sort=False)[cols].agg(lambda s: float(s.std(ddof=0)))
    return spread.add_suffix("_delta_std").reset_index()


def order_by(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Comparison rows best first by ``metric`` (with OE where present) within each table."""
    value = table[f"{metric}_baseline"]
    if f"{metric}_oe" in table:
        value = table[f"{metric}_oe"].fillna(value)
    keys = [c for c in BOARD_COLUMNS if c in table]
    ranked = table.assign(
        _table=table.groupby(keys, sort=False).ngroup(),
        _value=value if metric in LOWER_IS_BETTER else -value,
    )
    ranked = ranked.sort_values(["_table", "_value"], kind="mergesort", na_position="last")
    return ranked.drop(columns=["_table", "_value"]).reset_index(drop=True)
