"""Shared pieces of the image datasets: split checks, torchvision errors, image files, fitting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from oebench.api import (
    DataNotFoundError,
    ImageSource,
    UserError,
    adapt_images,
)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def check_split(source: ImageSource, name: str, split: str) -> None:
    """Raise a one-line UserError for a split the source does not have."""
    if split not in source.splits:
        raise UserError(
            f"dataset {name!r} has no split {split!r}; splits: {', '.join(source.splits)}"
        )


def checked(what: str, where: Path, make: Callable[[], Any]) -> Any:
    """Build a torchvision dataset; its "not found or corrupted" errors become one line."""
    try:
        return make()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataNotFoundError(
            f"{what} files in {where} failed torchvision's check ({first.rstrip('.')}); they "
            "may be incomplete or corrupted: remove them and fetch them again (--download)"
        ) from None


class Fit:
    """A picklable transform: PIL image -> float RGB CHW, resized and centre-cropped to (h, w)."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width

    def __call__(self, image: Any) -> Any:
        from torchvision.transforms.functional import pil_to_tensor

        x = pil_to_tensor(image.convert("RGB")).float().div_(255)
        return adapt_images(x[None], (3, self.height, self.width))[0]


class ImageFiles:
    """A lazy dataset of image files with labels (``-1`` when unlabelled), fitted to one size."""

    def __init__(self, paths: list[Path], labels: list[int] | None, height: int, width: int):
        self.paths = paths
        self.labels = labels if labels is not None else [-1] * len(paths)
        self.fit = Fit(height, width)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return self.fit(image), int(self.labels[index])


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth), sorted."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def subset(items: list, n: int | None, seed: int = 0) -> list:
    """A seeded random subset of ``n`` items (all of them when ``n`` is None or too large)."""
    import numpy as np

    if n is None or n >= len(items):
        return items
    pick = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in pick]


def _size(source: ImageSource, shape: tuple[int, int, int] | None) -> tuple[int, int]:
    return (shape[1], shape[2]) if shape else (source.shape[1], source.shape[2])


def folder_images(what: str, folder: Path) -> list[Path]:
    """The image files under ``folder``, or a one-line DataNotFoundError."""
    files = image_files(folder) if folder.is_dir() else []
    if not files:
        raise DataNotFoundError(
            f"{what}: no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}"
        )
    return files
