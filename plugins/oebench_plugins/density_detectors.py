"""Density and distance detectors on features: GMM, SSD, Neural Relation Graph, IGEOOD."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from annotated_types import Ge, Gt

import oebench.api as oebench
from oebench.api import Detector, Head, Outputs, log_softmax64, logsumexp64, release_pages
from oebench_plugins.feature_common import (
    _blocks,
    _class_means,
    _features,
    _group_scatters,
    _labels,
    _map_rows,
    _scatter,
    _whitener,
)

#: NRG's query rows and train rows per kernel block (a 1024 x 4096 float64 block is 32 MiB)
NRG_QUERY_CHUNK = 1024
NRG_BANK_CHUNK = 4096

Covariance = Literal["full", "tied", "diag", "spherical"]


class GMM(Detector):
    """Minus the log-likelihood of the features under a Gaussian mixture fitted to ID train ones.

    ``components=0`` (default): class-conditional, as pytorch-ood's ``GMM``: one Gaussian per
    class label (its mean and biased covariance, ``reg`` added to the diagonal), weighted by the
    class's share of the training samples; no EM. ``components=K``: scikit-learn's
    ``GaussianMixture`` (K components by EM, k-means init, ``reg_covar=reg``,
    ``random_state=seed``), unsupervised as OpenOOD's (which uses ``covariance="tied"``).
    The class-conditional fit reads the features in row blocks (memory independent of the
    number of train rows); scikit-learn's EM (``components > 0``) needs every row in memory
    at once, a float64 copy of the train features.
    Score ``-log sum_k pi_k N(x | mu_k, Sigma_k)``, with the normalising constants.
    """

    needs = frozenset({"features", "fit"})

    def __init__(
        self,
        components: Annotated[int, Ge(0)] = 0,
        covariance: Covariance = "full",
        reg: Annotated[float, Ge(0)] = 1e-6,
        seed: int = 0,
    ):
        if int(components) < 0:
            raise ValueError(f"components must be 0 (one per class) or more, got {components}")
        if covariance not in ("full", "tied", "diag", "spherical"):
            raise ValueError(f"unknown covariance type {covariance!r}")
        if not float(reg) >= 0:
            raise ValueError(f"reg must be non-negative, got {reg}")
        self.components, self.covariance = int(components), str(covariance)
        self.reg, self.seed = float(reg), int(seed)
        self.min_train = max(self.components, 1)

    def memory(self, train_rows: int, test_rows: int, dim: int, classes: int) -> int:
        """Per-class covariances (``full``: ``classes x dim x dim``); EM keeps every row."""
        own = super().memory(train_rows, test_rows, dim, classes)
        k = self.components or classes
        per = dim * dim if self.covariance == "full" else dim
        every = 3 * train_rows * (dim + k) if self.components else 0
        return own + 8 * (2 * k * per + every + test_rows * k)

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        if self.components:
            from sklearn.mixture import GaussianMixture

            gm = GaussianMixture(
                self.components,
                covariance_type=self.covariance,
                reg_covar=self.reg,
                random_state=self.seed,
            ).fit(np.asarray(x, dtype=np.float64))
            weights, means, prec = gm.weights_, gm.means_, gm.precisions_cholesky_
        else:
            weights, means, prec = self._class_gaussians(x, _labels(train))
        self._set(np.asarray(weights), np.asarray(means), np.asarray(prec))

    def _class_gaussians(self, x: np.ndarray, labels: np.ndarray):
        """Class shares, means and precision Cholesky factors, in scikit-learn's layouts."""
        classes, inverse = np.unique(labels, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(classes)).astype(np.float64)
        means = _class_means(x, inverse, len(classes))
        weights, d = counts / counts.sum(), x.shape[1]
        if self.covariance in ("diag", "spherical"):
            squares = np.zeros_like(means)
            for rows, block in _blocks(x):
                block -= means[inverse[rows]]
                np.add.at(squares, inverse[rows], block * block)
            var = squares / counts[:, None] + self.reg
            var = var if self.covariance == "diag" else var.mean(1)
            if not (var > 0).all():
                raise ValueError(f"a class variance is 0; increase reg ({self.reg})")
            return weights, means, 1.0 / np.sqrt(var)
        if self.covariance == "tied":
            tied = _scatter(x, lambda rows: means[inverse[rows]]) / len(x)
            return weights, means, self._precision_cholesky(tied)
        prec = np.empty((len(classes), d, d))
        scatters = _group_scatters(x, inverse, means, np.arange(len(classes)))
        for k, scatter in enumerate(scatters):
            prec[k] = self._precision_cholesky(scatter / counts[k])
        return weights, means, prec

    def _precision_cholesky(self, cov: np.ndarray) -> np.ndarray:
        """``P`` lower-triangular-transposed with ``P @ P.T = inv(cov + reg I)``."""
        from scipy.linalg import solve_triangular

        cov = cov + self.reg * np.eye(len(cov))
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError(
                f"a covariance matrix is not positive definite; increase reg ({self.reg})"
            ) from None
        return solve_triangular(chol, np.eye(len(cov)), lower=True).T

    def _set(self, weights: np.ndarray, means: np.ndarray, prec: np.ndarray) -> None:
        """Keep ``log pi_k + log |P_k| - d/2 log 2 pi`` and what whitens rows per component."""
        d = means.shape[1]
        if self.covariance == "full":
            log_det = np.log(np.diagonal(prec, axis1=1, axis2=2)).sum(1)
        elif self.covariance == "tied":
            log_det = np.full(len(means), np.log(np.diag(prec)).sum())
        elif self.covariance == "diag":
            log_det = np.log(prec).sum(1)
        else:
            prec = np.repeat(prec[:, None], d, axis=1)
            log_det = np.log(prec).sum(1)
        with np.errstate(divide="ignore"):
            self._log_norm = np.log(weights) + log_det - 0.5 * d * np.log(2 * np.pi)
        self._means, self._prec = means, prec
        self._centres = means @ prec if self.covariance == "tied" else None

    def _log_density(self, block: np.ndarray) -> np.ndarray:
        """``log sum_k pi_k N(row | mu_k, Sigma_k)`` per row."""
        out = np.empty((len(block), len(self._means)))
        whitened = block @ self._prec if self._centres is not None else None
        for k, mean in enumerate(self._means):
            if whitened is not None:
                r = whitened - self._centres[k]
            elif self._prec.ndim == 3:
                r = (block - mean) @ self._prec[k]
            else:
                r = (block - mean) * self._prec[k]
            out[:, k] = -0.5 * (r * r).sum(1)
        return logsumexp64(out + self._log_norm)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(lambda block: -self._log_density(block), _features(outputs))


