"""Outlier sources x training objectives in ONE frame: which source helps which OE variant.

A ``[[trainings]]`` entry with ``outliers = [...]`` runs once per source, as trainings named
``<family>/<source>`` (``oebench.bench.parse``); this table puts the families in rows and the
sources in columns. The family and the source come from the result rows themselves (the
``training`` name and the ``outlier_source`` label), so stored results need no new column.
``oebench run`` and ``oebench leaderboard`` show it (``oebench.report.render``) when a board's
trainings use two or more outlier sources; ``oebench.source_table`` returns the frame.
Columns per source are named as in the wide table: ``auroc[textures]``,
``auroc_std[textures]`` (std over seeds) and ``auroc_delta[textures]`` (minus the baseline).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from oebench.bench.groups import PREFIX, is_summary
from oebench.metrics import CONVENTION, LOWER_IS_BETTER
from oebench.record.schema import LABELS
from oebench.report.tables import seed_count, split_trainings
from oebench.report.wide import col

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

#: the columns that split a source table into one board each
BOARD = ("benchmark", "id_dataset", "model")


def family_of(training: str, source: str) -> str:
    """The ``[[trainings]]`` entry a training came from: ``oe`` for ``oe/textures`` with
    source ``textures``; a single-source training is its own family."""
    suffix = f"/{source}"
    if source and training.endswith(suffix) and len(training) > len(suffix):
        return training[: -len(suffix)]
    return training


def sources_in(df: pd.DataFrame) -> list[str]:
    """The outlier sources of ``df``'s trainings, in matrix order."""
    return [s for s in dict.fromkeys(df.outlier_source) if s]


def has_sources(df: pd.DataFrame) -> bool:
    """True when one board of ``df`` has trainings with two or more outlier sources."""
    if df.empty or "outlier_source" not in df:
        return False
    keys = [c for c in BOARD if c in df.columns]
    return any(len(sources_in(part)) >= 2 for _, part in df.groupby(keys, sort=False))


def source_table(
    df: pd.DataFrame, metric: str = "auroc", detector: str | None = None
) -> pd.DataFrame:
    """One row per (benchmark, ID dataset, model, training family, OOD summary); per outlier
    source the family's ``metric`` (mean over seeds of the per-seed mean over OOD sets: ``ood``
    is ``mean`` or a group's ``mean:<group>``), its std over seeds and Δ to the baseline.

    One detector per board: ``detector``, or the board's first (the benchmark's first).
    ``{metric}_baseline`` / ``{metric}_std_baseline`` hold the baseline's value on each row.
    """
    import pandas as pd

    frames = [
        _board(part, metric, detector or str(part.detector.iloc[0]))
        for _, part in df.groupby([c for c in BOARD if c in df.columns], sort=False)
    ]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _board(df: pd.DataFrame, metric: str, detector: str) -> pd.DataFrame:
    """The source table of one benchmark, ID dataset and model."""
    import pandas as pd

    base, _ = split_trainings(df)
    part = df[(df.detector == detector) & df.ood_dataset.map(is_summary)]
    summaries = ["mean"] + [o for o in dict.fromkeys(part.ood_dataset) if o.startswith(PREFIX)]
    oe = part[part.outlier_source != ""]
    pairs = zip(oe.training, oe.outlier_source, strict=True)
    families = oe.assign(family=[family_of(t, s) for t, s in pairs])
    records = []
    for family, rows in families.groupby("family", sort=False):
        for ood in summaries:
            rec: dict[str, Any] = {k: df[k].iloc[0] for k in BOARD if k in df}
            rec.update(detector=detector, family=family, objective=rows.objective.iloc[0], ood=ood)
            rec.update(_baseline(part, base, ood, metric))
            for source, side in rows[rows.ood_dataset == ood].groupby("outlier_source", sort=False):
                mean, std = _stats(side, metric)
                rec[col(metric, source)], rec[col(metric, source, "std")] = mean, std
                rec[col(metric, source, "delta")] = mean - rec[f"{metric}_baseline"]
            records.append(rec)
    return _in_source_order(pd.DataFrame(records), sources_in(part), metric)


def _stats(rows: pd.DataFrame, metric: str) -> tuple[float, float]:
    """Mean and std (ddof 0, as the other tables) over seeds of one training's values."""
    values = rows.groupby("seed")[metric].mean()
    return float(values.mean()), float(values.std(ddof=0))


