"""Deep-ensemble scores from the logits of several models on the same images (Lakshminarayanan
et al., NeurIPS 2017): the members are one training's models over the benchmark's seeds.

Each score is "higher = more anomalous", float64, one per image:

- ``ensemble-msp``: minus the maximum of the mean softmax over members;
- ``ensemble-mi``: mutual information between the prediction and the member (BALD, Houlsby et
  al. 2011; as Malinin & Gales 2018 use it for OOD): ``H(mean p) - mean H(p)``, in nats;
- ``ensemble-vr``: variation ratio, ``1 - (members voting for the modal class) / members``
  (Freeman 1965; ties between classes share the mode's count).
"""

from __future__ import annotations

import numpy as np

#: the scores an ensemble cell reports, by the names its result rows carry
ENSEMBLE_SCORES = ("ensemble-msp", "ensemble-mi", "ensemble-vr")


def member_probabilities(logits: list[np.ndarray]) -> np.ndarray:
    """(members, N, classes) softmax in float64 of the members' (N, classes) logits."""
    z = np.stack([np.asarray(m, dtype=np.float64) for m in logits])
    z = z - z.max(axis=2, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=2, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis, with 0 log 0 = 0."""
    safe = np.where(p > 0, p, 1.0)
    return -(p * np.log(safe)).sum(axis=-1)


def ensemble_scores(logits: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every ``ENSEMBLE_SCORES`` score of images whose logits per member are ``logits``."""
    p = member_probabilities(logits)
    mean = p.mean(axis=0)
    votes = p.argmax(axis=2)  # (members, N)
    classes = p.shape[2]
    counts = np.stack([(votes == c).sum(axis=0) for c in range(classes)], axis=1)
    return {
        "ensemble-msp": -mean.max(axis=1),
        "ensemble-mi": _entropy(mean) - _entropy(p).mean(axis=0),
        "ensemble-vr": 1.0 - counts.max(axis=1) / len(p),
    }


def ensemble_logits(logits: list[np.ndarray]) -> np.ndarray:
    """Logits whose softmax is the members' mean softmax (``log`` of it), for accuracy and
    calibration of the ensemble's prediction."""
    mean = member_probabilities(logits).mean(axis=0)
    return np.log(np.maximum(mean, np.finfo(np.float64).tiny))
