"""Near-/far-OOD group means and the wide table of several trainings against one baseline."""

import csv
import io

import pandas as pd
import pytest
from conftest import TINY, run_cli

from oebench.errors import UserError
from oebench.metrics import METRICS
from oebench.report.groups import with_group_means
from oebench.report.text import wide_text_table
from oebench.report.wide import wide_comparison

SETS = {"a": 0, "b": 1, "c": 2}


def _rows(trainings=("baseline", "oe", "mixoe"), seeds=(0, 1)):
    """Result rows whose AUROC is 60 + 10 * set + 5 * training + seed (FPR95 = 100 - AUROC)."""
    rows = []
    for seed in seeds:
        for ti, training in enumerate(trainings):
            for detector in ("msp", "energy"):
                per = []
                for name, si in SETS.items():
                    auroc = 60 + 10 * si + 5 * ti + seed + (1 if detector == "energy" else 0)
                    per.append(auroc)
                    rows.append(_row(training, ti, detector, name, seed, auroc, len(rows)))
                mean = sum(per) / len(per)
                rows.append(_row(training, ti, detector, "mean", seed, mean, len(rows)))
    return rows


def _row(training, ti, detector, ood, seed, auroc, index):
    values = {m: 50.0 for m in METRICS}
    values.update(auroc=auroc, fpr95=100 - auroc)
    return {
        "benchmark": "b",
        "id_dataset": "id",
        "model": "m",
        "training": training,
        "objective": "x",
        "outlier_source": "" if training == "baseline" else "photos",
        "detector": detector,
        "ood_dataset": ood,
        "seed": seed,
        **values,
        "id_accuracy": 90.0 + ti,
        "protocol": "full",
        "cell": f"{training}-{seed}",
        "cell_index": ti,
        "row_index": index,
    }


def test_group_means_by_hand():
    df = with_group_means(pd.DataFrame(_rows()), {"b": {"near": ["a"], "far": ["b", "c"]}})
    near = df[(df.ood_dataset == "mean:near") & (df.training == "oe") & (df.seed == 1)]
    far = df[(df.ood_dataset == "mean:far") & (df.training == "oe") & (df.seed == 1)]
    # oe (ti = 1), seed 1, msp: set a -> 66, b -> 76, c -> 86
    assert near.set_index("detector").auroc.to_dict() == {"msp": 66.0, "energy": 67.0}
    assert far.set_index("detector").auroc.to_dict() == {"msp": 81.0, "energy": 82.0}
    assert far.set_index("detector").fpr95["msp"] == 19.0
    assert (near.id_accuracy == 91.0).all() and (near.cell == "oe-1").all()
    # derived again from its own output: nothing doubles
    again = with_group_means(df, {"b": {"near": ["a"], "far": ["b", "c"]}})
    assert len(again) == len(df)


def test_a_group_missing_a_set_gets_no_mean_row():
    rows = [r for r in _rows() if not (r["ood_dataset"] == "c" and r["training"] == "oe")]
    df = with_group_means(pd.DataFrame(rows), {"b": {"far": ["b", "c"]}})
    assert set(df[df.ood_dataset == "mean:far"].training) == {"baseline", "mixoe"}


def test_wide_comparison_by_hand():
    wide = wide_comparison(pd.DataFrame(_rows()), ("auroc", "fpr95"))
    assert sorted(wide.detector) == ["energy", "msp"]
    msp = wide.set_index("detector").loc["msp"]
    # baseline mean over sets = 70 + seed; over seeds 0, 1 -> 70.5; oe +5, mixoe +10
    assert msp["auroc[baseline]"] == 70.5
    assert msp["auroc[oe]"] == 75.5 and msp["auroc_delta[oe]"] == 5.0
    assert msp["auroc[mixoe]"] == 80.5 and msp["auroc_delta[mixoe]"] == 10.0
    assert msp["fpr95_delta[mixoe]"] == -10.0
    assert msp["auroc_std[oe]"] == 0.5  # seeds 0 and 1: std (ddof 0) of 75, 76
    assert msp["id_accuracy[mixoe]"] == 92.0
    assert "auroc_delta[baseline]" not in wide.columns
    best = wide_comparison(pd.DataFrame(_rows()), ("auroc",), sort="auroc")
    assert list(best.detector) == ["energy", "msp"]  # energy is 1 point higher
    near = with_group_means(pd.DataFrame(_rows()), {"b": {"near": ["a"]}})
    wide_near = wide_comparison(near, ("auroc",), ood="mean:near").set_index("detector")
    assert wide_near.loc["msp", "auroc[baseline]"] == 60.5
    text = wide_text_table(wide, ("auroc",)).set_index("detector")
    assert text.loc["msp", "AUROC oe"] == "75.50±0.50 (+5.00)"
    assert text.loc["msp", "AUROC baseline"] == "70.50±0.50"


