"""The OE paper's synthetic OOD sets (Gaussian, Rademacher, Blobs) at any image shape.

The paper draws them in normalised [-1, 1] space (CIFAR) or [0, 1] space (SVHN); oebench
draws every set in [0, 1] pixel space, before the model's normalisation, so
``gaussian(sigma=0.25)`` is the CIFAR recipe and ``gaussian(sigma=0.5)`` the SVHN one.
"""

from __future__ import annotations

import numpy as np

import oebench
from oebench.data import ImageSource, TensorImages


class Synthetic(ImageSource):
    def __init__(self, n: int = 2000):
        self.n = n

    def load(self, split, *, shape=None, seed=0):
        import torch

        shape = shape or (3, 32, 32)
        rng = np.random.default_rng([seed, 0 if split == "test" else 1, 0x5EED])
        images = self.draw(rng, (self.n, *shape)).astype(np.float32)
        return TensorImages(torch.from_numpy(images))


class Gaussian(Synthetic):
    """clip(N(0.5, sigma), 0, 1) per pixel."""

    def __init__(self, n: int = 2000, sigma: float = 0.25):
        super().__init__(n)
        self.sigma = sigma

    def draw(self, rng, size):
        return np.clip(rng.normal(0.5, self.sigma, size), 0, 1)


class Rademacher(Synthetic):
    """Each pixel 0 or 1 with probability 1/2 (2*Bernoulli-1 in [-1, 1] space)."""

    def draw(self, rng, size):
        return rng.binomial(1, 0.5, size).astype(np.float64)


class Blobs(Synthetic):
    """Bernoulli(0.7) -> blur (sigma 1.5, all axes incl. channels) -> values < 0.75 set to 0."""

    def __init__(self, n: int = 2000, p: float = 0.7, sigma: float = 1.5, cutoff: float = 0.75):
        super().__init__(n)
        self.p, self.sigma, self.cutoff = p, sigma, cutoff

    def draw(self, rng, size):
        from scipy.ndimage import gaussian_filter

        n, c, h, w = size
        hwc = rng.binomial(1, self.p, (n, h, w, c)).astype(np.float64)
        blurred = gaussian_filter(
            hwc, sigma=(0, self.sigma, self.sigma, self.sigma), mode="nearest", truncate=4.0
        )
        blurred[blurred < self.cutoff] = 0.0
        return blurred.transpose(0, 3, 1, 2)


@oebench.hookimpl
def register_datasets(register):
    register("gaussian", Gaussian, description="clip(N(0.5, sigma), 0, 1) noise (OE paper)")
    register("rademacher", Rademacher, description="pixels 0 or 1 at random (OE paper)")
    register("blobs", Blobs, description="thresholded blurred Bernoulli blobs (OE paper)")