def _baseline(part: pd.DataFrame, base: str | None, ood: str, metric: str) -> dict[str, float]:
    """The baseline's mean and std over seeds (NaN without a baseline)."""
    rows = part[(part.training == base) & (part.ood_dataset == ood)]
    mean, std = _stats(rows, metric) if not rows.empty else (float("nan"), float("nan"))
    return {f"{metric}_baseline": mean, f"{metric}_std_baseline": std}


def _in_source_order(table: pd.DataFrame, sources: list[str], metric: str) -> pd.DataFrame:
    """``table``'s columns: keys, the baseline's, then each source's (value, std, Δ)."""
    if table.empty:
        return table
    keys = [c for c in (*BOARD, "detector", "family", "objective", "ood") if c in table]
    per = [col(metric, s, k) for s in sources for k in ("", "std", "delta")]
    for c in per:
        if c not in table:
            table[c] = float("nan")
    return table[[*keys, f"{metric}_baseline", f"{metric}_std_baseline", *per]]


def source_columns(table: pd.DataFrame) -> list[str]:
    """The outlier sources of a source table, in column order."""
    return list(dict.fromkeys(c[c.index("[") + 1 : -1] for c in table.columns if "[" in c))


def source_leaderboard(
    store: str | Path | None = None,
    metric: str = "auroc",
    detector: str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """``source_table`` of the stored results (``filters`` as for ``oebench.load_results``)."""
    from oebench.record.store import ResultStore
    from oebench.report.results import stored_results

    with ResultStore(store, create=False) as s:
        df = stored_results(s, **filters)
    return source_table(df, metric, detector)


def render_sources(
    console: Console, df: pd.DataFrame, detail: str | None = None, metric: str = "auroc"
) -> None:
    """Per board with two or more outlier sources: families x sources for one detector."""
    from rich.markup import escape
    from rich.table import Table

    from oebench.report.text import wide_cell

    table = source_table(df, metric, detail)
    if table.empty:
        return
    base, _ = split_trainings(df)
    arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
    for _, part in table.groupby([c for c in BOARD if c in table], sort=False):
        sources = [s for s in source_columns(part) if part[col(metric, s)].notna().any()]
        if len(sources) < 2:
            continue
        first = part.iloc[0]
        sub = df[(df.benchmark == first.benchmark) & (df.id_dataset == first.id_dataset)
                 & (df.model == first.model)]  # fmt: skip
        n_sets = sub.ood_dataset[~sub.ood_dataset.map(is_summary)].nunique()
        grouped = part.ood.nunique() > 1
        t = Table(
            title=escape(
                f"{first.benchmark} · {first.id_dataset} · {first.model} · {first.detector}: "
                f"{LABELS.get(metric, metric)}{arrow} by outlier source (mean over {n_sets} "
                f"OOD sets"
                + (", and per OOD group)" if grouped else ")")
                + (f", Δ to {base}" if base else "")
            ),
            title_style="bold",
            caption_justify="left",
        )
        t.add_column("training")
        t.add_column("objective")
        if grouped:
            t.add_column("OOD")
        for s in sources:
            t.add_column(escape(s), justify="right")
        for _, rows in part.groupby("family", sort=False):
            for i, (_, r) in enumerate(rows.iterrows()):
                names = [escape(r.family), escape(str(r.objective))] if i == 0 else ["", ""]
                where = [escape(_ood_label(r.ood))] if grouped else []
                cells = [wide_cell(r, metric, s, markup=True) for s in sources]
                t.add_row(*names, *where, *cells, end_section=i == len(rows) - 1)
        t.caption = escape(_caption(part, sub, base, metric, detail))
        console.print(t)
        console.print()


def _ood_label(ood: str) -> str:
    return "all sets" if ood == "mean" else f"{ood[len(PREFIX) :]}-OOD"


def _caption(part: pd.DataFrame, sub: pd.DataFrame, base: str | None, metric: str,
             detail: str | None) -> str:  # fmt: skip
    """Seeds, the detector's choice, the baseline's values and the metric convention."""
    from oebench.report.text import value_text

    which = "--detail" if detail else "the benchmark's first detector; --detail picks another"
    line = (
        f"{seed_count(sub)} seed(s) (± = std over seeds). Rows: one training family "
        f"([[trainings]] entry) each; columns: its outlier sources. Detector "
        f"{part.detector.iloc[0]} ({which})."
    )
    if base:
        first = part.drop_duplicates("ood")
        values = ", ".join(
            f"{_ood_label(r.ood) if r.ood != 'mean' else 'mean'} "
            f"{value_text(r[f'{metric}_baseline'], r[f'{metric}_std_baseline'])}"
            for _, r in first.iterrows()
        )
        line += f" Baseline {base}: {values}."
    return f"{line}\n{CONVENTION}."
