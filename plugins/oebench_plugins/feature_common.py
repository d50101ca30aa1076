"""The feature detectors' shared float64 helpers, streaming over row blocks of CHUNK rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from oebench.api import Head, Outputs, logsumexp64

CHUNK = 4096


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


def _normalise(block: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
