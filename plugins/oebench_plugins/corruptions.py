"""Covariate-shifted ID sets: the ImageNet-C / CIFAR-10-C corruptions of an ID test split."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Le

import oebench.api as oebench
from oebench.api import DataNotFoundError, ImageSource, TensorImages, UserError

#: bump when a corruption's output changes (keys the cache of generated arrays)
CORRUPTION_VERSION = 1
#: the 15 corruptions of CIFAR-10-C / ImageNet-C (``corruption_ops.CORRUPTIONS``)
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
#: ITU-R 601 luma: a grey image's three corrupted channels back to one
LUMA = (0.299, 0.587, 0.114)


class Corrupted(ImageSource):
    """An ID dataset's test split under one of the 15 corruptions of Hendrycks & Dietterich
    (ICLR 2019, "Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations") at ``severity`` 1-5, or under each of them (``corruption = "all"``: the
    15 sets one after another). The labels, classes, shape and normalisation are the ID
    dataset's: covariate-shifted ID data, as full-spectrum OOD detection evaluates it.

    ``dataset``: the ID dataset, a name or a table with ``name`` and its options. ``n``: use
    the first ``n`` ID test images (``"all"`` then gives 15 x ``n``). ``seed``: the
    corruptions' random numbers (image ``i`` draws from ``(seed, corruption, severity, i)``,
    so a smaller ``n`` gives a prefix); the benchmark's seed only reaches the ID dataset's
    ``load``. Every corruption is made the same way for every seed, like the published
    CIFAR-10-C set.

    Parameters: the 32x32 severity tables of the authors' ``make_cifar_c.py``
    (github.com/hendrycks/robustness, ``ImageNet-C/create_c/``), used at every image size;
    the code is ``oebench_plugins.corruption_ops`` (numpy/scipy/skimage/PIL in place of Wand
    and OpenCV; its docstring lists what differs). Grey images (MNIST) are repeated to three
    channels, corrupted, and brought back to one by ITU-R 601 luma (so per-channel noise
    loses about a third of its std: ``sqrt(sum(luma^2)) = 0.67``). Glass blur keeps the
    authors' pixel "swap", which copies rather than swaps (CIFAR-10-C was made so).

    ``frost``: the authors overlay crops of six frost photographs that oebench does not
    ship. ``"procedural"`` (default) uses five frost-like textures generated here from a fixed
    seed (branching ice needles over a plasma haze, each scaled to the per-channel mean and
    std of the authors' image it replaces): a documented deviation from the published frost.
    ``"imagecorruptions"`` reads the authors' images from the ``imagecorruptions`` package
    (``pip install --no-deps imagecorruptions``; only its files are read, not its code; they
    are byte for byte the robustness repository's ``frost1.png`` ... ``frost5.jpg``).
    Generated arrays are cached in ``<cache>/corruptions`` by the clean images' content.
    """

    splits = ("test",)

    def __init__(
        self,
        dataset: str | dict[str, Any] = "mnist-5k",
        corruption: str = "gaussian_noise",
        severity: Annotated[int, Ge(1), Le(5)] = 3,
        n: Annotated[int, Ge(1)] | None = None,
        seed: Annotated[int, Ge(0)] = 0,
        frost: str = "procedural",
    ):
        if corruption not in (*CORRUPTIONS, "all"):
            raise UserError(
                f"corrupted: unknown corruption {corruption!r}; one of {', '.join(CORRUPTIONS)}"
                " or 'all'"
            )
        if frost not in ("procedural", "imagecorruptions"):
            raise UserError(
                f"corrupted: frost must be 'procedural' or 'imagecorruptions', not {frost!r}"
            )
        if not (1 <= severity <= 5 and (n is None or n >= 1) and seed >= 0):
            raise ValueError(f"severity {severity} not in 1-5, n {n} < 1 or seed {seed} < 0")
        self.dataset, self.corruption, self.severity = dataset, corruption, severity
        self.n, self.seed, self.frost = n, seed, frost
        source = self._source()
        if not source.num_classes:
            raise UserError(f"corrupted: {self._name()!r} is not an ID dataset (no classes)")
        if "test" not in source.splits:
            raise UserError(f"corrupted: {self._name()!r} has no test split")
        self.shape, self.num_classes = tuple(source.shape), int(source.num_classes)
        self.mean, self.std = tuple(source.mean), tuple(source.std)

    def _name(self) -> str:
        return self.dataset if isinstance(self.dataset, str) else str(self.dataset.get("name"))

    def _source(self) -> Any:
        spec = self.dataset if isinstance(self.dataset, dict) else {"name": self.dataset}
        if not isinstance(spec.get("name"), str):
            raise UserError(f"corrupted: dataset must be a name or a table with 'name': {spec}")
        options = {k: v for k, v in spec.items() if k != "name"}
        return oebench.create_dataset(spec["name"], **options)

    def frost_files(self) -> list[Path]:
        """The authors' frost images inside the installed ``imagecorruptions`` package."""
        import importlib.util

        spec = importlib.util.find_spec("imagecorruptions")
        folders = list(spec.submodule_search_locations or []) if spec else []
        paths = [Path(folders[0], "frost", f) for f in FROST_FILES] if folders else []
        if not paths or not all(p.is_file() for p in paths):
            raise DataNotFoundError(
                "corrupted: frost = 'imagecorruptions' reads the authors' frost images from "
                "the imagecorruptions package: pip install --no-deps imagecorruptions"
            )
        return paths

    def files(self) -> list[Path]:
        """The ID dataset's files, and the frost images where they are read."""
        found = list(self._source().files())
        if self.frost == "imagecorruptions" and self.corruption in ("frost", "all"):
            found += self.frost_files()
        return sorted(set(found))

    def config(self) -> dict[str, Any]:
        """The options, the ID dataset's configuration and the generator's version."""
        return super().config() | {
            "id": self._source().config(),
            "version": CORRUPTION_VERSION,
        }

    def textures(self) -> list[Any]:
        """The frost textures (float HxWx3 in [0, 255])."""
        if self.frost == "imagecorruptions":
            return [file_frost(p) for p in self.frost_files()]
        return [procedural_frost(i) for i in range(len(FROST_FILES))]

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        if split not in self.splits:
            raise UserError(f"corrupted: no split {split!r}; it has {self.splits}")
        shape = tuple(shape or self.shape)
        images, labels = _clean(self._source().load("test", shape=shape, seed=seed), shape)
        if self.n is not None:
            images, labels = images[: self.n], labels[: self.n]
        names = CORRUPTIONS if self.corruption == "all" else (self.corruption,)
        textures, tag = None, self.frost
        if "frost" in names:
            from oebench_plugins.corruption_ops import fit_texture

            textures = [fit_texture(t, *shape[1:]) for t in self.textures()]
            if self.frost != "procedural":
                tag = _digest(self.frost_files())
        parts = [
            corrupted_bank(images, name, self.severity, self.seed, textures, tag) for name in names
        ]
        out = torch.from_numpy(np.concatenate(parts))
        return TensorImages(out, torch.from_numpy(np.tile(labels, len(names))))


def _clean(data: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """A loaded split's images as uint8 numpy ``(N, *shape)`` and its labels as int64."""
    import numpy as np
    import torch

    if isinstance(data, TensorImages):
        images, labels = data.images, data.labels
    else:
        items = [data[i] for i in range(len(data))]
        images = torch.stack([x for x, _ in items])
        labels = torch.tensor([int(y) for _, y in items])
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != shape:
        images = oebench.to_float(images)
        if tuple(images.shape[1:]) != shape:
            images = oebench.adapt_images(images, shape)
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(images.numpy()), labels.numpy().astype(np.int64)


def _digest(paths: list[Path]) -> str:
    return hashlib.sha256("".join(oebench.content_digest(p) for p in paths).encode()).hexdigest()


def corrupt_images(images: Any, name: str, severity: int, seed: int, textures: Any = None) -> Any:
    """uint8 ``(N, C, H, W)`` images (C = 1 or 3) under one corruption, image by image."""
    import numpy as np

    from oebench_plugins import corruption_ops as ops

    code = CORRUPTIONS.index(name)
    out = np.empty_like(images)
    grey = images.shape[1] == 1
    for i in range(len(images)):
        hwc = images[i].transpose(1, 2, 0)
        if grey:
            hwc = np.repeat(hwc, 3, axis=2)
        rng = np.random.default_rng([seed, code, severity, i])
        result = ops.corrupt(hwc, name, severity, rng, textures)
        if grey:
            result = np.clip(np.round(result @ np.array(LUMA)), 0, 255)[..., None]
        out[i] = result.transpose(2, 0, 1)
    return out


def corrupted_bank(
    images: Any, name: str, severity: int, seed: int, textures: Any, tag: str
) -> Any:
    """``corrupt_images``, cached in ``<cache>/corruptions`` under the clean images' digest,
    the corruption, severity, seed, frost textures (``tag``) and ``CORRUPTION_VERSION``."""

    frost = tag if name == "frost" else "-"
    key = hashlib.sha256(
        f"v{CORRUPTION_VERSION}|{name}|{severity}|{seed}|{frost}|{images.shape}|".encode()
        + images.tobytes()
    ).hexdigest()[:20]
    path = oebench.cache_dir() / "corruptions" / f"{name}-{severity}-{key}.npy"
    made = lambda: corrupt_images(images, name, severity, seed, textures)  # noqa: E731
    return oebench.cached_array(path, made, images.shape, "uint8")


# -- frost textures --------------------------------------------------------------------------
#: per-channel (mean, std) of the authors' frost1-frost5, measured on their RGB pixels
FROST_STATS = (
    ((77.7, 149.1, 165.7), (26.9, 16.5, 15.3)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((137.6, 152.8, 165.2), (28.5, 28.5, 29.9)),
    ((112.4, 123.4, 134.8), (44.4, 43.3, 41.7)),
)


def procedural_frost(index: int, height: int = 128, width: int = 192) -> Any:
    """A frost-like texture (a stand-in for the authors' photographs, which oebench does not
    ship): branching ice needles drawn from a fixed seed over a plasma-fractal haze, scaled to
    the per-channel mean and std of the authors' ``frost{index + 1}``. Float (H, W, 3)."""
    import numpy as np
    from skimage.draw import line_aa

    from oebench_plugins.corruption_ops import plasma_fractal

    rng = np.random.default_rng([0xF5057, index])
    size = 1 << (max(height, width) - 1).bit_length()
    haze = plasma_fractal(rng, size, 2.0)[:height, :width]
    needles = np.zeros((height, width))
    stack = [
        (rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0, 2 * np.pi), 24.0)
        for _ in range(60)
    ]
    while stack:
        r, c, angle, length = stack.pop()
        r2, c2 = r + length * np.sin(angle), c + length * np.cos(angle)
        rr, cc, val = line_aa(int(r), int(c), int(r2), int(c2))
        keep = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        np.maximum.at(needles, (rr[keep], cc[keep]), val[keep] * min(1.0, length / 12))
        if length > 4:
            for t in rng.uniform(0.3, 1.0, 2):
                turn = rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
                stack.append((r + t * (r2 - r), c + t * (c2 - c), angle + turn, length * 0.55))
    base = 0.6 * needles + 0.4 * haze
    base = (base - base.mean()) / base.std()
    mean, std = (np.array(v) for v in FROST_STATS[index])
    return np.clip(mean + std * base[..., None], 0, 255)


def file_frost(path: Any) -> Any:
    """One of the authors' frost images as their script reads it: RGB, OpenCV's bilinear
    ``resize(fx=0.2, fy=0.2)`` (no anti-aliasing). Float (H, W, 3)."""
    import numpy as np
    from PIL import Image
    from scipy.ndimage import map_coordinates

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = round(rgb.shape[0] * 0.2), round(rgb.shape[1] * 0.2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sy, sx = (yy + 0.5) * 5 - 0.5, (xx + 0.5) * 5 - 0.5
    return np.stack(
        [map_coordinates(rgb[..., d], [sy, sx], order=1, mode="nearest") for d in range(3)], -1
    )


@oebench.hookimpl
def register_datasets(register):
    register(
        "corrupted",
        Corrupted,
        description="an ID test split under a CIFAR-10-C corruption, ID labels kept "
        "(Hendrycks & Dietterich, ICLR 2019)",
        citation="Hendrycks & Dietterich, ICLR 2019",
    )
