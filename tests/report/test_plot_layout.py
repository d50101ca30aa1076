"""Figures that stay readable with many detectors: nothing overlaps, nothing is cut off."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from oebench.report.plots import detector_style, detectors_figure, heatmap_figure

DETECTORS = [
    "msp", "max-logit", "energy", "entropy", "uniform-ce", "gen", "odin", "mahalanobis",
    "relative-mahalanobis", "knn", "vim", "react", "ash",
]  # fmt: skip
SETS = ["gaussian-pixel", "rademacher-pixel", "blobs-pixel", "letters", "textures", "faces"]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("n_sets", [1, 4, 6])
def test_thirteen_detectors_get_one_legend_outside_every_panel_and_inside_the_figure(n_sets):
    rng = np.random.default_rng(0)
    ids = rng.normal(0, 1, 300)
    sets = SETS[:n_sets]
    curves = {
        det: {s: (ids, rng.normal(0.2 * i - 1, 1, 150)) for s in sets}
        for i, det in enumerate(DETECTORS)
    }
    fig = detectors_figure("t", sets, curves)
    canvas = FigureCanvasAgg(fig)  # as savefig draws it
    canvas.draw()
    renderer = canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    whole = fig.bbox
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0  # not cut off
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == n_sets and all(ax.get_legend() is None for ax in axes)
    for ax in axes:
        assert not _overlap(ax.get_tightbbox(renderer), box)  # tick labels included
        inside = ax.get_tightbbox(renderer)
        assert whole.x0 <= inside.x0 and inside.x1 <= whole.x1 and inside.y0 >= whole.y0
    for a, b in zip(axes, axes[1:], strict=False):
        assert not _overlap(a.get_tightbbox(renderer), b.get_tightbbox(renderer))
    rows = [t.get_text().split() for t in legend.get_texts()]
    assert rows[0] == ["detector", *sets, "mean"] and len(rows) == 1 + len(DETECTORS)
    means = [float(r[-1]) for r in rows[1:]]
    assert means == sorted(means, reverse=True)  # best mean AUROC first
    assert fig.get_figheight() > 4 * -(-n_sets // 3)  # grows with the rows of panels


def test_every_detector_has_its_own_style_and_keeps_it_across_figures():
    styles = [detector_style(i) for i in range(len(DETECTORS))]
    pairs = {(s["color"], s["ls"]) for s in styles}
    assert len(pairs) == len(DETECTORS) and len({s["marker"] for s in styles}) == len(DETECTORS)
    # msp and max-logit (neighbours in the matrix) differ in colour, not just in shade
    assert styles[0]["color"] != styles[1]["color"]
    rng = np.random.default_rng(1)
    curves = {d: {"far": (rng.normal(0, 1, 50), rng.normal(1, 1, 50))} for d in DETECTORS[:3]}
    fig = detectors_figure("t", ["far"], curves)
    drawn = [line for line in fig.axes[0].lines if len(line.get_xdata()) > 2]
    assert [line.get_color() for line in drawn] == [detector_style(i)["color"] for i in range(3)]


def test_heatmap_annotates_every_cell_with_its_value():
    values = np.array([[10.0, 99.5], [np.nan, 50.25]])
    delta = np.array([[-3.0, 0.5], [np.nan, 12.0]])
    panels = [("no OE", values, False), ("OE", values + 1, False), ("Δ", delta, True)]
    fig = heatmap_figure("t", ["msp", "energy"], ["a", "b"], panels)
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes if ax.images]
    assert texts == [["10.0", "99.5", "50.2"], ["11.0", "100.5", "51.2"], ["-3.0", "+0.5", "+12.0"]]
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["no OE", "OE", "Δ"]
