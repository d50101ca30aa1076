"""Synthetic and class-list outlier sources: the OE paper's noise families, PixMix-style
fractals from local images, TIN-597."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Le

import oebench.api as oebench
from oebench.api import DataNotFoundError, ImageSource, TensorImages, UserError

Count = Annotated[int, Ge(1), Le(1_000_000)]
FAMILIES = ("gaussian", "rademacher", "blobs", "uniform")
FRACTAL_VERSION = 1  # bump when the fractal renderer changes (keys the cache)


def _rng(seed: int, split: str, tag: int) -> Any:
    import numpy as np

    return np.random.default_rng([seed, 0 if split == "train" else 1, tag])


def _to_channels(images: Any, c: int) -> Any:
    """(N, 3, H, W) float [0, 1] -> ``c`` channels (grey by luminance when ``c`` is 1)."""
    from oebench.api import adapt_images

    return images if c == 3 else adapt_images(images, (c, *images.shape[-2:]))


# -- noise -----------------------------------------------------------------------------------
class Noise(ImageSource):
    """The OE paper's synthetic noise families as auxiliary outliers, ``n`` per split, seeded.

    ``gaussian``, ``rademacher`` and ``blobs`` are drawn by the registered datasets of the same
    names (``oebench_plugins.synthetic``, the OE reference recipes); ``uniform`` is the uniform
    noise of Hendrycks & Gimpel (ICLR 2017), U(0, 1) / U(-1, 1). Outlier sources are not given
    the ID normalisation, so ``space="unit"`` (default) draws the [0, 1] recipe as pixels
    (the paper's SVHN recipe: clip(N(0.5, 0.5), 0, 1), Bernoulli {0, 1}, blobs b, U(0, 1));
    ``space="normalised"`` draws the [-1, 1] recipe as the network receives it under the ID
    normalisation given as ``mean`` and ``std`` (e.g. CIFAR's), as the paper's CIFAR sets.
    """

    splits = ("train", "test")

    def __init__(
        self,
        family: str = "gaussian",
        n: Count = 50000,
        space: str = "unit",
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        if family not in FAMILIES:
            raise UserError(f"noise family must be one of {', '.join(FAMILIES)}, got {family!r}")
        if space not in ("unit", "normalised"):
            raise UserError(f"noise space must be 'unit' or 'normalised', got {space!r}")
        if space == "normalised" and (mean is None or std is None):
            raise UserError("noise with space='normalised' needs the ID 'mean' and 'std'")
        self.family, self.n, self.space = family, n, space
        self.mean = tuple(mean) if mean is not None else (0.0,)
        self.std = tuple(std) if std is not None else (1.0,)

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        shape = tuple(shape or self.shape)
        norm = (self.mean, self.std)
        if self.family != "uniform":
            data = oebench.create_dataset(self.family, n=self.n, space=self.space)
            return data.load(split, shape=shape, seed=seed, norm=norm)
        lo = -1.0 if self.space == "normalised" else 0.0
        z = _rng(seed, split, 0x0A).uniform(lo, 1.0, (self.n, *shape))
        m = np.asarray(self.mean, np.float64).reshape(1, -1, 1, 1)
        s = np.asarray(self.std, np.float64).reshape(1, -1, 1, 1)
        x = z * s + m
        if x.min() < -1e-6 or x.max() > 1 + 1e-6:
            raise UserError("uniform noise: the recipe needs pixels outside [0, 1] here")
        return TensorImages(torch.from_numpy(np.clip(x, 0, 1).astype(np.float32)))


# -- fractals (iterated function systems) ----------------------------------------------------
def _system(rng: Any, maps: int) -> tuple[Any, Any, Any]:
    """One IFS: ``maps`` affine maps (A, b) and their probabilities, sampled by the σ-factor
    rule of Anderson & Farrell (WACV 2022): Σ (σ1 + 2·σ2) over the maps lies in
    [(5 + N) / 2, (6 + N) / 2], with A = R(θ)·diag(σ1, σ2)·R(φ)·D, D = diag(±1, ±1)."""
    import numpy as np

    alpha = rng.uniform((5 + maps) / 2, (6 + maps) / 2)
    parts = np.minimum(rng.dirichlet(np.ones(maps)) * alpha, 2.999)
    mats = np.empty((maps, 2, 2))
    for i, b in enumerate(parts):
        s1 = rng.uniform(max(b / 3, b - 2), min(1.0, b))
        s2 = (b - s1) / 2
        theta, phi = rng.uniform(-np.pi, np.pi, 2)
        rot = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
        rot2 = [[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]]
        d = np.diag(rng.choice([-1.0, 1.0], 2))
        mats[i] = np.asarray(rot) @ np.diag([s1, s2]) @ np.asarray(rot2) @ d
    shift = rng.uniform(-1, 1, (maps, 2))
    prob = np.abs(np.linalg.det(mats)) + 1e-6
    return mats, shift, prob / prob.sum()


def render_fractals(count: int, height: int, width: int, seed: int) -> Any:
    """``count`` coloured IFS fractals (count, 3, height, width) uint8, by the chaos game:
    256 chains per fractal, 100 steps after 20 burn-in steps; a point's colour is the mean of
    its own and the last applied map's colour; brightness log-scaled by the hit count."""
    import numpy as np

    rng = np.random.default_rng([seed, 0xF2AC])
    systems = [_system(rng, int(rng.integers(2, 5))) for _ in range(count)]
    colors = [rng.uniform(0.2, 1.0, (len(s[1]), 3)) for s in systems]
    out = np.zeros((count, 3, height, width), np.uint8)
    chains, burn, steps = 256, 20, 100
    for f, (mats, shift, prob) in enumerate(systems):
        x = rng.uniform(-1, 1, (chains, 2))
        col = np.full((chains, 3), 0.5)
        pts, cols = [], []
        picks = rng.choice(len(prob), size=(burn + steps, chains), p=prob)
        for t in range(burn + steps):
            k = picks[t]
            x = np.einsum("nij,nj->ni", mats[k], x) + shift[k]
            col = (col + colors[f][k]) / 2
            if t >= burn:
                pts.append(x)
                cols.append(col)
        out[f] = _splat(np.concatenate(pts), np.concatenate(cols), height, width)
    return out


def _splat(points: Any, colors: Any, height: int, width: int) -> Any:
    """Points scaled to their 1-99 percentile box and drawn as a (3, H, W) uint8 image."""
    import numpy as np

    points = np.nan_to_num(points)
    lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    unit = (points - lo) / np.maximum(hi - lo, 1e-9)
    keep = ((unit >= 0) & (unit < 1)).all(1)
    col = (unit[keep, 0] * width).astype(np.int64)
    row = (unit[keep, 1] * height).astype(np.int64)
    flat = row * width + col
    hits = np.bincount(flat, minlength=height * width).astype(np.float64)
    image = np.zeros((3, height * width))
    for c in range(3):
        image[c] = np.bincount(flat, colors[keep, c], minlength=height * width)
    image = image / np.maximum(hits, 1) * (np.log1p(hits) / np.log1p(max(hits.max(), 1)))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8).reshape(3, height, width)


def fractal_bank(count: int, height: int, width: int, seed: int) -> Any:
    """``render_fractals``, cached in ``<cache>/fractals`` under a name made of its inputs."""
    name = f"v{FRACTAL_VERSION}-{count}-{height}x{width}-s{seed}.npy"
    path = oebench.cache_dir() / "fractals" / name
    made = lambda: render_fractals(count, height, width, seed)  # noqa: E731
    return oebench.cached_array(path, made, (count, 3, height, width), "uint8")


# -- PixMix mixing ---------------------------------------------------------------------------
def _ab(rng: Any, beta: float, n: int) -> tuple[Any, Any]:
    """PixMix's mixing weights: (Beta(β, 1), Beta(1, β)) or (1 + Beta(1, β), −Beta(1, β))."""
    import numpy as np

    first = rng.random(n) < 0.5
    a = np.where(first, rng.beta(beta, 1, n), 1 + rng.beta(1, beta, n))
    b = np.where(first, rng.beta(1, beta, n), -rng.beta(1, beta, n))
    return a.reshape(-1, 1, 1, 1), b.reshape(-1, 1, 1, 1)


def _augment(images: Any, rng: Any) -> Any:
    """A cheap stand-in for PixMix's AugMix ops: per image one of identity, flip, rot90,
    solarize, posterize (3 bits), autocontrast."""
    import torch

    op = torch.from_numpy(rng.integers(0, 6, len(images)))
    out = images.clone()
    out[op == 1] = out[op == 1].flip(-1)
    if out.shape[-1] == out.shape[-2]:
        out[op == 2] = out[op == 2].rot90(1, (-2, -1))
    sol = out[op == 3]
    out[op == 3] = torch.where(sol >= 0.5, 1 - sol, sol)
    out[op == 4] = torch.floor(out[op == 4] * 8) / 8
    ac = out[op == 5]
    lo = ac.amin((-2, -1), keepdim=True)
    hi = ac.amax((-2, -1), keepdim=True)
    out[op == 5] = (ac - lo) / (hi - lo).clamp_min(1e-6)
    return out


def pixmix(orig: Any, fractals: Any, k: int, beta: float, rng: Any) -> Any:
    """PixMix (Hendrycks et al., CVPR 2022) on a batch: start from ``orig`` (augmented with
    p = 0.5), then for randint(0, k) rounds mix in an augmented ``orig`` or a random fractal
    (p = 0.5 each) by ``add`` or ``multiply`` (p = 0.5 each), clipping to [0, 1]."""
    import torch

    n = len(orig)
    pick = torch.from_numpy(rng.random(n) < 0.5).view(-1, 1, 1, 1)
    mixed = torch.where(pick, _augment(orig, rng), orig)
    rounds = rng.integers(0, k + 1, n)
    for r in range(k):
        use_frac = torch.from_numpy(rng.random(n) < 0.5).view(-1, 1, 1, 1)
        frac = fractals[torch.from_numpy(rng.integers(0, len(fractals), n))]
        other = torch.where(use_frac, frac, _augment(orig, rng))
        a, b = (torch.from_numpy(v).float() for v in _ab(rng, beta, n))
        add = ((mixed * 2 - 1) * a + (other * 2 - 1) * b + 1) / 2
        mul = (mixed * 2) ** a * (other * 2).clamp_min(1e-37) ** b / 2
        op_add = torch.from_numpy(rng.random(n) < 0.5).view(-1, 1, 1, 1)
        step = torch.where(op_add, add, mul).nan_to_num(0.0).clamp(0, 1)
        active = torch.from_numpy(rounds > r).view(-1, 1, 1, 1)
        mixed = torch.where(active, step, mixed)
    return mixed.clamp(0, 1).float()


class FractalMix(ImageSource):
    """PixMix-style pictures as auxiliary outliers, from local images only (see ``pixmix``).

    Followed from PixMix: the mixing set is fractals, the ops ``add`` / ``multiply`` with their
    weights, ``k`` (4) and ``beta`` (3), the p = 0.5 choices. Different: PixMix mixes each ID
    training image with its mixing set to *augment ID data*; here the start picture is a crop
    of the 16 package-shipped photos (``base="photo"``) or a fractal (``base="fractal"``) and
    the mixed pictures serve as *auxiliary outliers* for OE, as PixMix-style fractals are used
    as OE data in later work. The fractals are generated here (``systems`` IFS fractals, after
    Anderson & Farrell, WACV 2022), not PixMix's released set, and PixMix's AugMix ops are
    replaced by flips, rot90, solarize, posterize and autocontrast. Deterministic per seed.
    """

    splits = ("train", "test")

    def __init__(
        self,
        n: Count = 10000,
        k: Annotated[int, Ge(0), Le(16)] = 4,
        beta: Annotated[float, Ge(0.01)] = 3.0,
        base: str = "photo",
        systems: Annotated[int, Ge(1), Le(5000)] = 200,
    ):
        if base not in ("photo", "fractal"):
            raise UserError(f"fractal-mix base must be 'photo' or 'fractal', got {base!r}")
        self.n, self.k, self.beta, self.base, self.systems = n, k, beta, base, systems

    def files(self) -> list[Path]:
        """The package photos a ``photo`` base crops."""
        if self.base != "photo":
            return []
        from oebench_plugins.images import _photo_files

        return _photo_files()[0]

    def load(self, split, *, shape=None, seed=0):
        import torch

        c, h, w = tuple(shape or self.shape)
        rng = _rng(seed, split, 0xF4)
        bank = torch.from_numpy(fractal_bank(self.systems, h, w, seed)).float() / 255
        if self.base == "photo":
            from oebench_plugins.images import _photos, crops

            offset = 0 if split == "train" else 1_000_003
            orig = crops(list(_photos()), self.n, (3, h, w), seed + offset, 0.05, 0.5)
            orig = orig.float() / 255
        else:
            orig = bank[torch.from_numpy(rng.integers(0, len(bank), self.n))]
        mixed = pixmix(orig, bank, self.k, self.beta, rng)
        images = _to_channels(mixed, c)
        return TensorImages((images * 255).round().to(torch.uint8))


# -- TIN-597 ---------------------------------------------------------------------------------
LAYOUT = "tiny-imagenet-200/train/<wnid>/images/*.JPEG"


class Tin597(ImageSource):
    """OpenOOD v1.5's TIN-597 auxiliary set (the classes left after removing those overlapping
    the benchmark's ID and OOD sets), from OpenOOD's image list or a list of classes.

    ``imglist``: an OpenOOD list (``benchmark_imglist/cifar10/train_tin597.txt``: lines
    ``path label``), paths relative to ``image_dir`` (default: ``images_classic`` beside the
    ``benchmark_imglist`` folder, OpenOOD's layout). ``classes``: a file of WordNet ids (first
    word per line, ``#`` comments), read from Tiny ImageNet's ``train/<wnid>/images/``. The
    597-id list itself is not shipped: it was not found published as a file.
    """

    shape = (3, 64, 64)
    splits = ("train", "test")

    def __init__(
        self,
        imglist: str | None = None,
        classes: str | None = None,
        image_dir: str | None = None,
        root: str | None = None,
        max_images: Annotated[int, Ge(1)] | None = None,
    ):
        if (imglist is None) == (classes is None):
            raise UserError("tin597 needs exactly one of 'imglist' (OpenOOD) or 'classes'")
        self.imglist, self.classes, self.image_dir = imglist, classes, image_dir
        self.root, self.max_images = root, max_images

    def _path(self, name: str, what: str) -> Path:
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = oebench.data_root(self.root) / path
        if not path.is_file():
            raise DataNotFoundError(f"tin597: {what} not found: no file {path}")
        return path

    def wnids(self) -> list[str]:
        """The listed class ids, in file order, without repeats."""
        ids: list[str] = []
        for line in self._path(self.classes, "classes list").read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words and words[0] not in ids:
                ids.append(words[0])
        return ids

    def paths(self) -> list[Path]:
        """Every image file of the set, in list order; a one-line error for a missing one."""
        if self.imglist is not None:
            listed = self._path(self.imglist, "image list")
            base = Path(self.image_dir).expanduser() if self.image_dir else None
            base = base or listed.parent.parent.parent / "images_classic"
            rows = [ln.split()[0] for ln in listed.read_text().splitlines() if ln.strip()]
            paths = [p if p.is_absolute() else base / p for p in map(Path, rows)]
        else:
            top = oebench.data_root(self.root) / "tiny-imagenet-200" / "train"
            paths = []
            for wnid in self.wnids():
                found = sorted((top / wnid / "images").glob("*.JPEG"))
                if not found:
                    raise DataNotFoundError(f"tin597: no images for {wnid}: expected {LAYOUT}")
                paths += found
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None or not paths:
            raise DataNotFoundError(f"tin597: missing image {missing} (expected {LAYOUT})")
        return paths

    def files(self) -> list[Path]:
        lists = [self._path(self.imglist or self.classes, "list")]
        return sorted(lists + self.paths())

    def load(self, split, *, shape=None, seed=0):
        from oebench_plugins.vision_datasets import ImageFiles, subset

        paths = subset(self.paths(), self.max_images, seed)
        h, w = (shape[1], shape[2]) if shape else self.shape[1:]
        return ImageFiles(paths, None, h, w)


@oebench.hookimpl
def register_outlier_sources(register):
    register(
        "noise",
        Noise,
        description="OE paper's synthetic noise (gaussian/rademacher/blobs/uniform) as outliers",
    )
    register(
        "fractal-mix",
        FractalMix,
        description="PixMix-style mixes of generated IFS fractals and package photos",
    )
    register(
        "tin597",
        Tin597,
        description="OpenOOD v1.5 TIN-597 from its image list or a class list",
    )
