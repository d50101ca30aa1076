"""Describable Textures (DTD) via torchvision, all images as the OE paper's OOD set."""

from __future__ import annotations

from pathlib import Path

from oebench.api import ImageSource, find_dir
from oebench_plugins.vision_datasets import Fit, _size, check_split, checked, image_files


class Dtd(ImageSource):
    """Describable Textures (47 classes) via torchvision's DTD.

    ``all_images=True`` (default) makes ``test`` every image of the dataset, as the OE paper
    uses it as an OOD set; otherwise splits follow partition ``partition`` (1-10).
    """

    num_classes = 47
    splits = ("train", "val", "test")

    def __init__(
        self, root: str | None = None, size: int = 32, partition: int = 1, all_images: bool = True
    ):
        self.root, self.size, self.partition, self.all_images = root, size, partition, all_images
        self.shape = (3, size, size)

    def _label_files(self) -> list[str]:
        return [f"dtd/dtd/labels/{s}{self.partition}.txt" for s in self.splits]

    def _locate(self) -> Path:
        """The directory holding ``dtd/dtd/`` (downloaded there only when allowed)."""
        from torchvision.datasets import DTD

        return find_dir(
            "DTD",
            ["dtd/dtd/images", *self._label_files()],
            root=self.root,
            download=lambda d: DTD(str(d), download=True),
            how=f"Download {DTD._URL} and extract it into {{target}}/dtd",
        )

    def files(self) -> list[Path]:
        """The partition's three label lists and every image file under ``dtd/dtd/images``."""
        base = self._locate()
        labels = [base / name for name in self._label_files()]
        return sorted(labels + image_files(base / "dtd" / "dtd" / "images"))

    def load(self, split, *, shape=None, seed=0):
        from torch.utils.data import ConcatDataset
        from torchvision.datasets import DTD

        check_split(self, "dtd", split)
        p = self.partition
        base = self._locate()
        fit = Fit(*_size(self, shape))
        parts = self.splits if split == "test" and self.all_images else (split,)
        sets = [
            checked("DTD", base, lambda s=s: DTD(str(base), split=s, partition=p, transform=fit))
            for s in parts
        ]
        return sets[0] if len(sets) == 1 else ConcatDataset(sets)
