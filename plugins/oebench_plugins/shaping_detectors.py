"""Feature-shaping and activation detectors: VRA, BATS, LTS, AdaScale, NCI, NAC-UE.

Float64, higher = more anomalous. All but AdaScale (which perturbs the input images, so it
runs the model) work on the penultimate features and the head, in row blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

import oebench.api as oebench
from oebench.api import Detector, Head, Outputs, logsumexp64
from oebench_plugins.feature_common import (
    _blocks,
    _features,
    _free_energy,
    _head,
    _head_logits,
    _map_rows,
)

if TYPE_CHECKING:
    import torch

    from oebench.api import Classifier

COLUMNS = 64  #: feature columns per ``np.percentile`` call in VRA's fit (a float64 copy)


def _feature_mean(x: np.ndarray) -> np.ndarray:  # streamed over row blocks
    return sum(block.sum(0) for _, block in _blocks(x)) / len(x)


def mass_ratio(features: np.ndarray, percentile: np.ndarray | float) -> np.ndarray:
    """``sum(relu z) / sum of the top-k of relu z``, ``k = max(1, n - round(n p / 100))``.

    SCALE's factor (as used by LTS and AdaScale) with a per-row percentile ``p``; a row with no
    positive entry gets 1 (no scaling).
    """
    z = np.maximum(features, 0.0)
    n = z.shape[1]
    p = np.broadcast_to(np.asarray(percentile, dtype=np.float64), (len(z),))
    k = np.maximum(1, n - np.round(n * p / 100.0).astype(np.int64))
    top = np.cumsum(-np.sort(-z, axis=1), axis=1)[np.arange(len(z)), k - 1]  # top-k[i] sums
    total = z.sum(1)
    return np.divide(total, top, out=np.ones_like(total), where=top > 0)


def _check_fraction(name: str, value: float, low: float = 0.0, high: float = 100.0) -> float:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


class VRA(Detector):
    """Energy after VRA's piecewise rectification of the features (Xu et al., NeurIPS 2023).

    Per feature, ``alpha`` / ``beta`` are its ``lower`` / ``upper`` percentiles over the ID train
    features (defaults 60 / 90: the authors' CIFAR-10 setting, q1 = 0.6, q2 = 0.9). A value above
    ``beta`` becomes ``beta``; one in ``[alpha, beta]`` gets ``+ gamma`` (0: VRA; the authors'
    VRA+ uses 0.6); one below ``alpha`` becomes 0 (``below="zero"``, the paper's operator) or
    ``alpha`` (``below="clip"``: pytorch-ood's and OpenOOD's two-sided clipping; pytorch-ood's
    defaults are ``lower=1, upper=99``). Score: free energy of the head's logits.
    """

    needs = frozenset({"features", "fit", "head"})
    BELOW = ("zero", "clip")

    def __init__(
        self, lower: float = 60.0, upper: float = 90.0, below: str = "zero", gamma: float = 0.0
    ):
        self.lower = _check_fraction("lower", lower)
        self.upper = _check_fraction("upper", upper)
        if self.lower > self.upper:
            raise ValueError(f"lower ({lower}) must not exceed upper ({upper})")
        if below not in self.BELOW:
            raise ValueError(f"below must be one of {self.BELOW}, got {below!r}")
        self.below, self.gamma = below, float(gamma)

    def memory(self, train_rows: int, test_rows: int, dim: int, classes: int) -> int:
        """A float64 copy of ``COLUMNS`` feature columns of every train row (and its sort)."""
        own = super().memory(train_rows, test_rows, dim, classes)
        return own + 8 * 2 * train_rows * min(COLUMNS, dim)

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        x = _features(train)
        q, starts = [self.lower, self.upper], range(0, x.shape[1], COLUMNS)
        parts = [np.percentile(np.asarray(x[:, c : c + COLUMNS], np.float64), q, 0) for c in starts]
        self._alpha, self._beta = np.concatenate(parts, axis=1)  # one column block copied at a time

    def _vra(self, block: np.ndarray) -> np.ndarray:
        floor = 0.0 if self.below == "zero" else self._alpha
        shaped = np.where(block > self._beta, self._beta, block + self.gamma)
        return _free_energy(np.where(block < self._alpha, floor, shaped), self._head)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._vra, _features(outputs))


class BATS(Detector):
    """Energy after truncating features to ``mu +- lam sigma`` (Zhu et al., NeurIPS 2022).

    The paper takes ``mu`` / ``sigma`` from the BatchNorm layer before the features (its
    ``beta`` / ``gamma``); the engine gives the features and the head, no BN statistics, so they
    are the per-feature mean and (population) standard deviation of the ID train features, as
    the authors' released code does for CIFAR and ViT (``*_features_mean/std.pt``). Default
    ``lam`` = 3.25, that code's CIFAR setting (1.05 for the ImageNet ViT).
    """

    needs = frozenset({"features", "fit", "head"})

    def __init__(self, lam: float = 3.25):
        if lam <= 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.lam = float(lam)

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        x = _features(train)
        mean = _feature_mean(x)
        var = sum(((block - mean) ** 2).sum(0) for _, block in _blocks(x)) / len(x)
        self._low, self._high = mean - self.lam * np.sqrt(var), mean + self.lam * np.sqrt(var)

    def _bats(self, block: np.ndarray) -> np.ndarray:
        return _free_energy(np.clip(block, self._low, self._high), self._head)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._bats, _features(outputs))


class LTS(Detector):
    """Energy of logits scaled by ``(sum relu z / top-k sum of relu z)^2`` (Djurisic et al., 2025).

    ``k = max(1, n - round(n percentile / 100))`` with ``percentile`` = 95 (pytorch-ood's
    ``p = 0.05``, the top 5 % of the activations); the ReLU is the official code's. The
    unscaled logits come from the head. Needs the head, no training data.
    """

    needs = frozenset({"features", "head"})

    def __init__(self, percentile: float = 95.0):
        self.percentile = _check_fraction("percentile", percentile)

    def fit(self, train: Outputs | None, head: Head | None) -> None:
        self._head = _head(head)

    def _lts(self, block: np.ndarray) -> np.ndarray:
        scale = mass_ratio(block, self.percentile) ** 2
        return -logsumexp64(_head_logits(block, self._head) * scale[:, None])

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._lts, _features(outputs))


class NCI(Detector):
    """Negative NCI: ``-(w_c . (h - mu) / ||h - mu|| + alpha ||h||_1)`` (Liu & Qin, CVPR 2025).

    ``mu`` is the mean ID train feature, ``w_c`` the head's weight row of the predicted class
    (its norm is not divided out, as in the authors' and pytorch-ood's code); ``alpha`` = 1e-4 is
    OpenOOD's default from the authors' sweep (pytorch-ood's default is 0). A feature at ``mu``
    gets 0 for the first term.
    """

    needs = frozenset({"features", "fit", "head"})

    def __init__(self, alpha: float = 1e-4):
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        self._mean = _feature_mean(_features(train))

    def _nci(self, block: np.ndarray) -> np.ndarray:
        w = self._head.weight[_head_logits(block, self._head).argmax(1)]
        centred = block - self._mean
        norm = np.linalg.norm(centred, axis=1)
        dot = (centred * w).sum(1)
        cos = np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)
        return -(cos + self.alpha * np.abs(block).sum(1))

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._nci, _features(outputs))


def geometric_bins(m: int, eps: float = 1e-6) -> np.ndarray:
    """Bin edges on (0, 1) spaced geometrically towards 0 and towards 1 (pytorch-ood's NAC)."""
    left = np.logspace(math.log10(eps), math.log10(0.5), m // 2 + 1)
    return np.concatenate([left, 1.0 - left[::-1][1:]])


class NACUE(Detector):
    """Negative neuron activation coverage of the penultimate layer (Liu et al., ICLR 2024).

    Per neuron, ``sigmoid(alpha z dKL/dz)`` with ``KL(u || softmax(Wz + b))``, whose gradient is
    ``W^T (softmax - u)`` in closed form (pytorch-ood gets it by autograd, with ``log(p + 1e-12)``),
    falls into one of ``bins`` geometric bins; ``fit`` counts each neuron's ID train hits per
    bin. Score: minus the mean over neurons of ``min(count / o_star, 1)``. Defaults
    ``bins`` = 50, ``alpha`` = 100, ``o_star`` = 50: pytorch-ood's ``NACUE``.
    """

    needs = frozenset({"features", "fit", "head"})

    def __init__(self, bins: int = 50, alpha: float = 100.0, o_star: int = 50):
        if int(bins) < 2 or int(o_star) < 1 or alpha <= 0:
            raise ValueError("bins must be >= 2, o_star >= 1 and alpha > 0")
        self.bins, self.alpha, self.o_star = int(bins), float(alpha), int(o_star)

    def _bin(self, block: np.ndarray) -> np.ndarray:
        logits = _head_logits(block, self._head)
        p = np.exp(logits - logsumexp64(logits)[:, None])
        grad = (p - 1.0 / p.shape[1]) @ self._head.weight
        z = 0.5 * (1.0 + np.tanh(0.5 * self.alpha * block * grad))  # the sigmoid, overflow-free
        z = np.clip(z, 1e-6, 1 - 1e-6)
        return np.clip(np.searchsorted(self._edges, z, side="left") - 1, 0, self.bins - 1)

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        self._edges = geometric_bins(self.bins)
        x = _features(train)
        d = x.shape[1]
        offsets = np.arange(d) * self.bins
        counts = np.zeros(d * self.bins, dtype=np.int64)
        for _, block in _blocks(x):
            counts += np.bincount((self._bin(block) + offsets).ravel(), minlength=d * self.bins)
        self._counts = counts.reshape(d, self.bins)

    def _coverage(self, block: np.ndarray) -> np.ndarray:
        hits = self._counts[np.arange(block.shape[1]), self._bin(block)]
        return -np.minimum(hits / self.o_star, 1.0).mean(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._coverage, _features(outputs))


class AdaScale(Detector):
    """Energy after SCALE with a per-sample percentile from a perturbation (Regmi, 2025).

    The authors' OpenOOD recipe: the ``o`` (5 %) input values with the smallest gradient of
    the top logit move by ``0.5 sign(grad)`` (in the network's normalised input units; the
    gradient is ranked in those units too); ``Q' = C_o + lmbda Q`` with ``C_o`` the perturbed
    ReLU features summed over the top-``k1`` % (5) of the original features and ``Q`` the
    absolute feature shift over the top-``k2`` % (1), each at least one feature. ``fit_inputs``
    keeps the ID train ``Q'`` (every s-th training image, at most ``max_fit`` = 5000, for
    OpenOOD's 5000 random ID validation images); a test sample's percentile is ``p_min + (1 -
    ECDF(Q')) (p_max - p_min)`` ([75, 85], OpenOOD's default). Its factor ``r`` = sum of relu
    features / sum of their top ``n - round(n p / 100)``; AdaScale-A scores the logits of
    ``features * exp(r)``, AdaScale-L the logits times ``r^2``; score: free energy. Cost per
    image: a forward and an input-gradient backward pass, then a second forward pass.
    """

    needs = frozenset({"model", "fit"})
    logit_scaling: ClassVar[bool] = False

    def __init__(
        self,
        min_percentile: float = 75.0,
        max_percentile: float = 85.0,
        k1: float = 5.0,
        k2: float = 1.0,
        lmbda: float = 10.0,
        o: float = 0.05,
        max_fit: int = 5000,
    ):
        if not 0 < min_percentile <= max_percentile < 100:
            raise ValueError("need 0 < min_percentile <= max_percentile < 100")
        if not (0 < k1 <= 100 and 0 < k2 <= 100 and 0 <= o <= 1 and int(max_fit) >= 1):
            raise ValueError("need k1, k2 in (0, 100], o in [0, 1] and max_fit >= 1")
        self.min_percentile, self.max_percentile = float(min_percentile), float(max_percentile)
        self.k1, self.k2, self.lmbda, self.o = float(k1), float(k2), float(lmbda), float(o)
        self.max_fit = int(max_fit)

    def fit(self, train: Outputs | None, head: Head | None) -> None:
        self._n_train = len(train) if train is not None else 0
        self._id_q: np.ndarray | None = None

    def _shift(self, model: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """The features of ``x`` and their perturbation statistic ``Q'`` (float64)."""
        import torch

        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            features = model.forward_features(x)
            logits = model.forward_head(features)
            top = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(top, x)
        features, x = features.detach(), x.detach()
        std = getattr(model, "std", None)
        unit = std if std is not None else torch.ones((), dtype=x.dtype, device=x.device)
        flat = (grad * unit).abs().flatten(1)  # the gradient w.r.t. the normalised input
        n_moved = int(flat.shape[1] * self.o)
        mask = torch.zeros_like(flat)
        mask.scatter_(1, flat.topk(n_moved, dim=1, largest=False).indices, 1.0)
        with torch.no_grad():
            moved = model.forward_features(x + grad.sign() * mask.view_as(x) * 0.5 * unit)
        f, g = features.double().cpu().numpy(), moved.double().cpu().numpy()
        d = f.shape[1]
        order = np.argsort(-f, axis=1, kind="stable")
        top1 = order[:, : max(1, int(d * self.k1 / 100))]
        top2 = order[:, : max(1, int(d * self.k2 / 100))]
        c_o = np.take_along_axis(np.maximum(g, 0.0), top1, 1).sum(1)
        q = np.take_along_axis(np.abs(f - g), top2, 1).sum(1)
        return features, c_o + self.lmbda * q

    def fit_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> None:
        """The ``Q'`` of every s-th ID training image (``s`` spreads ``max_fit`` over them)."""
        step = max(1, math.ceil(getattr(self, "_n_train", 0) / self.max_fit))
        seen, parts = 0, []
        for x in batches:
            rows = [i for i in range(len(x)) if (seen + i) % step == 0]
            seen += len(x)
            if rows:
                parts.append(self._shift(model, x[rows])[1])
        if not parts:
            raise ValueError("adascale: no ID training images to fit the ECDF on")
        self._id_q = np.sort(np.concatenate(parts))

    def percentile(self, q: np.ndarray) -> np.ndarray:
        """Per sample, ``p_min + (1 - ECDF(q)) (p_max - p_min)`` over the ID train ``Q'``."""
        if getattr(self, "_id_q", None) is None:
            raise ValueError("adascale: fit_inputs() must run on ID training images first")
        cdf = np.searchsorted(self._id_q, q, side="right") / len(self._id_q)
        return self.min_percentile + (1.0 - cdf) * (self.max_percentile - self.min_percentile)

    def _energy(self, model: Classifier, x: torch.Tensor) -> np.ndarray:
        import torch

        features, q = self._shift(model, x)
        f = features.double().cpu().numpy()
        r = mass_ratio(f, self.percentile(q))
        with torch.no_grad():
            if self.logit_scaling:
                logits = model.forward_head(features).double().cpu().numpy() * (r**2)[:, None]
            else:
                scaled = torch.from_numpy(f * np.exp(r)[:, None]).to(features)
                logits = model.forward_head(scaled).double().cpu().numpy()
        return -logsumexp64(logits)

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        parts = [self._energy(model, x) for x in batches]
        return np.concatenate(parts) if parts else np.zeros(0)


class AdaScaleA(AdaScale):
    """AdaScale-A: the features are scaled by ``exp(r)`` before the head."""


class AdaScaleL(AdaScale):
    """AdaScale-L: the logits are scaled by ``r^2``."""

    logit_scaling = True


@oebench.hookimpl
def register_detectors(register):
    register(
        "vra",
        VRA,
        description="energy after zeroing features below their 60th ID percentile and capping "
        "them at the 90th (Xu et al., NeurIPS 2023)",
    )
    register(
        "bats",
        BATS,
        description="energy after truncating features to mean +- 3.25 std of the ID train "
        "features (Zhu et al., NeurIPS 2022)",
    )
    register(
        "lts",
        LTS,
        description="energy of logits scaled by the squared top-5% activation ratio "
        "(Djurisic et al., MVA 2025)",
    )
    for name, cls, what in (
        ("adascale-a", AdaScaleA, "features"),
        ("adascale-l", AdaScaleL, "logits"),
    ):
        register(
            name,
            cls,
            description=f"energy after SCALE-style scaling of the {what} with a percentile "
            "adapted to an input perturbation; needs the model (Regmi, arXiv 2025)",
            modalities=["image"],  # perturbs pixels along the input gradient
        )
    register(
        "nci",
        NCI,
        description="negative cosine of centred features to the predicted class weight plus "
        "an L1 feature-norm term (Liu & Qin, CVPR 2025)",
    )
    register(
        "nac-ue",
        NACUE,
        description="negative ID coverage of binned sigmoid(alpha z dKL/dz) per penultimate "
        "neuron (Liu et al., ICLR 2024)",
    )
