"""Leaderboards in the terminal: rich tables, fitted to the console's width.

The tables come from ``oebench.report.tables`` (with / without OE) and
``oebench.report.wide`` (several trainings); their cell texts from ``oebench.report.text``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oebench.bench.groups import PREFIX, is_summary
from oebench.metrics import CONVENTION, CONVENTION_ID, LOWER_IS_BETTER
from oebench.record.schema import LABELS
from oebench.report.tables import BOARD_COLUMNS, SHOWN, comparison, seed_count, split_trainings
from oebench.report.text import delta_cell, value_cell, value_text, wide_cell
from oebench.report.wide import col, is_wide, trainings_of, wide_comparison

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console


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
    if is_wide(df) and intervals is None:  # 2+ variants: one wide table, one baseline
        render_wide(console, df, detail, metrics, sort)
        _render_sources(console, df, detail, metrics[0])
        return
    base, _ = split_trainings(df)
    labels = _labels(df)
    table = comparison(df, metrics, intervals=intervals, sort=sort or metrics[0])
    for (bench, id_ds, model, oe), part in table.groupby(list(BOARD_COLUMNS), sort=False):
        sub = df[(df.benchmark == bench) & (df.id_dataset == id_ds) & (df.model == model)]
        has_oe = bool(oe)
        title = f"{bench} · {id_ds} · {model} · " + (f"{base} vs {oe}" if has_oe else f"{base}")

        def build(ms: tuple[str, ...], sep: str, part: Any = part, title: str = title) -> Any:
            return _comparison_table(title, "detector", part.detector, part, ms, sep, labels)

        print_fitted(console, build, metrics, _caption(sub, part, base, oe, intervals is not None))
        console.print()
        where = f"{bench} · " if _is_version(sub) else ""  # which version group, when several
        detector = detail or part.detector.iloc[0]
        _render_per_set(console, sub, id_ds, model, base, oe, detector, where)
    _render_sources(console, df, detail, metrics[0])


def _render_sources(console: Console, df: pd.DataFrame, detail: str | None, metric: str) -> None:
    """Trainings over 2+ outlier sources: families x sources (``oebench.report.sources``)."""
    from oebench.report.sources import has_sources, render_sources
    from oebench.report.spectrum import has_spectrum, render_spectrum

    if has_sources(df):
        render_sources(console, df, detail, metric)
    if has_spectrum(df):
        render_spectrum(console, df, metric)


def _is_version(df: pd.DataFrame) -> bool:
    """Whether ``df``'s benchmark label names one of several version groups
    (``quickstart[lam=1]``; ``oebench.report.versions``)."""
    return "benchmark_name" in df and bool((df.benchmark != df.benchmark_name).any())


def _caption(sub: pd.DataFrame, part: pd.DataFrame, base: str | None, oe: str, has_ci: bool) -> str:
    """What a leaderboard shows: OOD sets, seeds, protocol, ID accuracy, metric conventions."""
    seeds = seed_count(sub)
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
    return value_text(part[f"id_accuracy_{side}"].iloc[0], std) + "%"


def _labels(df: pd.DataFrame) -> dict[str, str]:
    """Column labels; the FPR columns named for the run's recall level (FPR90 at 0.9)."""
    recalls = set(df.recall.fillna(0.95)) if "recall" in df else {0.95}
    if len(recalls) != 1 or recalls == {0.95}:
        return dict(LABELS)
    level = f"{100 * recalls.pop():g}"
    return {m: label.replace("FPR95", f"FPR{level}") for m, label in LABELS.items()}


def _fpr_note(sub: pd.DataFrame) -> str:
    """Where a run used another FPR recall level or rule than FPR95 / nearest, say which."""
    if "fpr_rule" not in sub or "recall" not in sub:
        return ""
    settings = set(zip(sub.recall.fillna(0.95), sub.fpr_rule.fillna("nearest"), strict=True))
    if settings <= {(0.95, "nearest")}:
        return ""
    rules = {"nearest": "ROC point nearest that recall", "first": "first ROC point reaching it"}
    said = "; ".join(f"at {100 * r:g}% OOD recall, {rules.get(f, f)}" for r, f in sorted(settings))
    return f"\nHere the FPR columns hold FPR {said} (the CSV keeps the column name fpr95)."


