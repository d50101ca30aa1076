"""Measured vs published numbers: ``--against paper|FILE`` on ``oebench run`` and
``oebench leaderboard``, and ``oebench.compare``."""

import io
import re

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_cli, store_record

import oebench
from oebench.record.schema import METRIC_COLUMNS
from oebench.record.store import ResultStore
from oebench.report.against import FLOOR, SET_FLOOR, comparison, read_published

#: per (training, seed): the stored msp values on the mean row and on 'letters'
SEEDS = (0, 1, 2)
MEAN_AUROC = {"baseline": [80.0, 82.0, 84.0], "oe": [95.0, 95.5, 96.0]}
MEAN_FPR = {"baseline": [30.0, 30.0, 30.0], "oe": [10.0, 11.0, 12.0]}
LETTERS_AUROC = {"baseline": [70.0, 70.0, 70.0], "oe": [90.0, 91.0, 92.0]}

PUBLISHED = """
[published]
source = "Someone et al. 2024, Table 1"
runs = 10
detector = "msp"
rows = [
    { training = "baseline", ood_dataset = "mean", auroc = 85.0, fpr95 = 33.0 },
    { training = "oe", ood_dataset = "letters", auroc = 80.0 },
    { training = "oe", ood_dataset = "mean", detector = "energy", auroc = 97.0 },
]
"""


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def rows_for(training: str, seed: int) -> list[dict]:
    """The stored msp rows of one cell: 'letters' and the mean over OOD sets."""
    values = {
        "letters": {"auroc": LETTERS_AUROC[training][seed], "fpr95": 50.0},
        "mean": {"auroc": MEAN_AUROC[training][seed], "fpr95": MEAN_FPR[training][seed]},
    }
    rows = []
    for i, (ood, given) in enumerate(values.items()):
        metrics = dict.fromkeys(METRIC_COLUMNS, 50.0) | given
        rows.append(
            {"detector": "msp", "ood_dataset": ood, "row_index": i, **metrics}
            | {"id_accuracy": 90.0, "n_id": 10, "n_ood": 5 if ood != "mean" else 0}
        )
    return rows


@pytest.fixture
def paper_store(tmp_path):
    """A store filled through the store's API: 3 seeds x baseline/oe of a benchmark file whose
    [published] table has numbers inside and outside tolerance and one unmeasured row."""
    bench = tmp_path / "paperlike.toml"
    bench.write_text(TINY.read_text().replace('name = "tiny"', 'name = "paperlike"') + PUBLISHED)
    store = tmp_path / "store.sqlite"
    with ResultStore(store) as s:
        for seed in SEEDS:
            for index, training in enumerate(("baseline", "oe")):
                record = store_record(
                    f"{training}-{seed}",
                    config="{}",
                    plugins="{}",
                    benchmark="paperlike",
                    benchmark_path=str(bench),
                    benchmark_text=bench.read_text(),
                    id_dataset="mnist-5k",
                    model="small-cnn",
                    training=training,
                    outlier_source="photo-crops" if training == "oe" else "",
                    seed=seed,
                    cell_index=index,
                    recall=0.95,
                    fpr_rule="nearest",
                )
                assert s.save_cell(record, rows_for(training, seed))
    return {"store": store, "bench": bench}


def tolerance(values: list[float], floor: float, spread: float = 0.0) -> float:
    """The documented rule: max(floor, 2 sqrt(s_seeds^2 + s_published^2))."""
    s = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return max(floor, 2 * float(np.hypot(s, spread)))


def printed_rows(out: str) -> dict[tuple[str, str, str, str], str]:
    """The printed comparison rows by (training, detector, OOD set, metric)."""
    found, training = {}, None
    for line in out.splitlines():
        title = re.search(r"· (\S+): measured vs published", line)
        if title:
            training = title.group(1)
            continue
        cells = line.split()
        if training and len(cells) >= 7 and cells[2][-1] in "↑↓":
            found[(training, *cells[:3])] = line
    return found


