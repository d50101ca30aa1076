"""The OE paper's synthetic OOD sets (Gaussian, Rademacher, Blobs), as the network receives them.

The reference code draws these sets in the network's *input* space, after normalisation
would have happened, and feeds them to the network without its ``Normalize``: for CIFAR
(normalised inputs) Gaussian is ``clip(N(0, 0.5), -1, 1)``, Rademacher ``±1`` and Blobs
``2·b − 1``; for SVHN (inputs in [0, 1], no normalisation) Gaussian is
``clip(N(0.5, 0.5), 0, 1)``, Rademacher ``{0, 1}`` and Blobs ``b``.

How network-space sets keep the data contract (items are [0, 1] images): each class here sets
``network_space = True``, so the runner passes the ID dataset's ``norm=(mean, std)`` to
``load``, which *un-normalises* the drawn values, ``x = z·std + mean``, choosing for every pixel
the float32 ``x`` whose ``(x − mean) / std`` (the ``Classifier``'s float32 arithmetic) lands
nearest to the recipe's value ``z``. The model therefore receives the recipe's tensor (to the
last float32 bit where reachable, otherwise within one float32 step, <= 1.2e-7) while the
dataset still yields images in [0, 1]. A recipe that would need pixels outside [0, 1] under
some normalisation (the [-1, 1] recipe under MNIST's) is refused with a one-line error; use
the ``-pixel`` variants there. ``space`` picks the recipe: ``auto`` (the paper's choice:
``unit`` for an ID dataset without normalisation, ``normalised`` otherwise), ``normalised``
or ``unit``. The runner also keys cached outputs by the normalisation a set was made for.

The ``*-pixel`` sets are the older variants drawn in [0, 1] pixel space and then normalised
like any image (under CIFAR's normalisation about twice the reference amplitude).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from annotated_types import Ge, Le

import oebench.api as oebench
from oebench.api import ImageSource, TensorImages, UserError

SPACES = ("auto", "normalised", "unit")
#: the range of recipe values per space
RANGES = {"normalised": (-1.0, 1.0), "unit": (0.0, 1.0)}
#: what oebench assumes when a caller does not say (ImageSource's default normalisation)
DEFAULT_NORM = ((0.5,), (0.5,))
CHUNK = 1000
#: how many images a set draws: at least one, at most a million (beyond that, a typo)
Count = Annotated[int, Ge(1), Le(1_000_000)]


def _rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if split == "test" else 1, 0x5EED])


def _channels(values: Sequence[float], c: int) -> np.ndarray:
    """Per-channel statistics broadcast to ``c`` channels, shape (1, c, 1, 1), float64."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(arr) == 1:
        arr = np.repeat(arr, c)
    if len(arr) != c:
        raise UserError(f"normalisation has {len(arr)} channels, images have {c}")
    return arr.reshape(1, c, 1, 1)


def resolve_space(space: str, mean: Sequence[float], std: Sequence[float]) -> str:
    """``auto`` -> ``unit`` when the ID dataset is not normalised (SVHN), else ``normalised``."""
    if space != "auto":
        return space
    identity = all(m == 0 for m in mean) and all(s == 1 for s in std)
    return "unit" if identity else "normalised"


