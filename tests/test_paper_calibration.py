"""Calibration metrics, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oebench.calibration import (
    binned_error,
    calibration,
    confidences,
    ece,
    fit_temperature,
    mixed_calibration,
)


def test_ece_by_hand():
    # bin (0.6, 0.667]: conf 0.65, 0.65 / correct 1, 0 -> |0.5 - 0.65| = 0.15, weight 2/4
    # bin (0.933, 1]: conf 0.95, 0.95 / correct 1, 1 -> |1 - 0.95| = 0.05, weight 2/4
    got = ece(np.array([0.65, 0.65, 0.95, 0.95]), np.array([1, 0, 1, 1]))
    assert got == pytest.approx(100 * (0.5 * 0.15 + 0.5 * 0.05))


def test_rms_and_mad_over_adaptive_bins_by_hand():
    conf = np.array([0.9, 0.6, 0.8, 0.7])  # sorted: 0.6, 0.7 | 0.8, 0.9
    correct = np.array([1, 0, 1, 1])  # sorted:   0,   1  |   1,   1
    # bin 1: mean conf 0.65, accuracy 0.5 -> gap 0.15; bin 2: 0.85 vs 1 -> gap 0.15
    assert binned_error(conf, correct, 2, bin_size=2) == pytest.approx(15.0)
    assert binned_error(conf, correct, 1, bin_size=2) == pytest.approx(15.0)
    # 5 examples, bins of 2: [0, 2), [2, 5) (the last bin takes the remainder)
    conf5, correct5 = np.array([0.6, 0.7, 0.8, 0.9, 1.0]), np.array([0, 1, 1, 1, 0])
    gaps = [abs(0.65 - 0.5), abs(0.9 - 2 / 3)]
    assert binned_error(conf5, correct5, 2, 2) == pytest.approx(
        100 * math.sqrt(0.4 * gaps[0] ** 2 + 0.6 * gaps[1] ** 2)
    )


def test_ood_examples_count_as_wrong_in_the_mixed_setting():
    id_logits = np.array([[10.0, 0.0]] * 100)  # confident and right: ID alone is calibrated
    labels = np.zeros(100, int)
    conf = 1 / (1 + math.exp(-10))
    assert calibration(id_logits, labels, bin_size=100)["rms_calib"] == pytest.approx(
        100 * (1 - conf)
    )
    confident_ood = mixed_calibration(id_logits, labels, np.array([[10.0, 0.0]] * 100), 1, 100)
    uniform_ood = mixed_calibration(id_logits, labels, np.array([[0.0, 0.0]] * 100), 1, 100)
    # bins of 100 after sorting: the OOD bin has confidence conf (or 0.5) and accuracy 0
    assert confident_ood["rms_calib_mixed"] == pytest.approx(100 * conf * math.sqrt(0.5), rel=1e-3)
    assert uniform_ood["rms_calib_mixed"] == pytest.approx(
        100 * math.sqrt(0.5 * 0.5**2 + 0.5 * (1 - conf) ** 2)
    )


def test_fitted_temperature_undoes_a_known_scaling():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(4000, 5))
    labels = np.array([rng.choice(5, p=np.exp(t) / np.exp(t).sum()) for t in true])
    # logits 3x too large: the NLL-optimal temperature is about 3
    assert fit_temperature(3 * true, labels) == pytest.approx(3.0, rel=0.1)
    conf, pred = confidences(3 * true, 3.0)
    assert np.allclose(conf, np.exp(true).max(1) / np.exp(true).sum(1))
