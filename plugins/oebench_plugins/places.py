"""Places365-Standard (small images) via torchvision, or any folder of images."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

from annotated_types import Ge

from oebench.api import DataNotFoundError, ImageSource, UserError, find_dir
from oebench_plugins.vision_datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    _size,
    check_split,
    checked,
    folder_images,
    image_files,
    subset,
)


class Places365(ImageSource):
    """Places365-Standard via torchvision (small 256x256 images): ``train`` is the standard
    training set (1.8M labelled images, all of them), ``test`` the validation set (36,500).

    As an OOD set, ``test`` keeps a fixed seeded subset of ``n`` images (the OE paper used an
    unpublished subset); as an ID dataset give ``n = 36500`` (or more) to test on the whole
    validation set. ``n`` never subsets ``train``. ``folder`` reads any folder of images
    instead (unlabelled, ``test`` only).
    """

    num_classes = 365
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    splits = ("train", "test")
    tv_splits = {"train": "train-standard", "test": "val"}

    def __init__(
        self,
        root: str | None = None,
        n: Annotated[int, Ge(1)] | None = 10000,
        size: int = 256,
        folder: str | None = None,
    ):
        self.root, self.n, self.size, self.folder = root, n, size, folder
        self.shape = (3, size, size)

    def _required(self, split: str) -> list[str]:
        """The category list, ``split``'s file list and its images folder."""
        from torchvision.datasets import Places365 as TvPlaces

        tv_split = self.tv_splits[split]
        images_dir = "val_256" if split == "test" else "data_256_standard"
        return [TvPlaces._CATEGORIES_META[0], TvPlaces._FILE_LIST_META[tv_split][0], images_dir]

    def _locate(self, split: str, *, download: bool = True) -> Path:
        """The directory holding ``split``'s files (downloaded there only when allowed)."""
        from torchvision.datasets import Places365 as TvPlaces

        tv_split = self.tv_splits[split]
        return find_dir(
            "Places365",
            self._required(split),
            subdir="places365",
            root=self.root,
            download=(lambda d: TvPlaces(str(d), split=tv_split, small=True, download=True))
            if download
            else None,
            how=f"Download {TvPlaces._BASE_URL}{TvPlaces._IMAGES_META[(tv_split, True)][0]} and "
            f"{TvPlaces._BASE_URL}{TvPlaces._DEVKIT_META['standard'][0]} and extract both "
            "into {target}",
        )

    def _split_files(self, split: str, *, download: bool = True) -> list[Path]:
        base = self._locate(split, download=download)
        categories, file_list, images_dir = self._required(split)
        return [base / categories, base / file_list, *image_files(base / images_dir)]

    def _folder_images(self) -> list[Path]:
        return folder_images("Places365", Path(self.folder))

    def files(self) -> list[Path]:
        """The ``folder``'s images; else ``test``'s lists and images, required (every ID or OOD
        use reads them), and ``train``'s where found (never required or downloaded here)."""
        if self.folder:
            return self._folder_images()
        paths = set(self._split_files("test"))
        with contextlib.suppress(DataNotFoundError):
            paths.update(self._split_files("train", download=False))
        return sorted(paths)

    def load(self, split, *, shape=None, seed=0):
        check_split(self, "places365", split)
        height, width = _size(self, shape)
        if self.folder:
            if split != "test":
                raise UserError("places365 with 'folder' has only the split 'test'")
            return ImageFiles(subset(self._folder_images(), self.n), None, height, width)
        from torchvision.datasets import Places365 as TvPlaces

        tv_split = self.tv_splits[split]
        base = self._locate(split)
        ds = checked("Places365", base, lambda: TvPlaces(str(base), split=tv_split, small=True))
        items = subset(list(ds.imgs), self.n if split == "test" else None)
        return ImageFiles([Path(f) for f, _ in items], [t for _, t in items], height, width)
