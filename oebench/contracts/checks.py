"""Checks of what plugins hand back: a dataset split's images and labels (and a digest of
its content), a detector's scores.

A plugin that breaks its contract must cost a clear message naming it, never a wrong number.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

#: items of a lazy (non-tensor) dataset checked and hashed when it is loaded (first, middle,
#: last); every item is checked again as it is read (``check_item``)
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

    Images: (C, H, W) with C in {1, 3, ``channels``}, finite, uint8 or float in [0, 1] (a
    lazy dataset's items: float); text (a dataset with ``modality = "text"``): int64 token
    ids, one fixed-length row per text, in [0, ``vocab_size``); labels: one int per example,
    in [0, ``num_classes``) when given (ID data). In-memory ``TensorImages`` /
    ``TensorTokens`` are checked whole, other datasets on ``SAMPLED_ITEMS`` items here and on
    every item as it is read (``check_item``, which oebench applies to them).
    """
    where = f"split {split!r}"
    if len(data) == 0:
        raise ContractError(f"{where} is empty")
    if getattr(data, "modality", "image") == "text":
        labels = _check_tokens(data, where)
    elif in_memory(data):
        _check_images(data.images, where, channels, batch=True)
        labels = data.labels
        if tuple(labels.shape) != (len(data.images),):
            raise ContractError(
                f"{where}: {tuple(labels.shape)} labels for {len(data.images)} images"
            )
    else:
        for i in sampled(data):
            check_item(data[i], f"{where}, item {i}", channels, num_classes)
        return
    _check_labels(labels, where, num_classes)


def in_memory(data: Any) -> bool:
    """Whether a split holds its examples as whole tensors (``TensorImages``, ``TensorTokens``:
    checked and hashed whole), not as a lazy dataset's items."""
    from oebench.contracts.data import TensorImages

    if getattr(data, "modality", "image") == "text":
        return hasattr(data, "tokens")
    return isinstance(data, TensorImages)


def sampled(data: Any) -> list[int]:
    """The positions of a lazy dataset's items checked and hashed at load."""
    return sorted({0, len(data) // 2, len(data) - 1})[:SAMPLED_ITEMS]


def check_item(item: Any, where: str, channels: int, num_classes: int | None) -> None:
    """One ``(image, label)`` item of a lazy image dataset: a float (C, H, W) tensor in
    [0, 1] and an int label (in [0, ``num_classes``) for ID data)."""
    import torch

    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ContractError(f"{where} is a {type(item).__name__}, not an (image, label) pair")
    image, label = item
    if not isinstance(image, torch.Tensor):
        raise ContractError(f"{where}: image is a {type(image).__name__}")
    if image.dtype == torch.uint8:
        raise ContractError(
            f"{where}: image is uint8; a dataset's items are float in [0, 1] (divide by 255, "
            "or return oebench.TensorImages, which takes uint8 images)"
        )
    _check_images(image, where, channels, batch=False)
    if num_classes is not None:
        value = label if type(label) is int else _int_label(label, where)
        if not 0 <= value < num_classes:
            raise ContractError(f"{where}: labels must lie in [0, {num_classes}), found {value}")


def _int_label(label: Any, where: str) -> int:
    """An item's label (an int, a NumPy integer, a one-element integer tensor) as an int."""
    import torch

    value = torch.as_tensor(label)
    if value.numel() != 1 or value.dtype.is_floating_point or value.dtype.is_complex:
        raise ContractError(f"{where}: label {label!r} is not an int")
    return int(value.reshape(()))


def _check_labels(labels: Any, where: str, num_classes: int | None) -> None:
    if num_classes is None:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ContractError(f"{where}: labels must lie in [0, {num_classes}), found {low}..{high}")


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
    low, high = float(images.min()), float(images.max())  # NaN propagates: one pass each
    if low >= 0 and high <= 1:
        return
    nan = int(torch.isnan(images).sum())
    if nan:
        raise ContractError(f"{where}: {nan} NaN pixel value(s)")
    raise ContractError(
        f"{where}: float pixels must lie in [0, 1], found {low:g}..{high:g} (give uint8 for 0..255)"
    )


def split_digest(data: Any) -> str:
    """sha256 of what a loaded split holds: the whole tensors of ``TensorImages`` /
    ``TensorTokens``, the ``SAMPLED_ITEMS`` checked items of a lazy dataset."""
    import torch

    h = hashlib.sha256()
    if in_memory(data):
        tensors = [data.tokens if hasattr(data, "tokens") else data.images, data.labels]
    else:
        tensors = [torch.as_tensor(part) for i in sampled(data) for part in data[i]]
    for tensor in tensors:
        _hash_tensor(h, tensor)
    return h.hexdigest()


def _hash_tensor(h: Any, tensor: Any) -> None:
    """Dtype, shape and bytes of ``tensor`` into ``h`` (without copying a contiguous one)."""
    import torch

    t = tensor.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def checked_metrics(metrics: dict[str, float], where: str) -> dict[str, float]:
    """``metrics`` unchanged when every value is a finite number; a last guard before storing."""
    bad = [name for name, value in metrics.items() if not np.isfinite(value)]
    if bad:
        raise ContractError(f"metric(s) {', '.join(bad)} came out non-finite on {where}")
    return metrics
