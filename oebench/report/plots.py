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
    ax.plot([0, 1], [0, 1], ls=":", lw=0.8, color="grey")
    ax.axhline(0.95, ls="--", lw=0.6, color="grey")
    for label, colour, (id_s, ood_s) in curves:
        fpr, tpr = roc_curve(id_s, ood_s)
        tps, fps = binary_curve(id_s, ood_s)
        area, fpr95 = 100 * auroc(tps, fps), fpr_at_recall(tps, fps)
        ax.plot(fpr, tpr, color=colour, lw=1.6, label=f"{label}: {area:.1f}", clip_on=False)
        ax.plot([fpr95], [0.95], "o", color=colour, ms=4, clip_on=False)
    ax.set(title=name, xlim=LIMITS, ylim=LIMITS, aspect="equal")
    ax.set_xlabel("FPR (ID flagged as OOD)")
    ax.set_ylabel("TPR (OOD detected)")
    ax.legend(
        title="AUROC",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        fontsize="small",
        title_fontsize="small",
        frameon=False,
    )


def detectors_figure(title: str, sets: list[str], curves: dict[str, dict]) -> Figure:
    """One panel per OOD set comparing every detector's ROC curve (one training, one seed)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    rows, cols = _grid(len(sets))
    extra = 0.22 * len(curves)  # room for the legend under each panel
    fig = Figure(figsize=(4.2 * cols, (4.0 + extra) * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    palette = colormaps["tab20"] if len(curves) > 10 else colormaps["tab10"]
    for ax, name in zip(axes, sets, strict=False):
        panel = [
            (det, palette(i), scores[name])
            for i, (det, scores) in enumerate(curves.items())
            if name in scores
        ]
        _roc_panel(ax, name, panel)
    for ax in axes[len(sets) :]:
        ax.set_visible(False)
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
    atomic_write_file(path, lambda fh: fig.savefig(fh, format="png", dpi=110))


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
            sides = []
            if base is not None:
                sides.append(_side("no OE", base, arrays[cell_of[base]], det))
            if oe is not None:
                sides.append(_side("OE", oe, arrays[cell_of[oe]], det))
            sets = [s for s in sides[0][2] if all(s in side[2] for side in sides)]
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
        curves = {}
        for det, cell in zip(part.detector, part.cell, strict=True):
            curves[det] = _side("", training, arrays[cell], det)[2]
        sets = list(dict.fromkeys(s for scores in curves.values() for s in scores))
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
