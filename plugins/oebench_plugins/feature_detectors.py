"""Post-hoc detectors on penultimate features (and GEN on logits). Float64; higher = more anomalous.

Every fit and score streams over row blocks of ``CHUNK`` rows, so that 50,000 x 512 training
features need little memory beyond the arrays themselves (benchmarks/perf/perf_detectors_memory.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

import oebench.api as oebench
from oebench.api import Detector, Head, Outputs, log_softmax64, logsumexp64

CHUNK = 4096
KNN_QUERY_CHUNK = 1024
KNN_BANK_CHUNK = 8192


# -- shared helpers ------------------------------------------------------------------------------
def _blocks(array: np.ndarray, size: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """Consecutive row blocks (``CHUNK`` rows) of ``array`` as float64 copies, with their rows."""
    size = size or CHUNK
    for start in range(0, len(array), size):
        rows = slice(start, start + size)
        yield rows, np.array(array[rows], dtype=np.float64)


def _map_rows(fn: Callable[[np.ndarray], np.ndarray], array: np.ndarray) -> np.ndarray:
    """``fn`` applied to float64 row blocks, concatenated into one float64 vector."""
    parts = [fn(block) for _, block in _blocks(array)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _features(outputs: Outputs) -> np.ndarray:
    if outputs.features is None:
        raise ValueError("this detector needs penultimate features, but outputs have none")
    return outputs.features


def _labels(outputs: Outputs) -> np.ndarray:
    if outputs.labels is None:
        raise ValueError("this detector needs the class labels of the training outputs")
    return np.asarray(outputs.labels)


def _head(head: Head | None) -> Head:
    if head is None:
        raise ValueError("this detector needs the model's final linear layer (head)")
    return Head(np.asarray(head.weight, np.float64), np.asarray(head.bias, np.float64))


def _head_logits(features: np.ndarray, head: Head) -> np.ndarray:
    """``features @ W.T + b`` in float64."""
    return features @ head.weight.T + head.bias


def _free_energy(features: np.ndarray, head: Head) -> np.ndarray:
    """``-logsumexp`` of the logits that ``head`` gives for ``features`` (Liu et al., 2020)."""
    return -logsumexp64(_head_logits(features, head))


def _class_means(features: np.ndarray, inverse: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class means, accumulated block by block (classes indexed by ``inverse``)."""
    sums = np.zeros((n_classes, features.shape[1]))
    counts = np.bincount(inverse, minlength=n_classes).astype(np.float64)
    for rows, block in _blocks(features):
        onehot = np.zeros((n_classes, len(block)))
        onehot[inverse[rows], np.arange(len(block))] = 1.0
        sums += onehot @ block
    return sums / counts[:, None]


def _scatter(features: np.ndarray, centre: Callable[[slice], np.ndarray]) -> np.ndarray:
    """Sum of outer products of the rows minus their centres, ``centre(rows)``, block by block."""
    d = features.shape[1]
    total = np.zeros((d, d))
    for rows, block in _blocks(features):
        block -= centre(rows)
        total += block.T @ block
    return total


def _whitener(cov: np.ndarray) -> np.ndarray:
    """``V`` with ``V @ V.T = pinv(cov)``: eigenvectors / sqrt(eigenvalues), null space dropped."""
    vals, vecs = np.linalg.eigh(cov)
    keep = vals > max(vals.max(), 0.0) * len(vals) * np.finfo(np.float64).eps
    return vecs[:, keep] / np.sqrt(vals[keep])


def _sq_distances(
    block: np.ndarray, origin: np.ndarray, whitener: np.ndarray, centres: np.ndarray
) -> np.ndarray:
    """(n, C) squared Mahalanobis distances of rows to whitened ``centres`` (relative to origin)."""
    a = (block - origin) @ whitener
    d = (a * a).sum(1)[:, None] + (centres * centres).sum(1)[None, :] - 2.0 * a @ centres.T
    return np.maximum(d, 0.0)


def _percentile(array: np.ndarray, q: float) -> float:
    """``np.percentile(array, q)`` (linear method) over all entries, interpolated in float64."""
    flat = np.asarray(array).reshape(-1)
    pos = q / 100.0 * (flat.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, flat.size - 1)
    part = np.partition(flat, [lo, hi])
    a, b = float(part[lo]), float(part[hi])
    return a + (b - a) * (pos - lo)