def to_pixels(z: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 images ``x`` in [0, 1] whose float32 ``(x - mean) / std`` is nearest to ``z``."""
    m32, s32 = mean.astype(np.float32), std.astype(np.float32)
    target = z.astype(np.float32)
    x = np.clip(z * std + mean, 0.0, 1.0).astype(np.float32)
    best, err = x, np.abs((x - m32) / s32 - target)
    for direction in (np.float32(-np.inf), np.float32(np.inf)):
        cand = x
        for _ in range(2):  # up to two float32 steps either way
            cand = np.clip(np.nextafter(cand, direction), 0, 1).astype(np.float32)
            cand_err = np.abs((cand - m32) / s32 - target)
            better = cand_err < err
            best, err = np.where(better, cand, best), np.where(better, cand_err, err)
    return best


class NetworkSpaceSet(ImageSource):
    """A set defined in the network's input space; ``load`` needs the ID normalisation."""

    network_space = True

    def __init__(self, n: Count = 2000, space: str = "auto"):
        if space not in SPACES:
            raise UserError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
        self.n, self.space = n, space

    def draw(self, rng: np.random.Generator, size: tuple[int, ...], space: str) -> np.ndarray:
        """``size`` values of the recipe in ``space`` (float64)."""
        raise NotImplementedError

    def check_norm(self, mean: Sequence[float], std: Sequence[float], c: int = 1) -> str:
        """The recipe space for this normalisation; a UserError if it needs non-[0, 1] pixels."""
        space = resolve_space(self.space, mean, std)
        lo, hi = RANGES[space]
        m, s = _channels(mean, c), _channels(std, c)
        if (lo * s + m).min() < -1e-6 or (hi * s + m).max() > 1 + 1e-6:
            raise UserError(
                f"{type(self).__name__.lower()}: the OE paper's {space} recipe "
                f"(values in [{lo:g}, {hi:g}] as the network receives them) needs pixels outside "
                f"[0, 1] under the ID normalisation mean={tuple(mean)}, std={tuple(std)}; "
                f"use the '-pixel' variant or another 'space'"
            )
        return space

    def load(self, split, *, shape=None, seed=0, norm=None):
        import torch

        shape = tuple(shape or (3, 32, 32))
        mean, std = norm or DEFAULT_NORM
        space = self.check_norm(mean, std, shape[0])
        m, s = _channels(mean, shape[0]), _channels(std, shape[0])
        rng = _rng(seed, split)
        chunks = []
        for start in range(0, self.n, CHUNK):
            size = (min(CHUNK, self.n - start), *shape)
            chunks.append(to_pixels(self.draw(rng, size, space), m, s))
        images = np.concatenate(chunks) if chunks else np.zeros((0, *shape), np.float32)
        return TensorImages(torch.from_numpy(images))


def _blobs(rng: np.random.Generator, size: tuple[int, ...], p: float, sigma: float, cutoff: float):
    """Bernoulli(p) in HWC -> blur over all three axes -> values < ``cutoff`` set to 0 -> CHW."""
    from scipy.ndimage import gaussian_filter

    n, c, h, w = size
    hwc = rng.binomial(1, p, (n, h, w, c)).astype(np.float64)
    blurred = gaussian_filter(hwc, sigma=(0, sigma, sigma, sigma), mode="nearest", truncate=4.0)
    blurred[blurred < cutoff] = 0.0
    return blurred.transpose(0, 3, 1, 2)


class Gaussian(NetworkSpaceSet):
    """clip(N(0, sigma), -1, 1) (normalised) or clip(N(0.5, sigma), 0, 1) (unit), network space."""

    def __init__(self, n: Count = 2000, sigma: float = 0.5, space: str = "auto"):
        super().__init__(n, space)
        self.sigma = sigma

    def draw(self, rng, size, space):
        lo, hi = RANGES[space]
        return np.clip(rng.normal((lo + hi) / 2, self.sigma, size), lo, hi)


class Rademacher(NetworkSpaceSet):
    """2·Bernoulli(0.5) − 1 (normalised) or Bernoulli(0.5) (unit), network space."""

    def draw(self, rng, size, space):
        b = rng.binomial(1, 0.5, size).astype(np.float64)
        return 2 * b - 1 if space == "normalised" else b


class Blobs(NetworkSpaceSet):
    """Bernoulli(0.7) -> blur (sigma 1.5, all axes) -> < 0.75 set to 0; ·2 − 1 when normalised."""

    def __init__(
        self,
        n: Count = 2000,
        p: float = 0.7,
        sigma: float = 1.5,
        cutoff: float = 0.75,
        space: str = "auto",
    ):
        super().__init__(n, space)
        self.p, self.sigma, self.cutoff = p, sigma, cutoff

    def draw(self, rng, size, space):
        b = _blobs(rng, size, self.p, self.sigma, self.cutoff)
        return 2 * b - 1 if space == "normalised" else b


class PixelSynthetic(ImageSource):
    """The older variants: drawn in [0, 1] pixel space, then normalised like any image."""

    def __init__(self, n: Count = 2000):
        self.n = n

    def load(self, split, *, shape=None, seed=0):
        import torch

        shape = shape or (3, 32, 32)
        images = self.draw(_rng(seed, split), (self.n, *shape)).astype(np.float32)
        return TensorImages(torch.from_numpy(images))


class GaussianPixel(PixelSynthetic):
    """clip(N(0.5, sigma), 0, 1) per pixel."""

    def __init__(self, n: Count = 2000, sigma: float = 0.25):
        super().__init__(n)
        self.sigma = sigma

    def draw(self, rng, size):
        return np.clip(rng.normal(0.5, self.sigma, size), 0, 1)


class RademacherPixel(PixelSynthetic):
    """Each pixel 0 or 1 with probability 1/2."""

    def draw(self, rng, size):
        return rng.binomial(1, 0.5, size).astype(np.float64)


class BlobsPixel(PixelSynthetic):
    """Bernoulli(0.7) -> blur (sigma 1.5, all axes incl. channels) -> values < 0.75 set to 0."""

    def __init__(self, n: Count = 2000, p: float = 0.7, sigma: float = 1.5, cutoff: float = 0.75):
        super().__init__(n)
        self.p, self.sigma, self.cutoff = p, sigma, cutoff

    def draw(self, rng, size):
        return _blobs(rng, size, self.p, self.sigma, self.cutoff)


@oebench.hookimpl
def register_datasets(register):
    register(
        "gaussian",
        Gaussian,
        description="OE paper: clip(N(0, 0.5), -1, 1) as the network receives it ([0, 1] for SVHN)",
    )
    register(
        "rademacher",
        Rademacher,
        description="OE paper: ±1 as the network receives it ({0, 1} SVHN)",
    )
    register(
        "blobs",
        Blobs,
        description="OE paper: blurred Bernoulli blobs, ±1-scaled as the network sees",
    )
    register("gaussian-pixel", GaussianPixel, description="clip(N(0.5, sigma), 0, 1) pixels")
    register("rademacher-pixel", RademacherPixel, description="pixels 0 or 1 at random")
    register("blobs-pixel", BlobsPixel, description="thresholded blurred Bernoulli blobs, pixels")
