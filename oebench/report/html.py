"""A benchmark's results as one self-contained HTML page (``oebench report``).

The page holds everything inline, so it opens offline and can be mailed or archived as one
file: the CSS, a few lines of JavaScript (click a column header to sort a table), and the
figures as PNG data URIs; a Content-Security-Policy forbids it to load anything else. It
shows, per benchmark, ID dataset, model and OE training: the with/without-OE leaderboard (mean
over OOD sets, mean ± std over seeds, 95% bootstrap intervals when given), one leaderboard per
near/far OOD group, a table per detector over the OOD sets, a detectors × OOD-sets heatmap with
and without OE, ROC curves and score histograms from the stored per-sample scores, and the
provenance of every cell (device, host, versions, code and data fingerprints, benchmark file
and digest) with the metric convention.

Every number cell carries its full-precision value in ``data-value`` (what sorting uses); the
text shows it rounded to 2 decimals, as the terminal leaderboards do.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from oebench.bench.groups import PREFIX, is_summary
from oebench.core.versions import VERSION
from oebench.metrics import CONVENTION, CONVENTION_ID, LOWER_IS_BETTER
from oebench.record.schema import LABELS
from oebench.record.store import ResultStore
from oebench.report.platforms import frame_mixed_platforms, platform_signature
from oebench.report.tables import BOARD_COLUMNS, SHOWN, comparison, seed_count, split_trainings

if TYPE_CHECKING:
    import pandas as pd

#: side of a comparison -> its column label
SIDES = {"baseline": "no OE", "oe": "OE", "delta": "Δ"}

CSS = """
:root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --head: #f3f5f7; --best: #fff3c4;
  --good: #1a7f37; --bad: #b42318; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--fg); margin: 0 auto; padding: 24px 32px 64px; max-width: 1600px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 6px; }