def _ssd_normalise(block: np.ndarray) -> np.ndarray:
    """Rows over their L2 norm plus 1e-10 (the SSD code's normalisation)."""
    return block / (np.linalg.norm(block, axis=1, keepdims=True) + 1e-10)


class SSD(Detector):
    """Min squared Mahalanobis distance to k-means clusters of ID train features, post hoc on
    the penultimate features (Sehwag et al., ICLR 2021). As the authors' ``eval_ssd.py``: rows
    L2-normalised (norm + 1e-10), standardised per dimension by the ID train mean and std
    (+ 1e-10); ``clusters=1`` (the paper's default) is one Gaussian of all train features; more
    come from k-means (scikit-learn, ``n_init=1``, 100 iterations, ``random_state=seed``; the
    paper's faiss is unseeded); ``labels=True`` takes the class labels as clusters (SSD+'s
    supervised variant). Each cluster has its own biased covariance, pseudo-inverted; a
    one-sample cluster (covariance 0: distance 0 to everything) is left out unless all are.
    The fit reads the features in row blocks; only k-means (``clusters > 1`` without
    ``labels``) needs a float64 copy of all standardised train features.
    """

    needs = frozenset({"features", "fit"})

    def __init__(self, clusters: Annotated[int, Ge(1)] = 1, labels: bool = False, seed: int = 0):
        if int(clusters) < 1:
            raise ValueError(f"clusters must be at least 1, got {clusters}")
        self.clusters, self.labels, self.seed = int(clusters), bool(labels), int(seed)
        self.min_train = self.clusters

    def memory(self, train_rows: int, test_rows: int, dim: int, classes: int) -> int:
        """A whitener per cluster; k-means (``clusters > 1`` without labels) copies every row."""
        own = super().memory(train_rows, test_rows, dim, classes)
        k = classes if self.labels else self.clusters
        every = train_rows * dim if self.clusters > 1 and not self.labels else 0
        return own + 8 * (2 * k * dim * dim + every)

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        n, d = x.shape
        total, squares = np.zeros(d), np.zeros(d)
        for _, block in _blocks(x):
            total += _ssd_normalise(block).sum(0)
        self._mean = total / n
        for _, block in _blocks(x):
            squares += ((_ssd_normalise(block) - self._mean) ** 2).sum(0)
        self._scale = np.sqrt(squares / n) + 1e-10
        if self.labels:
            assign = _labels(train)
        elif self.clusters == 1:
            assign = np.zeros(n, dtype=np.int64)
        else:  # k-means needs all standardised rows at once: the one N x d copy of the fit
            from sklearn.cluster import KMeans

            if n < self.clusters:
                raise ValueError(f"clusters={self.clusters} exceeds the training samples ({n})")
            z = np.empty((n, d))
            for rows, block in _blocks(x):
                z[rows] = self._standardise(block)
            km = KMeans(self.clusters, n_init=1, max_iter=100, random_state=self.seed)
            assign = km.fit_predict(z)
            del z
        groups, inverse = np.unique(assign, return_inverse=True)
        counts = np.bincount(inverse)
        kept = np.flatnonzero(counts >= 2) if counts.max() >= 2 else np.arange(len(groups))
        sums = np.zeros((len(groups), d))
        for rows, block in _blocks(x):  # as _class_means of the standardised rows
            np.add.at(sums, inverse[rows], self._standardise(block))
        self._centres = (sums / counts[:, None])[kept]
        scatters = _group_scatters(x, inverse, self._centres, kept, self._standardise)
        self._whiteners = [
            _whitener(scatter / counts[k]) for k, scatter in zip(kept, scatters, strict=True)
        ]

    def _standardise(self, block: np.ndarray) -> np.ndarray:
        return (_ssd_normalise(block) - self._mean) / self._scale

    def _distance(self, block: np.ndarray) -> np.ndarray:
        z = self._standardise(block)
        best = np.full(len(z), np.inf)
        for centre, whitener in zip(self._centres, self._whiteners, strict=True):
            r = (z - centre) @ whitener
            best = np.minimum(best, (r * r).sum(1))
        return best

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._distance, _features(outputs))