def _comparison_table(
    title: str,
    first: str,
    names: Any,
    part: pd.DataFrame,
    metrics: tuple[str, ...],
    sep: str,
    labels: dict[str, str] = LABELS,
) -> Any:
    """A rich table: one row per comparison row, ``metrics`` without OE, with OE and Δ."""
    from rich.markup import escape
    from rich.table import Table

    has_oe = bool(part.oe_training.astype(bool).any())
    t = Table(title=escape(title), title_style="bold", caption_justify="left")
    t.add_column(first, overflow="fold")
    _metric_columns(t, metrics, has_oe, labels)
    for name, (_, r) in zip(names, part.iterrows(), strict=True):
        cells = [escape(str(name))]
        for m in metrics:
            cells.append(value_cell(r, m, "baseline", sep))
            if has_oe:
                cells += [value_cell(r, m, "oe", sep), delta_cell(r, m, True, sep)]
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
    from rich.markup import escape
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
            table.caption = escape(caption) if caption else None  # names are not markup
        console.print(table)


def _metric_columns(
    table: Any, metrics: tuple[str, ...], has_oe: bool, labels: dict[str, str] = LABELS
) -> None:
    """For each metric a "no OE" column, and with OE an "OE" and a "Δ" column."""
    for m in metrics:
        arrow = "↓" if m in LOWER_IS_BETTER else "↑"
        table.add_column(f"{labels[m]}{arrow}\nno OE", justify="right", no_wrap=True)
        if has_oe:
            table.add_column(f"{labels[m]}{arrow}\nOE", justify="right", no_wrap=True)
            table.add_column(f"{labels[m]}\nΔ", justify="right", no_wrap=True)


def _render_per_set(
    console: Console,
    df: pd.DataFrame,
    id_ds: str,
    model: str,
    base: str | None,
    oe: str,
    detector: str,
    where: str = "",
) -> None:
    sub = df[(df.id_dataset == id_ds) & (df.model == model) & (df.detector == detector)]
    per = comparison(sub, ("auroc", "fpr95"), ood="*")
    per = per[per.oe_training == oe] if oe else per
    order = {name: i for i, name in enumerate(dict.fromkeys(sub.ood_dataset))}
    order["mean"] = len(order)
    per = per.sort_values("ood_dataset", key=lambda col: col.map(order))
    title = f"{where}{id_ds} · {model} · {detector}: per OOD set"
    seeds = seed_count(sub)

    def build(ms: tuple[str, ...], sep: str) -> Any:
        return _comparison_table(title, "OOD set", per.ood_dataset, per, ms, sep, _labels(sub))

    print_fitted(console, build, ("auroc", "fpr95"), f"{seeds} seed(s); ± = std over seeds.")
    console.print()


def render_wide(
    console: Console,
    df: pd.DataFrame,
    detail: str | None = None,
    metrics: tuple[str, ...] = SHOWN,
    sort: str | None = None,
) -> None:
    """Per benchmark, ID dataset and model: one table per metric (detectors x trainings),
    one per OOD group for the first metric, and a per-OOD-set table for one detector."""
    groups = [g for g in dict.fromkeys(df.ood_dataset) if g.startswith(PREFIX)]
    for (bench, id_ds, model), sub in df.groupby(["benchmark", "id_dataset", "model"], sort=False):
        summaries = [(m, "mean") for m in metrics] + [(metrics[0], g) for g in groups]
        for metric, ood in summaries:
            wide = wide_comparison(sub, metrics, ood=ood, sort=sort or metrics[0])
            if wide.empty:
                continue
            _print_table(console, sub, wide, metric, ood, f"{bench} · {id_ds} · {model}")
        best = wide_comparison(sub, metrics, sort=sort or metrics[0]).detector.iloc[0]
        where = f"{bench} · " if _is_version(sub) else ""
        _print_per_set(console, sub, detail or best, metrics[0], f"{where}{id_ds} · {model}")


