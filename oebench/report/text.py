"""Results as text: CSV, JSON, Markdown and LaTeX documents, and the text of table cells.

The cell texts (``mean±std [low, high]``, a signed Δ with optional rich colour markup) are
shared with the terminal tables of ``oebench.report.render``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oebench.core.files import write_text_file
from oebench.metrics import CONVENTION, CONVENTION_ID, LOWER_IS_BETTER
from oebench.record.schema import GROUP_COLUMNS, LABELS
from oebench.report.tables import BOARD_COLUMNS, SHOWN
from oebench.report.wide import col, trainings_of

if TYPE_CHECKING:
    import pandas as pd

#: how a key column is titled in text tables
HEADERS = {"id_dataset": "ID dataset", "oe_training": "OE training"}


def write_table(df: pd.DataFrame, path: str, fmt: str = "csv") -> None:
    """Write results (csv, json, markdown, latex) to ``path`` (``-`` for stdout), whole or not
    at all and never through a symbolic link (one planted there during a run is replaced)."""
    import sys

    text = format_table(df, fmt)
    if path == "-":
        sys.stdout.write(text)
    else:
        write_text_file(path, text)


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


def value_text(
    value: float, std: float | None = None, ci: tuple[float, float] | None = None, sep: str = " "
) -> str:
    """``mean±std [low, high]``; ``sep="\n"`` stacks the interval under the value."""
    if value != value:  # NaN
        return "-"
    text = f"{value:.2f}" + (f"±{std:.2f}" if std and std == std else "")
    if ci is not None and ci[0] == ci[0]:
        text += f"{sep}[{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def delta_text(
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


def delta_cell(r: Any, metric: str, markup: bool = True, sep: str = " ") -> str:
    """The Δ cell of one comparison row."""
    low = r.get(f"{metric}_delta_ci_low_oe")
    ci = (low, r.get(f"{metric}_delta_ci_high_oe")) if low is not None else None
    value = r.get(f"{metric}_delta", float("nan"))
    return delta_text(metric, value, markup, r.get(f"{metric}_delta_std"), ci, sep)


def value_cell(r: Any, metric: str, side: str, sep: str = " ") -> str:
    """A metric of one comparison row: mean, ± std over seeds, and its bootstrap CI if any."""
    low = r.get(f"{metric}_ci_low_{side}")
    ci = (low, r.get(f"{metric}_ci_high_{side}")) if low is not None else None
    return value_text(
        r.get(f"{metric}_{side}", float("nan")), r.get(f"{metric}_std_{side}"), ci, sep
    )


def leaderboard_table(table: pd.DataFrame, metrics: tuple[str, ...] = SHOWN) -> pd.DataFrame:
    """A comparison as text cells (mean±std [CI]) for markdown and LaTeX documents."""
    import pandas as pd

    has_oe = bool(table.oe_training.astype(bool).any())
    records = []
    for _, r in table.iterrows():
        rec = {k: r[k] for k in (*GROUP_COLUMNS, "oe_training") if k in r}
        for m in metrics:
            rec[f"{LABELS[m]} no OE"] = value_cell(r, m, "baseline")
            if has_oe:
                rec[f"{LABELS[m]} OE"] = value_cell(r, m, "oe")
                rec[f"Δ {LABELS[m]}"] = delta_cell(r, m, False)
        for side, label in (("baseline", "no OE"), ("oe", "OE"))[: 1 + has_oe]:
            accuracy = r.get(f"id_accuracy_{side}", float("nan"))
            rec[f"ID acc. {label}"] = value_text(accuracy, r.get(f"id_accuracy_std_{side}"))
        rec["seeds"] = str(int(r.get("seeds_baseline", r.get("seeds_oe", 0)) or 0))
        records.append(rec)
    out = pd.DataFrame(records)
    out.attrs["best"] = best_cells(table, metrics, has_oe)
    return out.rename(columns=HEADERS)


def best_cells(table: pd.DataFrame, metrics: tuple[str, ...], has_oe: bool) -> set:
    """(row, column) of the best value of every metric column within each leaderboard."""
    keys = [c for c in BOARD_COLUMNS if c in table]
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


def wide_cell(r: Any, metric: str, training: str, markup: bool) -> str:
    """One training's cell of a wide row: ``value±std`` and its Δ to the baseline."""
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
                rec[f"{LABELS[m]} {t}"] = wide_cell(r, m, t, markup=False)
        records.append(rec)
    return pd.DataFrame(records).rename(columns=HEADERS)
