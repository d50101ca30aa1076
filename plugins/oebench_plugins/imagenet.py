"""ImageNet-1K (ILSVRC-2012) from its class folders, read lazily: ``train`` and the sorted ``val``.

Layout (torchvision's ``ImageFolder``, OpenOOD's ``imagenet_1k``), under a search directory::

    imagenet/train/<wnid>/*.JPEG    1,281,167 training images, 1,000 class folders
    imagenet/val/<wnid>/*.JPEG      50,000 validation images, sorted into the same folders

Nothing is decoded up front: ``load`` lists the files once (os.scandir, no stat per file) and
returns an ``ImageFiles`` that decodes, resizes and centre-crops one image per item.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from oebench.api import DataNotFoundError, ImageSource, find_dir
from oebench_plugins.vision_datasets import (
    IMAGE_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    _size,
    check_split,
)

HOW = (
    "ImageNet cannot be downloaded by oebench (image-net.org needs a login): get ILSVRC2012_img_"
    "train.tar and ILSVRC2012_img_val.tar from https://image-net.org/download-images, extract "
    "them into {target}/imagenet/train/<wnid>/*.JPEG and {target}/imagenet/val/<wnid>/*.JPEG "
    "(val sorted into its class folders, e.g. with torchvision's or OpenOOD's val script)"
)


def folder_files(folder: str) -> list[str]:
    """Every image file under ``folder`` (any depth), sorted; os.scandir's types, no stat."""
    found: list[str] = []
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    stack.append(entry.path)
                elif entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                    found.append(entry.path)
    return sorted(found)


class ImageNet1K(ImageSource):
    """ImageNet-1K from class folders: ``train`` from ``<folder>/train/``, ``test`` from the
    sorted ``<folder>/val/``. A class id is the index of its wnid among the sorted ``train``
    wnids (torchvision's and OpenOOD's class order); images are resized (shorter side) and
    centre-cropped to ``size``; ImageNet mean/std normalisation."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    splits = ("train", "test")
    parts = {"train": "train", "test": "val"}

    def __init__(self, root: str | None = None, folder: str = "imagenet", size: int = 224):
        self.root, self.folder, self.size = root, folder, size
        self.shape = (3, size, size)
        self._top: Path | None = None
        self._wnids: list[str] | None = None
        self._listed: dict[str, tuple[list[str], list[int]]] = {}

    def config(self) -> dict[str, Any]:
        """The options only (the cached listings are no part of what the images are)."""
        options = {"root": self.root, "folder": self.folder, "size": self.size}
        return {"class": type(self).__qualname__, **options, "shape": list(self.shape)}

    def _locate(self) -> Path:
        """The ``<folder>/`` holding ``train/`` and ``val/``."""
        if self._top is None:
            base = find_dir(
                "ImageNet-1K",
                [f"{self.folder}/train", f"{self.folder}/val"],
                root=self.root,
                how=HOW.replace("imagenet/", f"{self.folder}/"),
            )
            self._top = base / self.folder
        return self._top

    def wnids(self) -> list[str]:
        """The sorted class folder names of ``train/``."""
        if self._wnids is None:
            train = self._locate() / "train"
            with os.scandir(train) as entries:
                self._wnids = sorted(e.name for e in entries if e.is_dir())
            if not self._wnids:
                raise DataNotFoundError(
                    f"ImageNet-1K: no class folders in {train}; expected train/<wnid>/*.JPEG"
                )
        return self._wnids

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.wnids())

    def _list(self, split: str) -> tuple[list[str], list[int]]:
        """``split``'s image paths and labels, sorted by class then path (listed once)."""
        if split in self._listed:
            return self._listed[split]
        ids = {w: i for i, w in enumerate(self.wnids())}
        top = self._locate() / self.parts[split]
        with os.scandir(top) as entries:
            classes = sorted(e.name for e in entries if e.is_dir())
        if not classes:
            raise DataNotFoundError(
                f"ImageNet-1K: no class folders in {top}; expected {top.name}/<wnid>/*.JPEG "
                "(the validation images sorted into class folders)"
            )
        unknown = [c for c in classes if c not in ids]
        if unknown:
            raise DataNotFoundError(
                f"ImageNet-1K: {len(unknown)} class folder(s) of {top} are not among the "
                f"{len(ids)} train/ classes: {', '.join(unknown[:5])}"
                + (", ..." if len(unknown) > 5 else "")
            )
        paths: list[str] = []
        labels: list[int] = []
        for wnid in classes:
            files = folder_files(str(top / wnid))
            paths += files
            labels += [ids[wnid]] * len(files)
        if not paths:
            raise DataNotFoundError(
                f"ImageNet-1K: no image files under {top}; expected {top.name}/<wnid>/*.JPEG"
            )
        self._listed[split] = paths, labels
        return paths, labels

    def files(self) -> list[Path]:
        """Every image file of ``train/`` and ``val/`` (1,331,167 for the real set)."""
        return [Path(p) for p in sorted(p for s in self.splits for p in self._list(s)[0])]

    def load(self, split, *, shape=None, seed=0):
        check_split(self, "imagenet", split)
        paths, labels = self._list(split)
        return ImageFiles(paths, labels, *_size(self, shape))  # type: ignore[arg-type]