def _check_percentile(percentile: float) -> float:
    if not 0.0 <= percentile < 100.0:
        raise ValueError(f"percentile must be in [0, 100), got {percentile}")
    return float(percentile)


# -- Gaussian (Mahalanobis-type) detectors -------------------------------------------------------
class Mahalanobis(Detector):
    """Min squared Mahalanobis distance to class means, tied covariance (Lee et al., NeurIPS 2018).

    Penultimate features only: no input preprocessing and no feature ensemble over layers.
    The covariance is the paper's ``1/N sum_c sum_i (x_i - mu_c)(x_i - mu_c)^T``, inverted with a
    pseudo-inverse so that dead (constant) features do not break the fit.
    """

    needs = frozenset({"features", "fit"})

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        classes, inverse = np.unique(_labels(train), return_inverse=True)
        means = _class_means(x, inverse, len(classes))
        counts = np.bincount(inverse, minlength=len(classes))
        self._origin = counts @ means / len(x)
        cov = _scatter(x, lambda rows: means[inverse[rows]]) / len(x)
        self._whitener = _whitener(cov)
        self._centres = (means - self._origin) @ self._whitener

    def _class_distances(self, block: np.ndarray) -> np.ndarray:
        return _sq_distances(block, self._origin, self._whitener, self._centres).min(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._class_distances, _features(outputs))


class RelativeMahalanobis(Mahalanobis):
    """Min over classes of MD_k - MD_0, MD_0 from one background Gaussian (Ren et al., 2021).

    Class Gaussians as in ``mahalanobis`` (tied covariance); the background Gaussian has the
    mean and covariance of all ID training features. Penultimate features only.
    """

    def fit(self, train: Outputs, head: Head | None) -> None:
        super().fit(train, head)
        x = _features(train)
        self._bg_whitener = _whitener(_scatter(x, lambda rows: self._origin) / len(x))

    def _relative(self, block: np.ndarray) -> np.ndarray:
        a = (block - self._origin) @ self._bg_whitener
        return self._class_distances(block) - (a * a).sum(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._relative, _features(outputs))


# -- nearest neighbours -------------------------------------------------------------------------
def _normalise(block: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)


