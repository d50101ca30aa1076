"""Calibration of a classifier's confidence (max softmax probability), in percent.

- ``ece``: expected calibration error, 15 equal-width confidence bins,
  ``sum_b n_b / n * |accuracy_b - confidence_b|``.
- ``rms_calib`` / ``mad_calib``: the OE paper's RMS calibration error and mean absolute
  deviation, over adaptive bins of ``bin_size`` (100) examples sorted by confidence (the last
  bin takes the remainder): ``sqrt(sum_b n_b / n * (accuracy_b - confidence_b)^2)`` and the
  same with ``|.|`` and no root.
- The paper's mixed setting (OOD data at test time): ID and OOD examples are pooled and every
  OOD example counts as a wrong prediction, so a model that is confident on OOD inputs is
  miscalibrated (``mixed_calibration``).
- ``fit_temperature``: the temperature that minimises the negative log-likelihood on
  validation logits (temperature scaling); pass it as ``temperature`` to the others.
"""

from __future__ import annotations

import numpy as np


def confidences(logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Max softmax probability (float64) and predicted class of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p.max(axis=1), p.argmax(axis=1)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with ``bins`` equal-width bins over (0, 1], in %."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(which):
        mask = which == b
        total += mask.sum() * abs(correct[mask].mean() - confidence[mask].mean())
    return 100.0 * total / len(confidence)


def binned_error(
    confidence: np.ndarray, correct: np.ndarray, p: int = 2, bin_size: int = 100
) -> float:
    """RMS (``p=2``) or MAD (``p=1``) calibration error over adaptive bins, in %."""
    order = np.argsort(np.asarray(confidence, float), kind="stable")
    confidence = np.asarray(confidence, float)[order]
    correct = np.asarray(correct, float)[order]
    n = len(confidence)
    edges = list(range(0, max(1, n // bin_size) * bin_size, bin_size)) + [n]
    edges = sorted(set(edges))
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        gap = abs(confidence[lo:hi].mean() - correct[lo:hi].mean())
        total += (hi - lo) / n * gap**p
    return 100.0 * (np.sqrt(total) if p == 2 else total)


def calibration(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bin_size: int = 100
) -> dict[str, float]:
    """ECE, RMS and MAD calibration error of ID predictions, in %."""
    conf, pred = confidences(logits, temperature)
    correct = pred == np.asarray(labels)
    return {
        "ece": ece(conf, correct),
        "rms_calib": binned_error(conf, correct, 2, bin_size),
        "mad_calib": binned_error(conf, correct, 1, bin_size),
    }


def mixed_calibration(
    id_logits: np.ndarray,
    id_labels: np.ndarray,
    ood_logits: np.ndarray,
    temperature: float = 1.0,
    bin_size: int = 100,
) -> dict[str, float]:
    """The paper's setting: ID and OOD examples pooled, every OOD prediction counted wrong."""
    id_conf, id_pred = confidences(id_logits, temperature)
    ood_conf, _ = confidences(ood_logits, temperature)
    conf = np.concatenate([id_conf, ood_conf])
    correct = np.concatenate([id_pred == np.asarray(id_labels), np.zeros(len(ood_conf), bool)])
    return {
        "rms_calib_mixed": binned_error(conf, correct, 2, bin_size),
        "mad_calib_mixed": binned_error(conf, correct, 1, bin_size),
    }


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the mean negative log-likelihood."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(y)), y]))

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))
