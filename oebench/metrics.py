"""OOD metrics with the conventions of the Outlier Exposure paper, from one sort of the scores.

Scores: higher = more anomalous. OOD is the positive class unless a name says otherwise.

- ``auroc``: area under the ROC curve (equals scikit-learn ``roc_auc_score``).
- ``aupr_out``: average precision with OOD positive (scikit-learn ``average_precision_score``,
  step-wise, not trapezoid); ``aupr_in``: the same with ID positive and negated scores.
- ``fpr95``: fraction of ID samples flagged as OOD at the threshold where 95% of OOD samples
  are detected; the threshold is the ROC point whose OOD recall is nearest to 0.95 (ties go
  to the lower threshold), as in the OE reference code.
- ``fpr95_id``: the ODIN / Energy orientation: fraction of OOD samples accepted as ID at the
  threshold that keeps 95% of ID samples (same nearest-point rule, ID positive).
- ``detection_error``: min over thresholds of (miss rate + false-alarm rate) / 2.
All values are percentages.
"""

from __future__ import annotations

import numpy as np

METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_id", "detection_error")
LOWER_IS_BETTER = frozenset({"fpr95", "fpr95_id", "detection_error"})
CONVENTION = (
    "OOD = positive class, higher score = more anomalous. AUROC; AUPR-Out/AUPR-In = average "
    "precision with OOD/ID positive (step-wise, scikit-learn); FPR95 = % of ID flagged at 95% "
    "OOD recall (OE paper: nearest ROC point)"
)
CONVENTION_ID = "FPR95-ID = % of OOD accepted at 95% ID recall (ODIN/Energy orientation)"


class MetricInputError(ValueError):
    """Scores that metrics cannot be computed from (empty, NaN, wrong shape)."""


def _check(name: str, scores: np.ndarray) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0:
        raise MetricInputError(f"{name} is empty: need at least one score")
    bad = int(np.isnan(arr).sum())
    if bad:
        raise MetricInputError(f"{name} contains {bad} NaN score(s) of {arr.size}")
    return arr


def binary_curve(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positive counts at each distinct threshold, from high to low score."""
    scores = np.concatenate([neg, pos])
    labels = np.concatenate([np.zeros(neg.size), np.ones(pos.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels)[ends]
    fps = ends + 1 - tps
    return tps, fps


def auroc(tps: np.ndarray, fps: np.ndarray) -> float:
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)


def average_precision(tps: np.ndarray, fps: np.ndarray) -> float:
    recall = tps / tps[-1]
    precision = tps / (tps + fps)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_recall(
    tps: np.ndarray, fps: np.ndarray, level: float = 0.95, rule: str = "nearest"
) -> float:
    """FPR at a recall level; ``rule``: ``nearest`` (OE paper) or ``first`` (OpenOOD)."""
    recall = tps / tps[-1]
    if rule == "first":
        return float(fps[np.argmax(recall >= level)] / fps[-1])
    if rule != "nearest":
        raise ValueError(f"rule must be 'nearest' or 'first', not {rule!r}")
    last = int(np.searchsorted(tps, tps[-1]))  # first threshold reaching full recall
    window = slice(last, None, -1)  # from that threshold upwards: ties go to the lower one
    cutoff = int(np.argmin(np.abs(recall[window] - level)))
    return float(fps[window][cutoff] / fps[-1])


def detection_error(tps: np.ndarray, fps: np.ndarray) -> float:
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.min(0.5 * (1 - tpr) + 0.5 * fpr))


def ood_metrics(
    id_scores: np.ndarray,
    ood_scores: np.ndarray,
    recall_level: float = 0.95,
    fpr_rule: str = "nearest",
) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out, FPR95 (both orientations) and detection error, in percent."""
    ids, oods = _check("id_scores", id_scores), _check("ood_scores", ood_scores)
    tps, fps = binary_curve(ids, oods)  # OOD positive
    tps_in, fps_in = binary_curve(-oods, -ids)  # ID positive
    return {
        "auroc": 100 * auroc(tps, fps),
        "aupr_in": 100 * average_precision(tps_in, fps_in),
        "aupr_out": 100 * average_precision(tps, fps),
        "fpr95": 100 * fpr_at_recall(tps, fps, recall_level, fpr_rule),
        "fpr95_id": 100 * fpr_at_recall(tps_in, fps_in, recall_level, fpr_rule),
        "detection_error": 100 * detection_error(tps, fps),
    }
