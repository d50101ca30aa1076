"""Covariate-shifted ID test sets, re-collected or re-rendered images of an ID dataset's
classes, for ``protocol = "full-spectrum"``'s ``csid_datasets``. Each is labelled with the
ID dataset's classes and has a ``test`` split only. Layouts, relative to the ``root`` option
or the data root (``--data-root``, ``$OEBENCH_DATA_ROOT``):

===============  ===========================================================================
``cifar10.1``    ``CIFAR-10.1/datasets/cifar10.1_<version>_{data,labels}.npy`` (the authors'
                 repository), or the two files in ``datasets/`` or directly in the folder;
                 labels in CIFAR-10's class order
``imagenet-r``   ``imagenet-r/<wnid>/*.jpg`` (the extracted ``imagenet-r.tar``; also
                 ``ImageNet-R/``): 200 classes, labelled with their ImageNet-1K indices
``imagenet-v2``  ``imagenetv2-<variant>-format-val/<class index 0-999>/*.jpeg`` (the extracted
                 tarball; also inside ``imagenetv2/``)
``imagenet-es``  ``ImageNet-ES/<part>/<setting>/<light>/param_<k>/<wnid>/*`` (``part`` es-test
                 or es-val, ``setting`` param_control or auto_exposure, ``light`` l1 or l5);
                 labelled with Tiny ImageNet's 200 classes (sorted ``wnids.txt``)
===============  ===========================================================================

The ImageNet class index of a WordNet id is its position in the sorted list of the 1000
ImageNet-1K ids (torchvision's ``ImageFolder`` order, as ``image-folder`` sorts class folders).
Image files are resized (shorter side) and centre-cropped to the ID shape, else to ``size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge

import oebench.api as oebench
from oebench.api import DataNotFoundError, ImageSource, TensorImages, find_dir
from oebench_plugins.cifar import CIFAR_MEAN, CIFAR_STD
from oebench_plugins.vision_datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFiles,
    check_split,
    image_files,
    subset,
)

Size = Annotated[int, Ge(8)]
MaxImages = Annotated[int, Ge(1)] | None

#: ImageNet-R's 200 WordNet ids, sorted (Hendrycks et al.'s ``imagenet_r_wnids``) ...
_R_WNIDS = """
    n01443537 n01484850 n01494475 n01498041 n01514859 n01518878 n01531178 n01534433 n01614925
    n01616318 n01630670 n01632777 n01644373 n01677366 n01694178 n01748264 n01770393 n01774750
    n01784675 n01806143 n01820546 n01833805 n01843383 n01847000 n01855672 n01860187 n01882714
    n01910747 n01944390 n01983481 n01986214 n02007558 n02009912 n02051845 n02056570 n02066245
    n02071294 n02077923 n02085620 n02086240 n02088094 n02088238 n02088364 n02088466 n02091032
    n02091134 n02092339 n02094433 n02096585 n02097298 n02098286 n02099601 n02099712 n02102318
    n02106030 n02106166 n02106550 n02106662 n02108089 n02108915 n02109525 n02110185 n02110341
    n02110958 n02112018 n02112137 n02113023 n02113624 n02113799 n02114367 n02117135 n02119022
    n02123045 n02128385 n02128757 n02129165 n02129604 n02130308 n02134084 n02138441 n02165456
    n02190166 n02206856 n02219486 n02226429 n02233338 n02236044 n02268443 n02279972 n02317335
    n02325366 n02346627 n02356798 n02363005 n02364673 n02391049 n02395406 n02398521 n02410509
    n02423022 n02437616 n02445715 n02447366 n02480495 n02480855 n02481823 n02483362 n02486410
    n02510455 n02526121 n02607072 n02655020 n02672831 n02701002 n02749479 n02769748 n02793495
    n02797295 n02802426 n02808440 n02814860 n02823750 n02841315 n02843684 n02883205 n02906734
    n02909870 n02939185 n02948072 n02950826 n02951358 n02966193 n02980441 n02992529 n03124170
    n03272010 n03345487 n03372029 n03424325 n03452741 n03467068 n03481172 n03494278 n03495258
    n03498962 n03594945 n03602883 n03630383 n03649909 n03676483 n03710193 n03773504 n03775071
    n03888257 n03930630 n03947888 n04086273 n04118538 n04133789 n04141076 n04146614 n04147183
    n04192698 n04254680 n04266014 n04275548 n04310018 n04325704 n04347754 n04389033 n04409515
    n04465501 n04487394 n04522168 n04536866 n04552348 n04591713 n07614500 n07693725 n07695742
    n07697313 n07697537 n07714571 n07714990 n07718472 n07720875 n07734744 n07742313 n07745940
    n07749582 n07753275 n07753592 n07768694 n07873807 n07880968 n07920052 n09472597 n09835506
    n10565667 n12267677
