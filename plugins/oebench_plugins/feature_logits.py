"""GEN, the generalized entropy of the softmax: the feature-detectors plugin's logit detector."""

from __future__ import annotations

import numpy as np

from oebench.api import Detector, Outputs, log_softmax64, logsumexp64
from oebench_plugins.feature_common import _map_rows


def _log_one_minus_p(z: np.ndarray) -> np.ndarray:
    """``log(1 - softmax(z))`` per entry, exact for the top class where ``p`` rounds to 1."""
    logp = log_softmax64(z)
    with np.errstate(divide="ignore"):
        out = np.log1p(-np.exp(logp))
    r = np.arange(len(z))
    top = z.argmax(1)
    rest = z.copy()
    rest[r, top] = -np.inf
    out[r, top] = logsumexp64(rest) - logsumexp64(z) if z.shape[1] > 1 else -np.inf
    return out


class GEN(Detector):
    """Generalized entropy sum_{top M} p^gamma (1 - p)^gamma of the softmax (Liu et al., CVPR 2023).

    Paper defaults gamma = 0.1, M = 100 (``min(M, classes)``); computed in log space in float64.
    """

    def __init__(self, gamma: float = 0.1, top_m: int = 100):
        if gamma <= 0 or int(top_m) < 1:
            raise ValueError("GEN needs gamma > 0 and top_m >= 1")
        self.gamma = float(gamma)
        self.top_m = int(top_m)

    def _gen(self, z: np.ndarray) -> np.ndarray:
        logp = log_softmax64(z)
        terms = np.exp(self.gamma * (logp + _log_one_minus_p(z)))
        top = np.argsort(-logp, axis=1, kind="stable")[:, : self.top_m]
        return np.take_along_axis(terms, top, 1).sum(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._gen, outputs.logits)
