"""Results tables: the long CSV format, the with/without-OE leaderboard, rich rendering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oebench.metrics import CONVENTION, LOWER_IS_BETTER, METRICS

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


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows from the runner as a DataFrame in CSV column order (std columns kept when present)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c.endswith("_std")]
    return df[[c for c in CSV_COLUMNS + extra if c in df.columns]]


def write_table(df: pd.DataFrame, path: str, fmt: str = "csv") -> None:
    """Write results (csv, json, markdown, latex) to ``path`` (``-`` for stdout)."""
    import sys

    text = format_table(df, fmt)
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w", newline="") as fh:
            fh.write(text)


def format_table(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        return df.to_json(orient="records", indent=2) + "\n"
    if fmt == "markdown":
        return df.to_markdown(index=False, floatfmt=".2f") + "\n"
    if fmt == "latex":
        from tabulate import tabulate

        return (
            tabulate(df, headers="keys", tablefmt="latex_booktabs", floatfmt=".2f", showindex=False)
            + "\n"
        )
    raise ValueError(f"unknown format {fmt!r}")


def split_trainings(df: pd.DataFrame) -> tuple[str | None, list[str]]:
    """The baseline training (no outliers, preferably named 'baseline') and the OE trainings."""
    plain = list(dict.fromkeys(df.loc[df.outlier_source == "", "training"]))
    oe = list(dict.fromkeys(df.loc[df.outlier_source != "", "training"]))
    baseline = "baseline" if "baseline" in plain else (plain[0] if plain else None)
    return baseline, oe + [t for t in plain if t != baseline]


def comparison(
    df: pd.DataFrame, metrics: tuple[str, ...] = SHOWN, ood: str = "mean"
) -> pd.DataFrame:
    """Without-OE | with-OE | delta per (id_dataset, model, OE training, detector), over seeds.

    ``ood='mean'`` uses the per-seed mean over OOD sets; another value picks one OOD set.
    Rows for each detector; ``*_std`` columns hold the spread over seeds (0 for one seed).
    """
    import pandas as pd

    base, others = split_trainings(df)
    keys = ["id_dataset", "model", "detector"]
    sel = df[df.ood_dataset == ood] if ood != "*" else df
    group = keys + (["ood_dataset"] if ood == "*" else [])
    stats = (
        sel.groupby(group + ["training"], sort=False)
        .agg(
            **{f"{m}": (m, "mean") for m in (*metrics, "id_accuracy")},
            **{f"{m}_std": (m, lambda s: float(s.std(ddof=0))) for m in metrics},
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
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
    return pd.concat(frames, ignore_index=True)


def _fmt(value: float, std: float | None = None) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.2f}" + (f"±{std:.2f}" if std else "")


def _delta(metric: str, value: float) -> str:
    if value != value:
        return "-"
    better = value < 0 if metric in LOWER_IS_BETTER else value > 0
    colour = "green" if better else "red" if value else "white"
    return f"[{colour}]{value:+.2f}[/]"


def render(
    console: Console, df: pd.DataFrame, detail: str | None = None, metrics: tuple[str, ...] = SHOWN
) -> None:
    """Print the with/without-OE leaderboard and a per-OOD-set table for one detector."""
    from rich.table import Table

    if df.empty:
        console.print("No results.")
        return
    base, others = split_trainings(df)
    table = comparison(df, metrics)
    seeds = int(df.seed.nunique())
    protocol = df.protocol.iloc[0] if "protocol" in df else "full"
    for (id_ds, model, oe), part in table.groupby(
        ["id_dataset", "model", "oe_training"], sort=False
    ):
        has_oe = bool(oe)
        title = f"{id_ds} · {model} · {base} vs {oe}" if has_oe else f"{id_ds} · {model} · {base}"
        sort_col = f"{metrics[0]}_oe" if has_oe else f"{metrics[0]}_baseline"
        part = part.sort_values(sort_col, ascending=metrics[0] in LOWER_IS_BETTER)
        t = Table(title=title, title_style="bold", caption_justify="left")
        t.add_column("detector")
        for m in metrics:
            arrow = "↓" if m in LOWER_IS_BETTER else "↑"
            t.add_column(f"{LABELS[m]}{arrow}\nno OE", justify="right")
            if has_oe:
                t.add_column(f"{LABELS[m]}{arrow}\nOE", justify="right")
                t.add_column("Δ", justify="right")
        for _, r in part.iterrows():
            cells = [r.detector]
            for m in metrics:
                cells.append(_fmt(r[f"{m}_baseline"], r.get(f"{m}_std_baseline")))
                if has_oe:
                    cells += [_fmt(r[f"{m}_oe"], r.get(f"{m}_std_oe")), _delta(m, r[f"{m}_delta"])]
            t.add_row(*cells)
        acc = f"ID accuracy: {base} {part['id_accuracy_baseline'].iloc[0]:.2f}%"
        if has_oe:
            acc += f" → {oe} {part['id_accuracy_oe'].iloc[0]:.2f}%"
        t.caption = (
            f"Mean over {df.ood_dataset[df.ood_dataset != 'mean'].nunique()} OOD sets; "
            f"{seeds} seed(s) (± = std over seeds); protocol {protocol}. {acc}.\n"
            f"{CONVENTION}."
        )
        console.print(t)
        console.print()
        _render_per_set(console, df, id_ds, model, base, oe, detail or part.detector.iloc[0])


def _render_per_set(
    console: Console, df: pd.DataFrame, id_ds: str, model: str, base: str, oe: str, detector: str
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
    for m in ("auroc", "fpr95"):
        t.add_column(f"{LABELS[m]}\nno OE", justify="right")
        if oe:
            t.add_column(f"{LABELS[m]}\nOE", justify="right")
            t.add_column("Δ", justify="right")
    for _, r in per.iterrows():
        cells = [r.ood_dataset]
        for m in ("auroc", "fpr95"):
            cells.append(_fmt(r[f"{m}_baseline"]))
            if oe:
                cells += [_fmt(r[f"{m}_oe"]), _delta(m, r[f"{m}_delta"])]
        t.add_row(*cells)
    console.print(t)
    console.print()
