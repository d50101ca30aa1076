"""Overlap between image sets: exact duplicates and near duplicates (the overlap audit's
hashing; pure numpy and Pillow).

An image is first brought to a fixed small size (``SIZE`` x ``SIZE``, 8-bit, RGB images
converted to grey for the perceptual hash), so that a resized copy of an image is an exact
duplicate of it. Near duplicates are found by a 64-bit DCT perceptual hash (pHash: the 8 x 8
lowest frequencies of the 32 x 32 grey image, each bit "above the median") within a Hamming
distance ``threshold``: a re-encoded JPEG or an image shifted by a pixel keeps almost every bit;
a match counts only when the two small grey images also correlate pixel by pixel, at the best
of the shifts by up to one pixel (``CONFIRM``): pHash alone, and 8 x 8 thumbnails too, match
unrelated dark, low-contrast images (a blob and a digit, a star field and a letter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the side of the small image both hashes are taken from
SIZE = 32
#: the largest Hamming distance (of 64 bits) between two pHashes that counts as a near duplicate
THRESHOLD = 10
#: the least correlation of two small grey images (best of the shifts by up to a pixel) that
#: confirms a pHash match; on the quickstart's sets 8 x 8 thumbnails at 0.7 still confirmed 40
#: unrelated pairs (photo crops against letters and digits), 32 x 32 at 0.9 none
CONFIRM = 0.9
#: the shifts (pixels, each axis) the confirmation tries
SHIFT = 1


def small_images(images: Any, size: int = SIZE) -> Any:
    """``(N, C, H, W)`` images (float in [0, 1] or uint8; numpy or torch) as ``(N, size, size,
    C)`` uint8 arrays, resized with Pillow's bilinear filter (antialiased)."""
    import numpy as np
    from PIL import Image

    arr = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    out = np.empty((len(arr), size, size, arr.shape[1]), dtype=np.uint8)
    for i, img in enumerate(arr.transpose(0, 2, 3, 1)):  # one image at a time: bounded memory
        if img.dtype != np.uint8:
            img = np.clip(np.rint(img.astype(np.float64) * 255), 0, 255).astype(np.uint8)
        pil = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
        small = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
        out[i] = small.reshape(size, size, -1)
    return out


def exact_hashes(small: Any) -> list[str]:
    """The content hash (sha256 of the bytes) of each small image."""
    import hashlib

    return [hashlib.sha256(img.tobytes()).hexdigest() for img in small]


def _dct_matrix(n: int) -> Any:
    import numpy as np

    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n))


def phashes(small: Any, chunk: int = 4096) -> Any:
    """The 64-bit DCT perceptual hash of each small image, as ``uint64`` (a chunk at a time:
    float copies of ``chunk`` images, never of the whole set)."""
    import numpy as np

    if len(small) > chunk:
        return np.concatenate([phashes(small[i : i + chunk]) for i in range(0, len(small), chunk)])
    grey = small.astype(np.float64).mean(axis=3)  # (N, SIZE, SIZE)
    d = _dct_matrix(grey.shape[1])
    low = (d @ grey @ d.T)[:, :8, :8].reshape(len(grey), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)  # the DC term left out
    weights = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def greys(small: Any) -> Any:
    """Each small image in grey, as float64 ``(N, SIZE, SIZE)``."""
    import numpy as np

    return small.astype(np.float64).mean(axis=3)


def correlation(a: Any, b: Any, shift: int = SHIFT) -> float:
    """The largest correlation of two grey images over shifts by up to ``shift`` pixels per
    axis (the overlapping parts, each at zero mean and unit norm; 0 for a flat part)."""
    import numpy as np

    n, best = a.shape[0], -1.0
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            x = a[max(dy, 0) : n + min(dy, 0), max(dx, 0) : n + min(dx, 0)].ravel()
            y = b[max(-dy, 0) : n + min(-dy, 0), max(-dx, 0) : n + min(-dx, 0)].ravel()
            x, y = x - x.mean(), y - y.mean()
            norm = np.linalg.norm(x) * np.linalg.norm(y)
            best = max(best, float(x @ y / norm) if norm > 1e-9 else 0.0)
    return best


