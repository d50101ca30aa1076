"""SVHN cropped digits from torchvision's .mat files (train, test, extra)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from oebench.api import DataNotFoundError, ImageSource, TensorImages, find_dir
from oebench_plugins.vision_datasets import check_split, checked


class Svhn(ImageSource):
    """SVHN cropped digits via torchvision (.mat files; label 10 becomes digit 0), no normalisation.

    ``use_extra=True`` trains on train + extra, as the OE paper does.
    """

    shape = (3, 32, 32)
    num_classes = 10
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    splits = ("train", "test", "extra")

    def __init__(self, root: str | None = None, use_extra: bool = False):
        self.root, self.use_extra = root, use_extra

    def _parts(self, split: str) -> list[str]:
        """The .mat files' splits that ``split`` reads: ``train`` adds ``extra`` with use_extra."""
        return ["train", "extra"] if split == "train" and self.use_extra else [split]

    def _locate(self, split: str, *, download: bool = True) -> Path:
        """The directory holding ``split``'s .mat files (downloaded there only when allowed)."""
        from torchvision.datasets import SVHN

        parts = self._parts(split)
        return find_dir(
            "SVHN",
            [SVHN.split_list[p][1] for p in parts],
            subdir="svhn",
            root=self.root,
            download=(lambda d: [SVHN(str(d), split=p, download=True) for p in parts])
            if download
            else None,
            how="Download " + " and ".join(SVHN.split_list[p][0] for p in parts) + " into {target}",
        )

    def _split_files(self, split: str, *, download: bool = True) -> list[Path]:
        from torchvision.datasets import SVHN

        base = self._locate(split, download=download)
        return [base / SVHN.split_list[p][1] for p in self._parts(split)]

    def files(self) -> list[Path]:
        """``test``'s .mat file, required (every ID or OOD use reads it); also, where found,
        those of ``train`` (train + extra with ``use_extra``) and ``extra``, which are never
        required or downloaded here, so an OOD set needs no training files."""
        paths = set(self._split_files("test"))
        for split in ("train", "extra"):
            with contextlib.suppress(DataNotFoundError):
                paths.update(self._split_files(split, download=False))
        return sorted(paths)

    def load(self, split, *, shape=None, seed=0):
        import torch
        from torchvision.datasets import SVHN

        check_split(self, "svhn", split)
        parts = self._parts(split)
        base = self._locate(split)
        sets = [checked("SVHN", base, lambda p=p: SVHN(str(base), split=p)) for p in parts]
        images = torch.cat([torch.from_numpy(s.data) for s in sets]).contiguous()
        labels = torch.cat([torch.from_numpy(s.labels) for s in sets])
        return TensorImages(images, labels.long())
