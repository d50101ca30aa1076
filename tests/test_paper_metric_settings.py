"""Recall level and FPR rule per benchmark and on the command line; the expected-AP baseline."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from conftest import TINY, run_cli

from oebench.bench.parse import load_benchmark, parse_benchmark
from oebench.errors import UserError
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner
from oebench.metrics import ood_metrics


def tiny(**settings):
    bench = load_benchmark(str(TINY))
    bench = replace(bench, trainings=bench.trainings[:1], detectors=bench.detectors[:1])
    return replace(bench, **settings)


def run(bench):
    scores = {}
    runner = Runner(bench, device="cpu")
    sink = lambda cell, det, ds, values: scores.__setitem__(ds, values)  # noqa: E731
    return run_here(runner, score_sink=sink), scores, runner


@pytest.mark.parametrize("protocol", ["full", "oe-paper"])
def test_rows_use_the_benchmarks_recall_and_rule(protocol):
    rows, scores, runner = run(tiny(recall=0.9, fpr_rule="first", protocol=protocol))
    default_rows, _, default_runner = run(tiny(protocol=protocol))
    assert {c.key for c in runner.cells()} != {c.key for c in default_runner.cells()}
    for row in (r for r in rows if r["ood_dataset"] != "mean"):
        assert (row["recall"], row["fpr_rule"]) == (0.9, "first")
        n_ood = len(scores[row["ood_dataset"]])
        if protocol == "full":
            expected = ood_metrics(scores["id"], scores[row["ood_dataset"]], 0.9, "first")
            assert row["fpr95"] == expected["fpr95"]
        else:
            n_ood = min(len(scores["id"]) // 5, n_ood)
        # a detector that guesses has AUPR-Out = the OOD share of the evaluated samples
        assert row["aupr_baseline"] == pytest.approx(100 * n_ood / (n_ood + len(scores["id"])))
    assert [r["fpr95"] for r in rows] != [r["fpr95"] for r in default_rows]


def test_benchmark_file_settings_are_checked():
    base = TINY.read_text()
    bench = parse_benchmark('recall = 0.9\nfpr_rule = "first"\n' + base)
    assert (bench.recall, bench.fpr_rule) == (0.9, "first")
    assert (parse_benchmark(base).recall, parse_benchmark(base).fpr_rule) == (0.95, "nearest")
    with pytest.raises(UserError, match="fpr_rule"):
        parse_benchmark('fpr_rule = "last"\n' + base)
    with pytest.raises(UserError, match="recall"):
        parse_benchmark("recall = 1.5\n" + base)


def test_cli_fpr_rule_and_recall_reach_the_metrics(tmp_path):
    text = TINY.read_text()
    text = text[: text.index("[[trainings]]", text.index("[[trainings]]") + 1)]  # baseline only
    path = tmp_path / "tiny-baseline.toml"
    path.write_text(text.replace('detectors = ["msp", "energy"]', 'detectors = ["msp"]'))
    out = tmp_path / "r.csv"
    result = run_cli(
        "run", str(path), "--fpr-rule", "first", "--recall", "0.9", "--csv", str(out)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "FPR90↓" in result.stdout and "FPR95↓" not in result.stdout  # the headers say 90
    got = {r["ood_dataset"]: float(r["fpr95"]) for r in csv.DictReader(out.open())}
    rows, _, _ = run(replace(load_benchmark(str(path)), recall=0.9, fpr_rule="first"))
    assert got == pytest.approx({r["ood_dataset"]: r["fpr95"] for r in rows})
    bad = run_cli("run", str(path), "--fpr-rule", "last")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_footer_names_a_non_default_recall_and_rule():
    import pandas as pd

    from oebench.report.render import _fpr_note

    assert _fpr_note(pd.DataFrame({"recall": [0.95], "fpr_rule": ["nearest"]})) == ""
    note = _fpr_note(pd.DataFrame({"recall": [0.9, 0.9], "fpr_rule": ["first", "first"]}))
    assert "at 90% OOD recall, first ROC point reaching it" in note