"""
#: ... and their ImageNet-1K class indices, in the same order (the authors' ``imagenet_r_mask``
#: in hendrycks/imagenet-r's eval.py; the same as timm's ``imagenet_r_indices.txt``)
_R_INDICES = """
    1 2 4 6 8 9 11 13 22 23 26 29 31 39 47 63 71 76 79 84
    90 94 96 97 99 100 105 107 113 122 125 130 132 144 145 147 148 150 151 155
    160 161 162 163 171 172 178 187 195 199 203 207 208 219 231 232 234 235 242 245
    247 250 251 254 259 260 263 265 267 269 276 277 281 288 289 291 292 293 296 299
    301 308 309 310 311 314 315 319 323 327 330 334 335 337 338 340 341 344 347 353
    355 361 362 365 366 367 368 372 388 390 393 397 401 407 413 414 425 428 430 435
    437 441 447 448 457 462 463 469 470 471 472 476 483 487 515 546 555 558 570 579
    583 587 593 594 596 609 613 617 621 629 637 657 658 701 717 724 763 768 774 776
    779 780 787 805 812 815 820 824 833 847 852 866 875 883 889 895 907 928 931 932
    933 934 936 937 943 945 947 948 949 951 953 954 957 963 965 967 980 981 983 988
"""


def imagenet_r_classes() -> dict[str, int]:
    """ImageNet-R's WordNet ids -> their ImageNet-1K class indices (0-999)."""
    return dict(zip(_R_WNIDS.split(), map(int, _R_INDICES.split()), strict=True))


