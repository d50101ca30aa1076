"""Detectors on distances to ID training features: Mahalanobis, nearest neighbours, prototypes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from oebench.api import Detector, Head, Outputs, logsumexp64, release_pages
from oebench_plugins.feature_common import (
    _blocks,
    _class_means,
    _class_sums,
    _features,
    _labels,
    _map_rows,
    _normalise,
    _predicted,
    _scatter,
    _sq_distances,
    _whitener,
)

#: KNN's and NNGuide's query rows per pass over the bank (each pass reads all train features)
KNN_QUERY_CHUNK = 4096
#: train rows normalised at a time (a 4096 x 8192 float64 similarity block is 256 MiB)
KNN_BANK_CHUNK = 8192


def _bank_chunks(x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, float64 rows)`` of the train features ``x``, ``KNN_BANK_CHUNK`` at a time; the
    mapped pages of a memory-mapped ``x`` are let go after each chunk."""
    for start in range(0, len(x), KNN_BANK_CHUNK):
        chunk = np.array(x[start : start + KNN_BANK_CHUNK], dtype=np.float64)
        release_pages(x)
        yield start, chunk


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


class KNN(Detector):
    """Distance of normalised features to the k-th nearest ID train one (Sun et al., ICML 2022).

    k = 50 is the paper's CIFAR-10 value (it uses 200 for CIFAR-100, 1000 for ImageNet). The
    paper's faiss code scores the squared distance; the distance itself ranks identically.
    ``fit`` keeps a reference to the train features (memory-mapped ones stay on disk); each
    query chunk re-reads them ``KNN_BANK_CHUNK`` rows at a time and normalises them afresh
    (float64, then float32 as the similarity matmul).
    """

    needs = frozenset({"features", "fit"})

    def __init__(self, k: int = 50):
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = int(k)
        self.min_train = self.k  # checked against the ID training split before any training

    def memory(self, train_rows: int, test_rows: int, dim: int, classes: int) -> int:
        """Query x bank similarity blocks, and a value per train row."""
        own = super().memory(train_rows, test_rows, dim, classes)
        query, bank = min(test_rows, KNN_QUERY_CHUNK), min(train_rows, KNN_BANK_CHUNK)
        return own + 8 * (3 * query * (bank + self.k) + train_rows)

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        if len(x) < self.k:
            raise ValueError(f"k={self.k} exceeds the number of training samples ({len(x)})")
        # the bank (normalised train rows, float32) is rebuilt chunk by chunk while scoring:
        # memory independent of the number of train rows
        self._train = x

    def _kth_distance(self, block: np.ndarray) -> np.ndarray:
        """Distance of each row to its k-th nearest bank row (k-th largest cosine similarity)."""
        import torch

        query = _normalise(block)
        q = torch.from_numpy(query.astype(np.float32))
        best_v = torch.empty(len(q), 0)
        best_i = torch.empty(len(q), 0, dtype=torch.long)
        for start, chunk in _bank_chunks(self._train):
            bank = _normalise(chunk).astype(np.float32)
            sims = q @ torch.from_numpy(bank).T
            v, i = torch.topk(sims, min(self.k, sims.shape[1]), dim=1)
            v, j = torch.topk(
                torch.cat([best_v, v], 1), min(self.k, best_v.shape[1] + v.shape[1]), dim=1
            )
            best_v, best_i = v, torch.cat([best_i, i + start], 1).gather(1, j)
        kth_rows = np.array(self._train[best_i[:, -1].numpy()], dtype=np.float64)
        release_pages(self._train)
        kth = _normalise(kth_rows).astype(np.float32).astype(np.float64)
        return np.linalg.norm(query - kth, axis=1)

    def score(self, outputs: Outputs) -> np.ndarray:
        x = _features(outputs)
        parts = [self._kth_distance(block) for _, block in _blocks(x, KNN_QUERY_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros(0)


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
        self.min_train = self.k  # checked against the ID training split before any training

    def memory(self, train_rows: int, test_rows: int, dim: int, classes: int) -> int:
        """Query x bank similarity blocks, and a value per train row."""
        own = super().memory(train_rows, test_rows, dim, classes)
        query, bank = min(test_rows, KNN_QUERY_CHUNK), min(train_rows, KNN_BANK_CHUNK)
        return own + 8 * (3 * query * (bank + self.k) + train_rows)

    def fit(self, train: Outputs, head: Head | None) -> None:
        x = _features(train)
        if len(x) < self.k:
            raise ValueError(f"k={self.k} exceeds the number of training samples ({len(x)})")
        z = train.logits
        # per-row confidence (an N-vector); the bank rows are rebuilt chunk by chunk at scoring
        self._confidence = np.concatenate([logsumexp64(block) for _, block in _blocks(z)])
        self._train = x

    def _guidance(self, block: np.ndarray) -> np.ndarray:
        """Mean of the k largest inner products of the normalised rows with the bank."""
        query = _normalise(block)
        best = np.empty((len(block), 0))
        for start, chunk in _bank_chunks(self._train):
            bank = _normalise(chunk) * self._confidence[start : start + len(chunk), None]
            sims = np.concatenate([best, query @ bank.T], 1)
            keep = min(self.k, sims.shape[1])
            best = np.partition(sims, sims.shape[1] - keep, axis=1)[:, sims.shape[1] - keep :]
        return best.mean(1)

    def score(self, outputs: Outputs) -> np.ndarray:
        x, z = _features(outputs), outputs.logits
        parts = [
            -self._guidance(block) * logsumexp64(np.asarray(z[rows], dtype=np.float64))
            for rows, block in _blocks(x, KNN_QUERY_CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)


def _prototypes(x: np.ndarray, labels: np.ndarray, n_classes: int, use: np.ndarray) -> np.ndarray:
    """Per-class mean of the rows in ``use`` (falling back to all rows of the class; else 0),
    from one pass over row blocks (sums of the used rows and of all rows per class)."""
    valid = (labels >= 0) & (labels < n_classes)
    used_sums, all_sums = _class_sums(x, labels, n_classes, [use & valid, valid])
    used = np.bincount(labels[use & valid], minlength=n_classes)
    every = np.bincount(labels[valid], minlength=n_classes)
    means = np.zeros((n_classes, x.shape[1]))
    pick = used > 0
    means[pick] = used_sums[pick] / used[pick, None]
    back = ~pick & (every > 0)
    means[back] = all_sums[back] / every[back, None]
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
        z = train.logits
        labels = _labels(train).astype(np.int64)
        self._patterns = _prototypes(_features(train), labels, z.shape[1], _predicted(z) == labels)

    def score(self, outputs: Outputs) -> np.ndarray:
        predicted = _predicted(outputs.logits)
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
