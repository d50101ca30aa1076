"""Probability and gradient detectors: WEBO, PNML, DOCTOR, iODIN, GradNorm, GradUncertainty."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
from annotated_types import Gt

import oebench.api as oebench
from oebench.api import Detector, Head, Outputs, log_softmax64, logsumexp64, msp_log_odds
from oebench_plugins.feature_common import (
    _blocks,
    _features,
    _head,
    _head_logits,
    _map_rows,
    _normalise,
)
from oebench_plugins.input_detectors import ODIN

if TYPE_CHECKING:
    import torch

    from oebench.api import Classifier

Temperature = Annotated[float, Gt(0)]


def _log_complement(logp: np.ndarray) -> np.ndarray:
    """``log(1 - p)`` of every entry of log-softmax rows, exact for the top class near 1 too
    (there: ``logsumexp`` of the other entries; elsewhere ``p <= 1/2`` and ``log1p`` is exact)."""
    with np.errstate(divide="ignore"):
        out = np.log1p(-np.exp(logp))
    rows, top = np.arange(len(logp)), logp.argmax(1)
    rest = logp.copy()
    rest[rows, top] = -np.inf
    out[rows, top] = logsumexp64(rest)
    return out


def _temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return float(temperature)


def _logits64(outputs: Outputs, temperature: float = 1.0) -> np.ndarray:
    return np.asarray(outputs.logits, dtype=np.float64) / temperature


class WEBO(Detector):
    """Weighted energy ``-log sum_k relu(w_k) exp(z_k)`` (Du et al., ICLR 2022, VOS).

    ``w`` are VOS's learned per-class energy weights (``Linear(classes, 1)``); VOS trains them
    next to the network, but they are not part of a checkpoint here, so they are an option:
    ``weights`` (one per class, negative entries clipped to 0 as in VOS and pytorch-ood's
    ``WeightedEBO``), or ``None`` for all ones, which is the free energy. Computed as
    ``-logsumexp(z + log relu(w))`` in float64 (no overflow of ``exp(z)``).
    """

    def __init__(self, weights: list[float] | None = None):
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.ndim != 1 or not np.isfinite(w).all() or not (w > 0).any():
                raise ValueError("webo weights must be a list of finite numbers, one positive")
            weights = [float(v) for v in w]
        self.weights = weights

    def score(self, outputs: Outputs) -> np.ndarray:
        z = _logits64(outputs)
        if self.weights is None:
            return -logsumexp64(z)
        if len(self.weights) != z.shape[1]:
            raise ValueError(f"webo has {len(self.weights)} weights for {z.shape[1]} classes")
        with np.errstate(divide="ignore"):
            log_w = np.log(np.maximum(np.asarray(self.weights), 0.0))
        return -logsumexp64(z + log_w[None, :])


class PNML(Detector):
    """pNML regret of the last layer (Bibas et al., NeurIPS 2021).

    Fit: ``P = pinv(X^T X)`` of the L2-normalised ID train features ``X`` (all of them, as the
    authors' code does). Score of a feature ``f``: ``u = f / |f|``, ``p = softmax(W u + b)``
    (the head on the normalised feature, bias included, as in the authors' code and
    pytorch-ood), ``g = u^T P u / (1 + u^T P u)`` and the regret
    ``log(sum_k p_k / (p_k + (1 - p_k) p_k^g)) / log C`` in [0, 1]: 0 where ``u`` lies outside
    the span of the train features (the pseudo-inverse is 0 there) or ``p`` is one-hot. Each
    term is ``sigmoid(-(log(1 - p_k) + (g - 1) log p_k))`` in float64, without clamping ``p``.
    """

    needs = frozenset({"features", "fit", "head"})

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        x = _features(train)
        gram = np.zeros((x.shape[1], x.shape[1]))
        for _, block in _blocks(x):
            u = _normalise(block)
            gram += u.T @ u
        self._projector = np.linalg.pinv(gram, hermitian=True)

    def _regret(self, block: np.ndarray) -> np.ndarray:
        u = _normalise(block)
        logp = log_softmax64(_head_logits(u, self._head))
        kappa = np.maximum(((u @ self._projector) * u).sum(1), 0.0)
        g = (kappa / (1.0 + kappa))[:, None]
        log_odds = _log_complement(logp) + (g - 1.0) * logp
        terms = np.exp(-np.logaddexp(0.0, log_odds))
        return np.log(terms.sum(1)) / np.log(logp.shape[1])

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._regret, _features(outputs))


def doctor_alpha(z: np.ndarray) -> np.ndarray:
    """``log((1 - g) / g)`` with ``g = sum_k p_k^2`` of ``softmax(z)``, in log space:
    ``1 - g = sum_k p_k (1 - p_k)``, so a confident row is not rounded to ``1 - g = 0``."""
    logp = log_softmax64(z)
    return logsumexp64(logp + _log_complement(logp)) - logsumexp64(2.0 * logp)


class DoctorAlpha(Detector):
    """DOCTOR's D_alpha (Granese et al., NeurIPS 2021): ``(1 - g) / g``, ``g = sum_k p_k^2``.

    ``p = softmax(z / T)``; the paper's input pre-processing is left out (logits only: its
    "totally black box" setting, epsilon = 0). Score: the log of the ratio (same ranking,
    exact where the ratio would underflow); ``T = 1`` by default.
    """

    def __init__(self, temperature: Temperature = 1.0):
        self.temperature = _temperature(temperature)

    def score(self, outputs: Outputs) -> np.ndarray:
        return doctor_alpha(_logits64(outputs, self.temperature))


class DoctorBeta(DoctorAlpha):
    """DOCTOR's D_beta (Granese et al., NeurIPS 2021): ``P_err / (1 - P_err)``, with
    ``P_err = 1 - max_k p_k`` of ``softmax(z / T)``. Score: its log, the MSP log-odds at T."""

    def score(self, outputs: Outputs) -> np.ndarray:
        return msp_log_odds(_logits64(outputs, self.temperature))


class IODIN(ODIN):
    """ODIN that perturbs only the input entry with the largest gradient (Regmi, 2024).

    As OpenOOD's ``iodin`` postprocessor (arXiv 2411.10794): the gradient of
    ``CE(f(x) / T, argmax f(x))``, then only the one entry (channel and pixel) of each image
    whose gradient is largest in magnitude *with respect to the normalised input* (OpenOOD
    works on normalised tensors; that gradient is the pixel gradient times the channel's std)
    moves, by ``-epsilon * sign(gradient)`` in [0, 1] pixels, as ``odin`` does (OpenOOD's step
    ``noise / std`` in normalised units is the same). Ties go to the first entry; a zero
    gradient moves nothing (``sign(0) = 0``, as in ``odin``). Score: the MSP log-odds of the
    perturbed input at T. Defaults T = 1000, epsilon = 0.0014 (OpenOOD's ``iodin.yml``).
    """

    def _perturb(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model(x) / self.temperature
            loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        size = grad.abs()
        std = getattr(model, "std", None)
        if isinstance(std, torch.Tensor) and std.dim() == grad.dim():
            size = size * std.to(grad)
        flat = size.flatten(1)
        mask = torch.zeros_like(flat)
        mask[torch.arange(len(flat)), flat.argmax(1)] = 1.0
        return x.detach() - self.epsilon * grad.sign() * mask.view_as(grad)


def _probabilities(outputs: Outputs, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax64(_logits64(outputs, temperature)))


class GradNorm(Detector):
    """Negative GradNorm (Huang et al., NeurIPS 2021), in closed form from features and logits.

    The paper's score is ``|| d KL(u || softmax(z / T)) / d W ||_1`` of the last layer's weights
    ``W`` (ID inputs get larger ones). With ``z = W f + b``, ``d/dz = (softmax(z / T) - u) / T``
    and ``d/dW`` is its outer product with ``f``, so the L1 norm is
    ``||softmax(z / T) - u||_1 * ||f||_1 / T``; with ``bias`` it is ``(||f||_1 + 1)`` instead (the
    bias's gradient is ``d/dz``): pytorch-ood's ``GradNorm`` on the head with its default filter
    (every parameter). The default is the paper's: weights only, ``T = 1``. The authors' code
    sums the cross-entropy over the classes instead of averaging it (the KL's gradient), which
    scales every score by C. Score: minus the norm (higher = more anomalous).
    """

    needs = frozenset({"logits", "features"})

    def __init__(self, temperature: Temperature = 1.0, bias: bool = False):
        self.temperature = _temperature(temperature)
        self.bias = bias

    def score(self, outputs: Outputs) -> np.ndarray:
        p = _probabilities(outputs, self.temperature)
        grad = np.abs(p - 1.0 / p.shape[1]).sum(1) / self.temperature
        size = _map_rows(lambda block: np.abs(block).sum(1), _features(outputs))
        return -grad * (size + float(self.bias))


class GradUncertainty(Detector):
    """Negative squared gradient norm of the last layer (Lee & AlRegib, ICIP 2020).

    As pytorch-ood's ``GradUncertainty`` on the head: the loss is the binary cross-entropy of
    ``softmax(z)`` against the all-ones "confounding label", ``-sum_k log p_k``, whose gradient
    w.r.t. the logits is ``C p - 1``; the squared L2 norm of its gradient w.r.t. ``W`` is
    ``||C p - 1||^2 ||f||^2``, plus ``||C p - 1||^2`` for the bias (``bias``, default on as
    pytorch-ood's default filter takes every parameter). The paper feeds per-layer norms of
    all layers to a classifier trained on OOD data; this is pytorch-ood's training-free
    simplification on the last layer (OpenOOD's choice). Score: minus the squared norm.
    """

    needs = frozenset({"logits", "features"})

    def __init__(self, bias: bool = True):
        self.bias = bias

    def score(self, outputs: Outputs) -> np.ndarray:
        p = _probabilities(outputs)
        grad = ((p.shape[1] * p - 1.0) ** 2).sum(1)
        size = _map_rows(lambda block: (block * block).sum(1), _features(outputs))
        return -grad * (size + float(self.bias))


@oebench.hookimpl
def register_detectors(register):
    register(
        "webo",
        WEBO,
        description="weighted energy -log sum relu(w_k) exp(z_k), w = 1 unless given "
        "(Du et al., ICLR 2022)",
    )
    register(
        "pnml",
        PNML,
        description="pNML regret of the L2-normalised features through the head, fit on ID "
        "train (Bibas et al., NeurIPS 2021)",
    )
    register(
        "doctor",
        DoctorAlpha,
        description="DOCTOR D_alpha, log((1 - sum p^2) / sum p^2), T=1 "
        "(Granese et al., NeurIPS 2021)",
    )
    register(
        "doctor-beta",
        DoctorBeta,
        description="DOCTOR D_beta, log(P_err / (1 - P_err)), T=1 (Granese et al., NeurIPS 2021)",
    )
    register(
        "iodin",
        IODIN,
        description="ODIN perturbing only the input entry of largest gradient, T=1000, "
        "epsilon=0.0014 on [0, 1] pixels (Regmi, arXiv 2024; 2411.10794, OpenOOD 2025)",
        modalities=["image"],
    )
    register(
        "gradnorm",
        GradNorm,
        description="minus L1 norm of the last layer's weight gradient of KL(uniform || softmax),"
        " T=1 (Huang et al., NeurIPS 2021)",
    )
    register(
        "grad-uncertainty",
        GradUncertainty,
        description="minus squared L2 norm of the last layer's gradient of BCE(softmax, 1) "
        "(Lee & AlRegib, ICIP 2020)",
    )
