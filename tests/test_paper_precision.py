"""Precision settings of the paper benchmarks and the reference MSP scoring."""

from __future__ import annotations

import numpy as np
import pytest

import oebench
from oebench.bench.parse import load_benchmark
from oebench.contracts.detector import Outputs
from oebench.metrics import ood_metrics

PAPER = ["oe-cifar10", "oe-cifar100", "oe-svhn"]


def margins(*values: float) -> Outputs:
    """Two-class logits (0, m): a prediction whose confidence grows with ``m``."""
    return Outputs(np.array([[0.0, m] for m in values], dtype=np.float32))


def test_msp_reference_ties_saturated_predictions_like_float32_softmax():
    ref, exact = oebench.create_detector("msp-reference"), oebench.create_detector("msp")
    ids, oods = margins(20, 30, 40), margins(18, 25)
    # exp(-18) < 2**-24: every float32 softmax maximum rounds to exactly 1.0 -> all tied at -1
    assert np.all(ref.score(ids) == -1.0) and np.all(ref.score(oods) == -1.0)
    assert ood_metrics(ref.score(ids), ref.score(oods))["auroc"] == 50.0
    # exact log-odds keep the order: OOD margin 18 beats all 3 ID, margin 25 beats 30 and 40
    assert ood_metrics(exact.score(ids), exact.score(oods))["auroc"] == pytest.approx(500 / 6)


def test_msp_reference_is_minus_max_softmax_when_not_saturated():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]], dtype=np.float32)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = oebench.create_detector("msp-reference").score(Outputs(logits))
    np.testing.assert_allclose(got, -p.max(1), rtol=1e-6)
    assert got[1] == pytest.approx(-1 / 3, rel=1e-6)


@pytest.mark.parametrize("name", PAPER)
def test_paper_benchmarks_train_in_float32(name):
    bench = load_benchmark(name)
    assert bench.defaults["amp"] == "off"
    assert all(t.params["amp"] == "off" for t in bench.trainings)
    assert {"msp", "msp-reference"} <= {d.name for d in bench.detectors}
