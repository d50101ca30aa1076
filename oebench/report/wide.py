"""Several trainings (OE variants, LogitNorm, ...) against one baseline in ONE wide frame.

``oebench run`` and ``oebench leaderboard`` show these tables (``oebench.report.render``) when a
benchmark has two or more trainings besides the baseline; ``oebench.leaderboard(wide=True)``
returns the frame.
Columns are named ``auroc[oe]``, ``auroc_delta[oe]`` (variant minus baseline),
``auroc_std[oe]`` (std over seeds) and ``id_accuracy[oe]``, per training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oebench.metrics import LOWER_IS_BETTER
from oebench.record.schema import GROUP_COLUMNS
from oebench.report.tables import SHOWN, comparison, split_trainings

if TYPE_CHECKING:
    import pandas as pd


def is_wide(df: pd.DataFrame) -> bool:
    """True when ``df`` holds two or more trainings besides the baseline."""
    base, others = split_trainings(df)
    return base is not None and len([t for t in others if t != base]) >= 2


def col(metric: str, training: str, kind: str = "") -> str:
    """A wide column name: ``auroc[oe]``, ``auroc_delta[oe]``, ``auroc_std[oe]``."""
    return f"{metric}{'_' + kind if kind else ''}[{training}]"


def wide_comparison(
    df: pd.DataFrame,
    metrics: tuple[str, ...] = SHOWN,
    ood: str = "mean",
    sort: str | None = None,
) -> pd.DataFrame:
    """One row per (benchmark, ID dataset, model, detector); per training its metrics (means
    over seeds of ``ood``: ``mean``, a ``mean:<group>`` or one OOD set) and Δ to the baseline.

    ``sort`` orders detectors best first by the first variant's value of that metric.
    """
    base, others = split_trainings(df)
    table = comparison(df, metrics, ood=ood)
    keys = [c for c in GROUP_COLUMNS if c in table.columns]
    variants = [t for t in others if t != base]
    out = table[keys].drop_duplicates().reset_index(drop=True)  # every row, in matrix order
    first = table[table.oe_training == (variants[0] if variants else "")][keys].copy()
    side = table[table.oe_training == (variants[0] if variants else "")]
    for m in (*metrics, "id_accuracy"):
        first[col(m, base)] = side[f"{m}_baseline"].to_numpy()
        if m != "id_accuracy":
            first[col(m, base, "std")] = side[f"{m}_std_baseline"].to_numpy()
    out = out.merge(first, on=keys, how="left", sort=False)
    for v in variants:
        part = table[table.oe_training == v][keys].copy()
        side = table[table.oe_training == v]
        for m in (*metrics, "id_accuracy"):
            part[col(m, v)] = side[f"{m}_oe"].to_numpy()
            if m != "id_accuracy":
                part[col(m, v, "std")] = side[f"{m}_std_oe"].to_numpy()
                part[col(m, v, "delta")] = side[f"{m}_delta"].to_numpy()
        out = out.merge(part, on=keys, how="left", sort=False)
    if sort:
        target = col(sort, variants[0]) if variants else col(sort, base)
        ascending = sort in LOWER_IS_BETTER
        by = [k for k in keys if k != "detector"] + [target]
        out = out.sort_values(by, ascending=[True] * (len(by) - 1) + [ascending], kind="mergesort")
    return out.reset_index(drop=True)


def trainings_of(wide: pd.DataFrame) -> list[str]:
    """The trainings of a wide frame, baseline first."""
    return list(dict.fromkeys(c[c.index("[") + 1 : -1] for c in wide.columns if "[" in c))
