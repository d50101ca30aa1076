"""MNIST and Fashion-MNIST from IDX files, plain or gzipped (unpacked once into the cache)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from oebench.api import ImageSource, TensorImages, cache_dir, find_dir, present
from oebench_plugins.vision_datasets import check_split, checked

SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


class IdxDigits(ImageSource):
    """MNIST via torchvision's IDX reader; gzipped files are unpacked once into the cache."""

    shape = (1, 28, 28)
    num_classes = 10
    mean, std = (0.1307,), (0.3081,)
    splits = ("train", "test")
    tv_name = "MNIST"
    title = "MNIST"
    system: tuple[str, ...] = ()
    how = ""  # what the error message says before the download hint

    def __init__(self, root: str | None = None):
        self.root = root

    def _locate(self) -> tuple[Path, list[str]]:
        """The directory holding the four IDX files (plain or .gz), and their plain names."""
        from torchvision import datasets

        cls = getattr(datasets, self.tv_name)
        names = [gz[: -len(".gz")] for gz, _ in cls.resources]
        found = find_dir(
            self.title,
            [(n, n + ".gz") for n in names],
            subdir=f"{self.tv_name}/raw",
            root=self.root,
            system=self.system,
            download=lambda d: cls(str(d.parent.parent), download=True),
            how=f"{self.how}{'d' if self.how else 'D'}ownload the .gz files from "
            f"{cls.mirrors[0]} into {{target}}",
        )
        return found, names

    def files(self) -> list[Path]:
        """The IDX files read: each plain file where present, else its ``.gz``."""
        found, names = self._locate()
        return sorted(present(found, (n, n + ".gz")) for n in names)

    def load(self, split, *, shape=None, seed=0):
        from torchvision import datasets

        check_split(self, self.title, split)
        cls = getattr(datasets, self.tv_name)
        found, names = self._locate()
        root = self.torchvision_root(found, names)
        ds = checked(self.title, found, lambda: cls(str(root), train=split == "train"))
        return TensorImages(ds.data[:, None].contiguous(), ds.targets.long())

    def torchvision_root(self, found: Path, names: list[str]) -> Path:
        """A root with ``<Class>/raw/`` holding plain IDX files: ``found``'s, or unpacked copies."""
        if found.parts[-2:] == (self.tv_name, "raw") and all((found / n).is_file() for n in names):
            return found.parent.parent
        target_root = cache_dir() / "unpacked" / _path_key(found)
        raw = target_root / self.tv_name / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (raw / name).is_file():
                continue
            src = present(found, (name, name + ".gz"))
            tmp = raw / f".{name}.{os.getpid()}.tmp"
            with (
                gzip.open(src) if src.suffix == ".gz" else open(src, "rb") as fin,
                open(tmp, "wb") as fout,
            ):
                shutil.copyfileobj(fin, fout, 1 << 20)
            tmp.replace(raw / name)
        return target_root


def _path_key(path: Path) -> str:
    """A short folder name for a source directory and the sizes and times of its files."""
    import hashlib

    stamp = [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.iterdir())
        if p.is_file()
    ]
    return hashlib.sha256(repr((str(path.resolve()), stamp)).encode()).hexdigest()[:12]


class FashionMnist(IdxDigits):
    """Fashion-MNIST via torchvision; also reads Debian's ``dataset-fashion-mnist`` files."""

    mean, std = (0.2860,), (0.3530,)
    tv_name = "FashionMNIST"
    title = "Fashion-MNIST"
    system = (SYSTEM_FASHION_MNIST,)
    how = "Install them with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or "