def _print_table(
    console: Console, sub: pd.DataFrame, wide: pd.DataFrame, metric: str, ood: str, where: str
) -> None:
    from rich.markup import escape

    trainings = trainings_of(wide)
    arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
    n_sets = sub.ood_dataset[~sub.ood_dataset.map(is_summary)].nunique()
    what = f"mean over {n_sets} OOD sets" if ood == "mean" else f"{ood.split(':', 1)[1]}-OOD mean"
    title = (
        f"{where} · {_labels(sub)[metric]}{arrow} ({what}): {trainings[0]} vs "
        f"{len(trainings) - 1} trainings, Δ to {trainings[0]}"
    )
    names = [
        n + ("\n(baseline)" if i == 0 and n != "baseline" else "") for i, n in enumerate(trainings)
    ]
    cells = [
        [wide_cell(r, metric, tr, markup=True) for tr in trainings] for _, r in wide.iterrows()
    ]
    first = wide.iloc[0]
    acc = ", ".join(f"{tr} {first[col('id_accuracy', tr)]:.2f}%" for tr in trainings)
    protocol = sub.protocol.iloc[0] if "protocol" in sub else "full"
    caption = escape(
        f"{seed_count(sub)} seed(s) (± = std over seeds); protocol {protocol}. "
        f"ID accuracy: {acc}.\n{CONVENTION}."
    )
    grid = _Grid(title, "detector", list(wide.detector), names, cells)
    if not grid.fits(console.width):  # the trainings as rows: their ID accuracy as a column
        grid.side = ("ID acc. %", [f"{first[col('id_accuracy', tr)]:.2f}" for tr in trainings])
        caption = escape(
            f"{seed_count(sub)} seed(s) (± = std over seeds); protocol {protocol}.\n{CONVENTION}."
        )
    console.print(grid.table(console.width, caption))
    console.print()


class _Grid:
    """A table of ``cells[row][column]`` with training columns, printed with the trainings as
    rows instead where their columns would not fit the console's width."""

    def __init__(
        self, title: str, corner: str, rows: list[str], trainings: list[str], cells: list[list[str]]
    ):
        self.title, self.corner, self.rows, self.trainings = title, corner, rows, trainings
        self.cells = cells
        self.side: tuple[str, list[str]] | None = None  # a column per training when transposed

    def fits(self, width: int) -> bool:
        """Whether one column per training fits ``width`` (each cell's plain text, padded)."""
        from rich.text import Text

        widest = [max([len(n) for n in self.trainings[i].split("\n")] +
                      [Text.from_markup(r[i]).cell_len for r in self.cells])
                  for i in range(len(self.trainings))]  # fmt: skip
        first = max([len(self.corner)] + [len(r) for r in self.rows])
        return first + sum(w + 3 for w in widest) + 4 <= width

    def table(self, width: int, caption: str = "") -> Any:
        from rich.markup import escape
        from rich.table import Table

        t = Table(title=escape(self.title), title_style="bold", caption_justify="left")
        if self.fits(width):
            t.add_column(escape(self.corner))
            for name in self.trainings:
                t.add_column(escape(name), justify="right")
            for label, row in zip(self.rows, self.cells, strict=True):
                t.add_row(escape(label), *row)
        else:  # transposed: one row per training
            t.add_column("training")
            for label in self.rows:
                t.add_column(escape(label), justify="right")
            side = self.side or ("", [])
            if self.side:
                t.add_column(escape(side[0]), justify="right")
            for i, name in enumerate(self.trainings):
                extra = [side[1][i]] if self.side else []
                t.add_row(escape(name.replace("\n", " ")), *[row[i] for row in self.cells], *extra)
        t.caption = caption or None
        return t


def _print_per_set(
    console: Console, sub: pd.DataFrame, detector: str, metric: str, where: str
) -> None:
    """Rows: OOD sets, then group means and the overall mean; columns: trainings."""
    part = sub[sub.detector == detector]
    sets = list(dict.fromkeys(part.ood_dataset))
    order = [s for s in sets if not is_summary(s)] + [s for s in sets if s.startswith(PREFIX)]
    order.append("mean")
    arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
    trainings: list[str] = []
    rows, cells = [], []
    for ood in order:
        wide = wide_comparison(part, (metric,), ood=ood)
        if wide.empty:
            continue
        trainings = trainings or trainings_of(wide)
        rows.append(ood)
        cells.append([wide_cell(wide.iloc[0], metric, tr, markup=True) for tr in trainings])
    title = f"{where} · {detector}: {_labels(sub)[metric]}{arrow} per OOD set"
    console.print(_Grid(title, "OOD set", rows, trainings, cells).table(console.width))
    console.print()
