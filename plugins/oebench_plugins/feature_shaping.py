"""Activation-shaping detectors (ReAct, ASH, DICE, SCALE), scored by free energy via the head."""

from __future__ import annotations

import numpy as np

from oebench.api import Detector, Head, Outputs
from oebench_plugins.feature_common import (
    _blocks,
    _check_percentile,
    _features,
    _free_energy,
    _head,
    _map_rows,
    _percentile,
)


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
