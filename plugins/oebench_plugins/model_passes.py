"""Model detectors on the last layer: RankFeat, MC dropout, Mahalanobis on preprocessed inputs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from oebench.api import Detector, Head, Outputs
from oebench_plugins.model_maps import _cat, feature_map

if TYPE_CHECKING:
    import torch

    from oebench.api import Classifier


def _energy(logits: torch.Tensor) -> np.ndarray:
    """Free energy ``-logsumexp(z)`` of float logits, in float64 numpy."""
    import torch

    return -torch.logsumexp(logits.detach().double(), dim=1).cpu().numpy()


def remove_rank1(maps: torch.Tensor) -> torch.Tensor:
    """Each (C, H*W) map minus its leading singular triple ``s1 u1 v1^T`` (float64).

    ``s1 u1 v1^T = u1 u1^T X = X v1 v1^T``, with ``u1`` / ``v1`` the top eigenvector of the
    smaller Gram matrix: exact like an SVD, and several times faster than a batched SVD on CPU.
    """

    m = maps.detach().double().flatten(2)
    if m.shape[1] <= m.shape[2]:
        u = _top_eigenvector(m @ m.transpose(1, 2))
        rest = m - u @ (u.transpose(1, 2) @ m)
    else:
        v = _top_eigenvector(m.transpose(1, 2) @ m)
        rest = m - (m @ v) @ v.transpose(1, 2)
    return rest.view(maps.shape)


def _top_eigenvector(gram: torch.Tensor) -> torch.Tensor:
    """(N, D, 1) eigenvectors of the largest eigenvalues of a batch of symmetric matrices.

    On CPU the batched ``eigh`` runs on one thread: with several, LAPACK's threads inside
    torch's batch loop oversubscribe the cores (measured 100x slower on 2 busy cores).
    """
    import torch

    if gram.is_cuda:
        return torch.linalg.eigh(gram)[1][:, :, -1:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(gram)[1][:, :, -1:]
    finally:
        torch.set_num_threads(threads)


class RankFeat(Detector):
    """Energy after removing the rank-1 part of the last feature map (Song et al., NeurIPS 2022).

    The paper's single-block variant at the last block (before global pooling); the map minus
    ``s1 u1 v1^T`` (exact, not the paper's optional power iteration) is average-pooled and
    sent through the head. Needs a network whose features are the mean of a feature map (see
    ``feature_map``); the block-3 + block-4 fusion is not included.
    """

    needs = frozenset({"model"})

    def _score_batch(self, model: Classifier, x: torch.Tensor) -> np.ndarray:
        import torch

        with torch.no_grad():
            maps, features = feature_map(model, x)
            pooled = remove_rank1(maps).mean((2, 3)).to(features.dtype)
            return _energy(model.forward_head(pooled))

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        return _cat([self._score_batch(model, x) for x in batches])


def _stochastic(model: Classifier) -> dict:
    """Put the model in training mode but keep batch norm in eval mode; returns the old flags."""
    from torch import nn

    flags = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return flags


class MCDropout(Detector):
    """MSP of the softmax averaged over T passes with dropout on (Gal & Ghahramani, ICML 2016).

    ``samples`` = 30 passes (pytorch-ood's default) with dropout in training mode and batch norm
    in eval mode; the random masks come from ``seed`` (the global RNG is restored afterwards), so
    the same seed gives the same scores. Score ``log((1 - p) / p)`` of the largest mean
    probability ``p``, in log space (``1 - p`` from the other classes). Needs a model with
    dropout (for example ``small-cnn`` with ``dropout = 0.3``, the Wide ResNets): if every pass
    gives the same logits it raises instead of reporting plain MSP. Costs ``samples`` forward
    passes per input, about ten times ODIN.
    """

    needs = frozenset({"model"})

    def __init__(self, samples: int = 30, seed: int = 0):
        if int(samples) < 2:
            raise ValueError(f"samples must be at least 2, got {samples}")
        self.samples = int(samples)
        self.seed = int(seed)

    def _log_mean_probs(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        """``log`` of the softmax averaged over the passes, (N, K) float64, in log space."""
        import math

        import torch

        passes = [model(x).detach().double() for _ in range(self.samples)]
        if all(torch.equal(passes[0], p) for p in passes[1:]):
            raise ValueError("mc-dropout: every pass gave the same logits (no active dropout)")
        logp = torch.stack([p.log_softmax(1) for p in passes])
        return torch.logsumexp(logp, 0) - math.log(self.samples)

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        import math

        import torch

        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        parts, flags = [], _stochastic(model)
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(self.seed)
                for x in batches:
                    logp = self._log_mean_probs(model, x)
                    top = logp.argmax(1, keepdim=True)
                    rest = torch.logsumexp(logp.scatter(1, top, -math.inf), 1)
                    parts.append((rest - logp.gather(1, top)[:, 0]).cpu().numpy())
        finally:
            for m, training in flags.items():
                m.train(training)
        return _cat(parts)


class MahalanobisPreprocessed(Detector):
    """Mahalanobis distance after Lee et al.'s input preprocessing (NeurIPS 2018), last layer.

    Class means and tied covariance as ``mahalanobis`` (fit on the ID training features); each
    input moves ``epsilon`` (on [0, 1] pixels, as ODIN here) against the gradient sign of its
    squared distance to the closest class mean; the score is the min squared distance of the
    moved input. ``epsilon`` = 0.002 (pytorch-ood's default; the paper tunes it over
    {0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01} on validation data). The paper's feature
    ensemble over layers (without preprocessing) is ``mahalanobis-ensemble``.
    """

    needs = frozenset({"model", "fit", "features"})

    def __init__(self, epsilon: float = 0.002):
        if epsilon < 0:
            raise ValueError(f"epsilon must be non-negative, got {epsilon}")
        self.epsilon = float(epsilon)

    def fit(self, train: Outputs, head: Head | None) -> None:
        from oebench_plugins.feature_detectors import Mahalanobis

        gauss = Mahalanobis()
        gauss.fit(train, None)
        self._gauss = (gauss._origin, gauss._whitener, gauss._centres)

    def _distances(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) squared Mahalanobis distances, float64, differentiable in ``features``."""
        import torch

        origin, whitener, centres = (
            torch.as_tensor(a, dtype=torch.float64, device=features.device) for a in self._gauss
        )
        a = (features.double() - origin) @ whitener
        return ((a[:, None, :] - centres[None, :, :]) ** 2).sum(2)

    def _score_batch(self, model: Classifier, x: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            loss = self._distances(model.forward_features(x)).min(1).values.sum()
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            moved = x.detach() - self.epsilon * grad.sign()
            return self._distances(model.forward_features(moved)).min(1).values.cpu().numpy()

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        return _cat([self._score_batch(model, x) for x in batches])
