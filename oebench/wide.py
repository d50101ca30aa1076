"""Several trainings (OE variants, LogitNorm, ...) against one baseline in ONE wide table.

``oebench run`` and ``oebench leaderboard`` switch to these tables when a benchmark has two
or more trainings besides the baseline; ``oebench.leaderboard(wide=True)`` returns the frame.
Columns are named ``auroc[oe]``, ``auroc_delta[oe]`` (variant minus baseline),
``auroc_std[oe]`` (std over seeds) and ``id_accuracy[oe]``, per training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oebench.metrics import CONVENTION, LOWER_IS_BETTER
from oebench.report import GROUP_COLUMNS, LABELS, SHOWN, comparison, split_trainings

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console


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


def _cell(r: Any, metric: str, training: str, markup: bool) -> str:
    value = r.get(col(metric, training), float("nan"))
    if value != value:
        return "-"
    std = r.get(col(metric, training, "std"))
    text = f"{value:.2f}" + (f"±{std:.2f}" if std else "")
    delta = r.get(col(metric, training, "delta"))
    if delta is None or delta != delta:
        return text
    delta = 0.0 if abs(delta) < 0.005 else delta  # no "-0.00"
    if not markup:
        return f"{text} ({delta:+.2f})"
    better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
    colour = "green" if better else "red" if delta else "white"
    return f"{text} [{colour}]{delta:+.2f}[/]"


def wide_text_table(wide: pd.DataFrame, metrics: tuple[str, ...] = SHOWN) -> pd.DataFrame:
    """A wide frame as text cells ``value (Δ)`` for markdown and LaTeX documents."""
    import pandas as pd

    trainings = trainings_of(wide)
    records = []
    for _, r in wide.iterrows():
        rec = {k: r[k] for k in GROUP_COLUMNS if k in r}
        for m in metrics:
            for t in trainings:
                rec[f"{LABELS[m]} {t}"] = _cell(r, m, t, markup=False)
        records.append(rec)
    return pd.DataFrame(records).rename(columns={"id_dataset": "ID dataset"})


def render_wide(
    console: Console,
    df: pd.DataFrame,
    detail: str | None = None,
    metrics: tuple[str, ...] = SHOWN,
    sort: str | None = None,
) -> None:
    """Per benchmark, ID dataset and model: one table per metric (detectors x trainings),
    one per OOD group for the first metric, and a per-OOD-set table for one detector."""
    from oebench.groups import PREFIX

    groups = [g for g in dict.fromkeys(df.ood_dataset) if g.startswith(PREFIX)]
    for (bench, id_ds, model), sub in df.groupby(["benchmark", "id_dataset", "model"], sort=False):
        summaries = [(m, "mean") for m in metrics] + [(metrics[0], g) for g in groups]
        for metric, ood in summaries:
            wide = wide_comparison(sub, metrics, ood=ood, sort=sort or metrics[0])
            if wide.empty:
                continue
            _print_table(console, sub, wide, metric, ood, f"{bench} · {id_ds} · {model}")
        best = wide_comparison(sub, metrics, sort=sort or metrics[0]).detector.iloc[0]
        _print_per_set(console, sub, detail or best, metrics[0], f"{id_ds} · {model}")


def _print_table(
    console: Console, sub: pd.DataFrame, wide: pd.DataFrame, metric: str, ood: str, where: str
) -> None:
    from rich.table import Table

    from oebench.groups import is_summary

    trainings = trainings_of(wide)
    arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
    n_sets = sub.ood_dataset[~sub.ood_dataset.map(is_summary)].nunique()
    what = f"mean over {n_sets} OOD sets" if ood == "mean" else f"{ood.split(':', 1)[1]}-OOD mean"
    t = Table(
        title=f"{where} · {LABELS[metric]}{arrow} ({what}): {trainings[0]} vs "
        f"{len(trainings) - 1} trainings, Δ to {trainings[0]}",
        title_style="bold",
        caption_justify="left",
    )
    t.add_column("detector")
    for i, name in enumerate(trainings):
        t.add_column(
            name + ("\n(baseline)" if i == 0 and name != "baseline" else ""), justify="right"
        )
    for _, r in wide.iterrows():
        t.add_row(r.detector, *[_cell(r, metric, tr, markup=True) for tr in trainings])
    first = wide.iloc[0]
    acc = ", ".join(f"{tr} {first[col('id_accuracy', tr)]:.2f}%" for tr in trainings)
    protocol = sub.protocol.iloc[0] if "protocol" in sub else "full"
    t.caption = (
        f"{int(sub.seed.nunique())} seed(s) (± = std over seeds); protocol {protocol}. "
        f"ID accuracy: {acc}.\n{CONVENTION}."
    )
    console.print(t)
    console.print()


def _print_per_set(
    console: Console, sub: pd.DataFrame, detector: str, metric: str, where: str
) -> None:
    """Rows: OOD sets, then group means and the overall mean; columns: trainings."""
    from rich.table import Table

    from oebench.groups import PREFIX, is_summary

    part = sub[sub.detector == detector]
    sets = list(dict.fromkeys(part.ood_dataset))
    order = [s for s in sets if not is_summary(s)] + [s for s in sets if s.startswith(PREFIX)]
    order.append("mean")
    arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
    t = Table(
        title=f"{where} · {detector}: {LABELS[metric]}{arrow} per OOD set", title_style="bold"
    )
    t.add_column("OOD set")
    trainings: list[str] = []
    rows = []
    for ood in order:
        wide = wide_comparison(part, (metric,), ood=ood)
        if wide.empty:
            continue
        trainings = trainings or trainings_of(wide)
        rows.append((ood, wide.iloc[0]))
    for name in trainings:
        t.add_column(name, justify="right")
    for ood, r in rows:
        t.add_row(ood, *[_cell(r, metric, tr, markup=True) for tr in trainings])
    console.print(t)
    console.print()
