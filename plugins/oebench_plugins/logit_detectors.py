"""Post-hoc detectors on logits. Scores are float64; higher = more anomalous."""

from __future__ import annotations

import warnings
from typing import Annotated

import numpy as np
from annotated_types import Gt

import oebench.api as oebench
from oebench.api import Detector, Head, Outputs, log_softmax64, logsumexp64, msp_log_odds
from oebench_plugins.feature_common import _blocks


class MSP(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

    Score: ``log((1 - MSP) / MSP)``, a monotone transform of ``-MSP`` that stays exact in
    float64 where float32 softmax rounds to exactly 1.0 and ties would distort AUROC.
    """

    def score(self, outputs):
        return msp_log_odds(outputs.logits)


class MaxLogit(Detector):
    """Negative maximum logit (Hendrycks et al., ICML 2022)."""

    def score(self, outputs):
        return -np.asarray(outputs.logits, dtype=np.float64).max(axis=1)


class Energy(Detector):
    """Free energy ``-T logsumexp(z / T)`` (Liu et al., NeurIPS 2020)."""

    def __init__(self, temperature: Annotated[float, Gt(0)] = 1.0):
        self.temperature = temperature

    def score(self, outputs):
        z = np.asarray(outputs.logits, dtype=np.float64)
        return -self.temperature * logsumexp64(z / self.temperature)


class Entropy(Detector):
    """Shannon entropy of the softmax distribution."""

    def score(self, outputs):
        logp = log_softmax64(outputs.logits)
        return -(np.exp(logp) * logp).sum(axis=1)


class UniformCE(Detector):
    """H(U; p) = logsumexp(z) - mean(z), cross-entropy to the uniform (OE paper, Table 10).

    Higher cross-entropy to uniform means a more peaked prediction, so the anomaly score is
    its negative.
    """

    def score(self, outputs):
        z = np.asarray(outputs.logits, dtype=np.float64)
        return -(logsumexp64(z) - z.mean(axis=1))


class KLMatching(Detector):
    """Min KL divergence of the softmax to a class's mean softmax (Hendrycks et al., ICML 2022).

    ``d_k`` is the mean softmax of the ID training samples the model predicts as ``k`` (the
    paper fits on a validation split; the engine offers ID training outputs); the score is
    ``min_k KL(p || d_k)`` over the predicted classes. Needs no labels; ``log d_k`` is kept in log
    space (a log-mean-exp of log-softmax rows), so it is finite even where float32 softmax is 0.
    """

    needs = frozenset({"logits", "fit"})

    def fit(self, train: Outputs, head: Head | None) -> None:
        z = train.logits
        n_classes = z.shape[1]
        # per predicted class k: a running max m_k and sum_i exp(log p_i - m_k), rescaled when
        # m_k grows; np.add.at sums the rows in order, so where the first block holding a
        # class holds its maximum the result is the whole-array logsumexp bit for bit
        top = np.full((n_classes, n_classes), -np.inf)
        sums = np.zeros((n_classes, n_classes))
        counts = np.zeros(n_classes, dtype=np.int64)
        for _, block in _blocks(z):
            logp = log_softmax64(block)
            predicted = logp.argmax(1)
            grown = top.copy()
            np.maximum.at(grown, predicted, logp)
            more = grown > top
            sums[more] *= np.exp(top[more] - grown[more])
            top = grown
            with np.errstate(invalid="ignore"):
                terms = np.exp(logp - top[predicted])
            terms[np.isneginf(top[predicted])] = 0.0
            np.add.at(sums, predicted, terms)
            counts += np.bincount(predicted, minlength=n_classes)
        classes = np.flatnonzero(counts)
        with np.errstate(divide="ignore"):
            log_sums = top[classes] + np.log(sums[classes])
        log_sums[np.isneginf(top[classes])] = np.nan  # as logsumexp64 of an all -inf column
        self._log_typical = log_sums - np.log(counts[classes])[:, None]

    def score(self, outputs: Outputs) -> np.ndarray:
        logp = log_softmax64(outputs.logits)
        p = np.exp(logp)
        kl = (p * logp).sum(1)[:, None] - p @ self._log_typical.T
        return kl.min(1)


class TempScale(Detector):
    """MSP at the temperature that minimises the ID negative log-likelihood (Guo et al., ICML 2017).

    ``T`` minimises the mean cross-entropy of ``z / T`` on the ID training outputs (the paper uses
    a held-out validation split; the engine offers the training split, where an overfit model
    asks for ``T < 1``). The NLL is convex in ``1 / T``; its root is found by Brent's method and
    clipped to ``[T_MIN, T_MAX]``. Score: ``log((1 - p) / p)`` of the max softmax ``p`` at ``T``.
    """

    needs = frozenset({"logits", "fit"})
    T_MIN, T_MAX = 0.01, 100.0

    def fit(self, train: Outputs, head: Head | None) -> None:
        self._temperature = fit_temperature(train.logits, _labels(train), self.T_MIN, self.T_MAX)

    def score(self, outputs: Outputs) -> np.ndarray:
        return msp_log_odds(np.asarray(outputs.logits, dtype=np.float64) / self._temperature)


class OpenMax(Detector):
    """Log-odds of OpenMax's unknown-class probability (Bendale & Boult, CVPR 2016).

    Per class: the mean logit vector (MAV) of the correctly classified ID training samples and a
    Weibull fitted (maximum likelihood, location 0) to the ``tail_size`` largest distances of
    those samples to their MAV, shifted as libMR does (``d + 10000 - min(tail)``). A test vector's
    top ``alpha`` classes (rank ``i`` = 1, 2, ...) lose the fraction ``(alpha + 1 - i) / alpha``
    times the Weibull CDF of their distance; the removed mass is the unknown logit ``v_0``.
    Distance ``eu_weight * euclidean + cos_weight * cosine`` ("eucos", 1/200 and 1 in the
    authors' code); tail 20 and alpha 10 (``min(alpha, classes)``) as in the paper. A class with
    no correctly classified training sample counts as fully unknown. Score
    ``log(p_0 / (1 - p_0)) = v_0 - logsumexp(revised logits)``.
    """

    needs = frozenset({"logits", "fit"})
    SHIFT = 10000.0

    def __init__(
        self,
        tail_size: int = 20,
        alpha: int = 10,
        eu_weight: float = 0.005,
        cos_weight: float = 1.0,
    ):
        if int(tail_size) < 2 or int(alpha) < 1:
            raise ValueError("OpenMax needs tail_size >= 2 and alpha >= 1")
        if eu_weight < 0 or cos_weight < 0 or eu_weight + cos_weight == 0:
            raise ValueError("OpenMax distance weights must be non-negative, not both zero")
        self.tail_size = int(tail_size)
        self.alpha = int(alpha)
        self.eu_weight = float(eu_weight)
        self.cos_weight = float(cos_weight)

    def _distances(self, z: np.ndarray) -> np.ndarray:
        """(n, C) eucos distances of logit vectors to every class's MAV."""
        euclid = np.sqrt(
            np.maximum(
                (z * z).sum(1)[:, None] + (self._mav**2).sum(1)[None, :] - 2 * z @ self._mav.T, 0.0
            )
        )
        norms = np.linalg.norm(z, axis=1)[:, None] * np.linalg.norm(self._mav, axis=1)[None, :]
        cosine = 1.0 - np.divide(z @ self._mav.T, norms, out=np.zeros_like(norms), where=norms > 0)
        return self.eu_weight * euclid + self.cos_weight * cosine

    def fit(self, train: Outputs, head: Head | None) -> None:
        from scipy.stats import weibull_min

        z = train.logits
        labels = _labels(train)
        n_classes = z.shape[1]
        predicted = np.concatenate([block.argmax(1) for _, block in _blocks(z)])
        correct = (predicted == labels) & (labels >= 0) & (labels < n_classes)
        counts = np.bincount(labels[correct], minlength=n_classes)
        # MAVs: one pass; np.add.at adds rows in order, as members.mean(0) does (bit for bit)
        sums = np.zeros((n_classes, n_classes))
        for rows, block in _blocks(z):
            np.add.at(sums, labels[rows][correct[rows]], block[correct[rows]])
        self._mav = np.zeros((n_classes, n_classes))
        seen = counts > 0
        self._mav[seen] = sums[seen] / counts[seen, None]
        # tails: a second pass keeps each class's tail_size largest distances to its MAV
        tail_class, tail_dist = np.zeros(0, dtype=np.int64), np.zeros(0)
        for rows, block in _blocks(z):
            own = labels[rows][correct[rows]]
            dist = self._distances(block[correct[rows]])[np.arange(len(own)), own]
            tail_class = np.concatenate([tail_class, own])
            tail_dist = np.concatenate([tail_dist, dist])
            order = np.lexsort((tail_dist, tail_class))
            tail_class, tail_dist = tail_class[order], tail_dist[order]
            ends = np.searchsorted(tail_class, tail_class, side="right")
            keep = ends - np.arange(len(tail_class)) <= self.tail_size
            tail_class, tail_dist = tail_class[keep], tail_dist[keep]
        self._weibull = np.full((n_classes, 3), np.nan)  # shape c, scale, shift per class
        for k in np.flatnonzero(seen):
            tail = tail_dist[tail_class == k]  # sorted, the tail_size largest
            shift = self.SHIFT - tail.min()
            with warnings.catch_warnings():  # scipy's starting guess on near-equal values
                warnings.simplefilter("ignore", RuntimeWarning)
                c, _, scale = weibull_min.fit(tail + shift, floc=0)
            self._weibull[k] = (c, scale, shift)

    def _wscore(self, dist: np.ndarray) -> np.ndarray:
        """Weibull CDF of each (sample, class) distance; 1 for classes without a model."""
        c, scale, shift = (self._weibull[:, i][None, :] for i in range(3))
        with np.errstate(invalid="ignore"):
            cdf = -np.expm1(-((np.maximum(dist + shift, 0.0) / scale) ** c))
        return np.where(np.isnan(c), 1.0, cdf)

    def score(self, outputs: Outputs) -> np.ndarray:
        z = np.asarray(outputs.logits, dtype=np.float64)
        alpha = min(self.alpha, z.shape[1])
        ranks = np.argsort(-z, axis=1, kind="stable")[:, :alpha]
        weights = np.zeros_like(z)
        np.put_along_axis(weights, ranks, (alpha - np.arange(alpha)) / alpha, axis=1)
        removed = weights * self._wscore(self._distances(z))
        revised = z * (1.0 - removed)
        unknown = (z * removed).sum(1)
        return unknown - logsumexp64(revised)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, t_min: float, t_max: float) -> float:
    """The ``T`` in ``[t_min, t_max]`` minimising the mean NLL of ``softmax(logits / T)``."""
    from scipy.optimize import brentq

    labels = np.asarray(labels)
    n = len(labels)

    def slope(beta: float) -> float:  # d/d(beta) of mean(logsumexp(beta z) - beta z_y)
        total = 0.0  # one pass over row blocks of the logits per evaluation
        for rows, z in _blocks(logits):
            p = np.exp(log_softmax64(beta * z))
            total += float(((p * z).sum(1) - z[np.arange(len(z)), labels[rows]]).sum())
        return total / n

    lo, hi = 1.0 / t_max, 1.0 / t_min
    if slope(lo) >= 0:
        return t_max
    if slope(hi) <= 0:
        return t_min
    return 1.0 / brentq(slope, lo, hi, xtol=1e-12, rtol=1e-12)


def _labels(outputs: Outputs) -> np.ndarray:
    if outputs.labels is None:
        raise ValueError("this detector needs the class labels of the training outputs")
    return np.asarray(outputs.labels).astype(np.int64)


@oebench.hookimpl
def register_detectors(register):
    register("msp", MSP, description="max softmax probability (Hendrycks & Gimpel 2017)")
    register("max-logit", MaxLogit, description="max logit (Hendrycks et al. 2022)")
    register("energy", Energy, description="free energy, T=1 (Liu et al. 2020)")
    register("entropy", Entropy, description="softmax entropy")
    register("uniform-ce", UniformCE, description="H(U; p), cross-entropy to uniform (OE paper)")
    register(
        "kl-matching",
        KLMatching,
        description="min KL to the mean softmax of each predicted class, fit on ID train "
        "(Hendrycks et al. 2022)",
    )
    register(
        "temp-scale",
        TempScale,
        description="MSP at the NLL-optimal temperature, fit on ID train (Guo et al. 2017)",
    )
    register(
        "openmax",
        OpenMax,
        description="OpenMax unknown probability, Weibull tail 20, alpha 10, eucos "
        "(Bendale & Boult 2016)",
    )
