"""Deep ensembles over the seeds (``ensemble = true``): the scores by hand, and ensemble cells
run, stored, keyed by their members and served from the store like any cell."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from conftest import run_cli

from oebench.bench.parse import parse_benchmark
from oebench.errors import UserError
from oebench.scoring import ensemble_logits, ensemble_scores


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_scores_of_two_members_by_hand():
    a = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    b = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    got = ensemble_scores([a, b])
    pa, pb = _softmax([2, 0, 0]), _softmax([0, 2, 0])
    mean = [(x + y) / 2 for x, y in zip(pa, pb, strict=True)]
    assert got["ensemble-msp"][0] == pytest.approx(-max(mean), rel=1e-12)
    entropy = lambda p: -sum(v * math.log(v) for v in p)  # noqa: E731
    mi = entropy(mean) - (entropy(pa) + entropy(pb)) / 2
    assert got["ensemble-mi"][0] == pytest.approx(mi, rel=1e-12)
    assert got["ensemble-vr"][0] == pytest.approx(0.5)  # one vote each: the mode has 1 of 2
    # identical uniform members: MSP -1/3, no disagreement at all
    assert got["ensemble-msp"][1] == pytest.approx(-1 / 3)
    assert got["ensemble-mi"][1] == pytest.approx(0.0, abs=1e-15)
    assert got["ensemble-vr"][1] == 0.0  # tied logits vote for the first class in both
    np.testing.assert_allclose(np.exp(ensemble_logits([a, b]))[0], mean, rtol=1e-12)


def test_agreeing_members_have_no_mutual_information():
    z = np.random.default_rng(0).normal(size=(5, 4)) * 3
    got = ensemble_scores([z, z, z])
    np.testing.assert_allclose(got["ensemble-mi"], 0.0, atol=1e-12)
    assert (got["ensemble-vr"] == 0).all()


BENCH = """
name = "ens"
seeds = [0, 1]
ensemble = true
id_datasets = ["mnist-5k"]
models = [{ name = "small-cnn", width = 8 }]
detectors = ["msp"]
ood_datasets = [{ name = "letters", n = 200 }, { name = "gaussian-pixel", n = 200 }]

[training]
epochs = 1
max_train = 512
batch_size = 128
lr = 0.08

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""


def test_ensemble_needs_two_seeds_and_a_bool():
    with pytest.raises(UserError, match="needs at least two seeds"):
        parse_benchmark(BENCH.replace("seeds = [0, 1]", "seeds = [0]"))
    with pytest.raises(UserError, match="must be true or false"):
        parse_benchmark(BENCH.replace("ensemble = true", 'ensemble = "yes"'))


def _run(tmp_path, text, *extra):
    path = tmp_path / "ens.toml"
    path.write_text(text)
    out = tmp_path / "r.csv"
    result = run_cli("run", str(path), "--csv", str(out), *extra, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    with out.open() as f:
        return list(csv.DictReader(f)), result


def test_an_ensemble_cell_is_run_stored_and_served_again(tmp_path):
    rows, first = _run(tmp_path, BENCH)
    ens = [r for r in rows if r["seed"] == "-1"]
    assert {r["detector"] for r in ens} == {"ensemble-msp", "ensemble-mi", "ensemble-vr"}
    assert {r["ood_dataset"] for r in ens} == {"letters", "gaussian-pixel", "mean"}
    assert all(0 <= float(r["auroc"]) <= 100 for r in ens)
    singles = [float(r["id_accuracy"]) for r in rows if r["seed"] in ("0", "1")]
    assert min(singles) - 5 <= float(ens[0]["id_accuracy"]) <= max(singles) + 5
    assert "2 seed(s)" in " ".join(first.stdout.split())  # the ensemble is not a third seed
    again_rows, again = _run(tmp_path, BENCH)
    assert "3 of 3 cells came from the results store" in again.stderr
    assert again_rows == rows
    other, _ = _run(tmp_path, BENCH.replace("seeds = [0, 1]", "seeds = [0, 2]"))
    assert [r["auroc"] for r in other if r["seed"] == "-1"] != [r["auroc"] for r in ens]
