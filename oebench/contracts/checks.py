"""Checks of what plugins hand back: a dataset split's images and labels, a detector's scores.

A plugin that breaks its contract must cost a clear message naming it, never a wrong number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: items of a non-tensor dataset that are checked (first, middle, last)
SAMPLED_ITEMS = 3


class ContractError(ValueError):
    """A plugin returned something that breaks the documented contract."""


def checked_scores(raw: Any, n: int) -> np.ndarray:
    """``raw`` as float64 scores, one per sample; a ContractError when it is not that.

    Accepted: a 1-D array-like of ``n`` real numbers (integers or floats), ±inf included
    ("certainly OOD / ID"). Rejected: another length or shape, non-numeric values, NaN.
    """
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iuf":
        raise ContractError(f"returned scores of dtype {arr.dtype}, not real numbers")
    if arr.ndim != 1:
        raise ContractError(
            f"returned an array of shape {arr.shape}; expected one score per sample, ({n},)"
        )
    if len(arr) != n:
        raise ContractError(f"returned {len(arr)} scores for {n} samples")
    scores = arr.astype(np.float64)
    bad = int(np.isnan(scores).sum())
    if bad:
        raise ContractError(f"returned {bad} NaN score(s) among {n}")
    return scores


def check_split(data: Any, split: str, num_classes: int | None, channels: int = 3) -> None:
    """Raise ContractError unless ``data`` holds images as the dataset contract says.

    Images: (C, H, W) with C in {1, 3, ``channels``}, uint8 or float in [0, 1] without NaN;
    text (a dataset with ``modality = "text"``): int64 token ids, one fixed-length row per
    text, in [0, ``vocab_size``); labels: in [0, ``num_classes``) when given (ID data).
    In-memory ``TensorImages`` / ``TensorTokens`` are checked whole, other datasets on a few
    items.
    """
    from oebench.contracts.data import TensorImages

    where = f"split {split!r}"
    if len(data) == 0:
        raise ContractError(f"{where} is empty")
    if getattr(data, "modality", "image") == "text":
        labels = _check_tokens(data, where)
    elif isinstance(data, TensorImages):
        _check_images(data.images, where, channels, batch=True)
        labels = data.labels
    else:
        import torch

        picks = sorted({0, len(data) // 2, len(data) - 1})[:SAMPLED_ITEMS]
        items = [data[i] for i in picks]
        for i, (image, _) in zip(picks, items, strict=True):
            if not isinstance(image, torch.Tensor):
                raise ContractError(f"{where}, item {i}: image is a {type(image).__name__}")
            _check_images(image, f"{where}, item {i}", channels, batch=False)
        labels = torch.as_tensor([int(label) for _, label in items])
    if num_classes is not None:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ContractError(
                f"{where}: labels must lie in [0, {num_classes}), found {low}..{high}"
            )


def _check_tokens(data: Any, where: str) -> Any:
    """Token ids of a text dataset: integer, (N, L) or (L,) per item, in [0, vocab_size)."""
    import torch

    if hasattr(data, "tokens"):
        tokens, labels = data.tokens, data.labels
    else:
        picks = sorted({0, len(data) // 2, len(data) - 1})[:SAMPLED_ITEMS]
        items = [data[i] for i in picks]
        if not all(isinstance(x, torch.Tensor) and x.ndim == 1 for x, _ in items):
            raise ContractError(f"{where}: text items must be 1-D token-id tensors")
        tokens = torch.stack([x for x, _ in items])
        labels = torch.as_tensor([int(label) for _, label in items])
    if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ContractError(
            f"{where}: token ids must be (N, L) int64, got {tuple(tokens.shape)} {tokens.dtype}"
        )
    size = getattr(data, "vocab_size", None)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or (size is not None and high >= size):
        raise ContractError(f"{where}: token ids must lie in [0, {size}), found {low}..{high}")
    return labels


def _check_images(images: Any, where: str, channels: int, batch: bool) -> None:
    """Shape, dtype and value range of an image (``batch``: a stack of images)."""
    import torch

    dims = 4 if batch else 3
    if images.ndim != dims:
        shape = "(N, C, H, W)" if batch else "(C, H, W)"
        raise ContractError(f"{where}: images must be {shape}, got {tuple(images.shape)}")
    c = images.shape[-3]
    if c not in (1, 3, channels):
        raise ContractError(f"{where}: images have {c} channels; expected 1 or 3")
    if images.dtype == torch.uint8:
        return
    if not images.dtype.is_floating_point:
        raise ContractError(f"{where}: images are {images.dtype}; expected uint8 or float")
    nan = int(torch.isnan(images).sum())
    if nan:
        raise ContractError(f"{where}: {nan} NaN pixel value(s)")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise ContractError(
            f"{where}: float pixels must lie in [0, 1], found {low:g}..{high:g} "
            "(give uint8 for 0..255)"
        )


def checked_metrics(metrics: dict[str, float], where: str) -> dict[str, float]:
    """``metrics`` unchanged when every value is a finite number; a last guard before storing."""
    bad = [name for name, value in metrics.items() if not np.isfinite(value)]
    if bad:
        raise ContractError(f"metric(s) {', '.join(bad)} came out non-finite on {where}")
    return metrics
