"""Head-geometry detectors: ViM's residual off its principal subspace, fDBD's class boundaries."""

from __future__ import annotations

import numpy as np

from oebench.api import Detector, Head, Outputs
from oebench_plugins.feature_common import (
    _blocks,
    _features,
    _free_energy,
    _head,
    _head_logits,
    _map_rows,
    _scatter,
)


def vim_default_dim(feature_dim: int) -> int:
    """ViM reference code's principal dimension: 1000 (D >= 2048), 512 (D >= 768), else D // 2."""
    if feature_dim >= 2048:
        return 1000
    if feature_dim >= 768:
        return 512
    return feature_dim // 2


class ViM(Detector):
    """Virtual-logit matching: alpha ||x^{P-perp}|| - logsumexp(logits) (Wang et al., CVPR 2022).

    Features are centred at ``u = -pinv(W) b``; P spans the top ``dim`` eigenvectors of the
    uncentred covariance of ``x - u`` on ID train features (default ``vim_default_dim``);
    ``alpha`` = mean train max-logit / mean train residual norm. The score is the log-odds of the
    paper's virtual-logit softmax probability, so it ranks exactly as the paper's score.
    """

    needs = frozenset({"features", "fit", "head"})

    def __init__(self, dim: int | None = None):
        self.dim = dim

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        x = _features(train)
        dim = vim_default_dim(x.shape[1]) if self.dim is None else int(self.dim)
        if not 0 < dim < x.shape[1]:
            raise ValueError(f"dim must be in [1, {x.shape[1] - 1}], got {dim}")
        self._origin = -np.linalg.pinv(self._head.weight) @ self._head.bias
        vals, vecs = np.linalg.eigh(_scatter(x, lambda rows: self._origin) / len(x))
        self._residual_basis = vecs[:, np.argsort(-vals)[dim:]]
        max_logit = residual = 0.0
        for _, block in _blocks(x):
            max_logit += _head_logits(block, self._head).max(1).sum()
            residual += self._residual_norm(block).sum()
        if residual <= 0.0:
            raise ValueError("ViM: train features have no residual outside the principal subspace")
        self._alpha = max_logit / residual

    def _residual_norm(self, block: np.ndarray) -> np.ndarray:
        return np.linalg.norm((block - self._origin) @ self._residual_basis, axis=1)

    def _vim(self, block: np.ndarray) -> np.ndarray:
        return self._alpha * self._residual_norm(block) + _free_energy(block, self._head)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._vim, _features(outputs))


class ResidualNorm(ViM):
    """Norm of the feature residual off ViM's principal subspace (Wang et al., CVPR 2022).

    The paper's "Residual" baseline: ``||x^{P-perp}||`` with ViM's centring at ``-pinv(W) b`` and
    principal dimension (``vim_default_dim``), without the virtual logit's energy term.
    """

    def _vim(self, block: np.ndarray) -> np.ndarray:
        return self._residual_norm(block)


class FDBD(Detector):
    """Minus the mean decision-boundary distance over ``||x - mean||`` (Liu & Qin, ICML 2024).

    ``-1/(C-1) sum_{c != y} |l_y - l_c| / ||w_y - w_c||`` divided by the distance of the features
    to the mean ID training feature (``y`` = predicted class, ``l`` = head logits). Hyper-parameter
    free; a zero distance to the mean is clamped at 1e-12.
    """

    needs = frozenset({"features", "fit", "head"})

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        x = _features(train)
        self._mean = sum(block.sum(0) for _, block in _blocks(x)) / len(x)
        w = self._head.weight
        gaps = np.sqrt(
            np.maximum((w * w).sum(1)[:, None] + (w * w).sum(1)[None, :] - 2 * w @ w.T, 0)
        )
        np.fill_diagonal(gaps, 1.0)
        if (gaps <= 0).any():
            raise ValueError("fDBD: two classes have identical head weights")
        self._gaps = gaps

    def _fdbd(self, block: np.ndarray) -> np.ndarray:
        logits = _head_logits(block, self._head)
        top = logits.argmax(1)
        margin = np.abs(logits - logits[np.arange(len(block)), top][:, None])
        boundary = (margin / self._gaps[top]).sum(1) / (logits.shape[1] - 1)
        spread = np.maximum(np.linalg.norm(block - self._mean, axis=1), 1e-12)
        return -boundary / spread

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._fdbd, _features(outputs))
