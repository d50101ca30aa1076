"""The source x objective table (``oebench.report.sources``) on a hand-made long frame."""

import io

import pandas as pd
import pytest
from rich.console import Console

import oebench
from oebench.report.render import render
from oebench.report.sources import family_of, has_sources, source_columns, source_table

#: per (training, seed): AUROC of the mean row; near = mean - 5, far = mean + 5
VALUES = {
    ("baseline", 0): 80.0, ("baseline", 1): 82.0,
    ("oe/crops", 0): 90.0, ("oe/crops", 1): 94.0,
    ("oe/textures", 0): 85.0, ("oe/textures", 1): 85.0,
    ("energy-oe/crops", 0): 91.0, ("energy-oe/crops", 1): 93.0,
    ("energy-oe/textures", 0): 70.0, ("energy-oe/textures", 1): 80.0,
}  # fmt: skip
OBJECTIVES = {"baseline": "cross-entropy", "oe": "oe", "energy-oe": "energy-oe"}


def long_frame(groups: bool = True) -> pd.DataFrame:
    rows = []
    for (training, seed), value in VALUES.items():
        source = training.split("/")[1] if "/" in training else ""
        family = training.split("/")[0]
        for detector, shift in (("msp", 0.0), ("energy", 1.0)):
            sets = {"svhn": value - 5, "cifar100": value + 5, "mean": value}
            if groups:
                sets.update({"mean:near": value - 5, "mean:far": value + 5})
            for ood, auroc in sets.items():
                rows.append(
                    dict(benchmark="b", id_dataset="cifar10", model="wrn", training=training,
                         outlier_source=source, objective=OBJECTIVES[family], detector=detector,
                         ood_dataset=ood, auroc=auroc + shift, fpr95=50.0, aupr_out=50.0,
                         id_accuracy=90.0, seed=seed, protocol="full")
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_family_comes_from_the_training_name_and_its_source():
    assert family_of("oe/textures", "textures") == "oe"
    assert family_of("oe-tin", "tin") == "oe-tin"  # a single-source training: its own family
    assert family_of("baseline", "") == "baseline"
    assert family_of("/textures", "textures") == "/textures"


def test_means_delta_and_std_by_hand():
    table = source_table(long_frame())
    assert source_columns(table) == ["crops", "textures"]
    assert list(table.family.unique()) == ["oe", "energy-oe"]
    assert list(table.ood[:3]) == ["mean", "mean:near", "mean:far"]
    assert set(table.detector) == {"msp"}  # the board's first detector
    oe = table[(table.family == "oe") & (table.ood == "mean")].iloc[0]
    assert oe.objective == "oe"
    assert oe["auroc_baseline"] == pytest.approx(81.0) and oe["auroc_std_baseline"] == 1.0
    assert oe["auroc[crops]"] == pytest.approx(92.0)
    assert oe["auroc_std[crops]"] == pytest.approx(2.0)  # std over seeds, ddof 0
    assert oe["auroc_delta[crops]"] == pytest.approx(11.0)
    assert oe["auroc[textures]"] == 85.0 and oe["auroc_std[textures]"] == 0.0
    assert oe["auroc_delta[textures]"] == pytest.approx(4.0)
    energy = table[(table.family == "energy-oe") & (table.ood == "mean:near")].iloc[0]
    assert energy["auroc[textures]"] == pytest.approx(70.0)  # (65 + 75) / 2
    assert energy["auroc_std[textures]"] == pytest.approx(5.0)
    assert energy["auroc_delta[textures]"] == pytest.approx(70.0 - 76.0)
    far = table[(table.family == "energy-oe") & (table.ood == "mean:far")].iloc[0]
    assert far["auroc_delta[crops]"] == pytest.approx(92.0 + 5 - 86.0)


def test_another_detector_and_no_groups():
    table = source_table(long_frame(groups=False), detector="energy")
    assert set(table.detector) == {"energy"} and list(table.ood) == ["mean", "mean"]
    oe = table[table.family == "oe"].iloc[0]
    assert oe["auroc[crops]"] == pytest.approx(93.0) and oe["auroc_baseline"] == 82.0
    assert oe["auroc_delta[crops]"] == pytest.approx(11.0)


def test_only_boards_with_two_sources_have_the_table():
    df = long_frame()
    assert has_sources(df)
    one = df[~df.training.str.endswith("textures")]
    assert not has_sources(one)
    assert not has_sources(df[df.training == "baseline"])


def test_rendered_after_the_wide_table_with_title_and_convention():
    out = io.StringIO()
    render(Console(file=out, width=200, color_system=None), long_frame())
    text = out.getvalue()
    flat = " ".join(text.split())  # rich wraps a title wider than its table
    title = (
        "b · cifar10 · wrn · msp: AUROC↑ by outlier source (mean over 2 OOD sets, and per "
        "OOD group), Δ to baseline"
    )
    assert title in flat
    assert "Baseline baseline: mean 81.00±1.00, near-OOD 76.00±1.00" in flat
    assert "Detector msp (the benchmark's first detector" in flat and "OE paper" in flat
    table = text[text.index("by outlier source") :]
    line = next(x for x in table.splitlines() if "│ oe " in x)
    assert "92.00±2.00 +11.00" in line and "85.00 +4.00" in line
    assert "near-OOD" in table and "far-OOD" in table
    out = io.StringIO()
    render(Console(file=out, width=200, color_system=None), long_frame(), detail="energy")
    assert "b · cifar10 · wrn · energy: AUROC↑ by outlier source" in " ".join(
        out.getvalue().split()
    )


def test_exported_in_the_python_api():
    assert oebench.source_table is source_table and "source_leaderboard" in oebench.__all__


AXIS_TOML = """
name = "axis"
seeds = [0]
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 8 }]
detectors = ["msp", "energy"]
ood_datasets = [{ name = "gaussian-pixel", n = 200 }, { name = "letters", n = 200 }]
ood_groups = { near = ["letters"], far = ["gaussian-pixel"] }

[training]
epochs = 1
max_train = 512
batch_size = 128
lr = 0.05  # not test_faults' baseline: that test trains its own into the shared cache

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""
FAMILY = """
[[trainings]]
name = "{name}"
objective = "{objective}"
outliers = [{{ name = "photo-crops", n = 512 }},
            {{ name = "dataset", dataset = "textures", n = 512, label = "textures" }}]
from = "baseline"
lr = 0.01
"""


def test_a_run_over_two_sources_and_two_objectives_shows_the_table(tmp_path):
    import csv

    from conftest import run_cli

    path = tmp_path / "axis.toml"
    families = [
        FAMILY.format(name=n, objective=o) for n, o in (("oe", "oe"), ("em", "energy-margin"))
    ]
    path.write_text(AXIS_TOML + "".join(families))
    out = tmp_path / "r.csv"
    args = ("run", str(path), "--csv", str(out), "--set", "trainings.em.lr=0.02")
    result = run_cli(*args, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert (
        "axis · mnist-5k · small-cnn · msp: AUROC↑ by outlier source (mean over 2 OOD sets" in flat
    )
    table = result.stdout[result.stdout.index("by outlier source") :]
    header = next(line for line in table.splitlines() if "photo-crops" in line)
    assert "textures" in header and "training" in header
    rows = [line.split("│")[1].strip() for line in table.splitlines() if "all sets" in line]
    assert rows == ["oe", "em"]
    assert "near-OOD" in table and "Baseline baseline: mean" in flat
    trainings = {(r["training"], r["outlier_source"]) for r in csv.DictReader(out.open())}
    assert trainings == {("baseline", ""), ("oe/photo-crops", "photo-crops"),
                         ("oe/textures", "textures"), ("em/photo-crops", "photo-crops"),
                         ("em/textures", "textures")}  # fmt: skip


def _wide_lines(width: int) -> list[str]:
    out = io.StringIO()
    render(Console(file=out, width=width, color_system=None), long_frame())
    text = out.getvalue()
    return text[: text.index("AUPR")].splitlines()  # the first (AUROC) wide table


def test_the_wide_table_has_a_column_per_training_where_they_fit():
    header = next(line for line in _wide_lines(200) if "detector" in line)
    assert "oe/crops" in header and "energy-oe/textures" in header


def test_too_many_trainings_for_the_width_turn_into_rows_with_their_accuracy():
    lines = _wide_lines(70)
    header = next(line for line in lines if "training" in line and "msp" in line)
    assert "energy" in header and "ID acc. %" in header  # detectors are the columns now
    oe = next(line for line in lines if line.startswith("│ oe/crops"))
    assert "92.00±2.00" in oe and oe.rstrip(" │").endswith("90.00")  # msp mean; ID accuracy
