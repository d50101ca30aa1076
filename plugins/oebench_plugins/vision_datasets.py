"""The OE paper's image datasets, read from their usual on-disk formats (torchvision's layouts).

Every dataset looks for its files in the ``root`` option, then the data root (``--data-root``,
``$OEBENCH_DATA_ROOT``, ``~/.cache/oebench/data``), then system locations, and downloads them
only with ``--download``. Layouts, relative to that directory:

=================  ===============================================================================
``cifar10``        ``cifar-10-batches-py/`` (the extracted python tarball)
``cifar100``       ``cifar-100-python/``
``svhn``           ``svhn/{train,test,extra}_32x32.mat``
``mnist``          ``MNIST/raw/`` IDX files, plain or ``.gz``
``fashion-mnist``  ``FashionMNIST/raw/`` IDX files, plain or ``.gz``; also Debian's
                   ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``)
``dtd``            ``dtd/dtd/{images,labels}`` (the DTD tarball extracted into ``dtd/``)
``places365``      ``places365/`` with ``categories_places365.txt``, ``places365_val.txt`` and
                   ``val_256/`` (the small validation images); or the ``folder`` option
``lsun``           ``lsun/``: a folder of image files at any depth, e.g. the LSUN test set
                   exported from its lmdb, or the ODIN repository's LSUN (crop) folder
``isun``           ``iSUN/`` (or ``isun/``): a folder of image files, e.g. ODIN's iSUN patches
``tiny-imagenet``  ``tiny-imagenet-200/`` with ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and
                   ``val/images/*.JPEG`` + ``val/val_annotations.txt``
``image-folder``   the ``folder`` option: class sub-folders of images (ImageNet's
                   ``<wnid>/*.JPEG``), minus the classes named by ``exclude`` (also an outlier
                   source: ImageNet-22K without Tiny ImageNet's classes, as in the OE paper)
=================  ===============================================================================

Images come back as float CHW in [0, 1] at their native size; sources whose files vary in size
(DTD, LSUN, iSUN, Places365 folders) are resized so the shorter side fits and centre-cropped, to
the ID shape when one is given (the OE paper's "resize + centre crop"), else to ``size``.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import oebench.api as oebench
from oebench.api import (
    DataNotFoundError,
    ImageSource,
    TensorImages,
    UserError,
    adapt_images,
    cache_dir,
    find_dir,
    present,
)

CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


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


# -- in-memory datasets (CIFAR, SVHN, MNIST) -------------------------------------------------------
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


# -- image-file datasets ---------------------------------------------------------------------------
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
        n: int | None = 10000,
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


def folder_images(what: str, folder: Path) -> list[Path]:
    """The image files under ``folder``, or a one-line DataNotFoundError."""
    files = image_files(folder) if folder.is_dir() else []
    if not files:
        raise DataNotFoundError(
            f"{what}: no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}"
        )
    return files


class ImageFolderSet(ImageSource):
    """An unlabelled OOD set: every image file under one folder (any depth), sorted."""

    splits = ("test",)
    title = "images"
    folders: tuple[str, ...] = ()
    how = ""

    def __init__(
        self,
        root: str | None = None,
        folder: str | None = None,
        size: int = 32,
        n: int | None = None,
    ):
        self.root, self.folder, self.size, self.n = root, folder, size, n
        self.shape = (3, size, size)

    def _locate(self) -> Path:
        """The ``folder`` option, else the first of ``folders`` found in the search directories."""
        if self.folder:
            return Path(self.folder).expanduser()
        base = find_dir(self.title, [self.folders], root=self.root, how=self.how)
        return present(base, self.folders)

    def files(self) -> list[Path]:
        """Every image file under the folder (any depth), sorted."""
        return folder_images(self.title, self._locate())

    def load(self, split, *, shape=None, seed=0):
        check_split(self, self.title, split)
        images = folder_images(self.title, self._locate())
        return ImageFiles(subset(images, self.n), None, *_size(self, shape))


class Lsun(ImageFolderSet):
    """LSUN as an OOD set: a folder of LSUN images (resize + centre crop)."""

    title = "LSUN"
    folders = ("lsun", "LSUN")
    how = (
        "Export the LSUN test set's images from its lmdb (the LSUN project's tools), or use "
        "the LSUN folders linked from https://github.com/facebookresearch/odin, and put the "
        "image files into {target}/lsun"
    )


class Isun(ImageFolderSet):
    """iSUN as an OOD set: a folder of iSUN images."""

    title = "iSUN"
    folders = ("iSUN", "isun")
    how = (
        "Extract the iSUN archive linked from https://github.com/facebookresearch/odin into "
        "{target}"
    )


class Icons50(ImageFolderSet):
    """Icons-50 as an OOD set for SVHN: ``Icons-50/<class>/<image>``, without the ``numbers``
    class (digit icons are not OOD for SVHN), as the OE reference code does."""

    title = "Icons-50"
    folders = ("Icons-50", "icons-50")
    how = (
        "Download Icons-50 (github.com/hendrycks/robustness, ICONS-50) and extract it into "
        "{target}, so that {target}/Icons-50/<class>/ holds the images"
    )
    #: classes left out (first-level folder names)
    dropped = ("numbers",)

    def files(self) -> list[Path]:
        """Every image file of the kept classes, sorted."""
        base = self._locate()
        kept = [p for p in folder_images(self.title, base)
                if p.relative_to(base).parts[0] not in self.dropped]  # fmt: skip
        if not kept:
            raise DataNotFoundError(f"{self.title}: no images outside {self.dropped} in {base}")
        return kept

    def load(self, split, *, shape=None, seed=0):
        check_split(self, self.title, split)
        return ImageFiles(subset(self.files(), self.n), None, *_size(self, shape))


class Chars74K(ImageFolderSet):
    """Chars74K street letters as an OOD set for SVHN: every image under ``Chars74K/`` (the
    ``English/Img`` natural-image part: ``GoodImg/Bmp/SampleNNN/*.png``), resized and
    centre-cropped like the reference's ``ImageFolder``."""

    title = "Chars74K"
    folders = ("Chars74K", "chars74k", "English/Img")
    how = (
        "Download EnglishImg.tgz from the Chars74K project page and extract its English/Img "
        "folder into {target}/Chars74K"
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


class ClassFolders(ImageSource):
    """Images in class sub-folders (ImageNet's layout, ``<folder>/<wnid>/*.JPEG``), minus the
    classes listed in ``exclude``: the OE paper's ImageNet-22K outliers without the ID classes.

    ``folder`` and every ``exclude`` entry are absolute paths, or names looked up in the data
    directories (the ``root`` option, then the data root); several ``exclude`` entries are
    separated by commas (from Python, also a list). An ``exclude`` entry is a text file
    of class ids (the first word of each line; ``#`` starts a comment), such as Tiny ImageNet's
    own ``tiny-imagenet-200/wnids.txt``, or a folder whose sub-folder names are the ids (such
    as an ImageNet-1K folder in class sub-folders). The images of a kept class may lie at any
    depth under its folder; they come back unlabelled, resized (shorter side) and centre-cropped
    to the ID shape (else ``size``). ``max_images`` keeps a seeded random subset.
    """

    splits = ("train", "test")

    def __init__(
        self,
        folder: str,
        exclude: str | list[str] | None = None,
        root: str | None = None,
        size: int = 64,
        max_images: int | None = None,
    ):
        self.folder, self.root, self.size, self.max_images = folder, root, size, max_images
        entries = exclude.split(",") if isinstance(exclude, str) else list(exclude or [])
        self.exclude = [e.strip() for e in entries if e.strip()]
        self.shape = (3, size, size)

    def _find(self, name: str, what: str) -> Path:
        """``name`` as given when absolute, else the first search directory holding it."""
        if Path(name).expanduser().is_absolute():
            path = Path(name).expanduser()
            if not path.exists():
                raise DataNotFoundError(f"image-folder's {what} not found: no {path}")
            return path
        base = find_dir(f"image-folder's {what}", [name], root=self.root)
        return base / name

    def _lists(self) -> list[Path]:
        """The ``exclude`` entries that are files (folders list no file of their own)."""
        return [p for p in (self._find(e, "exclude list") for e in self.exclude) if p.is_file()]

    def excluded(self) -> set[str]:
        """The class ids named by every ``exclude`` entry."""
        ids: set[str] = set()
        for entry in self.exclude:
            path = self._find(entry, "exclude list")
            if path.is_dir():
                ids.update(d.name for d in path.iterdir() if d.is_dir())
                continue
            for line in path.read_text().splitlines():
                words = line.split("#", 1)[0].split()
                if words:
                    ids.add(words[0])
        return ids

    def classes(self) -> list[Path]:
        """The kept class folders, sorted by name."""
        top = self._find(self.folder, "folder")
        if not top.is_dir():
            raise DataNotFoundError(f"image-folder: {top} is not a folder")
        found = sorted(d for d in top.iterdir() if d.is_dir())
        if not found:
            raise DataNotFoundError(f"image-folder: no class sub-folders in {top}")
        dropped = self.excluded()
        kept = [d for d in found if d.name not in dropped]
        if not kept:
            raise DataNotFoundError(
                f"image-folder: every class folder of {top} is excluded ({len(found)} classes)"
            )
        return kept

    def images(self) -> list[Path]:
        """Every image file of the kept classes, sorted by class and path."""
        paths = [p for d in self.classes() for p in image_files(d)]
        if not paths:
            raise DataNotFoundError(
                f"image-folder: no image files ({', '.join(IMAGE_SUFFIXES)}) in the kept "
                f"classes of {self._find(self.folder, 'folder')}"
            )
        return paths

    def files(self) -> list[Path]:
        """The ``exclude`` lists and every image of the kept classes."""
        return sorted(self._lists() + self.images())

    def load(self, split, *, shape=None, seed=0):
        check_split(self, "image-folder", split)
        paths = subset(self.images(), self.max_images, seed)
        return ImageFiles(paths, None, *_size(self, shape))


@oebench.hookimpl
def register_datasets(register):
    register("cifar10", Cifar, description="CIFAR-10 (torchvision files; OE paper normalisation)")
    register("cifar100", Cifar100, description="CIFAR-100 (torchvision files)")
    register("svhn", Svhn, description="SVHN cropped digits (.mat; use_extra=true adds extra)")
    register("mnist", IdxDigits, description="MNIST (IDX files, plain or .gz)")
    register(
        "fashion-mnist",
        FashionMnist,
        description="Fashion-MNIST (IDX files; Debian's dataset-fashion-mnist works)",
    )
    register("dtd", Dtd, description="Describable Textures; 'test' = all 5,640 images (OE paper)")
    register(
        "places365", Places365, description="Places365 (small images): train + val, or a folder"
    )
    register("lsun", Lsun, description="LSUN images from a folder (resize + centre crop)")
    register("isun", Isun, description="iSUN images from a folder")
    register("tiny-imagenet", TinyImageNet, description="Tiny ImageNet 200 (train / val folders)")
    register("icons50", Icons50, description="Icons-50 without its 'numbers' class (SVHN OOD)")
    register("chars74k", Chars74K, description="Chars74K street letters (SVHN OOD, image folder)")
    register(
        "image-folder",
        ClassFolders,
        description="images in class sub-folders (ImageNet layout), minus 'exclude' classes",
    )


@oebench.hookimpl
def register_outlier_sources(register):
    register(
        "image-folder",
        ClassFolders,
        description="ImageNet-22K-style class folders minus 'exclude' classes (OE paper: TIN)",
    )
