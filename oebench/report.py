"""Results tables: the long CSV format, the with/without-OE leaderboard, rich rendering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oebench.metrics import CONVENTION, CONVENTION_ID, LOWER_IS_BETTER, METRICS

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

CSV_COLUMNS = [
    "id_dataset",
    "model",
    "training",
    "outlier_source",
    "detector",
    "ood_dataset",
    *METRICS,
    "id_accuracy",
    "seed",
    "benchmark",
    "objective",
    "protocol",
    "n_id",
    "n_ood",
]
LABELS = {
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
    "fpr95": "FPR95",
    "fpr95_id": "FPR95-ID",
    "detection_error": "Det.Err",
}
SHOWN = ("auroc", "aupr_out", "fpr95")


#: the order of result rows: matrix order within a benchmark, the same for a run and the store
ORDER_COLUMNS = ("benchmark", "seed", "cell_index", "cell", "row_index")
#: the columns that name a comparison row
GROUP_COLUMNS = ("benchmark", "id_dataset", "model", "detector")


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
    std = [f"{m}_std" for m in METRICS if f"{m}_std" in df and df[f"{m}_std"].notna().any()]
    return df[[c for c in CSV_COLUMNS + std if c in df.columns]]


def write_table(df: pd.DataFrame, path: str, fmt: str = "csv") -> None:
    """Write results (csv, json, markdown, latex) to ``path`` (``-`` for stdout)."""
    import sys

    text = format_table(df, fmt)
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w", newline="") as fh:
            fh.write(text)


def format_table(df: pd.DataFrame, fmt: str, numbers: bool = True) -> str:
    """``df`` as csv, json, markdown or latex text; ``numbers=False`` keeps cells as given."""
    if fmt == "csv":
        return df.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        return df.to_json(orient="records", indent=2, double_precision=15) + "\n"
    if fmt in ("markdown", "latex"):
        from tabulate import tabulate

        style = "pipe" if fmt == "markdown" else "latex_booktabs"
        text = tabulate(
            df,
            headers="keys",
            tablefmt=style,
            floatfmt=".2f",
            showindex=False,
            disable_numparse=not numbers,
        )
        note = f"{CONVENTION}. {CONVENTION_ID}. All values in %."
        return text + ("\n\n" + note if fmt == "markdown" else "\n% " + note) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


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
            **{f"{m}_std": (m, lambda s: float(s.std(ddof=0))) for m in metrics},
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
            merged["oe_training"] = oe
        frames.append(merged)
    table = pd.concat(frames, ignore_index=True)
    return order_by(table, sort) if sort else table


def order_by(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Comparison rows best first by ``metric`` (with OE where present) within each table."""
    value = table[f"{metric}_baseline"]
    if f"{metric}_oe" in table:
        value = table[f"{metric}_oe"].fillna(value)
    keys = [c for c in ("benchmark", "id_dataset", "model", "oe_training") if c in table]
    ranked = table.assign(
        _table=table.groupby(keys, sort=False).ngroup(),
        _value=value if metric in LOWER_IS_BETTER else -value,
    )
    ranked = ranked.sort_values(["_table", "_value"], kind="mergesort", na_position="last")
    return ranked.drop(columns=["_table", "_value"]).reset_index(drop=True)


def _fmt(value: float, std: float | None = None, ci: tuple[float, float] | None = None) -> str:
    if value != value:  # NaN
        return "-"
    text = f"{value:.2f}" + (f"±{std:.2f}" if std else "")
    if ci is not None and ci[0] == ci[0]:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def _delta(metric: str, value: float, markup: bool = True) -> str:
    if value != value:
        return "-"
    if not markup:
        return f"{value:+.2f}"
    better = value < 0 if metric in LOWER_IS_BETTER else value > 0
    colour = "green" if better else "red" if value else "white"
    return f"[{colour}]{value:+.2f}[/]"


def _value(r: Any, metric: str, side: str) -> str:
    """A metric of one comparison row: mean, ± std over seeds, and its bootstrap CI if any."""
    low = r.get(f"{metric}_ci_low_{side}")
    ci = (low, r.get(f"{metric}_ci_high_{side}")) if low is not None else None
    return _fmt(r.get(f"{metric}_{side}", float("nan")), r.get(f"{metric}_std_{side}"), ci)


def leaderboard_table(table: pd.DataFrame, metrics: tuple[str, ...] = SHOWN) -> pd.DataFrame:
    """A comparison as text cells (mean±std [CI]) for markdown and LaTeX documents."""
    import pandas as pd

    has_oe = bool(table.oe_training.astype(bool).any())
    records = []
    for _, r in table.iterrows():
        rec = {k: r[k] for k in (*GROUP_COLUMNS, "oe_training") if k in r}
        for m in metrics:
            rec[f"{LABELS[m]} no OE"] = _value(r, m, "baseline")
            if has_oe:
                rec[f"{LABELS[m]} OE"] = _value(r, m, "oe")
                rec[f"Δ {LABELS[m]}"] = _delta(m, r.get(f"{m}_delta", float("nan")), False)
        records.append(rec)
    out = pd.DataFrame(records)
    return out.rename(columns={"id_dataset": "ID dataset", "oe_training": "OE training"})