def row(table, training, ood, metric):
    found = table[(table.training == training) & (table.ood_dataset == ood)]
    found = found[found.metric == metric]
    assert len(found) == 1, table
    return found.iloc[0]


def test_compare_flags_numbers_outside_the_seed_spread_tolerance(paper_store):
    df = oebench.load_results(paper_store["store"])
    table = oebench.compare(df, "paper", benchmark=str(paper_store["bench"]))
    assert len(table) == 3  # baseline mean auroc + fpr95, oe letters auroc

    auroc = row(table, "baseline", "mean", "auroc")
    expected = tolerance(MEAN_AUROC["baseline"], FLOOR)
    assert expected > FLOOR  # the seeds' spread, not the floor, decides here
    assert auroc.measured == pytest.approx(np.mean(MEAN_AUROC["baseline"]))
    assert auroc.tolerance == pytest.approx(expected) and auroc.tolerance_from == "spread"
    assert auroc.difference == pytest.approx(np.mean(MEAN_AUROC["baseline"]) - 85.0)
    assert abs(auroc.difference) > FLOOR and not auroc.outside and auroc.verdict == "ok"
    assert auroc.seeds == 3 and auroc.source == "Someone et al. 2024, Table 1" and auroc.runs == 10

    fpr = row(table, "baseline", "mean", "fpr95")  # no spread over seeds: the floor
    assert fpr.tolerance == FLOOR and fpr.tolerance_from == "floor"
    assert fpr.outside and fpr.verdict == "better"  # 30 < 33: a lower FPR is better

    letters = row(table, "oe", "letters", "auroc")  # one OOD set: the per-set floor
    assert letters.tolerance == pytest.approx(tolerance(LETTERS_AUROC["oe"], SET_FLOOR))
    assert letters.outside and letters.verdict == "better"

    unmatched = table.attrs["unmatched"]
    assert [(u["training"], u["detector"], u["ood_dataset"]) for u in unmatched] == [
        ("oe", "energy", "mean")
    ]
    assert unmatched[0]["reason"] == "no measured detector 'energy'"
    unpublished = {(u["training"], u["ood_dataset"]) for u in table.attrs["unpublished"]}
    assert unpublished == {("baseline", "letters"), ("oe", "mean")}


def test_one_seed_gets_the_floor_and_a_published_spread_widens_it(paper_store, tmp_path):
    one = oebench.load_results(paper_store["store"], seed=0)
    table = oebench.compare(one, "paper", benchmark=str(paper_store["bench"]))
    auroc = row(table, "baseline", "mean", "auroc")
    assert auroc.seeds == 1 and auroc.tolerance == FLOOR and auroc.tolerance_from == "floor"
    assert auroc.outside and auroc.verdict == "worse"  # 80 vs 85, beyond the floor of 2

    csv = tmp_path / "theirs.csv"
    csv.write_text("training,detector,ood_dataset,auroc,auroc_spread\nbaseline,msp,mean,85,3\n")
    widened = row(oebench.compare(one, csv), "baseline", "mean", "auroc")
    assert widened.tolerance == pytest.approx(tolerance([80.0], FLOOR, spread=3.0))
    assert widened.published_spread == 3 and not widened.outside


