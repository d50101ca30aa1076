"""Results tables: the long CSV format, the with/without-OE leaderboard, rich rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oebench.columns import EXTRA_CELL_COLUMNS, EXTRA_ROW_COLUMNS
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
    # metric settings, the expected AP of a random detector, calibration
    *EXTRA_CELL_COLUMNS,
    *EXTRA_ROW_COLUMNS,
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
        # 6 decimals: 95.8, not 95.799999999999997 (metrics are percentages)
        return df.to_json(orient="records", indent=2, double_precision=6) + "\n"
    if fmt == "latex":
        note = f"{CONVENTION}. {CONVENTION_ID}. All values in %."
        return latex(df, numbers, df.attrs.get("best", set())) + "% " + latex_escape(note) + "\n"
    if fmt == "markdown":
        from tabulate import tabulate

        text = tabulate(
            df,
            headers="keys",
            tablefmt="pipe",
            floatfmt=".2f",
            showindex=False,
            disable_numparse=not numbers,
        )
        note = f"{CONVENTION}. {CONVENTION_ID}. All values in %."
        return text + "\n\n" + note + "\n"
    raise ValueError(f"unknown format {fmt!r}")


#: characters pdflatex cannot take as they are, and what to write instead
LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "→": r"$\rightarrow$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "·": r"$\cdot$",
    "−": "-",
    "…": r"\ldots{}",
}


def latex_escape(text: str) -> str:
    """``text`` safe for pdflatex: special characters escaped, ±, Δ and arrows as math."""
    return "".join(LATEX.get(ch, ch) for ch in str(text))


def latex(df: pd.DataFrame, numbers: bool = True, bold: set | None = None) -> str:
    """A booktabs tabular of ``df`` for pdflatex; cells (row, column) in ``bold`` in bold."""
    bold = bold or set()

    def cell(i: int, col: str, value: Any) -> str:
        if numbers and isinstance(value, float):
            text = "-" if value != value else f"{value:.2f}"
        else:
            text = latex_escape(value)
        return rf"\textbf{{{text}}}" if (i, col) in bold else text

    align = "".join("r" if _numeric(df[c]) or " OE" in c or "Δ" in c else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(c) for c in df.columns) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(df.itertuples(index=False)):
        values = [cell(i, c, v) for c, v in zip(df.columns, row, strict=True)]
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _numeric(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column))


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
    keys = [c for c in ("benchmark", "id_dataset", "model", "oe_training") if c in table]
    ranked = table.assign(
        _table=table.groupby(keys, sort=False).ngroup(),
        _value=value if metric in LOWER_IS_BETTER else -value,
    )
    ranked = ranked.sort_values(["_table", "_value"], kind="mergesort", na_position="last")
    return ranked.drop(columns=["_table", "_value"]).reset_index(drop=True)


def _fmt(
    value: float, std: float | None = None, ci: tuple[float, float] | None = None, sep: str = " "
) -> str:
    """``mean±std [low, high]``; ``sep="\n"`` stacks the interval under the value."""
    if value != value:  # NaN
        return "-"
    text = f"{value:.2f}" + (f"±{std:.2f}" if std and std == std else "")
    if ci is not None and ci[0] == ci[0]:
        text += f"{sep}[{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def _delta(
    metric: str,
    value: float,
    markup: bool = True,
    std: float | None = None,
    ci: tuple[float, float] | None = None,
    sep: str = " ",
) -> str:
    """A difference OE − baseline: sign, ± std over seeds, paired bootstrap interval."""
    if value != value:
        return "-"
    text = f"{value:+.2f}" + (f"±{std:.2f}" if std and std == std else "")
    if ci is not None and ci[0] == ci[0]:
        text += f"{sep}[{ci[0]:+.2f}, {ci[1]:+.2f}]"
    if not markup:
        return text
    better = value < 0 if metric in LOWER_IS_BETTER else value > 0
    colour = "green" if better else "red" if value else "white"
    return f"[{colour}]{text}[/]"


def _delta_of(r: Any, metric: str, markup: bool = True, sep: str = " ") -> str:
    """The Δ cell of one comparison row."""
    low = r.get(f"{metric}_delta_ci_low_oe")
    ci = (low, r.get(f"{metric}_delta_ci_high_oe")) if low is not None else None
    value = r.get(f"{metric}_delta", float("nan"))
    return _delta(metric, value, markup, r.get(f"{metric}_delta_std"), ci, sep)


def _value(r: Any, metric: str, side: str, sep: str = " ") -> str:
    """A metric of one comparison row: mean, ± std over seeds, and its bootstrap CI if any."""
    low = r.get(f"{metric}_ci_low_{side}")
    ci = (low, r.get(f"{metric}_ci_high_{side}")) if low is not None else None
    return _fmt(r.get(f"{metric}_{side}", float("nan")), r.get(f"{metric}_std_{side}"), ci, sep)


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
                rec[f"Δ {LABELS[m]}"] = _delta_of(r, m, False)
        for side, label in (("baseline", "no OE"), ("oe", "OE"))[: 1 + has_oe]:
            accuracy = r.get(f"id_accuracy_{side}", float("nan"))
            rec[f"ID acc. {label}"] = _fmt(accuracy, r.get(f"id_accuracy_std_{side}"))
        rec["seeds"] = str(int(r.get("seeds_baseline", r.get("seeds_oe", 0)) or 0))
        records.append(rec)
    out = pd.DataFrame(records)
    out.attrs["best"] = best_cells(table, metrics, has_oe)
    return out.rename(columns={"id_dataset": "ID dataset", "oe_training": "OE training"})


def best_cells(table: pd.DataFrame, metrics: tuple[str, ...], has_oe: bool) -> set:
    """(row, column) of the best value of every metric column within each leaderboard."""
    keys = [c for c in ("benchmark", "id_dataset", "model", "oe_training") if c in table]
    sides = [("baseline", "no OE")] + ([("oe", "OE")] if has_oe else [])
    best = set()
    positions = table.reset_index(drop=True)
    for _, part in positions.groupby(keys, sort=False):
        for m in metrics:
            for side, label in sides:
                values = part[f"{m}_{side}"].dropna()
                if values.empty:
                    continue
                top = values.min() if m in LOWER_IS_BETTER else values.max()
                best |= {(int(i), f"{LABELS[m]} {label}") for i in values.index[values == top]}
    return best


def render(
    console: Console,
    df: pd.DataFrame,
    detail: str | None = None,
    metrics: tuple[str, ...] = SHOWN,
    sort: str | None = None,
    intervals: pd.DataFrame | None = None,
) -> None:
    """Print the with/without-OE leaderboard and a per-OOD-set table for one detector."""
    if df.empty:
        console.print("No results.")
        return
    from oebench.wide import is_wide, render_wide

    if is_wide(df) and intervals is None:  # 2+ variants: one wide table, one baseline
        render_wide(console, df, detail, metrics, sort)
        return
    base, _ = split_trainings(df)
    table = comparison(df, metrics, intervals=intervals, sort=sort or metrics[0])
    keys = ["benchmark", "id_dataset", "model", "oe_training"]
    for (bench, id_ds, model, oe), part in table.groupby(keys, sort=False):
        sub = df[(df.benchmark == bench) & (df.id_dataset == id_ds) & (df.model == model)]
        has_oe = bool(oe)
        title = f"{bench} · {id_ds} · {model} · " + (f"{base} vs {oe}" if has_oe else f"{base}")

        def build(ms: tuple[str, ...], sep: str, part: Any = part, title: str = title) -> Any:
            return _comparison_table(title, "detector", part.detector, part, ms, sep)

        print_fitted(console, build, metrics, _caption(sub, part, base, oe, intervals is not None))
        console.print()
        _render_per_set(console, sub, id_ds, model, base, oe, detail or part.detector.iloc[0])


def _caption(sub: pd.DataFrame, part: pd.DataFrame, base: str | None, oe: str, has_ci: bool) -> str:
    """What a leaderboard shows: OOD sets, seeds, protocol, ID accuracy, metric conventions."""
    from oebench.groups import is_summary

    seeds = int(sub.seed.nunique())
    protocol = sub.protocol.iloc[0] if "protocol" in sub else "full"
    accuracy = part["id_accuracy_baseline"].iloc[0]
    acc = "ID accuracy:"
    if accuracy == accuracy:
        acc += f" {base} {_accuracy(part, 'baseline')}"
    if oe:
        acc += f" → {oe} {_accuracy(part, 'oe')}"
    ci = (
        " [..] = 95% bootstrap interval over test samples (for Δ: paired, both models on the"
        " same resampled samples)."
        if has_ci
        else ""
    )
    shows_id = any(c.startswith("fpr95_id") for c in part.columns)
    return (
        f"Mean over {sub.ood_dataset[~sub.ood_dataset.map(is_summary)].nunique()} OOD sets; "
        f"{seeds} seed(s) (± = std over seeds); protocol {protocol}. {acc}."
        f"{_calibration_note(sub, base, oe)}{ci}\n"
        f"{CONVENTION}." + (f" {CONVENTION_ID}." if shows_id else "") + _fpr_note(sub)
    )


def _calibration_note(sub: pd.DataFrame, base: str | None, oe: str) -> str:
    """ID ECE and the paper's mixed ID + OOD RMS calibration error, per side (means, in %)."""
    if not {"ece", "rms_calib_mixed"} <= set(sub.columns):
        return ""
    rows = sub[sub.ood_dataset == "mean"]
    sides = [t for t in (base, oe) if t]
    values = []
    for side in sides:
        part = rows[rows.training == side]
        ece, rms = part.ece.mean(), part.rms_calib_mixed.mean()
        if ece != ece or rms != rms:  # cells stored before calibration existed
            return ""
        values.append(f"{side} {ece:.2f} / {rms:.2f}")
    return " Calibration error (ID ECE / ID+OOD RMS, %): " + " → ".join(values) + "."