class KNN(Detector):
    """Distance of normalised features to the k-th nearest ID train one (Sun et al., ICML 2022).

    k = 50 is the paper's CIFAR-10 value (it uses 200 for CIFAR-100, 1000 for ImageNet). The
    paper's faiss code scores the squared distance; the distance itself ranks identically.
    """

    needs = frozenset({"features", "fit"})

    def __init__(self, k: int = 50):
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = int(k)

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        if len(x) < self.k:
            raise ValueError(f"k={self.k} exceeds the number of training samples ({len(x)})")
        bank = np.empty(x.shape, dtype=np.float32)
        for rows, block in _blocks(x):
            bank[rows] = _normalise(block)
        self._bank = bank

    def _kth_distance(self, block: np.ndarray) -> np.ndarray:
        """Distance of each row to its k-th nearest bank row (k-th largest cosine similarity)."""
        import torch

        query = _normalise(block)
        q = torch.from_numpy(query.astype(np.float32))
        best_v = torch.empty(len(q), 0)
        best_i = torch.empty(len(q), 0, dtype=torch.long)
        for start in range(0, len(self._bank), KNN_BANK_CHUNK):
            sims = q @ torch.from_numpy(self._bank[start : start + KNN_BANK_CHUNK]).T
            v, i = torch.topk(sims, min(self.k, sims.shape[1]), dim=1)
            v, j = torch.topk(
                torch.cat([best_v, v], 1), min(self.k, best_v.shape[1] + v.shape[1]), dim=1
            )
            best_v, best_i = v, torch.cat([best_i, i + start], 1).gather(1, j)
        kth = self._bank[best_i[:, -1].numpy()].astype(np.float64)
        return np.linalg.norm(query - kth, axis=1)

    def score(self, outputs: Outputs) -> np.ndarray:
        x = _features(outputs)
        parts = [self._kth_distance(block) for _, block in _blocks(x, KNN_QUERY_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros(0)


# -- head-based detectors ------------------------------------------------------------------------
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


class ReAct(Detector):
    """Energy after clipping features at their p-th ID train percentile (Sun et al., NeurIPS 2021).

    The threshold is the ``percentile`` (default 90, as in the paper) of all entries of the ID
    train feature matrix; clipped features go through the head and are scored by free energy.
    """

    needs = frozenset({"features", "fit", "head"})

    def __init__(self, percentile: float = 90.0):
        self.percentile = _check_percentile(percentile)

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._head = _head(head)
        self._threshold = _percentile(_features(train), self.percentile)

    def _react(self, block: np.ndarray) -> np.ndarray:
        return _free_energy(np.minimum(block, self._threshold), self._head)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._react, _features(outputs))


def ash(features: np.ndarray, percentile: float, variant: str) -> np.ndarray:
    """ASH-p/-b/-s: keep each row's top ``n - round(n p / 100)`` entries, zero the rest, reshape.

    ``p`` keeps them as they are, ``b`` sets them to ``row sum / kept``, ``s`` scales them by
    ``exp(row sum / kept sum)``, as in the authors' code.
    """
    n = features.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    if k < 1:
        raise ValueError(f"percentile {percentile} prunes all {n} features")
    rows = np.arange(len(features))[:, None]
    keep = np.argpartition(features, n - k, axis=1)[:, n - k :]
    total = features.sum(1)
    out = np.zeros_like(features)
    if variant == "b":
        out[rows, keep] = (total / k)[:, None]
        return out
    out[rows, keep] = features[rows, keep]
    if variant == "s":
        kept = out.sum(1)
        ratio = np.divide(total, kept, out=np.zeros_like(total), where=kept != 0)
        out *= np.exp(ratio)[:, None]
    return out


class ASH(Detector):
    """Energy after activation shaping of the penultimate features (Djurisic et al., ICLR 2023).

    Default ASH-S@90 (``variant`` "p", "b" or "s"), applied to the pooled penultimate features
    as the paper does for ResNet-50; assumes non-negative (post-ReLU) features. It needs the
    head but no training data: ``fit`` receives ``train=None``.
    """

    needs = frozenset({"features", "head"})
    VARIANTS = ("p", "b", "s")

    def __init__(self, variant: str = "s", percentile: float = 90.0):
        variant = variant.lower().removeprefix("ash-")
        if variant not in self.VARIANTS:
            raise ValueError(f"ASH variant must be one of p, b, s, got {variant!r}")
        self.variant = variant
        self.percentile = _check_percentile(percentile)

    def fit(self, train: Outputs | None, head: Head | None) -> None:
        self._head = _head(head)

    def _ash(self, block: np.ndarray) -> np.ndarray:
        return _free_energy(ash(block, self.percentile, self.variant), self._head)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._ash, _features(outputs))


class ResidualNorm(ViM):
    """Norm of the feature residual off ViM's principal subspace (Wang et al., CVPR 2022).

    The paper's "Residual" baseline: ``||x^{P-perp}||`` with ViM's centring at ``-pinv(W) b`` and
    principal dimension (``vim_default_dim``), without the virtual logit's energy term.
    """

    def _vim(self, block: np.ndarray) -> np.ndarray:
        return self._residual_norm(block)


class DICE(Detector):
    """Energy through a head sparsified by ID weight contributions (Sun & Li, ECCV 2022).

    Contribution ``mean ID train feature_j * W_kj``; entries at or below the ``percentile``
    (default 90, the paper's CIFAR sparsity; 70 for ImageNet) of all contributions are set to
    zero in ``W``; the bias is kept. Score: free energy of the sparsified head's logits.
    """

    needs = frozenset({"features", "fit", "head"})

    def __init__(self, percentile: float = 90.0):
        self.percentile = _check_percentile(percentile)

    def fit(self, train: Outputs, head: Head | None) -> None:
        head = _head(head)
        x = _features(train)
        mean = sum(block.sum(0) for _, block in _blocks(x)) / len(x)
        contribution = mean[None, :] * head.weight
        threshold = _percentile(contribution, self.percentile)
        self._head = Head(np.where(contribution > threshold, head.weight, 0.0), head.bias)

    def _dice(self, block: np.ndarray) -> np.ndarray:
        return _free_energy(block, self._head)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._dice, _features(outputs))


