"""Validation data for tuning without the test sets: a held-out part of an ID training split,
and the OE paper's validation OOD sets made from it.

``holdout`` wraps an ID dataset: its ``train`` split is the training split minus a seeded
held-out fraction, its ``test`` split is that held-out part (never the real test split).
``val-ood`` turns the same held-out images into OOD sets, one ``transform`` each:

- ``uniform``: uniform noise in [0, 1];
- ``arith-mean`` / ``geo-mean``: the arithmetic / geometric mean of two random held-out images;
- ``jigsaw``: the image cut into a 4 x 4 grid of patches, shuffled;
- ``speckle``: ``clip(x + x * N(0, 0.5), 0, 1)``;
- ``pixelate``: averaged down by 4 in each direction, blown up again (nearest);
- ``rgb-shift``: each channel rolled by its own random offset of up to 4 pixels (a grey image
  is averaged with a shifted copy of itself);
- ``invert``: ``1 - x``.
The exact noise levels of the paper's validation sets are not published; these are oebench's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import oebench.api as oebench
from oebench.api import (
    VALIDATION_SETS,
    ImageSource,
    TensorImages,
    UserError,
    adapt_images,
    to_float,
)

#: the transforms `val-ood` offers: the OE paper's validation sets (named once, in oebench)
KINDS = VALIDATION_SETS


def held_out(n: int, fraction: float, split_seed: int) -> tuple[Any, Any]:
    """Seeded (kept, held-out) index arrays of a training split of ``n`` images."""
    import numpy as np

    if not 0 < fraction < 1:
        raise UserError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    order = np.random.default_rng([split_seed, 0x4F1D]).permutation(n)
    cut = max(1, round(n * fraction))
    return np.sort(order[cut:]), np.sort(order[:cut])


class _FromID(ImageSource):
    """Shared by both: the wrapped ID dataset and its held-out part."""

    def __init__(self, dataset: str, fraction: float = 0.1, split_seed: int = 0, **options: Any):
        self.dataset, self.fraction, self.split_seed = dataset, fraction, split_seed
        self.options = options
        source = self._source()
        self.shape, self.mean, self.std = tuple(source.shape), source.mean, source.std
        if not 0 < fraction < 1:
            raise UserError(f"holdout fraction must be in (0, 1), got {fraction!r}")

    def _source(self) -> ImageSource:
        return oebench.create_dataset(self.dataset, **self.options)

    def files(self) -> list[Path]:
        return self._source().files()

    def _part(self, which: int, seed: int) -> tuple[Any, Any]:
        """Float images and labels of the kept (0) or held-out (1) part of the train split."""
        import torch

        data = self._source().load("train", seed=seed)
        index = held_out(len(data), self.fraction, self.split_seed)[which]
        if isinstance(data, TensorImages):
            pick = torch.from_numpy(index)
            return data.images[pick], data.labels[pick]
        items = [data[int(i)] for i in index]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class Holdout(_FromID):
    """An ID dataset whose ``test`` split is a held-out part of its training split."""

    splits = ("train", "test")

    def __init__(self, dataset: str, fraction: float = 0.1, split_seed: int = 0, **options: Any):
        super().__init__(dataset, fraction, split_seed, **options)
        self.num_classes = self._source().num_classes

    def load(self, split, *, shape=None, seed=0):
        images, labels = self._part(0 if split == "train" else 1, seed)
        return TensorImages(images, labels)


class ValidationOOD(_FromID):
    """One of the OE paper's validation OOD sets, made from the held-out ID images."""

    def __init__(
        self,
        dataset: str,
        transform: str,
        fraction: float = 0.1,
        split_seed: int = 0,
        **options: Any,
    ):
        if transform not in KINDS:
            raise UserError(
                f"val-ood transform must be one of {', '.join(KINDS)}, got {transform!r}"
            )
        super().__init__(dataset, fraction, split_seed, **options)
        self.transform = transform

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        images = to_float(self._part(1, seed)[0])
        draw = np.random.default_rng([seed, KINDS.index(self.transform), 0x7A1])
        gen = torch.Generator().manual_seed(int(draw.integers(2**31)))
        out = TRANSFORMS[self.transform](images, gen).clamp(0, 1)
        return TensorImages(adapt_images(out, tuple(shape)) if shape else out.contiguous())


def _pairs(x, gen):
    import torch

    return x[torch.randint(len(x), (len(x),), generator=gen)]


def _jigsaw(x, gen, grid: int = 4):
    import torch

    n, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    out = x.clone()
    core = x[:, :, : ph * grid, : pw * grid]
    patches = core.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, grid * grid, c, ph, pw)
    order = torch.argsort(torch.rand(n, grid * grid, generator=gen), dim=1)
    patches = patches[torch.arange(n)[:, None], order]
    core = patches.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    out[:, :, : ph * grid, : pw * grid] = core.reshape(n, c, ph * grid, pw * grid)
    return out


def _pixelate(x, gen, factor: int = 4):
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    small = F.adaptive_avg_pool2d(x, (max(1, h // factor), max(1, w // factor)))
    return F.interpolate(small, size=(h, w), mode="nearest")


def _rgb_shift(x, gen, most: int = 4):
    import torch

    out = torch.empty_like(x)
    for i in range(len(x)):
        shifts = torch.randint(-most, most + 1, (x.shape[1], 2), generator=gen).tolist()
        out[i] = torch.stack([x[i, c].roll(tuple(shifts[c]), (0, 1)) for c in range(x.shape[1])])
    return out if x.shape[1] > 1 else (x + out) / 2


def _uniform(x, gen):
    import torch

    return torch.rand(x.shape, generator=gen)


def _speckle(x, gen, sigma: float = 0.5):
    import torch

    return x + x * sigma * torch.randn(x.shape, generator=gen)


TRANSFORMS = {
    "uniform": _uniform,
    "arith-mean": lambda x, gen: (x + _pairs(x, gen)) / 2,
    "geo-mean": lambda x, gen: (x * _pairs(x, gen)).sqrt(),
    "jigsaw": _jigsaw,
    "speckle": _speckle,
    "pixelate": _pixelate,
    "rgb-shift": _rgb_shift,
    "invert": lambda x, gen: 1 - x,
}


@oebench.hookimpl
def register_datasets(register):
    register(
        "holdout",
        Holdout,
        description="an ID dataset with a held-out part of train as its test split (tuning)",
    )
    register(
        "val-ood",
        ValidationOOD,
        description="OE paper validation OOD sets made from held-out ID training images",
    )
