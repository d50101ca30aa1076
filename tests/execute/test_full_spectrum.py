"""Full-spectrum OOD (``protocol = "full-spectrum"``): covariate-shifted ID sets count as ID in
the ``fs_*`` metrics, next to the standard ones, checked against scikit-learn on the stored
scores; the shifted sets' accuracy and ECE; the settings refused in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from sklearn.metrics import roc_auc_score

from oebench.bench.parse import parse_benchmark
from oebench.errors import UserError

BENCH = """
name = "fs-tiny"
seeds = [0]
protocol = "full-spectrum"
id_datasets = ["mnist-5k"]
models = [{{ name = "small-cnn", width = 8 }}]
detectors = ["msp", "energy"]
ood_datasets = [{{ name = "letters", n = 200 }}, {{ name = "gaussian-pixel", n = 200 }}]
csid_datasets = [{csid}]

[training]
epochs = 1
max_train = 512
batch_size = 128
lr = 0.07

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""
COPY = '{ name = "mnist-5k", label = "mnist-copy" }'
RESPLIT = '{ name = "mnist-5k", split_seed = 1, label = "mnist-resplit" }'


def _run(tmp_path: Path, csid: str, *extra: str) -> tuple[list[dict], str, Path]:
    path = tmp_path / "fs.toml"
    path.write_text(BENCH.format(csid=csid))
    out, scores = tmp_path / "r.csv", tmp_path / "scores"
    result = run_cli("run", str(path), "--csv", str(out), "--save-scores", str(scores), *extra,
                     env={"COLUMNS": "200"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    with out.open() as f:
        return list(csv.DictReader(f)), result.stdout, scores


def test_a_copy_of_the_id_test_set_leaves_auroc_and_fpr_unchanged(tmp_path):
    rows, stdout, _ = _run(tmp_path, COPY)
    assert rows and all(r["protocol"] == "full-spectrum" for r in rows)
    for r in rows:  # doubling every ID score changes no rank statistic of ID vs OOD
        assert float(r["fs_auroc"]) == pytest.approx(float(r["auroc"]), abs=1e-9)
        assert float(r["fs_fpr95"]) == pytest.approx(float(r["fpr95"]), abs=1e-9)
        assert float(r["csid_accuracy"]) == pytest.approx(float(r["id_accuracy"]))
        assert int(r["n_csid"]) == int(r["n_id"])
    flat = " ".join(stdout.split())
    assert "standard vs full-spectrum (covariate-shifted ID counted as ID)" in flat


def test_fs_auroc_is_scikit_learns_on_the_id_and_shifted_scores_together(tmp_path):
    rows, _, scores = _run(tmp_path, RESPLIT)
    frame = pd.concat([pd.read_parquet(p) for p in sorted(scores.glob("*.parquet"))])
    checked = 0
    for r in (r for r in rows if r["ood_dataset"] == "letters"):
        mine = frame[frame.detector == r["detector"]]
        side = {name: mine[mine.dataset == name].score.to_numpy() for name in set(mine.dataset)}
        assert set(mine[mine.dataset == "mnist-resplit"].is_ood) == {False}  # ID, shifted
        inside = np.concatenate([side["mnist-5k"], side["mnist-resplit"]])
        labels = np.r_[np.zeros(len(inside)), np.ones(len(side["letters"]))]
        want = 100 * roc_auc_score(labels, np.r_[inside, side["letters"]])
        assert float(r["fs_auroc"]) == pytest.approx(want, abs=1e-9)
        plain = 100 * roc_auc_score(labels[len(side["mnist-resplit"]) :],
                                    np.r_[side["mnist-5k"], side["letters"]])  # fmt: skip
        assert float(r["auroc"]) == pytest.approx(plain, abs=1e-9)
        checked += 1
    assert checked == 2


@pytest.mark.parametrize(
    "text,message",
    [
        (BENCH.format(csid=COPY).replace('csid_datasets = [{ name = "mnist-5k", label = '
                                         '"mnist-copy" }]', ""),
         "protocol = 'full-spectrum' needs 'csid_datasets'"),
        (BENCH.format(csid=COPY).replace('protocol = "full-spectrum"', ""),
         "'csid_datasets' needs protocol = 'full-spectrum'"),
        (BENCH.format(csid='{ name = "letters", label = "letters" }'),
         "letters is both a csid set and an ID or OOD set"),
    ],
)  # fmt: skip
def test_settings_that_do_not_go_together_are_one_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_benchmark(text)


def test_a_csid_set_must_keep_the_id_classes(tmp_path):
    path = tmp_path / "fs.toml"
    path.write_text(BENCH.format(csid='{ name = "textures", label = "tex" }'))
    result = run_cli("run", str(path))
    assert result.returncode != 0
    assert "csid set 'tex' has" in result.stderr and "keeps the ID labels" in result.stderr
    assert "Traceback" not in result.stderr
