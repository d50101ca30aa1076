"""The 15 CIFAR-10-C corruptions (Hendrycks & Dietterich, ICLR 2019) in numpy, scipy, skimage
and PIL, with the 32x32 severity tables of the authors' ``ImageNet-C/create_c/make_cifar_c.py``
(github.com/hendrycks/robustness). A helper of ``oebench_plugins.corruptions`` (no hooks).

Every op takes one uint8 ``(H, W, 3)`` image, a severity 1-5 and a ``numpy.random.Generator``
and returns floats in [0, 255], as the authors' functions do (the caller truncates to uint8
with ``np.uint8``, as their script does). Where the authors call ImageMagick (Wand) or OpenCV,
the same operation is written here: ImageMagick's motion blur (a one-sided Gaussian of width
``2 * radius + 1`` along the angle, edge pixels repeated), OpenCV's ``GaussianBlur`` /
``filter2D`` (reflect-101 borders), ``getAffineTransform`` / ``warpAffine`` (bilinear,
reflect-101; OpenCV's 1/32-pixel fixed point is not reproduced) and ``resize`` (bilinear).
Sizes other than 32x32: the size-dependent parts follow the image (elastic's ``IMSIZE`` is
``min(H, W)``; fog's plasma map is the next power of two; glass blur's loop covers H x W).

Checked once against the authors' functions (OpenCV 5.1, ImageMagick 6.9.11 through Wand,
scikit-image 0.26) on 32x32 photos, feeding both the same random numbers: equal for the
noises, glass and zoom blur, frost (the authors' files), fog, brightness, contrast, pixelate
and JPEG; at most 1 apart for defocus and motion blur and elastic; at most 2 for snow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: make_cifar_c.py's parameter of each corruption, by severity 1-5
TABLES: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [(1, 1.06), (1, 1.11), (1, 1.16), (1, 1.21), (1, 1.26)],  # arange(a, b, .01)
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "elastic_transform": [  # (alpha, sigma, affine shift) times IMSIZE
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ],  # fmt: skip
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}
#: the corruptions of CIFAR-10-C, in the authors' order
CORRUPTIONS = tuple(TABLES)
#: those that draw random numbers (the others give the same image for every seed)
RANDOM = frozenset(
    {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow"}
    | {"frost", "fog", "elastic_transform"}
)


def _gaussian(x: Any, sigma: float, **kw: Any) -> Any:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None, **kw)


def _pil(x: Any) -> Any:
    from PIL import Image

    return Image.fromarray(np.asarray(x, dtype=np.uint8))


# -- noise -----------------------------------------------------------------------------------
def gaussian_noise(x, severity, rng):
    c = TABLES["gaussian_noise"][severity - 1]
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, severity, rng):
    c = TABLES["shot_noise"][severity - 1]
    return np.clip(rng.poisson(x / 255.0 * c) / c, 0, 1) * 255


def impulse_noise(x, severity, rng):
    """skimage's ``random_noise(x, mode="s&p", amount=c, rng=rng)``, draw for draw: each
    value is hit with probability ``c``, then salt or pepper alike."""
    c = TABLES["impulse_noise"][severity - 1]
    x = x / 255.0
    hit = rng.random(x.shape) <= c
    salt = rng.random(x.shape) <= 0.5
    return np.where(hit, salt.astype(float), x) * 255


# -- blur ------------------------------------------------------------------------------------
def disk(radius: float, alias_blur: float) -> Any:
    """The authors' anti-aliased disk: a 17x17 (radius <= 8) binary disk, normalised, then
    OpenCV's GaussianBlur with a 3x3 (5x5 above 8) kernel of ``alias_blur``."""
    from scipy.ndimage import correlate

    half, k = (8, 3) if radius <= 8 else (int(math.ceil(radius)), 5)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    aliased = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    aliased /= aliased.sum()
    g = np.exp(-((np.arange(k) - k // 2) ** 2) / (2 * alias_blur**2))
    g /= g.sum()
    kernel = correlate(aliased, np.outer(g, g).astype(np.float32), mode="mirror")
    cut = int(np.flatnonzero(kernel.any(axis=0)).min())  # zero margins weigh nothing
    return kernel[cut : len(kernel) - cut, cut : len(kernel) - cut]


def defocus_blur(x, severity, rng):
    from scipy.ndimage import correlate

    radius, alias = TABLES["defocus_blur"][severity - 1]
    kernel = disk(radius, alias)
    x = x / 255.0
    out = np.stack([correlate(x[..., d], kernel, mode="mirror") for d in range(3)], -1)
    return np.clip(out, 0, 1) * 255


def glass_blur(x, severity, rng):
    """Blur, "shuffle" pixels locally, blur. The authors' swap ``x[h, w], x[h', w'] = x[h', w'],
    x[h, w]`` on numpy views copies ``x[h', w']`` into ``x[h, w]`` and leaves ``x[h', w']`` as
    it was; CIFAR-10-C was made so, and so is this. With ``max_delta = 1`` (every severity) the
    source lies at or before the pixel in their descending loop, so one pass reads only
    values of the pass before: it is done here as one gather per pass."""
    sigma, delta, passes = TABLES["glass_blur"][severity - 1]
    if delta != 1:
        raise ValueError("glass_blur's one-gather pass needs max_delta = 1")
    height, width = x.shape[:2]
    x = np.uint8(_gaussian(x / 255.0, sigma) * 255)
    rows = np.arange(height - delta, delta, -1)[:, None]
    cols = np.arange(width - delta, delta, -1)[None, :]
    for _ in range(passes):
        d = rng.integers(-delta, delta, size=(2, rows.size, cols.size))  # dx, dy
        out = x.copy()
        out[rows, cols] = x[rows + d[1], cols + d[0]]
        x = out
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


def motion(x: Any, radius: float, sigma: float, angle: float) -> Any:
    """ImageMagick's ``MotionBlurImage``: ``width = 2 ceil(radius) + 1`` taps weighted by a
    one-sided Gaussian of ``sigma``, tap ``i`` at ``ceil(i (cos a, sin a) - 0.5)``, edge
    pixels repeated; rounded to uint8 as Wand's PNG round trip does."""
    width = int(2 * math.ceil(radius) + 1)
    taps = np.arange(width)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    height, wide = x.shape[:2]
    a = math.radians(angle)
    out = np.zeros(x.shape, dtype=np.float64)
    for i in range(width):
        ox, oy = math.ceil(i * math.cos(a) - 0.5), math.ceil(i * math.sin(a) - 0.5)
        r = np.clip(np.arange(height) + oy, 0, height - 1)
        c = np.clip(np.arange(wide) + ox, 0, wide - 1)
        out += kernel[i] * x[r][:, c]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def motion_blur(x, severity, rng):
    radius, sigma = TABLES["motion_blur"][severity - 1]
    return motion(x, radius, sigma, rng.uniform(-45, 45)).astype(np.float64)


def clipped_zoom(img: Any, factor: float) -> Any:
    """The authors' centre crop of ``1 / factor`` zoomed back (scipy ``zoom``, order 1)."""
    from scipy.ndimage import zoom

    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    img = zoom(img[top : top + ch, left : left + cw], (factor, factor, 1), order=1)
    th, tw = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[th : th + h, tw : tw + w]


def zoom_blur(x, severity, rng):
    start, stop = TABLES["zoom_blur"][severity - 1]
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    factors = np.arange(start, stop, 0.01)
    for factor in factors:
        out += clipped_zoom(x, factor)
    return np.clip((x + out) / (len(factors) + 1), 0, 1) * 255


# -- weather ---------------------------------------------------------------------------------
def plasma_fractal(rng: Any, mapsize: int = 32, wibbledecay: float = 3) -> Any:
    """The authors' diamond-square height map in [0, 1] (after FLHerne/mapgen)."""
    assert mapsize & (mapsize - 1) == 0
    a = np.empty((mapsize, mapsize), dtype=np.float64)
    a[0, 0] = 0
    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2
        corners = a[0:mapsize:step, 0:mapsize:step]
        square = corners + np.roll(corners, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        a[half:mapsize:step, half:mapsize:step] = square / 4 + wibble * rng.uniform(
            -wibble, wibble, square.shape
        )
        dr = a[half:mapsize:step, half:mapsize:step]
        ul = a[0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        a[0:mapsize:step, half:mapsize:step] = lt / 4 + wibble * rng.uniform(
            -wibble, wibble, lt.shape
        )
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        a[half:mapsize:step, 0:mapsize:step] = tt / 4 + wibble * rng.uniform(
            -wibble, wibble, tt.shape
        )
        step //= 2
        wibble /= wibbledecay
    a -= a.min()
    return a / a.max()


def fog(x, severity, rng):
    amount, decay = TABLES["fog"][severity - 1]
    h, w = x.shape[:2]
    size = 1 << max(5, (max(h, w) - 1).bit_length())
    x = x / 255.0
    top = x.max()
    x = x + amount * plasma_fractal(rng, size, decay)[:h, :w, None]
    return np.clip(x * top / (top + amount), 0, 1) * 255


def snow(x, severity, rng):
    c = TABLES["snow"][severity - 1]
    h, w = x.shape[:2]
    x = x / 255.0
    layer = rng.normal(size=(h, w), loc=c[0], scale=c[1])
    layer = clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
    layer = motion(layer, c[4], c[5], rng.uniform(-135, -45)) / 255.0
    grey = (x @ np.array([0.299, 0.587, 0.114]))[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def frost(x, severity, rng, textures):
    """``c0 * x + c1 * crop``: a random crop of one of the first five frost textures (the
    authors' ``randint(5)`` over their six files, resized by 0.2)."""
    c = TABLES["frost"][severity - 1]
    texture = textures[rng.integers(min(5, len(textures)))]
    h, w = x.shape[:2]
    top = rng.integers(0, texture.shape[0] - h)
    left = rng.integers(0, texture.shape[1] - w)
    return np.clip(c[0] * x + c[1] * texture[top : top + h, left : left + w], 0, 255)


def fit_texture(texture: Any, height: int, width: int) -> Any:
    """A frost texture enlarged (bilinear) where it has no room for an ``(height, width)``
    crop at two offsets at least; the authors' 32x32 crops always have room."""
    from scipy.ndimage import zoom

    k = max((height + 1) / texture.shape[0], (width + 1) / texture.shape[1])
    return texture if k <= 1 else zoom(texture, (k, k, 1), order=1)


# -- digital ---------------------------------------------------------------------------------
def brightness(x, severity, rng):
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + TABLES["brightness"][severity - 1], 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def contrast(x, severity, rng):
    c = TABLES["contrast"][severity - 1]
    x = x / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(x, severity, rng):
    """A random affine warp of the three points (OpenCV's, reflect-101), then a smoothed
    random displacement field (scipy ``map_coordinates``, order 1, reflect)."""
    from scipy.ndimage import map_coordinates

    h, w = x.shape[:2]
    alpha, sigma, shift = (v * min(h, w) for v in TABLES["elastic_transform"][severity - 1])
    image = np.asarray(x, dtype=np.float32) / 255.0
    centre = np.float32([w, h]) // 2
    size = min(h, w) // 3
    pts1 = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
    pts2 = pts1 + rng.uniform(-shift, shift, size=pts1.shape).astype(np.float32)
    forward = np.linalg.solve(np.c_[pts1, np.ones(3)].astype(np.float64), pts2).T  # 2x3
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inverse[0, 0] * xx + inverse[0, 1] * yy + inverse[0, 2]
    sy = inverse[1, 0] * xx + inverse[1, 1] * yy + inverse[1, 2]
    image = np.stack(
        [map_coordinates(image[..., d], [sy, sx], order=1, mode="mirror") for d in range(3)], -1
    )
    fields = []
    for _ in range(2):
        field = rng.uniform(-1, 1, size=(h, w))
        fields.append(_gaussian(field, sigma, mode="reflect", truncate=3) * alpha)
    dx, dy = (f.astype(np.float32)[..., None] for f in fields)
    xg, yg, zg = np.meshgrid(np.arange(w), np.arange(h), np.arange(3))
    coords = np.stack([(yg + dy).ravel(), (xg + dx).ravel(), zg.ravel()])
    out = map_coordinates(image, coords, order=1, mode="reflect").reshape(image.shape)
    return np.clip(out, 0, 1) * 255


def pixelate(x, severity, rng):
    from PIL import Image

    c = TABLES["pixelate"][severity - 1]
    h, w = x.shape[:2]
    small = _pil(x).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX), dtype=np.float64)


def jpeg_compression(x, severity, rng):
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    _pil(x).save(buffer, "JPEG", quality=TABLES["jpeg_compression"][severity - 1])
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64)


OPS = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise,
    "impulse_noise": impulse_noise, "defocus_blur": defocus_blur, "glass_blur": glass_blur,
    "motion_blur": motion_blur, "zoom_blur": zoom_blur, "snow": snow, "frost": frost,
    "fog": fog, "brightness": brightness, "contrast": contrast,
    "elastic_transform": elastic_transform, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}  # fmt: skip


def corrupt(x: Any, name: str, severity: int, rng: Any, textures: Any = None) -> Any:
    """One uint8 ``(H, W, 3)`` image under corruption ``name``, truncated to uint8 as the
    authors' ``np.uint8(corruption(img))`` does."""
    op = OPS[name]
    out = op(x, severity, rng, textures) if name == "frost" else op(x, severity, rng)
    return np.uint8(np.clip(out, 0, 255))