def _nrg_normalise(block: np.ndarray) -> np.ndarray:
    """Rows over ``sqrt(|row|^2 + 1e-10)`` (the Neural Relation Graph code's normalisation)."""
    return block / np.sqrt((block * block).sum(1, keepdims=True) + 1e-10)


class NRG(Detector):
    """Minus the summed relation to the ID train samples (Kim et al., NeurIPS 2023).

    Relation kernel ``k(i, j) = max(cos(f_i, f_j), 0) * <p_i, p_j>`` (``cos_p``: feature cosine
    times softmax compatibility); edges at most ``threshold`` (0.03) are cut; the node's
    relation is ``sum_j k(i, j) ** power`` over all train samples, ``power=1`` (the
    ``detect_ood.py`` setting: "temperature" t = 1 is optimal for OOD). The paper's score
    ``1 / (sum + 1e-6)`` ranks as ``-sum``, which is used. ``k > 0``: sum only the ``k`` largest
    relations (not in the paper, whose OOD score sums every edge). ``fit`` keeps the train
    features and logits by reference; scoring re-reads them ``NRG_BANK_CHUNK`` rows at a time.
    """

    needs = frozenset({"logits", "features", "fit"})

    def __init__(
        self,
        power: Annotated[int, Ge(1)] = 1,
        threshold: Annotated[float, Ge(0)] = 0.03,
        k: Annotated[int, Ge(0)] = 0,
    ):
        if int(power) < 1:
            raise ValueError(f"power must be at least 1, got {power}")
        if not float(threshold) >= 0:
            raise ValueError(f"threshold must be non-negative, got {threshold}")
        if int(k) < 0:
            raise ValueError(f"k must be 0 (all train samples) or more, got {k}")
        self.power, self.threshold, self.k = int(power), float(threshold), int(k)
        self.min_train = max(self.k, 1)

    def memory(self, train_rows: int, test_rows: int, dim: int, classes: int) -> int:
        """Query x bank kernel blocks (the train rows are read a block at a time)."""
        own = super().memory(train_rows, test_rows, dim, classes)
        query, bank = min(test_rows, NRG_QUERY_CHUNK), min(train_rows, NRG_BANK_CHUNK)
        return own + 8 * 4 * query * (bank + max(self.k, 1))

    def fit(self, train: Outputs, head: Head | None) -> None:
        x, z = _features(train), train.logits
        if self.k > len(x):
            raise ValueError(f"k={self.k} exceeds the number of training samples ({len(x)})")
        # the normalised train features and their softmax are rebuilt chunk by chunk while
        # scoring (the same float operations): memory independent of the train rows
        self._train_features, self._train_logits = x, z

    def _relation(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        total, best = np.zeros(len(f)), np.empty((len(f), 0))
        x, z = self._train_features, self._train_logits
        for start in range(0, len(x), NRG_BANK_CHUNK):
            part = slice(start, start + NRG_BANK_CHUNK)
            bank = _nrg_normalise(np.array(x[part], dtype=np.float64))
            probs = np.exp(log_softmax64(np.array(z[part], dtype=np.float64)))
            release_pages(x)
            release_pages(z)
            rel = np.maximum(f @ bank.T, 0.0) * (p @ probs.T)
            rel = np.where(rel > self.threshold, rel, 0.0) ** self.power
            if self.k:
                rel = np.concatenate([best, rel], 1)
                keep = min(self.k, rel.shape[1])
                best = np.partition(rel, rel.shape[1] - keep, axis=1)[:, rel.shape[1] - keep :]
            else:
                total += rel.sum(1)
        return np.sort(best, axis=1).sum(1) if self.k else total

    def score(self, outputs: Outputs) -> np.ndarray:
        x, z = _features(outputs), outputs.logits
        parts = [
            -self._relation(_nrg_normalise(block), np.exp(log_softmax64(z[rows])))
            for rows, block in _blocks(x, NRG_QUERY_CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)


def _sqrt_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``sqrt(softmax(logits / T))`` per row, as ``exp(log_softmax / 2)`` in float64."""
    return np.exp(0.5 * log_softmax64(np.asarray(logits, dtype=np.float64) / temperature))


def fisher_rao(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) Fisher-Rao distances ``2 arccos(sum_i sqrt(p_i q_i))`` between categorical
    distributions given by their square roots ``a`` (n, C) and ``b`` (m, C)."""
    return 2.0 * np.arccos(np.clip(a @ b.T, 0.0, 1.0))


class IGEOOD(Detector):
    """Minus the summed Fisher-Rao distance of the tempered softmax to the class centroids
    (Gomes et al., ICLR 2022), the black-box (logits) variant without input preprocessing.

    Score ``-sum_c 2 arccos(sum_i sqrt(softmax(z/T)_i softmax(mu_c/T)_i))``, T = 5.3 (the
    authors' README example for DenseNet on CIFAR-10). ``centroids="frechet"`` (default): each
    class's logit centroid minimises the mean Fisher-Rao distance (T = 1) to its train logits,
    by the official ``logits_centroid_estimator``: start at the one-hot logits ``e_c``, 100
    full-batch gradient steps, lr 0.01, the gradient accumulated over the steps (the official
    code never zeroes it) and zero where the Bhattacharyya coefficient passes 1 - 1e-6.
    ``"mean"``: the class means of the train logits (the authors' ``detectors`` library).
    """

    needs = frozenset({"logits", "fit"})

    def __init__(
        self,
        temperature: Annotated[float, Gt(0)] = 5.3,
        centroids: Literal["frechet", "mean"] = "frechet",
        epochs: Annotated[int, Ge(0)] = 100,
        lr: Annotated[float, Gt(0)] = 0.01,
    ):
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if centroids not in ("frechet", "mean"):
            raise ValueError(f"centroids must be 'frechet' or 'mean', got {centroids!r}")
        if int(epochs) < 0 or not float(lr) > 0:
            raise ValueError(f"need epochs >= 0 and lr > 0, got {epochs} and {lr}")
        self.temperature, self.centroids = float(temperature), str(centroids)
        self.epochs, self.lr = int(epochs), float(lr)

    def fit(self, train: Outputs, head: Head | None) -> None:
        z = train.logits  # read in row blocks (a memory-mapped file's pages let go after each)
        classes, inverse = np.unique(_labels(train), return_inverse=True)
        if self.centroids == "mean":
            mu = _class_means(z, inverse, len(classes))
        else:
            mu = self._frechet(z, classes, inverse)
        self._roots = _sqrt_softmax(mu, self.temperature)

    def _frechet(self, z: np.ndarray, classes: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        if classes.min() < 0 or classes.max() >= z.shape[1]:
            raise ValueError("IGEOOD's centroids start at one-hot logits: labels must index them")
        mu = np.eye(z.shape[1])[classes.astype(np.int64)]
        counts = np.bincount(inverse, minlength=len(classes)).astype(np.float64)
        grad = np.zeros_like(mu)
        for _ in range(self.epochs):
            q = np.exp(log_softmax64(mu))
            step = np.zeros_like(mu)
            for rows, block in _blocks(z):
                qi, own = q[inverse[rows]], inverse[rows]
                joint = _sqrt_softmax(block) * np.sqrt(qi)
                s = joint.sum(1, keepdims=True)
                inside = s < 1.0 - 1e-6
                g = -(joint - qi * s) / np.sqrt(np.where(inside, 1.0 - s * s, 1.0)) * inside
                np.add.at(step, own, g)
            grad += step / counts[:, None]
            mu = mu - self.lr * grad
        return mu

    def _score(self, block: np.ndarray) -> np.ndarray:
        return -fisher_rao(_sqrt_softmax(block, self.temperature), self._roots).sum(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        return _map_rows(self._score, outputs.logits)


@oebench.hookimpl
def register_detectors(register):
    register(
        "gmm",
        GMM,
        description="minus the log-likelihood under a Gaussian mixture of ID train features, "
        "one full-covariance Gaussian per class, as pytorch-ood's GMM (Kirchheim et al. 2022)",
    )
    register(
        "ssd",
        SSD,
        description="min Mahalanobis distance to k-means clusters of normalised ID train "
        "features, 1 cluster (Sehwag et al. 2021)",
    )
    register(
        "nrg",
        NRG,
        description="minus the summed relation-graph kernel (feature cosine x probability "
        "compatibility) to the ID train samples (Kim et al. 2023)",
    )
    register(
        "igeood",
        IGEOOD,
        description="minus the summed Fisher-Rao distance of the softmax at T=5.3 to class "
        "logit centroids (Gomes et al. 2022)",
    )
