"""CIFAR-10 and CIFAR-100 from torchvision's python batches, OE paper normalisation."""

from __future__ import annotations

from pathlib import Path

from oebench.api import ImageSource, TensorImages, find_dir
from oebench_plugins.vision_datasets import check_split, checked

CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))


class Cifar(ImageSource):
    """CIFAR-10 via torchvision (md5-checked python batches), with the OE paper's normalisation."""

    shape = (3, 32, 32)
    num_classes = 10
    mean, std = CIFAR_MEAN, CIFAR_STD
    splits = ("train", "test")
    tv_name = "CIFAR10"
    title = "CIFAR-10"

    def __init__(self, root: str | None = None):
        self.root = root

    def _required(self) -> list[str]:
        """Every batch and the meta file, relative to the directory ``_locate`` finds."""
        from torchvision import datasets

        cls = getattr(datasets, self.tv_name)
        names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [f"{cls.base_folder}/{n}" for n in names]

    def _locate(self) -> Path:
        """The directory holding ``<base_folder>/`` (downloaded there only when allowed)."""
        from torchvision import datasets

        cls = getattr(datasets, self.tv_name)
        return find_dir(
            self.title,
            self._required(),
            root=self.root,
            download=lambda d: cls(str(d), train=True, download=True),
            how=f"Download {cls.url} and extract it into {{target}}",
        )

    def files(self) -> list[Path]:
        base = self._locate()
        return sorted(base / name for name in self._required())

    def load(self, split, *, shape=None, seed=0):
        import torch
        from torchvision import datasets

        check_split(self, self.title, split)
        cls = getattr(datasets, self.tv_name)
        base = self._locate()
        ds = checked(self.title, base, lambda: cls(str(base), train=split == "train"))
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return TensorImages(images, torch.as_tensor(ds.targets, dtype=torch.long))


class Cifar100(Cifar):
    """CIFAR-100 (fine labels) via torchvision, with the OE paper's CIFAR normalisation."""

    num_classes = 100
    tv_name = "CIFAR100"
    title = "CIFAR-100"