def scale_features(features: np.ndarray, percentile: float) -> np.ndarray:
    """SCALE: every entry times ``exp(row sum / sum of the row's top n - round(n p / 100)))``."""
    n = features.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    if k < 1:
        raise ValueError(f"percentile {percentile} leaves none of the {n} features")
    top = np.partition(features, n - k, axis=1)[:, n - k :].sum(1)
    total = features.sum(1)
    ratio = np.divide(total, top, out=np.zeros_like(total), where=top != 0)
    return features * np.exp(ratio)[:, None]


class SCALE(Detector):
    """Energy after scaling the features by ASH-S's factor, without pruning (Xu et al., ICLR 2024).

    Default percentile 85 (OpenOOD v1.5's setting; pytorch-ood uses 65), on the pooled
    penultimate features as the paper does. Needs the head, no training data.
    """

    needs = frozenset({"features", "head"})

    def __init__(self, percentile: float = 85.0):
        self.percentile = _check_percentile(percentile)

    def fit(self, train: Outputs | None, head: Head | None) -> None:
        self._head = _head(head)

    def _scale(self, block: np.ndarray) -> np.ndarray:
        return _free_energy(scale_features(block, self.percentile), self._head)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._scale, _features(outputs))


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


class NNGuide(Detector):
    """Energy times its nearest-neighbour guidance (Park et al., ICCV 2023).

    Bank: the normalised ID training features, each times its confidence ``logsumexp(logits)``.
    Guidance: the mean of the ``k`` largest inner products of the normalised test features with
    the bank (k = 100 and the whole training set as bank; OpenOOD v1.5 uses k = 100 on a 1%
    subsample, pytorch-ood k = 10). Score ``-guidance * logsumexp(logits)``.
    """

    needs = frozenset({"logits", "features", "fit"})

    def __init__(self, k: int = 100):
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = int(k)

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        if len(x) < self.k:
            raise ValueError(f"k={self.k} exceeds the number of training samples ({len(x)})")
        confidence = logsumexp64(np.asarray(train.logits, dtype=np.float64))
        bank = np.empty(x.shape)
        for rows, block in _blocks(x):
            bank[rows] = _normalise(block) * confidence[rows, None]
        self._bank = bank

    def _guidance(self, block: np.ndarray) -> np.ndarray:
        """Mean of the k largest inner products of the normalised rows with the bank."""
        query = _normalise(block)
        best = np.empty((len(block), 0))
        for start in range(0, len(self._bank), KNN_BANK_CHUNK):
            sims = np.concatenate([best, query @ self._bank[start : start + KNN_BANK_CHUNK].T], 1)
            keep = min(self.k, sims.shape[1])
            best = np.partition(sims, sims.shape[1] - keep, axis=1)[:, sims.shape[1] - keep :]
        return best.mean(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        x, z = _features(outputs), np.asarray(outputs.logits, dtype=np.float64)
        parts = [
            -self._guidance(block) * logsumexp64(z[rows])
            for rows, block in _blocks(x, KNN_QUERY_CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)


# -- class prototypes ----------------------------------------------------------------------------
def _prototypes(x: np.ndarray, labels: np.ndarray, n_classes: int, use: np.ndarray) -> np.ndarray:
    """Per-class mean of the rows in ``use`` (falling back to all rows of the class; else 0)."""
    means = np.zeros((n_classes, x.shape[1]))
    for k in range(n_classes):
        rows = np.flatnonzero((labels == k) & use)
        if len(rows) == 0:
            rows = np.flatnonzero(labels == k)
        if len(rows):
            means[k] = np.asarray(x[rows], dtype=np.float64).mean(0)
    return means


class SHE(Detector):
    """Minus the inner product with the predicted class's stored pattern (Zhang et al., ICLR 2023).

    Simplified Hopfield energy: pattern ``S_k`` = mean feature of the ID training samples of class
    ``k`` that the model classifies correctly; score ``-<x, S_yhat>`` with ``yhat`` the predicted
    class. A class without correct samples uses all its samples; a class absent from training
    has a zero pattern (score 0).
    """

    needs = frozenset({"logits", "features", "fit"})

    def fit(self, train: Outputs, head: Head | None) -> None:
        z = np.asarray(train.logits)
        labels = _labels(train).astype(np.int64)
        self._patterns = _prototypes(_features(train), labels, z.shape[1], z.argmax(1) == labels)

    def score(self, outputs: Outputs) -> np.ndarray:
        predicted = np.asarray(outputs.logits).argmax(1)
        x = _features(outputs)
        parts = [-(block * self._patterns[predicted[rows]]).sum(1) for rows, block in _blocks(x)]
        return np.concatenate(parts) if parts else np.zeros(0)


class MaxCosine(Detector):
    """Minus the largest cosine similarity to an ID class-mean feature (cf. Techapanurak et al.,
    ACCV 2020, who use the classifier's weight vectors as class directions).

    Class means of all ID training features per label; zero vectors have cosine 0.
    """

    needs = frozenset({"features", "fit"})

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        classes, inverse = np.unique(_labels(train), return_inverse=True)
        self._directions = _normalise(_class_means(x, inverse, len(classes)))

    def _cosine(self, block: np.ndarray) -> np.ndarray:
        return -(_normalise(block) @ self._directions.T).max(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._cosine, _features(outputs))


class ASHP(ASH):
    """ASH-P: prune to the top entries, keep them as they are; default @60 (paper, ImageNet)."""

    def __init__(self, percentile: float = 60.0):
        super().__init__("p", percentile)


class ASHB(ASH):
    """ASH-B: prune, then binarise the kept entries to ``row sum / kept``; default @65."""

    def __init__(self, percentile: float = 65.0):
        super().__init__("b", percentile)


class ASHS(ASH):
    """ASH-S: prune, then scale the kept entries by ``exp(row sum / kept sum)``; default @90."""

    def __init__(self, percentile: float = 90.0):
        super().__init__("s", percentile)


# -- logits --------------------------------------------------------------------------------------
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


@oebench.hookimpl
def register_detectors(register):
    register(
        "mahalanobis",
        Mahalanobis,
        description="min class Mahalanobis distance, tied covariance, penultimate layer, "
        "no preprocessing (Lee et al. 2018)",
    )
    register(
        "relative-mahalanobis",
        RelativeMahalanobis,
        description="relative Mahalanobis distance, min over classes (Ren et al. 2021)",
    )
    register(
        "knn",
        KNN,
        description="k-th nearest-neighbour distance, normalised features, k=50 (Sun et al. 2022)",
    )
    register("vim", ViM, description="virtual-logit matching (Wang et al. 2022)")
    register(
        "react",
        ReAct,
        description="energy of features clipped at the 90th ID percentile (Sun et al. 2021)",
    )
    register("ash", ASH, description="ASH-S@90 activation shaping + energy (Djurisic et al. 2023)")
    register("gen", GEN, description="generalized entropy, gamma=0.1, M=100 (Liu et al. 2023)")
    register("ash-p", ASHP, description="ASH-P@60 pruning + energy (Djurisic et al. 2023)")
    register(
        "ash-b", ASHB, description="ASH-B@65 binarised pruning + energy (Djurisic et al. 2023)"
    )
    register("ash-s", ASHS, description="ASH-S@90, the same as 'ash' (Djurisic et al. 2023)")
    register(
        "residual",
        ResidualNorm,
        description="feature residual norm off ViM's principal subspace (Wang et al. 2022)",
    )
    register(
        "dice",
        DICE,
        description="energy through the head sparsified at the 90th contribution percentile "
        "(Sun & Li 2022)",
    )
    register(
        "scale",
        SCALE,
        description="energy of features scaled by ASH-S's factor, p=85 (Xu et al. 2024)",
    )
    register("fdbd", FDBD, description="distance to decision boundaries (Liu & Qin 2024)")
    register(
        "nnguide",
        NNGuide,
        description="energy x nearest-neighbour guidance, k=100 (Park et al. 2023)",
    )
    register(
        "she",
        SHE,
        description="simplified Hopfield energy with class patterns (Zhang et al. 2023)",
    )
    register(
        "max-cosine",
        MaxCosine,
        description="max cosine similarity to ID class-mean features (Techapanurak et al. 2020)",
    )
