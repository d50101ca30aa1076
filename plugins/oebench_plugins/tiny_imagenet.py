"""Tiny ImageNet 200 (64x64): train/ for training, the labelled val/ for testing."""

from __future__ import annotations

from pathlib import Path

from oebench.api import ImageSource, find_dir
from oebench_plugins.vision_datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    _size,
    check_split,
    image_files,
)


class TinyImageNet(ImageSource):
    """Tiny ImageNet (200 classes, 64x64): ``train`` from train/, ``test`` is the labelled val/.

    Class ids follow the sorted WordNet ids of ``wnids.txt``.
    """

    shape = (3, 64, 64)
    num_classes = 200
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    splits = ("train", "test")

    def __init__(self, root: str | None = None):
        self.root = root

    def _locate(self) -> Path:
        """The ``tiny-imagenet-200/`` folder."""
        base = find_dir(
            "Tiny ImageNet",
            [
                "tiny-imagenet-200/wnids.txt",
                "tiny-imagenet-200/train",
                "tiny-imagenet-200/val/val_annotations.txt",
            ],
            root=self.root,
            how="Download http://cs231n.stanford.edu/tiny-imagenet-200.zip "
            "and unzip it into {target}",
        )
        return base / "tiny-imagenet-200"

    def files(self) -> list[Path]:
        """``wnids.txt``, ``val/val_annotations.txt`` and the image files under ``train/`` and
        ``val/images/`` (the unlabelled ``test/`` folder is never read)."""
        top = self._locate()
        lists = [top / "wnids.txt", top / "val" / "val_annotations.txt"]
        return sorted(lists + image_files(top / "train") + image_files(top / "val" / "images"))

    def load(self, split, *, shape=None, seed=0):
        check_split(self, "tiny-imagenet", split)
        top = self._locate()
        wnids = sorted(line.strip() for line in (top / "wnids.txt").read_text().split() if line)
        ids = {w: i for i, w in enumerate(wnids)}
        paths, labels = [], []
        if split == "train":
            for w in wnids:
                files = image_files(top / "train" / w)
                paths += files
                labels += [ids[w]] * len(files)
        else:
            for line in (top / "val" / "val_annotations.txt").read_text().splitlines():
                fields = line.split("\t")
                if len(fields) >= 2:
                    paths.append(top / "val" / "images" / fields[0])
                    labels.append(ids[fields[1]])
        return ImageFiles(paths, labels, *_size(self, None))
