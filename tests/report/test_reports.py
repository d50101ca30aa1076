"""Reports the way OOD researchers read them: ± over seeds everywhere, readable plots."""

import itertools

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from oebench.report.render import render
from oebench.report.tables import comparison

#: AUROC of (training, OOD set, seed); FPR95 is 100 − AUROC, AUPR-Out is AUROC / 2
AUROC = {
    ("baseline", "near", 0): 60.0,
    ("baseline", "near", 1): 70.0,
    ("baseline", "far", 0): 80.0,
    ("baseline", "far", 1): 90.0,
    ("oe", "near", 0): 70.0,
    ("oe", "near", 1): 76.0,
    ("oe", "far", 0): 96.0,
    ("oe", "far", 1): 94.0,
}
ACCURACY = {("baseline", 0): 90.0, ("baseline", 1): 92.0, ("oe", 0): 89.0, ("oe", 1): 89.0}


def frame() -> pd.DataFrame:
    """Two seeds, two OOD sets and their mean rows, one detector, baseline and OE."""
    rows = []
    for training, seed in itertools.product(("baseline", "oe"), (0, 1)):
        values = {ood: AUROC[(training, ood, seed)] for ood in ("near", "far")}
        values["mean"] = (values["near"] + values["far"]) / 2
        for ood, auroc in values.items():
            rows.append(
                {
                    "benchmark": "b",
                    "id_dataset": "id",
                    "model": "m",
                    "training": training,
                    "outlier_source": "o" if training == "oe" else "",
                    "objective": training,
                    "detector": "energy",
                    "ood_dataset": ood,
                    "seed": seed,
                    "auroc": auroc,
                    "aupr_out": auroc / 2,
                    "fpr95": 100 - auroc,
                    "id_accuracy": ACCURACY[(training, seed)],
                    "protocol": "full",
                }
            )
    return pd.DataFrame(rows)


def test_spread_over_seeds_of_values_deltas_and_accuracy():
    row = comparison(frame()).iloc[0]
    # mean AUROC per seed: baseline 70, 80; OE 83, 85 -> deltas 13, 5
    assert row.auroc_baseline == 75 and row.auroc_std_baseline == 5
    assert row.auroc_oe == 84 and row.auroc_std_oe == 1
    assert row.auroc_delta == 9 and row.auroc_delta_std == 4
    assert row.id_accuracy_std_baseline == 1 and row.id_accuracy_std_oe == 0
    per_set = comparison(frame(), ood="*").set_index("ood_dataset")
    # near: deltas 10, 6 -> 8 ± 2; far: 16, 4 -> 10 ± 6
    assert per_set.loc["near", "auroc_delta"] == 8 and per_set.loc["near", "auroc_delta_std"] == 2
    assert per_set.loc["far", "auroc_delta_std"] == 6


@pytest.mark.parametrize("width", [80, 200])
def test_rendered_tables_show_the_spread_and_fit(width):
    console = Console(width=width, record=True, color_system=None)
    render(console, frame())
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width and "…" not in text
    assert "75.00±5.00" in text and "+9.00±4.00" in text  # leaderboard: value and Δ
    assert "65.00±5.00" in text and "+8.00±2.00" in text  # per-OOD-set table: near
    assert "+10.00±6.00" in text  # far's Δ
    flat = " ".join(text.split())  # captions wrap at the table's width
    assert "baseline 91.00±1.00% → oe 89.00%" in flat  # ID accuracy ± over seeds
    metric_lines = [line for line in text.splitlines() if "AUROC↑" in line]
    if width == 200:
        assert any("FPR95↓" in line for line in metric_lines)
    else:
        assert not any("FPR95↓" in line for line in metric_lines)  # stacked instead


def test_roc_curves_at_the_frame_stay_visible_and_legends_do_not_cover_them():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from oebench.report.plots import detectors_figure

    rng = np.random.default_rng(0)
    ids = rng.normal(0, 1, 200)
    curves = {
        "inverted": {"far": (ids, rng.normal(-9, 1, 100))},  # AUROC ≈ 0: along the frame
        "perfect": {"far": (ids, rng.normal(9, 1, 100))},
    }
    fig = detectors_figure("t", ["far"], curves)
    FigureCanvasAgg(fig).draw()  # as savefig draws it: the layout runs
    ax = fig.axes[0]
    assert ax.get_xlim()[0] < 0 and ax.get_xlim()[1] > 1 and ax.get_ylim()[0] < 0
    assert ax.get_xlabel() and ax.get_ylabel()
    (legend,) = fig.legends  # one for the figure, under the axes, not over the curves
    assert ax.get_legend() is None
    assert legend.get_window_extent().y1 <= ax.get_window_extent().y0
    labels = [t.get_text().split() for t in legend.get_texts()]
    assert labels == [["detector", "far", "mean"], ["perfect", "100.0", "100.0"]] + [
        ["inverted", "0.0", "0.0"]
    ]  # best mean AUROC first
