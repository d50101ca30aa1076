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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import oebench.api as oebench
from oebench.api import DataNotFoundError, ImageSource, UserError, adapt_images

# -- shared by the dataset modules (cifar, svhn, mnist, textures, places, image_folders,
# tiny_imagenet, class_folders); they stay in this module because a code digest of
# ``checked`` includes its module's name (``type(exc).__name__``)
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


@oebench.hookimpl
def register_datasets(register):
    # imported here, not at the top: the dataset modules import this module's helpers
    from oebench_plugins.cifar import Cifar, Cifar100
    from oebench_plugins.class_folders import ClassFolders
    from oebench_plugins.image_folders import Chars74K, Icons50, Images, Isun, Lsun
    from oebench_plugins.imagenet import ImageNet1K
    from oebench_plugins.mnist import FashionMnist, IdxDigits
    from oebench_plugins.places import Places365
    from oebench_plugins.svhn import Svhn
    from oebench_plugins.textures import Dtd
    from oebench_plugins.tiny_imagenet import TinyImageNet

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
    register(
        "imagenet",
        ImageNet1K,
        description="ImageNet-1K class folders (imagenet/{train,val}/<wnid>/), read lazily",
    )
    register("images", Images, description="every image file under one folder (unlabelled OOD)")


@oebench.hookimpl
def register_outlier_sources(register):
    from oebench_plugins.class_folders import ClassFolders

    register(
        "image-folder",
        ClassFolders,
        description="ImageNet-22K-style class folders minus 'exclude' classes (OE paper: TIN)",
    )