def test_a_published_csv_matches_on_the_columns_it_has(paper_store, tmp_path):
    df = oebench.load_results(paper_store["store"])
    csv = tmp_path / "openood.csv"
    csv.write_text(
        "id_dataset,training,detector,ood_dataset,auroc,recall\n"
        "mnist-5k,oe,msp,letters,91.0,0.95\n"
        "mnist-5k,oe,msp,letters,93.0,0.95\n"  # the same key twice: averaged, std = spread
        "mnist-5k,oe,msp,lsun,91.0,0.95\n"
        "cifar10,oe,msp,mean,91.0,0.95\n"
    )
    table = oebench.compare(df, csv)
    letters = row(table, "oe", "letters", "auroc")
    assert letters.published == 92.0 and letters.published_spread == pytest.approx(np.sqrt(2))
    assert letters.model == "small-cnn" and letters.source == str(csv)
    reasons = {u["ood_dataset"]: u["reason"] for u in table.attrs["unmatched"]}
    assert reasons == {
        "lsun": "no measured OOD set 'lsun'",
        "mean": "no measured ID dataset 'cifar10'",
    }

    fpr = tmp_path / "fpr.csv"
    fpr.write_text("training,detector,ood_dataset,fpr95,fpr_rule\nbaseline,msp,mean,30,first\n")
    noted = row(comparison(df, read_published(fpr)), "baseline", "mean", "fpr95")
    assert not noted.outside and noted.note == "fpr_rule first published, nearest measured"