def _accuracy(part: pd.DataFrame, side: str) -> str:
    """ID accuracy of one side of a comparison: mean ± std over seeds, in %."""
    std = part[f"id_accuracy_std_{side}"].iloc[0] if f"id_accuracy_std_{side}" in part else None
    return _fmt(part[f"id_accuracy_{side}"].iloc[0], std) + "%"


def _fpr_note(sub: pd.DataFrame) -> str:
    """Where a run used another FPR recall level or rule than FPR95 / nearest, say which."""
    if "fpr_rule" not in sub or "recall" not in sub:
        return ""
    settings = set(zip(sub.recall.fillna(0.95), sub.fpr_rule.fillna("nearest"), strict=True))
    if settings <= {(0.95, "nearest")}:
        return ""
    rules = {"nearest": "ROC point nearest that recall", "first": "first ROC point reaching it"}
    said = "; ".join(f"at {100 * r:g}% OOD recall, {rules.get(f, f)}" for r, f in sorted(settings))
    return f"\nHere the FPR95 columns hold FPR {said}."


def _comparison_table(
    title: str, first: str, names: Any, part: pd.DataFrame, metrics: tuple[str, ...], sep: str
) -> Any:
    """A rich table: one row per comparison row, ``metrics`` without OE, with OE and Δ."""
    from rich.table import Table

    has_oe = bool(part.oe_training.astype(bool).any())
    t = Table(title=title, title_style="bold", caption_justify="left")
    t.add_column(first, overflow="fold")
    _metric_columns(t, metrics, has_oe)
    for name, (_, r) in zip(names, part.iterrows(), strict=True):
        cells = [str(name)]
        for m in metrics:
            cells.append(_value(r, m, "baseline", sep))
            if has_oe:
                cells += [_value(r, m, "oe", sep), _delta_of(r, m, True, sep)]
        t.add_row(*cells)
    return t