def _first(base: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` present under ``base`` (``find_dir`` found one)."""
    return oebench.present(base, names) or base / names[0]


class _Files(ImageSource):
    """A test split of labelled image files: ``items()`` gives (path, label) pairs."""

    title = ""
    splits = ("test",)
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root: str | None, size: int, max_images: int | None):
        self.root, self.size, self.max_images = root, size, max_images
        self.shape = (3, size, size)

    def items(self) -> list[tuple[Path, int]]:
        raise NotImplementedError

    def files(self) -> list[Path]:
        """Every image file of the set (``max_images`` picks among them at load)."""
        return sorted(path for path, _ in self.items())

    def load(self, split, *, shape=None, seed=0):
        check_split(self, self.title, split)
        picked = subset(self.items(), self.max_images, seed)
        h, w = (shape[1], shape[2]) if shape else self.shape[1:]
        return ImageFiles([p for p, _ in picked], [y for _, y in picked], h, w)


def _class_images(what: str, top: Path, label: dict[str, int], layout: str) -> list:
    """(image, label) for every class folder of ``top``; a folder ``label`` lacks, or no
    image at all, is a one-line DataNotFoundError naming ``layout``."""
    folders = sorted(d for d in top.iterdir() if d.is_dir())
    stray = next((d for d in folders if d.name not in label), None)
    if stray is not None:
        raise DataNotFoundError(f"{what}: {stray} is not a class folder of {layout}")
    items = [(p, label[d.name]) for d in folders for p in image_files(d)]
    if not items:
        raise DataNotFoundError(f"{what}: no image files in {top}; expected {layout}")
    return items


# -- CIFAR-10.1 ------------------------------------------------------------------------------
class Cifar101(ImageSource):
    """CIFAR-10.1 (Recht et al., ICML 2019): about 2,000 new test images of CIFAR-10's classes
    from the Tiny Images pool, labelled in CIFAR-10's class order; ``version`` v6 (2,000
    images, the recommended one) or v4 (2,021)."""

    shape = (3, 32, 32)
    num_classes = 10
    mean, std = CIFAR_MEAN, CIFAR_STD
    splits = ("test",)

    def __init__(self, version: Literal["v6", "v4"] = "v6", root: str | None = None):
        self.version, self.root = version, root

    def paths(self) -> tuple[Path, Path]:
        """The data and labels files, from one folder."""
        names = [f"cifar10.1_{self.version}_{kind}.npy" for kind in ("data", "labels")]
        prefixes = ("CIFAR-10.1/datasets/", "datasets/", "")
        base = find_dir(
            f"CIFAR-10.1 ({self.version})",
            [tuple(p + n for p in prefixes) for n in names],
            root=self.root,
            how="Layout: CIFAR-10.1/datasets/ (the authors' repository, "
            "https://github.com/modestyachts/CIFAR-10.1), datasets/, or the two files directly "
            "in {target}",
        )
        for p in prefixes:
            if all((base / p / n).is_file() for n in names):
                return base / p / names[0], base / p / names[1]
        raise DataNotFoundError(
            f"CIFAR-10.1: {names[0]} and {names[1]} must lie in one folder (found under {base})"
        )

    def files(self) -> list[Path]:
        return sorted(self.paths())

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        check_split(self, "cifar10.1", split)
        data, labels = self.paths()
        x, y = np.load(data, allow_pickle=False), np.load(labels, allow_pickle=False)
        if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3) or y.shape != x.shape[:1]:
            raise DataNotFoundError(
                f"CIFAR-10.1: {data} holds {x.dtype} {x.shape}, {labels} {y.shape}: expected "
                "uint8 (N, 32, 32, 3) images and (N,) labels"
            )
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataNotFoundError(f"CIFAR-10.1: labels in {labels} outside 0-9")
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return TensorImages(images, torch.from_numpy(y.astype(np.int64)))


# -- ImageNet-R ------------------------------------------------------------------------------
R_LAYOUT = "imagenet-r/<wnid>/*.jpg (200 ImageNet-R classes)"


class ImageNetR(_Files):
    """ImageNet-R(enditions) (Hendrycks et al., ICCV 2021): 30,000 art, cartoon, sketch, toy,
    ... renditions of 200 ImageNet classes, labelled with their ImageNet-1K indices so that a
    1000-class classifier's outputs line up (no class subset is applied to its logits)."""

    title = "imagenet-r"
    num_classes = 1000

    def __init__(self, root: str | None = None, size: Size = 224, max_images: MaxImages = None):
        super().__init__(root, size, max_images)

    def items(self) -> list[tuple[Path, int]]:
        names = ("imagenet-r", "ImageNet-R")
        base = find_dir(
            "ImageNet-R",
            [names],
            root=self.root,
            how="Download https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar and "
            f"extract it into {{target}} ({R_LAYOUT})",
        )
        return _class_images("imagenet-r", _first(base, names), imagenet_r_classes(), R_LAYOUT)


# -- ImageNet-V2 -----------------------------------------------------------------------------
V2_FOLDERS = {
    "matched-frequency": "imagenetv2-matched-frequency-format-val",
    "threshold0.7": "imagenetv2-threshold0.7-format-val",
    "top-images": "imagenetv2-top-images-format-val",
}


class ImageNetV2(_Files):
    """ImageNet-V2 (Recht et al., ICML 2019): 10,000 new test images of the 1000 ImageNet
    classes (10 per class) collected as the original; ``variant`` matched-frequency (the
    main one), threshold0.7 or top-images. Class folders are named by ImageNet-1K index."""

    title = "imagenet-v2"
    num_classes = 1000

    def __init__(
        self,
        variant: Literal["matched-frequency", "threshold0.7", "top-images"] = "matched-frequency",
        root: str | None = None,
        size: Size = 224,
        max_images: MaxImages = None,
    ):
        super().__init__(root, size, max_images)
        self.variant = variant

    def items(self) -> list[tuple[Path, int]]:
        folder = V2_FOLDERS[self.variant]
        names = (folder, f"imagenetv2/{folder}")
        layout = f"{folder}/<class index 0-999>/*.jpeg"
        base = find_dir(
            f"ImageNet-V2 ({self.variant})",
            [names],
            root=self.root,
            how=f"Download imagenetv2-{self.variant}.tar.gz from "
            f"https://huggingface.co/datasets/vaishaal/ImageNetV2 and extract it into "
            f"{{target}} ({layout})",
        )
        label = {str(i): i for i in range(1000)}
        return _class_images("imagenet-v2", _first(base, names), label, layout)


# -- ImageNet-ES -----------------------------------------------------------------------------
ES_LAYOUT = "ImageNet-ES/<part>/<setting>/<light>/param_<k>/<wnid>/*"


class ImageNetES(_Files):
    """ImageNet-ES (Baek et al., CVPR 2024): Tiny ImageNet validation images shown on a screen
    and photographed by a real camera under two lighting conditions (``light`` l1, l5) and
    sensor settings (``setting`` param_control: ISO, shutter speed and aperture on a grid,
    ``param`` 1-27 in es-test, 1-64 in es-val; auto_exposure: ``param`` 1-5), labelled with
    the 200 Tiny ImageNet classes in the order of the sorted ``classes`` list (Tiny
    ImageNet's ``wnids.txt``, looked up like the data). ``part``: es-test (default) or es-val.
    Defaults take every light and param folder found."""

    title = "imagenet-es"
    num_classes = 200

    def __init__(
        self,
        part: Literal["es-test", "es-val"] = "es-test",
        setting: Literal["param_control", "auto_exposure"] = "param_control",
        light: Literal["all", "l1", "l5"] = "all",
        param: Annotated[int, Ge(1)] | None = None,
        classes: str = "tiny-imagenet-200/wnids.txt",
        root: str | None = None,
        size: Size = 64,
        max_images: MaxImages = None,
    ):
        super().__init__(root, size, max_images)
        self.part, self.setting, self.light, self.param = part, setting, light, param
        self.classes = classes

    def class_list(self) -> Path:
        """The ``classes`` file: as given when absolute, else looked up like the data."""
        path = Path(self.classes).expanduser()
        if not path.is_absolute():
            path = (
                find_dir(
                    "imagenet-es's class list",
                    [self.classes],
                    root=self.root,
                    how="It is Tiny ImageNet's wnids.txt (the ID classes); or give 'classes'",
                )
                / self.classes
            )
        if not path.is_file():
            raise DataNotFoundError(f"imagenet-es: class list not found: no file {path}")
        return path

    def wnids(self) -> list[str]:
        """The 200 class ids, sorted (first word per line of ``classes``)."""
        path = self.class_list()
        ids = sorted({w.split()[0] for w in path.read_text().splitlines() if w.split()})
        if len(ids) != self.num_classes:
            raise DataNotFoundError(f"imagenet-es: {path} lists {len(ids)} class ids, not 200")
        return ids

    def folders(self) -> list[Path]:
        """The ``param_<k>`` folders the options select, in light and param order."""
        names = (f"ImageNet-ES/{self.part}/{self.setting}", f"{self.part}/{self.setting}")
        base = find_dir(
            f"ImageNet-ES ({self.part}/{self.setting})",
            [names],
            root=self.root,
            how="Download ImageNet-ES (https://github.com/Edw2n/ImageNet-ES) and extract it "
            f"into {{target}} ({ES_LAYOUT})",
        )
        top = _first(base, names)
        lights = ["l1", "l5"] if self.light == "all" else [self.light]
        found = []
        for light in lights:
            params = sorted((top / light).glob("param_*"), key=lambda p: (len(p.name), p.name))
            if self.param is not None:
                params = [p for p in params if p.name == f"param_{self.param}"]
            found += [p for p in params if p.is_dir()]
        if not found:
            want = f"param_{self.param}" if self.param is not None else "param_<k>"
            raise DataNotFoundError(
                f"imagenet-es: no {'/'.join(lights)}/{want} folder in {top}; expected {ES_LAYOUT}"
            )
        return found

    def items(self) -> list[tuple[Path, int]]:
        folders = self.folders()
        label = {w: i for i, w in enumerate(self.wnids())}
        layout = f"{ES_LAYOUT} (Tiny ImageNet wnids)"
        return [x for f in folders for x in _class_images("imagenet-es", f, label, layout)]

    def files(self) -> list[Path]:
        """The class list and every image file the options select."""
        images = super().files()
        return sorted([self.class_list(), *images])


@oebench.hookimpl
def register_datasets(register):
    register(
        "cifar10.1",
        Cifar101,
        description="CIFAR-10.1: new CIFAR-10 test images, csid (Recht et al., ICML 2019)",
    )
    register(
        "imagenet-r",
        ImageNetR,
        description="ImageNet-R renditions, ImageNet-1K labels (Hendrycks et al., ICCV 2021)",
    )
    register(
        "imagenet-v2",
        ImageNetV2,
        description="ImageNet-V2 new ImageNet test sets, csid (Recht et al., ICML 2019)",
    )
    register(
        "imagenet-es",
        ImageNetES,
        description="ImageNet-ES camera/light shifts of Tiny ImageNet (Baek et al., CVPR 2024)",
    )