def hamming(a: Any, b: Any) -> Any:
    """Pairwise Hamming distances between two arrays of ``uint64`` hashes, ``(len(a), len(b))``."""
    import numpy as np

    x = np.bitwise_xor(a[:, None], b[None, :])
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    ones = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return ones[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.int64)


@dataclass
class Overlap:
    """The overlap of an outlier source with one set: (outlier index, set index) pairs."""

    exact: list[tuple[int, int]] = field(default_factory=list)
    near: list[tuple[int, int]] = field(default_factory=list)  # not already exact

    @property
    def outliers(self) -> set[int]:
        """Indices of the outliers that overlap the set (exactly or nearly)."""
        return {i for i, _ in self.exact + self.near}

    def counts(self) -> dict[str, int]:
        return {"exact": len(self.exact), "near": len(self.near)}


def overlap(source: Any, other: Any, threshold: int = THRESHOLD, chunk: int = 256) -> Overlap:
    """Exact and near duplicates between two image sets (``(N, C, H, W)``, as
    ``small_images`` takes them); near pairs within ``threshold`` bits, exact ones excluded."""
    return overlap_small(small_images(source), small_images(other), threshold, chunk)


def overlap_small(a: Any, b: Any, threshold: int = THRESHOLD, chunk: int = 256) -> Overlap:
    """``overlap`` of two sets already made small (``small_images``)."""
    import numpy as np

    if a.shape[3] != b.shape[3]:  # compare grey with grey
        a, b = (x.mean(axis=3, keepdims=True).round().astype(np.uint8) for x in (a, b))
    where: dict[str, list[int]] = {}
    for j, h in enumerate(exact_hashes(b)):
        where.setdefault(h, []).append(j)
    found = Overlap()
    for i, h in enumerate(exact_hashes(a)):
        found.exact += [(i, j) for j in where.get(h, [])]
    exact = set(found.exact)
    pa, pb = phashes(a), phashes(b)
    for start in range(0, len(pa), chunk):  # greys of the candidate pairs only
        close = np.argwhere(hamming(pa[start : start + chunk], pb) <= threshold)
        found.near += [(start + int(i), int(j)) for i, j in close
                       if (start + int(i), int(j)) not in exact
                       and correlation(*greys(np.stack([a[start + int(i)], b[int(j)]])))
                       >= CONFIRM]  # fmt: skip
    return found


def example_grid(source: Any, other: Any, pairs: list[tuple[int, int]], path: Any) -> None:
    """A PNG of up to 8 pairs side by side (outlier left, the other set's image right)."""

    grid_of_small(small_images(source), small_images(other), pairs, path)


def grid_of_small(a: Any, b: Any, pairs: list[tuple[int, int]], path: Any) -> None:
    """``example_grid`` of two sets already made small."""
    import numpy as np
    from PIL import Image

    if a.shape[3] != b.shape[3]:  # grey beside grey
        a, b = (x.mean(axis=3, keepdims=True).round().astype(np.uint8) for x in (a, b))
    rows = [np.concatenate([a[i], b[j]], axis=1) for i, j in pairs[:8]]
    grid = np.concatenate(rows or [np.zeros((SIZE, 2 * SIZE, a.shape[3]), np.uint8)], axis=0)
    Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(path, format="PNG")


def small_of(data: Any, shape: tuple, batch: int = 500) -> Any:
    """Every image of a loaded split at ``shape``, made small (``small_images``) a batch at a
    time: memory bounded by the small images (300,000 outliers: 0.9 GB), never the whole split
    in float."""
    import numpy as np
    import torch

    from oebench.execute.outputs import iterate_batches

    if hasattr(data, "images") and tuple(data.images.shape[1:]) == tuple(shape):
        images = data.images
        parts = [small_images(images[i : i + batch]) for i in range(0, len(images), batch)]
    else:
        cpu = torch.device("cpu")
        parts = [small_images(x) for x, _ in iterate_batches(data, batch, shape, cpu)]
    return np.concatenate(parts) if parts else np.zeros((0, SIZE, SIZE, shape[0]), np.uint8)


