"""PNG figures from stored per-sample scores: ROC curves and score histograms, OE vs no OE.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oebench.core.files import atomic_write_file
from oebench.errors import UserError
from oebench.metrics import auroc, binary_curve, fpr_at_recall
from oebench.record.store import ResultStore, ScoreArray
from oebench.report.tables import split_trainings

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

KINDS = ("roc", "hist", "detectors")
#: resolution of the PNG files
DPI = 110
COLOURS = {"no OE": "#4c72b0", "OE": "#dd8452", "ID": "#55a868", "OOD": "#c44e52"}
#: axis limits with a margin, so curves along an edge (AUROC near 0 or 100) stay visible
LIMITS = (-0.03, 1.03)
#: one side of a comparison: its label ("no OE" / "OE"), training name and per-set scores
Side = tuple[str, str, dict[str, tuple[np.ndarray, np.ndarray]]]


def roc_curve(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates (OOD positive), from (0, 0) to (1, 1)."""
    tps, fps = binary_curve(id_scores, ood_scores)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def _grid(n: int, columns: int = 3) -> tuple[int, int]:
    cols = min(n, columns)
    return -(-n // cols), cols


def roc_figure(title: str, sets: list[str], sides: list[Side]) -> Figure:
    """One panel per OOD set with each side's ROC curve and its FPR95 point."""
    from matplotlib.figure import Figure

    rows, cols = _grid(len(sets))
    fig = Figure(figsize=(4 * cols, 3.8 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, sets, strict=False):
        curves = [
            (f"{label} ({training})", COLOURS[label], scores[name])
            for label, training, scores in sides
        ]
        _roc_panel(ax, name, curves)
    for ax in axes[len(sets) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}\nROC per OOD set (dot: FPR at 95% TPR)")
    return fig


def _roc_panel(ax: Any, name: str, curves: list[tuple[str, str, tuple]]) -> None:
    """ROC curves on one panel; the legend goes under the axes, never over the curves."""
    _roc_axes(ax, name)
    for label, colour, (id_s, ood_s) in curves:
        area, _, line = _draw_roc(ax, id_s, ood_s, color=colour, lw=1.6)
        line.set_label(f"{label}: {area:.1f}")
    ax.legend(
        title="AUROC",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        fontsize="small",
        title_fontsize="small",
        frameon=False,
    )


def _roc_axes(ax: Any, name: str) -> None:
    """An empty ROC panel: chance diagonal, the 95% TPR line, labelled axes."""
    ax.plot([0, 1], [0, 1], ls=":", lw=0.8, color="grey")
    ax.axhline(0.95, ls="--", lw=0.6, color="grey")
    ax.set(title=name, xlim=LIMITS, ylim=LIMITS, aspect="equal")
    ax.set_xlabel("FPR (ID flagged as OOD)")
    ax.set_ylabel("TPR (OOD detected)")


def _draw_roc(ax: Any, id_s: np.ndarray, ood_s: np.ndarray, **style: Any) -> tuple:
    """One ROC curve and its FPR95 dot on ``ax``: (AUROC in %, FPR95 in %, the curve)."""
    fpr, tpr = roc_curve(id_s, ood_s)
    tps, fps = binary_curve(id_s, ood_s)
    area, fpr95 = 100 * auroc(tps, fps), fpr_at_recall(tps, fps)
    (line,) = ax.plot(fpr, tpr, clip_on=False, **style)
    ax.plot([fpr95], [0.95], "o", ms=4, clip_on=False, color=style.get("color"))
    return area, fpr95, line


#: 10 well-separated colours (tab10), then line styles: each detector its own (colour, style)
#: pair, and a marker of its own, so that curves stay apart in print and for colour-blind eyes
STYLE_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
STYLE_LINES = ("-", "--", ":", "-.")
STYLE_MARKERS = "osD^vP*Xh<>p8dH"


def detector_style(i: int) -> dict[str, Any]:
    """Matplotlib line style of the ``i``-th detector (the same in every figure)."""
    n = len(STYLE_COLOURS)
    return {
        "color": STYLE_COLOURS[i % n],
        "ls": STYLE_LINES[(i // n) % len(STYLE_LINES)],
        "marker": STYLE_MARKERS[i % len(STYLE_MARKERS)],
        "markevery": ((i % 7) * 0.017, 0.12),  # spaced along the curve, staggered
        "ms": 4.5,
        "lw": 1.5,
        "mfc": "white",
        "mew": 1.1,
    }


def detectors_figure(title: str, sets: list[str], curves: dict[str, dict]) -> Figure:
    """One panel per OOD set comparing every detector's ROC curve (one training, one seed).

    One legend for the whole figure, under the panels: a table with a row per detector (best
    mean AUROC first) and its AUROC on every OOD set, so no legend covers a panel.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows, cols = _grid(len(sets))
    legend_in = 0.19 * (len(curves) + 1) + 0.5
    fig = Figure(figsize=(max(4.2 * cols, 7.0), 4.1 * rows + legend_in + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    areas: dict[str, dict[str, float]] = {det: {} for det in curves}
    styles = {det: detector_style(i) for i, det in enumerate(curves)}
    for ax, name in zip(axes, sets, strict=False):
        _roc_axes(ax, name)
        for det, scores in curves.items():
            if name in scores:
                areas[det][name] = _draw_roc(ax, *scores[name], **styles[det])[0]
    for ax in axes[len(sets) :]:
        ax.set_visible(False)
    widths = [max(6, len(s)) for s in sets]
    first = max(len("detector"), *(len(d) for d in curves))

    def row(name: str, values: list[str]) -> str:
        cells = "".join(f"  {v:>{w}}" for v, w in zip(values, widths + [5], strict=True))
        return f"{name:<{first}}{cells}"

    def mean(det: str) -> float:
        return float(np.mean(list(areas[det].values()))) if areas[det] else float("nan")

    ranked = sorted(curves, key=lambda d: -mean(d) if mean(d) == mean(d) else np.inf)
    handles = [Line2D([], [], alpha=0)]
    labels = [row("detector", [*sets, "mean"])]
    for det in ranked:
        style = {k: v for k, v in styles[det].items() if k != "markevery"}
        handles.append(Line2D([], [], **style))
        values = [f"{areas[det][s]:.1f}" if s in areas[det] else "-" for s in sets]
        labels.append(row(det, [*values, f"{mean(det):.1f}"]))
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        title="AUROC per OOD set (best mean first)",
        prop={"family": "monospace", "size": "small"},
        title_fontsize="small",
        frameon=False,
        handlelength=3.2,
    )
    fig.suptitle(f"{title}\ndetectors compared per OOD set (dot: FPR at 95% TPR)")
    return fig


def _bins(values: list[np.ndarray], bins: int = 50) -> np.ndarray:
    """Shared histogram edges spanning the central 99.5% of all scores."""
    pooled = np.concatenate(values)
    low, high = np.percentile(pooled, [0.25, 99.75])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def histogram_figure(title: str, sets: list[str], sides: list[Side]) -> Figure:
    """A row per OOD set, a column per side: ID vs OOD score densities on shared bins."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.6 * len(sides), 2.4 * len(sets) + 0.8), layout="constrained")
    axes = fig.subplots(len(sets), len(sides), squeeze=False)
    for col, (label, training, scores) in enumerate(sides):
        for row, name in enumerate(sets):
            ax = axes[row][col]
            id_s, ood_s = scores[name]
            edges = _bins([id_s, ood_s])
            for what, s in (("ID", id_s), ("OOD", ood_s)):
                ax.hist(
                    np.clip(s, edges[0], edges[-1]),
                    bins=edges,
                    density=True,
                    histtype="stepfilled",
                    alpha=0.45,
                    color=COLOURS[what],
                    label=f"{what} (n={s.size})",
                )
            area = 100 * auroc(*binary_curve(id_s, ood_s))
            ax.set_title(f"{name} · {label} ({training}) · AUROC {area:.1f}", fontsize="medium")
            ax.set_yticks([])
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.set_ylabel("density")
            ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes[-1][col].set_xlabel("score (higher = more anomalous)")
    fig.suptitle(f"{title}\nscore histograms, ID test set vs each OOD set")
    return fig


def _side(label: str, training: str, arrays: list[ScoreArray], detector: str) -> Side:
    mine = [a for a in arrays if a.detector == detector]
    ids = next((a.scores for a in mine if not a.is_ood), None)
    if ids is None:
        raise UserError(f"no per-sample scores are stored for {detector!r} ({training})")
    return label, training, {a.dataset: (ids, a.scores) for a in mine if a.is_ood}


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` as PNG, whole or not at all and never through a symbolic link
    (one planted in the folder during the command is replaced, its target left alone)."""
    atomic_write_file(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI))


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """``fig`` as PNG bytes (for a page that carries its figures inline)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def comparison_sides(
    arrays: dict[str, list[ScoreArray]],
    cell_of: dict[str, str],
    base: str | None,
    oe: str | None,
    detector: str,
) -> tuple[list[str], list[Side]]:
    """The OOD sets both sides share and the sides (no OE, OE) of one detector's figures;
    ``cell_of`` maps each training to its cell (one seed)."""
    sides = []
    if base is not None:
        sides.append(_side("no OE", base, arrays[cell_of[base]], detector))
    if oe is not None:
        sides.append(_side("OE", oe, arrays[cell_of[oe]], detector))
    sets = [s for s in sides[0][2] if all(s in side[2] for side in sides)]
    return sets, sides


def detector_curves(
    part: pd.DataFrame, arrays: dict[str, list[ScoreArray]], training: str
) -> tuple[list[str], dict[str, dict]]:
    """The OOD sets and every detector's per-set scores of one training and seed (``part``:
    its ``mean`` rows, one per detector), for ``detectors_figure``."""
    curves = {}
    for det, cell in zip(part.detector, part.cell, strict=True):
        curves[det] = _side("", training, arrays[cell], det)[2]
    sets = list(dict.fromkeys(s for scores in curves.values() for s in scores))
    return sets, curves


def heatmap_figure(
    title: str,
    detectors: list[str],
    sets: list[str],
    panels: list[tuple[str, np.ndarray, bool]],
    metric: str = "auroc",
) -> Figure:
    """Detectors (rows) × OOD sets (columns), one panel per ``(label, values, is_delta)``:
    values on a fixed 0-100 scale (bright = better), differences on a diverging scale
    (green = better), every cell annotated."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    from oebench.metrics import LOWER_IS_BETTER
    from oebench.record.schema import LABELS

    lower = metric in LOWER_IS_BETTER
    labels_in = 0.075 * max(len(d) for d in detectors)  # room for the detector names
    width, height = 0.5 * len(sets) + labels_in + 1.1, 0.3 * len(detectors) + 1.7
    rows, cols = _grid(len(panels), max(1, int(13.5 // width)))  # as many as fit 13.5 in
    wide = max(width * cols, 0.11 * len(title) + 0.5)  # the title is never cut
    fig = Figure(figsize=(wide, height * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (label, values, is_delta) in zip(axes, panels, strict=False):
        if is_delta:
            finite = np.abs(values[np.isfinite(values)])
            span = max(float(finite.max()) if finite.size else 1.0, 1.0)
            cmap = "RdYlGn_r" if lower else "RdYlGn"
            image = ax.imshow(values, cmap=cmap, norm=TwoSlopeNorm(0, -span, span), aspect="auto")
            text = "{:+.1f}"
        else:
            cmap = "viridis_r" if lower else "viridis"
            image = ax.imshow(values, cmap=cmap, vmin=0, vmax=100, aspect="auto")
            text = "{:.1f}"
        for (r, c), v in np.ndenumerate(values):
            if v == v:
                shade = np.asarray(image.cmap(image.norm(v))[:3]) @ (0.299, 0.587, 0.114)
                ax.text(c, r, text.format(v), ha="center", va="center", fontsize=7.5,
                        color="black" if shade > 0.55 else "white")  # fmt: skip
        ax.set_xticks(range(len(sets)), sets, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(detectors)), detectors)
        ax.tick_params(length=0)
        ax.set_title(label, fontsize="medium")
        fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
    arrow = "↓" if lower else "↑"
    fig.suptitle(f"{title}\n{LABELS.get(metric, metric)}{arrow} per detector and OOD set")
    return fig


def safe_name(*parts: Any) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", str(p)) for p in parts)


def plot_results(
    store: ResultStore,
    df: pd.DataFrame,
    out_dir: str | Path,
    kinds: tuple[str, ...] = KINDS,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """For each benchmark, ID set, model, detector, seed and OE training: figures as PNG."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    means = df[df.ood_dataset == "mean"]
    arrays = store.scores(means.cell.unique())
    written = []
    if "detectors" in kinds:
        written += _detector_figures(means, arrays, out, progress)
    kinds = tuple(k for k in kinds if k != "detectors")
    keys = ["benchmark", "id_dataset", "model", "detector", "seed"]
    for (bench, id_ds, model, det, seed), part in means.groupby(keys, sort=False):
        if not kinds:
            break
        base, others = split_trainings(part)
        cell_of = dict(zip(part.training, part.cell, strict=True))
        for oe in others or [None]:
            sets, sides = comparison_sides(arrays, cell_of, base, oe, det)
            title = f"{bench} · {id_ds} · {model} · {det} · seed {seed}"
            stem = safe_name(bench, id_ds, model, det, f"seed{seed}", *([oe] if oe else []))
            for kind in kinds:
                make = roc_figure if kind == "roc" else histogram_figure
                path = out / f"{stem}_{kind}.png"
                save_png(make(title, sets, sides), path)
                written.append(path)
                if progress is not None:
                    progress(1)
    return written


def _detector_figures(
    means: pd.DataFrame, arrays: dict, out: Path, progress: Callable[[int], None] | None
) -> list[Path]:
    """One figure per benchmark, ID set, model, training and seed comparing its detectors."""
    written = []
    keys = ["benchmark", "id_dataset", "model", "training", "seed"]
    for (bench, id_ds, model, training, seed), part in means.groupby(keys, sort=False):
        sets, curves = detector_curves(part, arrays, training)
        title = f"{bench} · {id_ds} · {model} · {training} · seed {seed}"
        path = out / f"{safe_name(bench, id_ds, model, training, f'seed{seed}')}_detectors.png"
        save_png(detectors_figure(title, sets, curves), path)
        written.append(path)
        if progress is not None:
            progress(1)
    return written


def figure_count(df: pd.DataFrame, kinds: tuple[str, ...] = KINDS) -> int:
    """How many files ``plot_results`` will write for ``df``."""
    means = df[df.ood_dataset == "mean"]
    total = 0
    if "detectors" in kinds:
        keys = ["benchmark", "id_dataset", "model", "training", "seed"]
        total += means.groupby(keys).ngroups
    per_detector = [k for k in kinds if k != "detectors"]
    for _, part in means.groupby(["benchmark", "id_dataset", "model", "detector", "seed"]):
        _, others = split_trainings(part)
        total += max(1, len(others)) * len(per_detector)
    return total