def test_leaderboard_against_paper_prints_flags_and_unmatched_rows(paper_store):
    args = ["leaderboard", "--store", str(paper_store["store"]), "--against", "paper"]
    result = run_cli(*args, env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stderr  # a report: numbers outside do not fail it
    out = result.stdout
    assert "paperlike · mnist-5k · small-cnn · baseline: measured vs published" in out
    by_place = printed_rows(out)
    assert "ok" in by_place[("baseline", "msp", "mean", "AUROC↑")]
    assert "82.00±2.00" in by_place[("baseline", "msp", "mean", "AUROC↑")]
    assert "OUT (better)" in by_place[("baseline", "msp", "mean", "FPR95↓")]
    assert "OUT (better)" in by_place[("oe", "msp", "letters", "AUROC↑")]
    assert "4.00*" in by_place[("baseline", "msp", "mean", "AUROC↑")]  # from the seeds' spread
    assert "2 of 3 compared numbers fall outside their tolerance." in out
    assert "Published, not measured (1, not compared):" in out
    assert "paperlike / oe / energy / mean (auroc): no measured detector 'energy'" in out
    flat = " ".join(out.split())  # the rule wraps
    assert "tol. = max(floor, 2·√(s_seeds² + s_published²))" in flat

    strict = run_cli(*args, "--strict")
    assert strict.returncode == 1
    assert "--strict: 2 number(s) outside their tolerance, 1 published row(s)" in strict.stderr

    as_csv = run_cli(*args, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    frame = pd.read_csv(io.StringIO(as_csv.stdout))
    assert len(frame) == 3 and frame.outside.sum() == 2
    assert set(frame.verdict) == {"ok", "better"}


def test_bad_against_values_are_one_line_errors(paper_store, tmp_path):
    base = ["leaderboard", "--store", str(paper_store["store"])]
    missing = one_line_error(run_cli(*base, "--against", str(tmp_path / "nope.csv")))
    assert "no such file; give 'paper'" in missing
    columns = tmp_path / "columns.csv"
    columns.write_text("method,auroc\nmsp,90\n")
    line = one_line_error(run_cli(*base, "--against", str(columns)))
    assert "needs the column(s) training, detector, ood_dataset" in line
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("training,detector,ood_dataset,score\noe,msp,mean,1\n")
    assert "no metric column" in one_line_error(run_cli(*base, "--against", str(metrics)))
    words = tmp_path / "words.csv"
    words.write_text("training,detector,ood_dataset,auroc\noe,msp,mean,90\noe,msp,letters,high\n")
    line = one_line_error(run_cli(*base, "--against", str(words)))
    assert "line 3: auroc = 'high' is not a number" in line
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 50)
    assert "not a readable CSV file" in one_line_error(run_cli(*base, "--against", str(binary)))
    assert "--strict needs --against" in one_line_error(run_cli(*base, "--strict"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run of tiny.toml into a store, with its CSV."""
    root = tmp_path_factory.mktemp("against-run")
    env = {  # module scope runs before the per-test autouse fixtures: isolate explicitly
        "OEBENCH_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "oebench-cache"),
        "OEBENCH_STORE": str(root / "unused.sqlite"),
        "COLUMNS": "160",
    }
    store, csv = root / "store.sqlite", root / "run.csv"
    result = run_cli("run", str(TINY), "--store", str(store), "--csv", str(csv), env=env)
    assert result.returncode == 0, result.stderr
    return {"store": store, "csv": pd.read_csv(csv), "env": env, "root": root}


def test_run_against_paper_compares_without_recomputing_cells(tiny_run, tmp_path):
    measured = tiny_run["csv"]

    def value(training, ood, metric):
        part = measured[(measured.training == training) & (measured.detector == "msp")]
        return float(part[part.ood_dataset == ood][metric].iloc[0])

    near = value("baseline", "mean", "auroc") + 1.0  # within the floor of 2
    far_fpr = value("oe", "letters", "fpr95")
    far = far_fpr + 10 if far_fpr <= 90 else far_fpr - 10  # beyond the per-set floor of 5
    verdict = "better" if far > far_fpr else "worse"  # a lower FPR is better
    bench = tmp_path / "tiny.toml"  # the same benchmark, now with published numbers

    def write(near_value):
        bench.write_text(
            TINY.read_text()
            + '\n[published]\nsource = "test"\ndetector = "msp"\nrows = [\n'
            + f'  {{ training = "baseline", ood_dataset = "mean", auroc = {near_value} }},\n'
            + f'  {{ training = "oe", ood_dataset = "letters", fpr95 = {far} }},\n]\n'
        )

    write(near)
    args = ["run", str(bench), "--store", str(tiny_run["store"]), "--against", "paper"]
    result = run_cli(*args, env=tiny_run["env"])
    assert result.returncode == 0, result.stderr
    assert "2 of 2 cells came from the results store" in result.stderr  # nothing recomputed
    out = result.stdout
    assert out.index("baseline vs oe") < out.index(
        "tiny · mnist-5k · small-cnn · baseline: measured"
    )
    lines = printed_rows(out)
    assert len(lines) == 2
    auroc, fpr = lines["baseline", "msp", "mean", "AUROC↑"], lines["oe", "msp", "letters", "FPR95↓"]
    assert f"{near:.2f}" in auroc and auroc.split()[-1] == "ok" and "2.00" in auroc
    assert fpr.split()[-2:] == ["OUT", f"({verdict})"] and "5.00" in fpr
    assert "1 of 2 compared numbers fall outside their tolerance." in out

    write(near + 5.0)  # edited published numbers: shown at once, still nothing recomputed
    again = run_cli(*args, env=tiny_run["env"])
    assert again.returncode == 0, again.stderr
    assert "2 of 2 cells came from the results store" in again.stderr
    assert "2 of 2 compared numbers fall outside their tolerance." in again.stdout
    strict = run_cli(*args, "--strict", env=tiny_run["env"])
    assert strict.returncode == 1 and "--strict: 2 number(s) outside" in strict.stderr
    # the stored cells came from tests/data/tiny.toml, whose file has no [published] table
    board = run_cli("leaderboard", "--store", str(tiny_run["store"]), "--against", "paper")
    assert "benchmark tiny has no [published] table" in one_line_error(board)

    df = oebench.compare(measured, "paper", benchmark=str(bench))
    assert list(df.outside) == [True, True]


def test_run_against_checks_its_value_before_any_work(tiny_run, tmp_path):
    store = ["--store", str(tmp_path / "fresh.sqlite")]
    line = one_line_error(run_cli("run", str(TINY), *store, "--against", "paper"))
    assert "--against paper: benchmark tiny has no [published] table" in line
    line = one_line_error(run_cli("run", str(TINY), *store, "--against", str(tmp_path / "x.csv")))
    assert "no such file" in line
    assert not (tmp_path / "fresh.sqlite").exists()  # refused before the run began
