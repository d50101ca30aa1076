"""Leaderboards, exports, per-sample score files, bootstrap intervals and plots from the store."""

import json
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_cli
from sklearn.metrics import average_precision_score, roc_auc_score

import oebench
from oebench.errors import UserError
from oebench.report.bootstrap import OodSet, interval, replicates, rng_for, weighted_point
from oebench.report.results import leaderboard, load_results, load_scores


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One run of tiny.toml into a fresh store, with its CSV and Parquet score files."""
    root = tmp_path_factory.mktemp("tiny-run")
    env = {  # module scope runs before the per-test autouse fixtures: isolate explicitly
        "OEBENCH_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "oebench-cache"),
        "OEBENCH_STORE": str(root / "unused.sqlite"),
    }
    store, csv, scores = root / "store.sqlite", root / "run.csv", root / "scores"
    args = ["run", str(TINY), "--store", str(store), "--csv", str(csv)]
    result = run_cli(*args, "--save-scores", str(scores), env=env)
    assert result.returncode == 0, result.stderr
    return {"store": store, "csv": csv, "scores": scores, "args": args, "env": env}


def _copy(tiny, tmp_path):
    target = tmp_path / "copy.sqlite"
    shutil.copy(tiny["store"], target)
    return target


def test_leaderboard_csv_is_the_run_csv_byte_for_byte(tiny, tmp_path):
    out = tmp_path / "board.csv"
    result = run_cli(
        "leaderboard", "--store", str(tiny["store"]), "--format", "csv", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == tiny["csv"].read_bytes()
    to_stdout = run_cli("leaderboard", "--store", str(tiny["store"]), "--format", "csv")
    assert to_stdout.stdout == tiny["csv"].read_text()


def test_second_run_reuses_the_store_and_writes_the_same_csv(tiny, tmp_path):
    store = _copy(tiny, tmp_path)
    again = tmp_path / "again.csv"
    args = ["run", str(TINY), "--store", str(store), "--csv", str(again)]
    result = run_cli(*args, env=tiny["env"])
    assert result.returncode == 0, result.stderr
    assert "2 of 2 cells came from the results store" in result.stderr
    assert "train small-cnn" not in result.stderr
    assert "baseline vs oe" in result.stdout
    assert again.read_bytes() == tiny["csv"].read_bytes()

    before = load_results(store)
    rerun = run_cli(*args, "--rerun", env=tiny["env"])
    assert rerun.returncode == 0, rerun.stderr
    assert "came from the results store" not in rerun.stderr
    after = load_results(store)
    assert len(after) == len(before) == 20
    assert (after.created_at > before.created_at.max()).all()  # replaced, not duplicated
    assert again.read_bytes() == tiny["csv"].read_bytes()


def test_saved_scores_reproduce_the_stored_metrics_with_scikit_learn(tiny):
    files = sorted(tiny["scores"].glob("*.parquet"))
    stored = load_results(tiny["store"])
    assert len(files) == stored.cell.nunique() == 2
    checked = 0
    for path in files:
        df = pd.read_parquet(path)
        assert list(df.columns) == [
            "cell",
            "benchmark",
            "id_dataset",
            "model",
            "training",
            "seed",
            "detector",
            "dataset",
            "is_ood",
            "label",
            "sample",
            "score",
        ]
        cell, training = df.cell.iloc[0], df.training.iloc[0]
        assert cell in path.name and f"_{training}_seed0_" in path.name
        assert (df.label == df.is_ood.astype(int)).all()
        for detector, part in df.groupby("detector"):
            ids = part[~part.is_ood]
            assert set(ids.dataset) == {"mnist-5k"}
            for ood_name, ood in part[part.is_ood].groupby("dataset"):
                both = pd.concat([ids, ood])
                row = stored[
                    (stored.cell == cell)
                    & (stored.detector == detector)
                    & (stored.ood_dataset == ood_name)
                ].iloc[0]
                assert (row.n_id, row.n_ood) == (len(ids), len(ood))
                auroc = 100 * roc_auc_score(both.label, both.score)
                aupr = 100 * average_precision_score(both.label, both.score)
                assert auroc == pytest.approx(row.auroc, abs=1e-9)
                assert aupr == pytest.approx(row.aupr_out, abs=1e-9)
                checked += 1
    assert checked == 2 * 2 * 4  # trainings x detectors x OOD sets


def test_score_files_of_stored_cells_come_from_the_store(tiny, tmp_path):
    store = _copy(tiny, tmp_path)
    folder = tmp_path / "again"
    result = run_cli(*tiny["args"][:2], "--store", str(store), "--save-scores", str(folder))
    assert result.returncode == 0 and "2 of 2 cells came from" in result.stderr
    for path in sorted(folder.glob("*.parquet")):
        pd.testing.assert_frame_equal(
            pd.read_parquet(path), pd.read_parquet(tiny["scores"] / path.name)
        )
    api = load_scores(tiny["store"], training="oe", detector="energy")
    assert set(api.detector) == {"energy"} and set(api.training) == {"oe"}
    assert len(api) == 1000 + 300 * 3 + 200


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--detector", "enrgy"], "No detector 'enrgy' in the results store"),
        (["--detector", "enrgy"], "Did you mean: energy?"),
        (["--benchmark", "tiyn"], "Did you mean: tiny?"),
        (["--model", "resnet*"], "No model 'resnet*'"),
        (["--training", "basline"], "Did you mean: baseline?"),
        (["--id-dataset", "cifar10"], "Stored: mnist-5k"),
        (["--seed", "7"], "No seed '7'"),
        (["--detector", "msp", "--training", "oe", "--seed", "0", "--model", "x"], "No model"),
        (["--detail", "odin"], "Unknown detector 'odin'"),
        (["--format", "csv", "--ci"], "--ci needs a leaderboard format"),
    ],
)
def test_unknown_filter_values_are_one_line_errors(tiny, args, expected):
    result = run_cli("leaderboard", "--store", str(tiny["store"]), *args)
    assert expected in one_line_error(result)


def test_filters_wildcards_and_sorting(tiny):
    store = tiny["store"]
    msp = load_results(store, detector="m*", training=["baseline"])
    assert set(msp.detector) == {"msp"} and set(msp.training) == {"baseline"}
    assert len(load_results(store, detector="msp,energy", seed=0)) == 20
    board = leaderboard(store, sort="fpr95")
    assert list(board.fpr95_oe) == sorted(board.fpr95_oe)  # lower is better: ascending
    board = leaderboard(store, sort="auroc")
    assert list(board.auroc_oe) == sorted(board.auroc_oe, reverse=True)
    assert {"auroc_baseline", "auroc_oe", "auroc_delta", "auroc_std_oe"} <= set(board.columns)
    full = load_results(store)
    means = full[(full.ood_dataset == "mean") & (full.detector == "energy")]
    row = board[board.detector == "energy"].iloc[0]
    assert row.auroc_oe == means[means.training == "oe"].auroc.iloc[0]
    assert row.auroc_delta == pytest.approx(row.auroc_oe - row.auroc_baseline)
    with pytest.raises(UserError, match="Did you mean: energy"):
        load_results(store, detector="energi")
    assert oebench.load_results is load_results and "leaderboard" in oebench.__all__


def test_leaderboard_formats(tiny, tmp_path):
    store = str(tiny["store"])
    table = run_cli("leaderboard", "--store", store)
    assert table.returncode == 0, table.stderr
    assert "tiny · mnist-5k · small-cnn · baseline vs oe" in table.stdout
    assert "per OOD set" in table.stdout
    md = run_cli("leaderboard", "--store", store, "--format", "markdown", "--sort", "fpr95")
    header = md.stdout.splitlines()[0]
    assert header.startswith("| benchmark") and "FPR95 no OE" in header
    assert header.index("FPR95") < header.index("AUROC")  # the sort metric comes first
    assert "+7.00" in md.stdout or "-" in md.stdout  # signed deltas kept as text
    latex = run_cli("leaderboard", "--store", store, "--format", "latex", "-o", str(tmp_path / "t"))
    assert latex.returncode == 0 and "\\toprule" in (tmp_path / "t").read_text()
    records = json.loads(run_cli("leaderboard", "--store", store, "--format", "json").stdout)
    assert records == json.loads(
        pd.read_csv(tiny["csv"], keep_default_na=False).to_json(
            orient="records", double_precision=6
        )
    )


def test_weighted_resamples_match_the_metrics_exactly():
    rng = np.random.default_rng(1)
    for _ in range(500):
        n, m, digits = rng.integers(1, 30), rng.integers(1, 30), rng.integers(0, 3)
        ids = np.sort(np.round(rng.normal(0, 1, n), digits))  # rounding makes ties
        ood = np.sort(np.round(rng.normal(rng.uniform(-1, 2), 1, m), digits))
        id_counts, ood_counts = rng.integers(0, 3, n), rng.integers(0, 3, m)  # 0: left out
        if not id_counts.sum() or not ood_counts.sum():
            continue
        auroc, fpr95 = weighted_point(id_counts, OodSet.prepare(ids, ood), ood_counts)
        ref = oebench.ood_metrics(np.repeat(ids, id_counts), np.repeat(ood, ood_counts))
        assert auroc == pytest.approx(ref["auroc"], abs=1e-9) and fpr95 == ref["fpr95"]


def test_bootstrap_intervals(tiny):
    rng = np.random.default_rng(0)
    ids, oods = rng.normal(0, 1, 400), [rng.normal(1, 1, 200), rng.normal(2, 1, 100)]
    reps = replicates(ids, oods, 300, rng_for(0, "cell", "det"))
    again = replicates(ids, oods, 300, rng_for(0, "cell", "det"))
    assert np.array_equal(reps, again)  # seeded
    auroc = np.mean([oebench.ood_metrics(ids, o)["auroc"] for o in oods])
    low, high = interval(reps[:, 0])
    assert low < auroc < high and high - low < 10

    board = leaderboard(tiny["store"], ci=True, resamples=200)
    for side in ("baseline", "oe"):
        for m in ("auroc", "fpr95"):
            low, high = board[f"{m}_ci_low_{side}"], board[f"{m}_ci_high_{side}"]
            assert (low <= high).all()
            assert (
                (low <= board[f"{m}_{side}"] + 1e-9) & (board[f"{m}_{side}"] <= high + 1e-9)
            ).all()
    shown = run_cli("leaderboard", "--store", str(tiny["store"]), "--ci", "--resamples", "50")
    assert shown.returncode == 0 and "bootstrap interval" in shown.stdout
    assert "[" in shown.stdout


def test_plot_writes_roc_and_histogram_pngs(tiny, tmp_path):
    out = tmp_path / "plots"
    result = run_cli("plot", "--store", str(tiny["store"]), "-o", str(out))
    assert result.returncode == 0, result.stderr
    files = sorted(out.glob("*.png"))
    names = {p.name for p in files}
    for det in ("msp", "energy"):
        for kind in ("roc", "hist"):
            assert f"tiny_mnist-5k_small-cnn_{det}_seed0_oe_{kind}.png" in names
    for training in ("baseline", "oe"):  # every detector compared, per training
        assert f"tiny_mnist-5k_small-cnn_{training}_seed0_detectors.png" in names
    assert len(files) == 6
    for path in files:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    only = run_cli("plot", "--store", str(tiny["store"]), "-o", str(out / "one"), "--detector")
    assert only.returncode == 2  # --detector needs a value
    roc = run_cli(
        "plot",
        "--store",
        str(tiny["store"]),
        "-o",
        str(out / "one"),
        "--detector",
        "energy",
        "--kind",
        "roc",
    )
    assert roc.returncode == 0 and len(list((out / "one").glob("*.png"))) == 1


def test_store_records_provenance(tiny):
    conn = sqlite3.connect(tiny["store"])
    conn.row_factory = sqlite3.Row
    cell = conn.execute("SELECT * FROM cells WHERE training = 'oe'").fetchone()
    text = conn.execute("SELECT text FROM benchmarks").fetchone()[0]
    conn.close()
    assert text == TINY.read_text() and cell["benchmark_path"] == str(TINY.resolve())
    config = json.loads(cell["config"])
    assert config["names"]["training"] == "oe" and config["seed"] == 0
    plugins = json.loads(cell["plugins"])
    # every plugin behind a component of this cell: data, model, detectors, objectives, outliers
    assert {"small-models", "logit-detectors", "objectives", "synthetic"} <= set(plugins)
    assert cell["oebench_version"] == oebench.__version__ and cell["device"]
    assert cell["torch_version"] and cell["created_at"] and cell["train_seconds"] >= 0


def test_tables_fit_80_columns_without_cutting_numbers(tiny):
    store = str(tiny["store"])
    board = leaderboard(store)
    values = [f"{v:.2f}" for v in board.auroc_oe] + [f"{v:.2f}" for v in board.fpr95_baseline]
    narrow = run_cli(
        "leaderboard", "--store", store, "--ci", "--resamples", "20", env={"COLUMNS": "80"}
    )
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in narrow.stdout
    assert all(v in narrow.stdout for v in values)
    # stacked: AUROC and FPR95 each in their own table, intervals under their values
    board_lines = narrow.stdout.split("per OOD set")[0].splitlines()
    assert not any("AUROC↑" in line and "FPR95↓" in line for line in board_lines)
    wide = run_cli("leaderboard", "--store", store, env={"COLUMNS": "200"})
    header = next(line for line in wide.stdout.splitlines() if "AUROC" in line)
    assert "AUPR-Out" in header and "FPR95" in header  # one table, side by side
    assert "…" not in wide.stdout and all(v in wide.stdout for v in values)


def test_aupr_in_on_request(tiny):
    store = str(tiny["store"])
    plain = run_cli("leaderboard", "--store", store, env={"COLUMNS": "200"})
    asked = run_cli("leaderboard", "--store", store, "--aupr-in", env={"COLUMNS": "200"})
    assert "AUPR-In↑" not in plain.stdout and "AUPR-In↑" in asked.stdout


def test_latex_export_is_escaped_with_best_bold_accuracy_and_seeds(tiny, tmp_path):
    out = tmp_path / "board.tex"
    result = run_cli(
        "leaderboard", "--store", str(tiny["store"]), "--format", "latex", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    tex = out.read_text()
    assert "$\\Delta$ AUROC" in tex and "ID acc. no OE" in tex and "seeds" in tex
    assert not any(ch in tex for ch in "±Δ→↑↓·")  # pdflatex cannot take them raw
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    assert "_" not in body.replace("\\_", "")
    board = leaderboard(tiny["store"])
    best = board.sort_values("auroc_oe").iloc[-1]
    assert f"\\textbf{{{best.auroc_oe:.2f}}}" in tex
    assert "\\%" in tex.splitlines()[-1]  # the note's percent signs are escaped


def test_latex_escape():
    from oebench.report.text import latex_escape

    assert latex_escape("a_b & 50% ± Δ #1 {x} ~") == (
        "a\\_b \\& 50\\% $\\pm$ $\\Delta$ \\#1 \\{x\\} \\textasciitilde{}"
    )


def test_json_floats_are_rounded(tiny):
    import re

    text = run_cli("leaderboard", "--store", str(tiny["store"]), "--format", "json").stdout
    assert not re.search(r"\d\.\d{7,}", text)
    assert json.loads(text)


def test_aggregate_rows_are_marked_in_the_python_api(tiny):
    df = load_results(tiny["store"])
    assert set(df[df.is_aggregate].ood_dataset) == {"mean"}
    assert "mean" not in set(df[~df.is_aggregate].ood_dataset)
    assert len(df[~df.is_aggregate]) == 4 * len(df[df.is_aggregate])  # 4 OOD sets in tiny


def test_paired_delta_interval(tiny):
    board = leaderboard(tiny["store"], ci=True, resamples=200)
    for m in ("auroc", "fpr95"):
        low, high = board[f"{m}_delta_ci_low_oe"], board[f"{m}_delta_ci_high_oe"]
        assert ((low <= board[f"{m}_delta"] + 1e-9) & (board[f"{m}_delta"] <= high + 1e-9)).all()
    shown = run_cli(
        "leaderboard",
        "--store",
        str(tiny["store"]),
        "--ci",
        "--resamples",
        "30",
        env={"COLUMNS": "200"},
    )
    assert "for Δ: paired" in shown.stdout


def test_paired_delta_replicates_match_scikit_learn_on_the_same_samples():
    from oebench.report.bootstrap import paired_delta_replicates

    rng = np.random.default_rng(3)
    ids_a, ids_b = rng.normal(0, 1, 60), rng.normal(0, 1, 60)
    oods_a = [np.round(rng.normal(1, 1, 40), 1)]  # rounding makes ties
    oods_b = [np.round(rng.normal(2, 1, 40), 1)]
    reps = paired_delta_replicates((ids_a, oods_a), (ids_b, oods_b), 5, rng_for(0, "x"))
    draw = rng_for(0, "x")  # the same draws, replayed by hand: ID indices, then OOD indices
    for b in range(5):
        i, o = draw.integers(0, 60, 60), draw.integers(0, 40, 40)
        labels = np.r_[np.zeros(60), np.ones(40)]
        auc_a = roc_auc_score(labels, np.r_[ids_a[i], oods_a[0][o]])
        auc_b = roc_auc_score(labels, np.r_[ids_b[i], oods_b[0][o]])
        assert reps[b, 0] == pytest.approx(100 * (auc_b - auc_a), abs=1e-9)
    same = paired_delta_replicates((ids_a, oods_a), (ids_a, oods_a), 20, rng_for(1, "y"))
    assert not same.any()  # a model against itself: every paired difference is exactly 0


def test_bootstrap_reports_progress_over_its_resamples():
    from oebench.report.bootstrap import paired_delta_replicates

    rng = np.random.default_rng(0)
    ids, oods = rng.normal(0, 1, 200), [rng.normal(1, 1, 100), rng.normal(2, 1, 50)]
    told: list[int] = []
    reps = replicates(ids, oods, 120, rng_for(0, "c", "d"), progress=told.append)
    assert told == [50, 50, 20]  # every 50 resamples, then the rest
    assert np.array_equal(reps, replicates(ids, oods, 120, rng_for(0, "c", "d")))  # unchanged
    told.clear()
    paired_delta_replicates((ids, oods), (ids + 1, oods), 60, rng_for(0, "x"), told.append)
    assert told == [50, 10]


def test_leaderboard_intervals_show_a_bar_over_every_resample(tiny):
    from oebench.core.progress import Progress
    from oebench.record.store import ResultStore
    from oebench.report.results import intervals, stored_results

    class Bars(Progress):
        def __init__(self):
            self.bars: dict[str, list] = {}

        def start(self, description, total):
            self.bars[description] = [total]
            return lambda steps=1, status="": self.bars[description].append(steps)

    bars = Bars()
    with ResultStore(tiny["store"], create=False) as store:
        df = stored_results(store)
        intervals(store, df, 120, bars=bars)
    means = int((df.ood_dataset == "mean").sum())  # one per cell and detector
    total, *steps = bars.bars["bootstrap intervals"]
    assert total == sum(steps) == 120 * means and max(steps) == 50
    total, *steps = bars.bars["paired Δ intervals"]  # each OE cell against its baseline
    assert total == sum(steps) == 120 * means // 2 and max(steps) == 50
    shown = run_cli("leaderboard", "--store", str(tiny["store"]), "--ci", "--resamples", "20")
    assert shown.returncode == 0, shown.stderr
    assert "paired Δ intervals" not in shown.stdout  # the bars are on stderr, not in the table