def render(
    console: Console,
    df: pd.DataFrame,
    detail: str | None = None,
    metrics: tuple[str, ...] = SHOWN,
    sort: str | None = None,
    intervals: pd.DataFrame | None = None,
) -> None:
    """Print the with/without-OE leaderboard and a per-OOD-set table for one detector."""
    from rich.table import Table

    if df.empty:
        console.print("No results.")
        return
    base, _ = split_trainings(df)
    table = comparison(df, metrics, intervals=intervals, sort=sort or metrics[0])
    keys = ["benchmark", "id_dataset", "model", "oe_training"]
    for (bench, id_ds, model, oe), part in table.groupby(keys, sort=False):
        sub = df[(df.benchmark == bench) & (df.id_dataset == id_ds) & (df.model == model)]
        has_oe = bool(oe)
        title = f"{bench} · {id_ds} · {model} · " + (f"{base} vs {oe}" if has_oe else f"{base}")
        t = Table(title=title, title_style="bold", caption_justify="left")
        t.add_column("detector")
        _metric_columns(t, metrics, has_oe)
        for _, r in part.iterrows():
            cells = [r.detector]
            for m in metrics:
                cells.append(_value(r, m, "baseline"))
                if has_oe:
                    cells += [_value(r, m, "oe"), _delta(m, r[f"{m}_delta"])]
            t.add_row(*cells)
        t.caption = _caption(sub, part, base, oe, intervals is not None)
        console.print(t)
        console.print()
        _render_per_set(console, sub, id_ds, model, base, oe, detail or part.detector.iloc[0])


def _caption(sub: pd.DataFrame, part: pd.DataFrame, base: str | None, oe: str, has_ci: bool) -> str:
    """What a leaderboard shows: OOD sets, seeds, protocol, ID accuracy, metric conventions."""
    seeds = int(sub.seed.nunique())
    protocol = sub.protocol.iloc[0] if "protocol" in sub else "full"
    accuracy = part["id_accuracy_baseline"].iloc[0]
    acc = f"ID accuracy: {base} {accuracy:.2f}%" if accuracy == accuracy else "ID accuracy:"
    if oe:
        acc += f" → {oe} {part['id_accuracy_oe'].iloc[0]:.2f}%"
    ci = " [..] = 95% bootstrap interval over test samples." if has_ci else ""
    shows_id = any(c.startswith("fpr95_id") for c in part.columns)
    return (
        f"Mean over {sub.ood_dataset[sub.ood_dataset != 'mean'].nunique()} OOD sets; "
        f"{seeds} seed(s) (± = std over seeds); protocol {protocol}. {acc}.{ci}\n"
        f"{CONVENTION}." + (f" {CONVENTION_ID}." if shows_id else "")
    )


def _metric_columns(table: Any, metrics: tuple[str, ...], has_oe: bool) -> None:
    """For each metric a "no OE" column, and with OE an "OE" and a "Δ" column."""
    for m in metrics:
        arrow = "↓" if m in LOWER_IS_BETTER else "↑"
        table.add_column(f"{LABELS[m]}{arrow}\nno OE", justify="right")
        if has_oe:
            table.add_column(f"{LABELS[m]}{arrow}\nOE", justify="right")
            table.add_column("Δ", justify="right")


def _render_per_set(
    console: Console,
    df: pd.DataFrame,
    id_ds: str,
    model: str,
    base: str | None,
    oe: str,
    detector: str,
) -> None:
    from rich.table import Table

    sub = df[(df.id_dataset == id_ds) & (df.model == model) & (df.detector == detector)]
    per = comparison(sub, ("auroc", "fpr95"), ood="*")
    per = per[per.oe_training == oe] if oe else per
    order = {name: i for i, name in enumerate(dict.fromkeys(sub.ood_dataset))}
    order["mean"] = len(order)
    per = per.sort_values("ood_dataset", key=lambda col: col.map(order))
    t = Table(title=f"{id_ds} · {model} · {detector}: per OOD set", title_style="bold")
    t.add_column("OOD set")
    _metric_columns(t, ("auroc", "fpr95"), bool(oe))
    for _, r in per.iterrows():
        cells = [r.ood_dataset]
        for m in ("auroc", "fpr95"):
            cells.append(_fmt(r[f"{m}_baseline"]))
            if oe:
                cells += [_fmt(r[f"{m}_oe"]), _delta(m, r[f"{m}_delta"])]
        t.add_row(*cells)
    console.print(t)
    console.print()