p.lead, p.note, figcaption, caption { color: var(--muted); }
p.note, figcaption, caption { font-size: 12.5px; }
nav ul { columns: 2; margin: 6px 0; padding-left: 20px; }
a { color: var(--accent); }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 4px; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; padding-top: 4px; max-width: 1100px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; }
td.name { white-space: nowrap; font-weight: 500; }
td.best { background: var(--best); font-weight: 700; }
td.good { color: var(--good); }
td.bad { color: var(--bad); }
.std { color: var(--muted); font-size: 12px; }
.ci { display: block; color: var(--muted); font-size: 11.5px; }
tbody.summary td { background: #fafbfc; font-style: italic; }
tbody.summary tr:first-child td { border-top: 2px solid #8c959f; }
th[data-col] { cursor: pointer; user-select: none; }
th[data-col]:hover { background: #e6eaef; }
th[data-col]::after { content: " \\2195"; color: #8c959f; font-size: 11px; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--accent); }
th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--accent); }
details { margin: 6px 0; }
details > summary { cursor: pointer; font-weight: 600; padding: 2px 0; }
figure { margin: 10px 0 18px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
code, pre { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
pre { background: var(--head); padding: 8px 10px; overflow-x: auto; border: 1px solid var(--line); }
.tag { display: inline-block; padding: 0 6px; border-radius: 8px; background: #fde7e9;
  color: var(--bad); font-size: 12px; }
@media print { th[data-col]::after { content: ""; } details { display: block; } }
"""

#: click (or Enter on) a header with data-col to sort its table's first body by that column;
#: metrics sort best first on the first click, NaN last; the summary body stays below
JS = """
(function () {
  "use strict";
  function key(cell) {
    var v = cell ? cell.getAttribute("data-value") : null;
    if (v === null) { return cell ? cell.textContent.trim().toLowerCase() : ""; }
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }
  function sortBy(th) {
    var table = th.closest("table");
    var col = parseInt(th.getAttribute("data-col"), 10);
    var now = th.getAttribute("aria-sort");
    var first = th.getAttribute("data-better") === "high" ? "descending" : "ascending";
    var dir = now ? (now === "ascending" ? "descending" : "ascending") : first;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      var c = x < y ? -1 : 1;
      return dir === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll("th[data-col]").forEach(function (h) {
      if (h !== th) { h.removeAttribute("aria-sort"); }
    });
    th.setAttribute("aria-sort", dir);
  }
  document.querySelectorAll("table.sortable th[data-col]").forEach(function (th) {
    th.tabIndex = 0;
    th.title = "sort by this column";
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });
})();
"""

#: the page may load nothing: no network, no other file (figures are data: URIs)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


@dataclass
class Page:
    """The report being built: its sections and the table of contents."""

    parts: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def anchor(self, *names: Any) -> str:
        """A unique element id made of ``names``."""
        base = "-".join("".join(ch if ch.isalnum() else "-" for ch in str(n)) for n in names)
        name, i = base or "s", 1
        while name in self.ids:
            i += 1
            name = f"{base}-{i}"
        self.ids.add(name)
        return name

    def add(self, text: str) -> None:
        self.parts.append(text)


@dataclass(frozen=True)
class Options:
    """What the report shows: ``metrics`` (the first is the sort order and the heatmap's),
    ``figures`` (ROC curves, histograms, heatmaps), ``intervals`` (bootstrap bands from
    ``oebench.report.results.intervals``), ``title``, ``selection`` (the filters, as given) and each
    benchmark's near/far ``groups`` of OOD sets (``oebench.report.results.stored_groups``)."""

    metrics: tuple[str, ...] = SHOWN
    figures: bool = True
    intervals: Any = None
    title: str | None = None
    selection: tuple[str, ...] = ()
    groups: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def figure_total(df: pd.DataFrame, options: Options) -> int:
    """How many figures ``report_html`` draws for ``df`` (for a progress bar)."""
    if not options.figures:
        return 0
    total = 0
    for _, sub in df.groupby(["benchmark", "id_dataset", "model"], sort=False):
        base, others = split_trainings(sub)
        boards = max(1, len(others))
        detectors = sub.detector.nunique()
        total += boards * (1 + 2 * detectors) + sub.training.nunique()
    return total


def report_html(
    store: ResultStore,
    df: pd.DataFrame,
    options: Options = Options(),
    progress: Callable[[int], None] | None = None,
) -> str:
    """The whole report of the stored results ``df`` (``stored_results``) as HTML text."""
    page = Page()
    benches = list(dict.fromkeys(df.benchmark))
    title = options.title or f"oebench report · {', '.join(benches)}"
    damaged = store.damaged(df.cell.unique()) if options.figures else set()
    arrays = store.scores(df.cell.unique()) if options.figures else {}
    tick = progress or (lambda n: None)
    for keys, sub in df.groupby(["benchmark", "id_dataset", "model"], sort=False):
        _model_section(page, sub, keys, options, arrays, damaged, tick)
    _provenance(page, store, df, options)
    return _document(title, page, df, options, damaged)


def _document(title: str, page: Page, df: pd.DataFrame, options: Options, damaged: set) -> str:
    seeds = ", ".join(str(s) for s in sorted(df.seed.unique()))
    lead = (
        f"{df.cell.nunique()} stored cells · seeds {seeds} · "
        f"{df.detector.nunique()} detectors · "
        f"{df.ood_dataset[~df.ood_dataset.map(is_summary)].nunique()} OOD sets. "
        "Click a column header to sort a table; values are percentages."
    )
    notes = ""
    if options.selection:
        notes += f"<p class='note'>Selected: {escape('; '.join(options.selection))}</p>"
    for line in frame_mixed_platforms(df):
        notes += f"<p class='note'><span class='tag'>mixed platforms</span> {escape(line)}</p>"
    if damaged:
        pairs = ", ".join(f"{d} (cell {c})" for c, d in sorted(damaged))
        notes += f"<p class='note'><span class='tag'>damaged</span> no figures for {escape(pairs)}"
        notes += ": their stored scores fail their checksum.</p>"
    toc = "".join(f"<li><a href='#{a}'>{escape(t)}</a></li>" for a, t in page.toc)
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<meta name='generator' content='oebench {escape(VERSION)}'>\n"
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{escape(title)}</h1><p class='lead'>{escape(lead)}</p>{notes}"
        f"<nav><ul>{toc}</ul></nav></header>\n<main>\n"
        + "\n".join(page.parts)
        + f"\n</main>\n<script>{JS}</script>\n</body>\n</html>\n"
    )


# --- one benchmark, ID dataset and model -------------------------------------------------------


def _model_section(
    page: Page,
    sub: pd.DataFrame,
    keys: tuple,
    options: Options,
    arrays: dict,
    damaged: set,
    tick: Callable[[int], None],
) -> None:
    bench, id_ds, model = keys
    base, _ = split_trainings(sub)
    metrics = options.metrics
    table = comparison(sub, metrics, intervals=options.intervals, sort=metrics[0])
    groups = [g for g in dict.fromkeys(sub.ood_dataset) if g.startswith(PREFIX)]
    for (_, _, _, oe), board in table.groupby(list(BOARD_COLUMNS), sort=False):
        versus = f"{base} vs {oe}" if base else f"{oe} (no baseline selected)"
        heading = f"{bench} · {id_ds} · {model} · " + (versus if oe else str(base))
        anchor = page.anchor(bench, id_ds, model, oe or base)
        page.toc.append((anchor, heading))
        page.add(f"<section id='{anchor}'><h2>{escape(heading)}</h2>")
        pair = sub[sub.training.isin([base, oe])] if oe else sub[sub.training == base]
        page.add("<h3>Leaderboard: mean over all OOD sets</h3>")
        page.add(_board_table(board, metrics, pair, base, oe, "mean", options.intervals))
        for g in groups:
            members = ", ".join(options.groups.get(bench, {}).get(g.split(":", 1)[1], []))
            grouped = comparison(pair, metrics, ood=g, sort=metrics[0])
            grouped = grouped[grouped.oe_training == (oe or "")]
            page.add(f"<h3>{escape(g.split(':', 1)[1])}-OOD mean ({escape(members)})</h3>")
            page.add(_board_table(grouped, metrics, pair, base, oe, g, None))
        if options.figures:
            page.add("<h3>Detectors × OOD sets</h3>")
            page.add(_heatmap(pair, list(board.detector), base, oe, metrics[0], heading))
            tick(1)
        page.add("<h3>Per OOD set, per detector</h3>")
        detectors = list(board.detector)
        for i, det in enumerate(detectors):
            page.add(f"<details{' open' if i == 0 else ''}><summary>{escape(det)}</summary>")
            page.add(_per_set_table(pair, det, base, oe, metrics))
            if options.figures:
                page.add(_score_figures(pair, det, base, oe, arrays, damaged, heading))
                tick(2)
            page.add("</details>")
        page.add("</section>")
    if options.figures:
        _detector_comparisons(page, sub, keys, arrays, damaged, tick)


# --- tables ------------------------------------------------------------------------------------


def _number(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return x


def _cell(
    value: Any,
    std: Any = None,
    ci: tuple[Any, Any] | None = None,
    signed: bool = False,
    css: str = "num",
) -> str:
    """A number cell: the value to 2 decimals (``data-value``: full precision), ± std over
    seeds when it is not 0, and a bootstrap interval under it."""
    x = _number(value)
    if x != x:
        return f"<td class='{css}' data-value='NaN'>–</td>"
    text = f"{x:+.2f}" if signed else f"{x:.2f}"
    s = _number(std)
    if s == s and s > 0:
        text += f"<span class='std'>±{s:.2f}</span>"
    if ci is not None:
        low, high = _number(ci[0]), _number(ci[1])
        if low == low:
            fmt = "{:+.2f}" if signed else "{:.2f}"
            text += f"<span class='ci'>[{fmt.format(low)}, {fmt.format(high)}]</span>"
    return f"<td class='{css}' data-value='{x!r}'>{text}</td>"


def _best(values: Iterable[Any], metric: str) -> float:
    finite = [v for v in (_number(x) for x in values) if v == v]
    if not finite:
        return float("nan")
    return min(finite) if metric in LOWER_IS_BETTER else max(finite)


def _delta_css(metric: str, value: Any) -> str:
    x = _number(value)
    if x != x or abs(x) < 0.005:
        return "num"
    better = x < 0 if metric in LOWER_IS_BETTER else x > 0
    return "num good" if better else "num bad"


def _header(metrics: tuple[str, ...], has_oe: bool, first: str, names: dict[str, str]) -> str:
    """Two header rows: each metric over its no OE / OE / Δ columns; sortable by data-col."""
    top = f"<th rowspan='2' data-col='0' data-key='name'>{escape(first)}</th>"
    bottom, col = [], 1
    for m in metrics:
        arrow = "↓" if m in LOWER_IS_BETTER else "↑"
        better = "low" if m in LOWER_IS_BETTER else "high"
        span = 3 if has_oe else 1
        top += f"<th colspan='{span}'>{escape(LABELS[m])}{arrow}</th>"
        sides = ("baseline", "oe", "delta") if has_oe else ("baseline",)
        for side in sides:
            label = names.get(side, SIDES[side])
            bottom.append(
                f"<th data-col='{col}' data-metric='{m}' data-side='{side}' "
                f"data-better='{better}'>{escape(label)}</th>"
            )
            col += 1
    return f"<thead><tr>{top}</tr><tr>{''.join(bottom)}</tr></thead>"


def _row_cells(r: Any, metrics: tuple[str, ...], has_oe: bool, best: dict) -> str:
    cells = []
    for m in metrics:
        sides = ("baseline", "oe") if has_oe else ("baseline",)
        for side in sides:
            value = r.get(f"{m}_{side}")
            low = r.get(f"{m}_ci_low_{side}")
            ci = (low, r.get(f"{m}_ci_high_{side}")) if low is not None else None
            top = best.get((m, side))
            css = "num best" if top == top and _number(value) == top else "num"
            cells.append(_cell(value, r.get(f"{m}_std_{side}"), ci, css=css))
        if has_oe:
            low = r.get(f"{m}_delta_ci_low_oe")
            ci = (low, r.get(f"{m}_delta_ci_high_oe")) if low is not None else None
            delta = r.get(f"{m}_delta")
            css = _delta_css(m, delta)
            cells.append(_cell(delta, r.get(f"{m}_delta_std"), ci, signed=True, css=css))
    return "".join(cells)


def _board_table(
    board: pd.DataFrame,
    metrics: tuple[str, ...],
    pair: pd.DataFrame,
    base: str | None,
    oe: str,
    ood: str,
    bands: Any,
) -> str:
    """One leaderboard: a row per detector, each metric without OE, with OE and Δ."""
    has_oe = bool(oe)
    names = {"baseline": f"no OE ({base})", "oe": f"OE ({oe})"}
    sides = ("baseline", "oe") if has_oe else ("baseline",)
    best = {(m, s): _best(board[f"{m}_{s}"], m) for m in metrics for s in sides}
    rows = []
    for _, r in board.iterrows():
        rows.append(
            f"<tr data-detector='{escape(str(r.detector))}'><td class='name'>"
            f"{escape(str(r.detector))}</td>{_row_cells(r, metrics, has_oe, best)}</tr>"
        )
    attrs = (
        f"data-kind='leaderboard' data-ood='{escape(ood)}' "
        f"data-benchmark='{escape(str(board.benchmark.iloc[0]))}' "
        f"data-id-dataset='{escape(str(board.id_dataset.iloc[0]))}' "
        f"data-model='{escape(str(board.model.iloc[0]))}' "
        f"data-baseline='{escape(str(base))}' data-oe='{escape(oe)}'"
    )
    return (
        f"<div class='scroll'><table class='sortable' {attrs}>"
        f"{_header(metrics, has_oe, 'detector', names)}<tbody>{''.join(rows)}</tbody>"
        f"<caption>{escape(_caption(pair, board, base, oe, ood, bands is not None))}</caption>"
        "</table></div>"
    )


def _caption(
    pair: pd.DataFrame, board: pd.DataFrame, base: str | None, oe: str, ood: str, ci: bool
) -> str:
    sets = pair.ood_dataset[~pair.ood_dataset.map(is_summary)].nunique()
    seeds = sorted(pair.seed.unique())
    what = f"Mean over {sets} OOD sets" if ood == "mean" else f"Mean over the {ood[5:]}-OOD sets"
    accuracy = []
    for side, name in (("baseline", base), ("oe", oe)):
        column = f"id_accuracy_{side}"
        if name and column in board and board[column].notna().any():
            value = float(board[column].dropna().iloc[0])
            std = board.get(f"id_accuracy_std_{side}")
            spread = float(std.dropna().iloc[0]) if std is not None and std.notna().any() else 0
            accuracy.append(f"{name} {value:.2f}%" + (f" ± {spread:.2f}" if spread else ""))
    text = (
        f"{what}; {len(seeds)} seed(s): {', '.join(map(str, seeds))} (± = std over seeds, "
        f"shown when not 0); best value per column highlighted. "
        f"ID accuracy: {' → '.join(accuracy)}."
    )
    if ci:
        text += (
            " [..] = 95% bootstrap interval over test samples (for Δ: paired, both models on"
            " the same resampled samples)."
        )
    return text


def _per_set_table(
    pair: pd.DataFrame, det: str, base: str | None, oe: str, metrics: tuple[str, ...]
) -> str:
    """Rows: the OOD sets (sortable), then the group means and the mean over all sets."""
    part = pair[pair.detector == det]
    per = comparison(part, metrics, ood="*")
    per = per[per.oe_training == (oe or "")]
    has_oe = bool(oe)
    names = {"baseline": f"no OE ({base})", "oe": f"OE ({oe})"}
    order = list(dict.fromkeys(part.ood_dataset))
    sets = [s for s in order if not is_summary(s)]
    summary = [s for s in order if s.startswith(PREFIX)] + ["mean"]
    by_set = {r.ood_dataset: r for _, r in per.iterrows()}
    sides = ("baseline", "oe") if has_oe else ("baseline",)
    best = {
        (m, s): _best([by_set[x][f"{m}_{s}"] for x in sets if x in by_set], m)
        for m in metrics
        for s in sides
    }

    def rows(names_: list[str], marks: dict) -> str:
        out = []
        for name in names_:
            if name not in by_set:
                continue
            out.append(
                f"<tr data-ood='{escape(name)}'><td class='name'>{escape(name)}</td>"
                f"{_row_cells(by_set[name], metrics, has_oe, marks)}</tr>"
            )
        return "".join(out)

    seeds = seed_count(part)
    return (
        f"<div class='scroll'><table class='sortable' data-kind='per-set' "
        f"data-detector='{escape(det)}' data-oe='{escape(oe)}'>"
        f"{_header(metrics, has_oe, 'OOD set', names)}"
        f"<tbody>{rows(sets, best)}</tbody><tbody class='summary'>{rows(summary, {})}</tbody>"
        f"<caption>{escape(det)}: {seeds} seed(s), ± = std over seeds; best OOD set per column "
        "highlighted; the group means and the mean over all sets stay below.</caption>"
        "</table></div>"
    )


# --- figures -----------------------------------------------------------------------------------


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<figure><img alt='{escape(alt)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _heatmap(
    pair: pd.DataFrame, detectors: list[str], base: str | None, oe: str, metric: str, heading: str
) -> str:
    import numpy as np

    from oebench.report.plots import heatmap_figure, png_bytes

    per = comparison(pair, (metric,), ood="*")
    per = per[per.oe_training == (oe or "")]
    order = list(dict.fromkeys(pair.ood_dataset))
    sets = [s for s in order if not is_summary(s)]
    sets += [s for s in order if s.startswith(PREFIX)] + ["mean"]
    values = per.set_index(["detector", "ood_dataset"])
    panels = []
    for side, label in (("baseline", f"no OE ({base})"), ("oe", f"OE ({oe})"), ("delta", "Δ")):
        column = f"{metric}_{side}" if side != "delta" else f"{metric}_delta"
        if column not in values:
            continue
        grid = np.full((len(detectors), len(sets)), np.nan)
        for i, det in enumerate(detectors):
            for j, s in enumerate(sets):
                if (det, s) in values.index:
                    grid[i, j] = values.loc[(det, s), column]
        if np.isfinite(grid).any():  # no empty panel where one side is not selected
            panels.append((label, grid, side == "delta"))
    fig = heatmap_figure(heading, detectors, sets, panels, metric)
    caption = (
        f"{LABELS[metric]} per detector (rows, best first) and OOD set (columns; then the group "
        "means and the mean), mean over seeds; Δ = OE − no OE, green where OE helps."
    )
    return _img(png_bytes(fig), f"{LABELS[metric]} heatmap", caption)


def _score_figures(
    pair: pd.DataFrame,
    det: str,
    base: str | None,
    oe: str,
    arrays: dict,
    damaged: set,
    heading: str,
) -> str:
    """ROC curves and score histograms of one detector, for the first seed."""
    from oebench.report.plots import comparison_sides, histogram_figure, png_bytes, roc_figure

    means = pair[(pair.ood_dataset == "mean") & (pair.detector == det)]
    seed = min(means.seed)
    part = means[means.seed == seed]
    if any((c, det) in damaged for c in part.cell):
        return "<p class='note'><span class='tag'>damaged</span> no figures: scores damaged.</p>"
    cell_of = dict(zip(part.training, part.cell, strict=True))
    sets, sides = comparison_sides(arrays, cell_of, base, oe or None, det)
    title = f"{heading} · {det} · seed {seed}"
    note = f" (seed {seed} of {means.seed.nunique()})" if means.seed.nunique() > 1 else ""
    return _img(
        png_bytes(roc_figure(title, sets, sides)),
        f"ROC curves of {det}",
        f"ROC curves per OOD set{note}; the dot marks the FPR at 95% TPR.",
    ) + _img(
        png_bytes(histogram_figure(title, sets, sides)),
        f"score histograms of {det}",
        f"Score densities, ID test set vs each OOD set{note}; higher score = more anomalous.",
    )


def _detector_comparisons(
    page: Page,
    sub: pd.DataFrame,
    keys: tuple,
    arrays: dict,
    damaged: set,
    tick: Callable[[int], None],
) -> None:
    """Per training (first seed): every detector's ROC curve on each OOD set."""
    from oebench.report.plots import detector_curves, detectors_figure, png_bytes

    bench, id_ds, model = keys
    means = sub[sub.ood_dataset == "mean"]
    seed = min(means.seed)
    anchor = page.anchor(bench, id_ds, model, "detectors")
    heading = f"{bench} · {id_ds} · {model} · detectors compared"
    page.toc.append((anchor, heading))
    page.add(f"<section id='{anchor}'><h2>{escape(heading)}</h2>")
    for training, part in means[means.seed == seed].groupby("training", sort=False):
        part = part[[(c, d) not in damaged for c, d in zip(part.cell, part.detector, strict=True)]]
        sets, curves = detector_curves(part, arrays, training)
        title = f"{bench} · {id_ds} · {model} · {training} · seed {seed}"
        page.add(
            _img(
                png_bytes(detectors_figure(title, sets, curves)),
                f"ROC curves of every detector, {training}",
                f"{training}: every detector's ROC curve per OOD set (seed {seed}); the legend "
                "lists detectors by mean AUROC over these sets.",
            )
        )
        tick(1)
    page.add("</section>")


# --- provenance --------------------------------------------------------------------------------


def _facts(items: list[tuple[str, str]]) -> str:
    body = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f"<dl class='facts'>{body}</dl>"


def _distinct(values: Iterable[Any]) -> str:
    seen = [str(v) for v in dict.fromkeys(values) if v is not None and v == v and str(v)]
    return escape(", ".join(seen)) if seen else "–"


def _provenance(page: Page, store: ResultStore, df: pd.DataFrame, options: Options) -> None:
    import platform
    import sys
    from datetime import datetime, timezone

    anchor = page.anchor("provenance")
    page.toc.append((anchor, "Provenance"))
    page.add(f"<section id='{anchor}'><h2>Provenance</h2>")
    cells = df.drop_duplicates("cell")
    records = {key: store.cell(key) for key in cells.cell}
    settings = sorted(
        {
            (float(r.get("recall") or 0.95), r.get("fpr_rule") or "nearest")
            for r in records.values()
            if r is not None
        }
    )
    rules = "; ".join(f"FPR at {100 * r:g}% OOD recall, rule {f}" for r, f in settings)
    page.add("<h3>Metric convention</h3>")
    page.add(
        f"<p>{escape(CONVENTION)}. {escape(CONVENTION_ID)}. This store's cells: "
        f"{escape(rules or 'FPR95, nearest')}. All values in %.</p>"
    )
    page.add("<h3>This report</h3>")
    page.add(
        _facts(
            [
                ("made at", escape(datetime.now(timezone.utc).isoformat(timespec="seconds"))),
                ("made by", escape(f"oebench {VERSION}, Python {sys.version.split()[0]}")),
                ("made on", escape(platform.platform())),
                ("results store", f"<code>{escape(str(store.path))}</code>"),
                ("selection", escape("; ".join(options.selection)) or "everything stored"),
            ]
        )
    )
    for bench, part in cells.groupby("benchmark", sort=False):
        page.add(f"<h3>Benchmark {escape(str(bench))}</h3>")
        versions = part.drop_duplicates("benchmark_digest")
        texts = []
        for digest, path, key in zip(
            versions.benchmark_digest, versions.benchmark_path, versions.cell, strict=True
        ):
            record = records.get(key) or {}
            texts.append(
                f"<details><summary>file <code>{escape(str(path))}</code>, digest "
                f"<code>{escape(str(digest))}</code></summary>"
                f"<pre>{escape(record.get('benchmark_text') or '')}</pre></details>"
            )
        runs = [records[k] for k in part.cell if records.get(k)]
        plugins = {}
        for r in runs:
            for name, version in (r.get("plugins") or {}).items():
                plugins.setdefault(name, set()).add(str(version))
        hosts = [((r.get("config") or {}).get("worker") or {}).get("host") for r in runs]
        platforms = [platform_signature(r.get("platform")) or "not recorded" for r in runs]
        page.add(
            _facts(
                [
                    ("file", "".join(texts)),
                    ("platform", _distinct(platforms)),
                    ("device", _distinct(part.device)),
                    ("hosts", _distinct(hosts)),
                    ("oebench", _distinct(part.oebench_version)),
                    ("torch", _distinct(part.torch_version)),
                    (
                        "plugins",
                        escape(", ".join(f"{n} {'/'.join(sorted(v))}" for n, v in plugins.items()))
                        or "–",
                    ),
                    ("stored", _distinct([min(part.created_at), max(part.created_at)])),
                ]
            )
        )
        page.add(_cells_table(part, records))
        page.add(_fingerprints_table(runs))
    page.add("</section>")


def _cells_table(part: pd.DataFrame, records: dict) -> str:
    head = (
        "seed",
        "ID dataset",
        "model",
        "training",
        "device",
        "trained",
        "train s",
        "score s",
        "stored at",
        "cell",
    )
    rows = []
    for r in part.itertuples(index=False):
        trained = "trained" if r.trained else "loaded"
        rows.append(
            "<tr>"
            f"<td class='num' data-value='{int(r.seed)}'>{int(r.seed)}</td>"
            f"<td>{escape(str(r.id_dataset))}</td><td>{escape(str(r.model))}</td>"
            f"<td>{escape(str(r.training))}</td><td>{escape(str(r.device))}</td>"
            f"<td>{trained}</td>{_cell(r.train_seconds)}{_cell(r.score_seconds)}"
            f"<td>{escape(str(r.created_at)[:19])}</td><td><code>{escape(str(r.cell))}</code></td>"
            "</tr>"
        )
    header = "".join(f"<th data-col='{i}'>{escape(h)}</th>" for i, h in enumerate(head))
    return (
        "<details><summary>cells</summary><div class='scroll'><table class='sortable' "
        f"data-kind='cells'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div></details>"
    )


def _fingerprints_table(runs: list[dict]) -> str:
    """Every component's code fingerprint and every data file digest the cells recorded."""
    found: dict[tuple[str, str], dict[str, None]] = {}
    for r in runs:
        prints = (r.get("config") or {}).get("fingerprints") or {}
        for kind in ("code", "data"):
            for name, digest in (prints.get(kind) or {}).items():
                found.setdefault((kind, name), {})[str(digest)] = None
    rows = []
    for (kind, name), digests in sorted(found.items()):
        many = " <span class='tag'>differs between cells</span>" if len(digests) > 1 else ""
        rows.append(
            f"<tr><td>{kind}</td><td>{escape(name)}</td>"
            f"<td><code>{escape(', '.join(digests))}</code>{many}</td></tr>"
        )
    return (
        "<details><summary>code and data fingerprints</summary><div class='scroll'>"
        "<table class='sortable' data-kind='fingerprints'><thead><tr><th data-col='0'>of</th>"
        "<th data-col='1'>component</th><th data-col='2'>fingerprint</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody><caption>The code fingerprint of each component (its "
        "code closure, see CONTRIBUTING.md) and the content digest of each data source, as "
        "recorded with the cells.</caption></table></div></details>"
    )
