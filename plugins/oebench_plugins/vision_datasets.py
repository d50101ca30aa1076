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

import oebench.api as oebench
from oebench_plugins.cifar import Cifar, Cifar100
from oebench_plugins.class_folders import ClassFolders
from oebench_plugins.image_folders import Chars74K, Icons50, Isun, Lsun
from oebench_plugins.mnist import FashionMnist, IdxDigits
from oebench_plugins.places import Places365
from oebench_plugins.svhn import Svhn
from oebench_plugins.textures import Dtd
from oebench_plugins.tiny_imagenet import TinyImageNet


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
