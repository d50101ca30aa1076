"""Near-OOD / far-OOD groups (OpenOOD v1.5's convention) and their mean rows.

A benchmark declares groups of its OOD sets::

    ood_groups = {near = ["cifar100", "tin"], far = ["mnist", "svhn", "textures", "places365"]}

Every result table then gains, per cell and detector, one row per group whose
``ood_dataset`` is ``mean:<group>`` and whose metrics are the means of the group's per-set
rows (like the ``mean`` row over all sets). Group rows are derived when results are shown,
from the stored per-set rows, so adding groups to a benchmark never needs a rerun.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from oebench.record.schema import METRIC_COLUMNS
from oebench.report.tables import sort_results

if TYPE_CHECKING:
    import pandas as pd

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: ``ood_dataset`` of a group-mean row is this prefix plus the group's name
PREFIX = "mean:"
Groups = dict[str, list[str]]


def group_problems(value: Any, ood_keys: list[str]) -> list[str]:
    """One line per problem with an ``ood_groups`` table, given the benchmark's OOD set keys."""
    if value is None:
        return []
    if not isinstance(value, dict) or not value:
        return ["ood_groups must be a table such as {near = [...], far = [...]}"]
    lines = []
    for name, members in value.items():
        if not isinstance(members, list) or not members:
            lines.append(f"ood_groups.{name} must be a non-empty list of OOD set names")
            continue
        unknown = [m for m in members if m not in ood_keys]
        if unknown:
            lines.append(
                f"ood_groups.{name} names {', '.join(map(repr, unknown))}, not in ood_datasets "
                f"({', '.join(ood_keys)})"
            )
    return lines


def group_label(name: str) -> str:
    """The ``ood_dataset`` value of group ``name``'s mean rows."""
    return PREFIX + name


def is_summary(ood_dataset: str) -> bool:
    """True for the ``mean`` row and group-mean rows (not a real OOD set)."""
    return ood_dataset == "mean" or ood_dataset.startswith(PREFIX)


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


def groups_in_text(text: str) -> Groups:
    """The valid ``ood_groups`` of a benchmark document ({} when none or unreadable)."""
    try:
        value = tomllib.loads(text).get("ood_groups")
    except tomllib.TOMLDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(m) for m in v] for k, v in value.items() if isinstance(v, list) and v}
