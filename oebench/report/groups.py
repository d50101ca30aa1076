"""Near-OOD / far-OOD group-mean rows of result tables (the groups: ``oebench.bench.groups``).

Every result table gains, per cell and detector, one row per group whose ``ood_dataset`` is
``mean:<group>`` and whose metrics are the means of the group's per-set rows (like the
``mean`` row over all sets). Group rows are derived when results are shown, from the stored
per-set rows, so adding groups to a benchmark never needs a rerun.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oebench.bench.groups import PREFIX, Groups, group_label
from oebench.record.schema import CSV_COLUMNS, METRIC_COLUMNS
from oebench.report.tables import results_frame, sort_results

if TYPE_CHECKING:
    import pandas as pd

    from oebench.bench.matrix import Benchmark


def with_group_means(df: pd.DataFrame, groups: dict[str, Groups]) -> pd.DataFrame:
    """``df`` plus one mean row per (cell, detector, group); ``groups`` is keyed by benchmark.

    Metric columns (and their ``*_std``) are averaged over the group's sets; every other
    column is copied from the cell's ``mean`` row. Rows already derived are not derived again.
    """
    import pandas as pd

    if df.empty or not any(groups.values()):
        return df
    df = df[~df.ood_dataset.str.startswith(PREFIX)]
    metrics = [c for m in METRIC_COLUMNS for c in (m, f"{m}_std") if c in df.columns]
    keys = [c for c in ("cell", "benchmark", "training", "seed", "detector") if c in df.columns]
    keys = keys if "cell" in keys else keys + ["id_dataset", "model"]
    means = df[df.ood_dataset == "mean"]
    added = []
    for bench, bench_groups in groups.items():
        sets = df[(df.benchmark == bench) & (df.ood_dataset != "mean")]
        for name, members in bench_groups.items():
            part = sets[sets.ood_dataset.isin(members)]
            if part.empty:
                continue
            grouped = part.groupby(keys, sort=False)
            complete = grouped.ood_dataset.nunique() == len(set(members))
            avg = grouped[metrics].mean()[complete].reset_index()  # only cells with every set
            rows = means[means.benchmark == bench].drop(columns=metrics).merge(avg, on=keys)
            rows["ood_dataset"] = group_label(name)
            if "row_index" in rows:
                rows["row_index"] = rows["row_index"] + (1 + len(added)) / 1000
            added.append(rows[[c for c in df.columns if c in rows.columns]])
    if not added:
        return df
    return sort_results(pd.concat([df, *added], ignore_index=True))


def results_table(bench: Benchmark, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The long results frame of a run's rows with the benchmark's group means: the rows
    ``oebench run --csv`` writes."""
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=CSV_COLUMNS)
    return results_frame(with_group_means(pd.DataFrame(rows), {bench.name: bench.ood_groups}))