def print_fitted(
    console: Console,
    build: Callable[[tuple[str, ...], str], Any],
    metrics: tuple[str, ...],
    caption: str = "",
) -> None:
    """Print ``build(metrics, sep)``; when it is wider than the console, stack it as several
    tables with fewer metrics each, and intervals under their values: numbers are never cut."""
    from rich.measure import Measurement

    def width(ms: tuple[str, ...], sep: str) -> int:
        wide = console.options.update(width=10_000)  # the natural width, not clamped
        return Measurement.get(console, wide, build(ms, sep)).maximum

    sep = " " if width(metrics[:1], " ") <= console.width else "\n"
    chunks: list[tuple[str, ...]] = []
    for m in metrics:
        if chunks and width((*chunks[-1], m), sep) <= console.width:
            chunks[-1] = (*chunks[-1], m)
        else:
            chunks.append((m,))
    for i, chunk in enumerate(chunks):
        table = build(chunk, sep)
        if i:
            table.title = None
        if i == len(chunks) - 1:
            table.caption = caption or None
        console.print(table)


def _metric_columns(table: Any, metrics: tuple[str, ...], has_oe: bool) -> None:
    """For each metric a "no OE" column, and with OE an "OE" and a "Δ" column."""
    for m in metrics:
        arrow = "↓" if m in LOWER_IS_BETTER else "↑"
        table.add_column(f"{LABELS[m]}{arrow}\nno OE", justify="right", no_wrap=True)
        if has_oe:
            table.add_column(f"{LABELS[m]}{arrow}\nOE", justify="right", no_wrap=True)
            table.add_column(f"{LABELS[m]}\nΔ", justify="right", no_wrap=True)


def _render_per_set(
    console: Console,
    df: pd.DataFrame,
    id_ds: str,
    model: str,
    base: str | None,
    oe: str,
    detector: str,
) -> None:
    sub = df[(df.id_dataset == id_ds) & (df.model == model) & (df.detector == detector)]
    per = comparison(sub, ("auroc", "fpr95"), ood="*")
    per = per[per.oe_training == oe] if oe else per
    order = {name: i for i, name in enumerate(dict.fromkeys(sub.ood_dataset))}
    order["mean"] = len(order)
    per = per.sort_values("ood_dataset", key=lambda col: col.map(order))
    title = f"{id_ds} · {model} · {detector}: per OOD set"
    seeds = int(sub.seed.nunique())

    def build(ms: tuple[str, ...], sep: str) -> Any:
        return _comparison_table(title, "OOD set", per.ood_dataset, per, ms, sep)

    print_fitted(console, build, ("auroc", "fpr95"), f"{seeds} seed(s); ± = std over seeds.")
    console.print()