def cached_overlap(
    folder: Any, fingerprints: tuple[str, str], source: Any, other: Any
) -> tuple[dict[str, Any], Any]:
    """The overlap of two sets made small (``small_of``), cached in ``folder`` (None: no
    cache) under their fingerprints (which hold their content digests): a JSON entry and a PNG
    grid of examples beside it. Returns (entry, the grid's path or None)."""
    import json
    from pathlib import Path

    from oebench.bench.matrix import canonical_hash
    from oebench.core.files import atomic_write

    key = canonical_hash(
        {
            "sets": list(fingerprints),
            "size": SIZE,
            "threshold": THRESHOLD,
            "confirm": ["grey correlation, best shift", CONFIRM, SHIFT],
        }
    )
    entry_path = Path(folder) / f"{key}.json" if folder is not None else None
    if entry_path is not None and entry_path.exists():
        entry = json.loads(entry_path.read_text())
        return entry, entry_path.with_suffix(".png")
    found = overlap_small(source, other)
    entry = {"exact": found.exact, "near": found.near, "outliers": sorted(found.outliers)}
    if entry_path is None:
        return entry, None
    grid = entry_path.with_suffix(".png")
    try:  # a cache that cannot be written: the audit is still said and kept with the cell
        entry_path.parent.mkdir(parents=True, exist_ok=True)
        pairs = found.exact + found.near
        atomic_write(grid, lambda name: grid_of_small(source, other, pairs, name))
        atomic_write(entry_path, lambda name: Path(name).write_text(json.dumps(entry)))
    except OSError:
        return entry, None
    return entry, grid


def audit(sources: Any, cell: Any, outliers: Any, shape: tuple, folder: Any) -> dict[str, Any]:
    """The overlap audit of a cell's training's outlier source against the benchmark's ID
    test set and every OOD test set (network-space sets, noise made in the network's input
    space, are left out). Returns ``{"sets": {set: {"exact": n, "near": n, "grid": path}},
    "outliers": [indices overlapping any set]}``."""
    bench, t = sources.bench, cell.training
    id_source = sources.source("dataset", cell.id_ref)
    source_print = sources.fingerprint("outlier source", t.outliers, "train", shape, cell.seed)
    source_images = small_of(outliers, shape)
    sets = [(f"{cell.id_ref.key} (ID test)", cell.id_ref, None)]
    sets += [(ref.key, ref, shape) for ref in bench.ood_datasets]
    report: dict[str, Any] = {"sets": {}, "outliers": set()}
    for name, ref, where in sets:
        if sources.norm("dataset", ref, id_source) is not None:
            continue
        try:  # a set that does not load is its own cells' failure, not the training's
            data = sources.load("dataset", ref, "test", where, cell.seed)
            fp = sources.fingerprint("dataset", ref, "test", where, cell.seed)
        except Exception:  # noqa: BLE001
            report["sets"][name] = {"error": "did not load"}
            continue
        entry, grid = cached_overlap(
            folder, (source_print, fp), source_images, small_of(data, shape)
        )
        report["sets"][name] = {"exact": len(entry["exact"]), "near": len(entry["near"])}
        if grid is not None:
            report["sets"][name]["grid"] = str(grid)
        report["outliers"] |= set(entry["outliers"])
    report["outliers"] = sorted(report["outliers"])
    return report


def without(data: Any, drop: list[int]) -> Any:
    """``data`` without the images at the indices ``drop``."""
    import torch

    from oebench.contracts.data import TensorImages

    keep = sorted(set(range(len(data))) - set(drop))
    if isinstance(data, TensorImages):
        index = torch.tensor(keep, dtype=torch.long)
        return TensorImages(data.images[index], data.labels[index])
    return torch.utils.data.Subset(data, keep)