def test_ood_groups_must_name_ood_sets():
    from oebench.bench.parse import parse_benchmark

    text = TINY.read_text().replace(
        "[training]", 'ood_groups = { near = ["letters", "cifar"], far = "faces" }\n[training]', 1
    )
    with pytest.raises(UserError) as err:
        parse_benchmark(text)
    assert "ood_groups.near names 'cifar'" in str(err.value)
    assert "ood_groups.far must be a non-empty list" in str(err.value)


@pytest.mark.slow
def test_run_and_leaderboard_show_groups_and_one_wide_table(tmp_path):
    import oebench

    bench = tmp_path / "family.toml"
    bench.write_text(
        TINY.read_text()
        .replace('name = "tiny"', 'name = "tiny-family"')
        .replace(
            "[training]",
            'ood_groups = { near = ["letters"], far = ["gaussian-pixel", "textures", "faces"] }'
            "\n[training]",
            1,
        )
        + """
[[trainings]]
name = "mixoe"
objective = "mixoe"
outliers = { name = "photo-crops", n = 2048 }
from = "baseline"
lr = 0.01
outlier_batch_size = 128

[[trainings]]
name = "oe-ntom"
objective = "oe"
outliers = { name = "photo-crops", n = 2048 }
from = "baseline"
lr = 0.01
outlier_sampling = { name = "ntom", pool = 1024, quantile = 0.125 }
"""
    )
    out = tmp_path / "run.csv"
    result = run_cli("run", str(bench), "--csv", str(out), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    # one wide table per metric, each holding every training, not one table per OE training
    # AUROC, AUPR-Out, FPR95 over all sets, then AUROC near-OOD and far-OOD
    assert result.stdout.count("baseline vs 3 trainings") == 5
    assert "AUROC↑ (near-OOD mean)" in result.stdout and "mean:far" in result.stdout
    assert "baseline vs oe" not in result.stdout
    rows = list(csv.DictReader(out.open()))
    for training in ("baseline", "oe", "mixoe", "oe-ntom"):
        msp = {
            r["ood_dataset"]: r
            for r in rows
            if r["detector"] == "msp" and r["training"] == training
        }
        far = [float(msp[s]["auroc"]) for s in ("gaussian-pixel", "textures", "faces")]
        assert float(msp["mean:far"]["auroc"]) == pytest.approx(sum(far) / 3)
        assert float(msp["mean:near"]["auroc"]) == pytest.approx(float(msp["letters"]["auroc"]))
    # the store gives back the same rows, group means included
    board = run_cli("leaderboard", "--benchmark", "tiny-family", "--format", "csv")
    assert board.stdout == out.read_text()
    markdown = run_cli("leaderboard", "--benchmark", "tiny-family", "--format", "markdown").stdout
    header = markdown.splitlines()[0]
    assert "AUROC baseline" in header and "AUROC mixoe" in header and "AUROC oe-ntom" in header
    df = oebench.load_results(benchmark="tiny-family")
    assert {"mean:near", "mean:far"} <= set(df.ood_dataset)
    wide = oebench.leaderboard(benchmark="tiny-family", wide=True)
    msp = wide.set_index("detector").loc["msp"]
    assert msp["auroc_delta[mixoe]"] == pytest.approx(msp["auroc[mixoe]"] - msp["auroc[baseline]"])
    near = oebench.leaderboard(benchmark="tiny-family", ood="mean:near")
    letters = oebench.leaderboard(benchmark="tiny-family", ood="letters")
    assert near.auroc_oe.tolist() == pytest.approx(letters.auroc_oe.tolist())
    pd.read_csv(io.StringIO(board.stdout))  # well-formed


@pytest.mark.parametrize(
    "name, near",
    [
        ("oe-family", ["letters"]),
        ("openood-cifar10", ["cifar100", "tin"]),
        ("openood-imagenet", ["ssb-hard", "ninco"]),
        ("oe-cifar10", ["cifar100"]),
        ("oe-cifar100", ["cifar10"]),
    ],
)
def test_shipped_benchmarks_declare_openood_groups(name, near):
    from oebench.bench.parse import load_benchmark

    bench = load_benchmark(name)
    assert bench.ood_groups["near"] == near
    keys = {o.key for o in bench.ood_datasets}
    assert set(bench.ood_groups["near"] + bench.ood_groups["far"]) <= keys
