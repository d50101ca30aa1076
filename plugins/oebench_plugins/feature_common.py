"""The feature detectors' shared float64 helpers, streaming over row blocks of CHUNK rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from oebench.api import Head, Outputs, logsumexp64, release_pages, row_blocks

CHUNK = 4096


def _blocks(array: np.ndarray, size: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """Consecutive row blocks (``CHUNK`` rows) of ``array`` as float64 copies, with their rows
    (a memory-mapped array's pages are let go after each block: ``oebench.api.row_blocks``)."""
    return row_blocks(array, size or CHUNK)


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
        np.add.at(sums, inverse[rows], block)  # O(rows x d), a one-hot product is x classes
    return sums / counts[:, None]


def _class_sums(
    features: np.ndarray, classes: np.ndarray, n_classes: int, masks: list[np.ndarray]
) -> list[np.ndarray]:
    """Per-class sums of the float64 rows selected by each mask, from one pass over row blocks.

    ``np.add.at`` adds the rows one after the other in row order, so ``sums / counts`` equals
    ``rows.mean(0)`` of the selected rows bit for bit (numpy's axis-0 sum is sequential too)."""
    sums = [np.zeros((n_classes, features.shape[1])) for _ in masks]
    for rows, block in _blocks(features):
        for total, mask in zip(sums, masks, strict=True):
            keep = mask[rows]
            np.add.at(total, classes[rows][keep], block[keep])
    return sums


def _predicted(logits: np.ndarray) -> np.ndarray:
    """``argmax`` of each row (the first of ties), read in row blocks."""
    parts = [block.argmax(1) for _, block in _blocks(logits)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _scatter(features: np.ndarray, centre: Callable[[slice], np.ndarray]) -> np.ndarray:
    """Sum of outer products of the rows minus their centres, ``centre(rows)``, block by block."""
    d = features.shape[1]
    total = np.zeros((d, d))
    for rows, block in _blocks(features):
        block -= centre(rows)
        total += block.T @ block
    return total


def _group_scatters(
    features: np.ndarray,
    inverse: np.ndarray,
    centres: np.ndarray,
    groups: np.ndarray,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Per group ``k`` in ``groups``: the scatter ``sum (t(x_i) - centres[j]) outer (...)`` of
    its rows ``inverse == k`` (``j`` its place in ``groups``; ``t`` = ``transform``, default
    none), yielded one group at a time. The rows are sorted by group once and each group's rows
    are read ``CHUNK`` at a time, in row order (one chunk: the same float operations as
    ``part.T @ part`` of all the group's rows), so memory holds a chunk and one d x d matrix."""
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(inverse.max(initial=-1) + 2))
    for centre, k in zip(centres, groups, strict=True):
        members = order[bounds[k] : bounds[k + 1]]
        total = np.zeros((features.shape[1], features.shape[1]))
        for start in range(0, len(members), CHUNK):
            part = np.array(features[members[start : start + CHUNK]], dtype=np.float64)
            release_pages(features)
            part = (part if transform is None else transform(part)) - centre
            total += part.T @ part
        yield total


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


#: bits of the order-preserving integer key per radix pass of ``_percentile``
RADIX_BITS = 16
_KEYS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned integer keys that sort as the float ``values`` do (``-0.0`` as ``0.0``, every
    NaN last, as ``np.partition`` puts them)."""
    unsigned = _KEYS[values.dtype.itemsize]
    bits = values.view(unsigned).copy()
    sign = unsigned(1) << unsigned(8 * values.dtype.itemsize - 1)
    bits[values == 0] = 0
    bits[np.isnan(values)] = ~sign  # the largest positive NaN pattern: key all ones
    negative = (bits & sign) != 0
    return np.where(negative, ~bits, bits | sign)


def _from_key(key: int, dtype: np.dtype) -> float:
    unsigned = _KEYS[dtype.itemsize]
    k = unsigned(key)
    sign = unsigned(1) << unsigned(8 * dtype.itemsize - 1)
    bits = k ^ sign if k & sign else ~k
    return float(np.array([bits], dtype=unsigned).view(dtype)[0])


def _order_statistics(array: np.ndarray, ranks: list[int]) -> list[float]:
    """The ``ranks``-th smallest entries (0-based, as ``np.partition``) of ``array``, exactly, in
    a few passes over its row blocks: a radix selection on the float bits' order-preserving
    integer key, ``RADIX_BITS`` bits a pass (2 passes for float32, 4 for float64), holding
    one histogram of ``2 ** RADIX_BITS`` counts per rank, never a copy of the array."""
    dtype = np.dtype(array.dtype)
    if dtype.kind != "f" or dtype.itemsize not in _KEYS:
        dtype = np.dtype(np.float64)
    total_bits = 8 * dtype.itemsize
    step = min(RADIX_BITS, total_bits)
    # per rank: the key prefix found so far and the rank left inside it
    found = {r: (0, r) for r in ranks}
    for done in range(0, total_bits, step):
        shift = total_bits - done - step
        prefixes = sorted({prefix for prefix, _ in found.values()})
        hist = {prefix: np.zeros(1 << step, dtype=np.int64) for prefix in prefixes}
        for _, block in row_blocks(array, CHUNK, dtype):
            keys = _sort_keys(block.reshape(-1))
            digits = (keys >> keys.dtype.type(shift)) & keys.dtype.type((1 << step) - 1)
            high = keys >> keys.dtype.type(shift + step) if done else None
            for prefix in prefixes:
                d = digits if high is None else digits[high == keys.dtype.type(prefix)]
                hist[prefix] += np.bincount(d.astype(np.intp), minlength=1 << step)
        for r, (prefix, left) in found.items():
            cum = np.cumsum(hist[prefix])
            digit = int(np.searchsorted(cum, left, side="right"))
            below = int(cum[digit - 1]) if digit else 0
            found[r] = ((prefix << step) | digit, left - below)
    return [_from_key(found[r][0], dtype) for r in ranks]


def _percentile(array: np.ndarray, q: float) -> float:
    """``np.percentile(array, q)`` (linear method) over all entries, interpolated in float64.

    The two order statistics around the position are selected exactly (the same values as
    ``np.partition`` of the entries in their own dtype) in a few passes over row blocks, so
    memory does not grow with the array (``_order_statistics``)."""
    size = int(np.prod(np.shape(array)))
    pos = q / 100.0 * (size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, size - 1)
    a, b = _order_statistics(array, [lo, hi])
    return a + (b - a) * (pos - lo)


def _check_percentile(percentile: float) -> float:
    if not 0.0 <= percentile < 100.0:
        raise ValueError(f"percentile must be in [0, 100), got {percentile}")
    return float(percentile)


def _normalise(block: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
