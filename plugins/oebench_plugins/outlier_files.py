"""Auxiliary outliers from files: 300K Random Images, 80 Million Tiny Images, any dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge

import oebench.api as oebench
from oebench.api import (
    DataNotFoundError,
    ImageSource,
    TensorImages,
    content_digest,
    fetch,
    find_dir,
)

RANDOM_300K_FILE = "300K_random_images.npy"
RANDOM_300K_URL = "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy"
TINY_FILE = "tiny_images.bin"
TINY_CIFAR_INDEX = "80mn_cifar_idxs.txt"
TINY_BYTES = 3072  # 32 x 32 x 3 uint8 per image
CHUNK = 32768


def _rng(seed: int, split: str) -> Any:
    import numpy as np

    return np.random.default_rng([seed, 0 if split == "train" else 1, 0x0E])


class RandomImages300K(ImageSource):
    """The "300K Random Images" outliers: one ``.npy`` of (N, 32, 32, 3) uint8 images.

    ``n`` keeps a seeded random subset (all images by default); ``sha256`` pins the file's
    checksum, checked after a ``--download``.
    """

    splits = ("train", "test")

    def __init__(
        self,
        root: str | None = None,
        n: Annotated[int, Ge(1)] | None = None,
        sha256: str | None = None,
    ):
        self.root, self.n, self.sha256 = root, n, sha256

    def _locate(self) -> Path:
        """The ``.npy`` file (downloaded only when allowed), checked against ``sha256``."""
        base = find_dir(
            "300K Random Images",
            [RANDOM_300K_FILE],
            root=self.root,
            download=self._download,
            how=f"Download {RANDOM_300K_URL} into {{target}}",
        )
        path = base / RANDOM_300K_FILE
        if self.sha256 is not None and content_digest(path) != self.sha256.lower():
            raise DataNotFoundError(
                f"{path}: its sha256 does not match the pinned {self.sha256}; replace the file"
            )
        return path

    def _download(self, target: Path) -> None:
        """Fetch the file; with no pinned checksum (none could be computed for the published
        file here), keep it only if it holds RGB uint8 images that are not all one value."""
        path = fetch(RANDOM_300K_URL, target / RANDOM_300K_FILE, sha256=self.sha256)
        if self.sha256 is None:
            try:
                check_images_array(path)
            except DataNotFoundError:
                path.unlink(missing_ok=True)
                raise

    def files(self) -> list[Path]:
        return [self._locate()]

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        path = self._locate()
        array = check_images_array(path)
        n = len(array)
        index = np.arange(n)
        if self.n is not None and self.n < n:
            index = np.sort(_rng(seed, split).choice(n, size=self.n, replace=False))
        images = torch.empty((len(index), 3, *array.shape[1:3]), dtype=torch.uint8)
        for start in range(0, len(index), CHUNK):
            rows = np.asarray(array[index[start : start + CHUNK]])
            images[start : start + len(rows)] = torch.from_numpy(rows.transpose(0, 3, 1, 2))
        return TensorImages(images)


class TinyImages80M(ImageSource):
    """80 Million Tiny Images from ``tiny_images.bin``: the whole file, streamed (default), or
    a seeded in-memory sample of ``n`` images.

    The binary holds 3072 bytes per image, a 32x32x3 array in Fortran (column-major) order.
    Streamed, the dataset's length is the file's image count and each item is read from the
    memory-mapped file when asked for, so training draws a new random set of outliers from all
    79.3M images every epoch (seeded by the training), as the reference code reads the whole
    file, and nothing is loaded into memory. With ``exclude_cifar`` (default), an index listed
    in ``80mn_cifar_idxs.txt`` (1-based indices of CIFAR images, one per line) is replaced by a
    random other index until none is listed, as the OE reference loader does (here seeded, so
    runs repeat).
    """

    splits = ("train", "test")

    def __init__(
        self,
        root: str | None = None,
        n: Annotated[int, Ge(1)] | None = None,
        exclude_cifar: bool = True,
    ):
        self.root, self.n, self.exclude_cifar = root, n, exclude_cifar

    def _required(self) -> list[str]:
        return [TINY_FILE] + ([TINY_CIFAR_INDEX] if self.exclude_cifar else [])

    def _locate(self) -> Path:
        """The directory holding the binary (and the CIFAR index list with exclude_cifar)."""
        return find_dir(
            "80 Million Tiny Images",
            self._required(),
            root=self.root,
            how="The dataset was withdrawn by its authors in 2020 and has no download; use "
            "'300k-random-images' instead, or put your copy into {target} (the CIFAR index "
            "list comes with the OE authors' code)",
        )

    def files(self) -> list[Path]:
        base = self._locate()
        return sorted(base / name for name in self._required())

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        base = self._locate()
        size = (base / TINY_FILE).stat().st_size
        if size % TINY_BYTES or size == 0:
            raise DataNotFoundError(f"{base / TINY_FILE}: size {size} is not a multiple of 3072")
        total = size // TINY_BYTES
        listed = cifar_indices(base / TINY_CIFAR_INDEX) if self.exclude_cifar else None
        if self.n is None:
            return TinyImagesStream(base / TINY_FILE, total, listed, seed)
        rng = _rng(seed, split)
        index = rng.choice(total, size=min(self.n, total), replace=False)
        if self.exclude_cifar:
            index = replace_listed(index, listed, total, rng)
        index = np.sort(index)
        data = np.memmap(base / TINY_FILE, dtype=np.uint8, mode="r", shape=(total, TINY_BYTES))
        images = torch.empty((len(index), 3, 32, 32), dtype=torch.uint8)
        for start in range(0, len(index), CHUNK):
            rows = np.asarray(data[index[start : start + CHUNK]])
            images[start : start + len(rows)] = torch.from_numpy(tiny_to_chw(rows))
        return TensorImages(images)


class TinyImagesStream:
    """Every image of the 80M binary as a dataset, read on demand from the memory map.

    ``__getitems__`` reads a whole batch at once (PyTorch's DataLoader uses it); a listed
    (CIFAR) index is replaced by a redraw seeded by the run's seed and that index.
    """

    def __init__(self, path: Path, total: int, listed: Any, seed: int):
        import numpy as np

        self.path, self.total, self.seed = path, total, seed
        self.listed = np.unique(listed) if listed is not None else np.zeros(0, np.int64)
        if len(self.listed) >= total:
            raise DataNotFoundError("every image of the 80M binary is in the CIFAR index list")
        self._data: Any = None

    def __len__(self) -> int:
        return self.total

    def index(self, index: Any) -> Any:
        """The file positions read for the dataset positions ``index`` (CIFAR ones redrawn)."""
        import numpy as np

        index = np.array(index, dtype=np.int64).reshape(-1)
        for i in np.flatnonzero(np.isin(index, self.listed)):
            rng = np.random.default_rng([self.seed, int(index[i]), 0x0E])
            while index[i] in self.listed:
                index[i] = rng.integers(self.total)
        return index

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int]]:
        import numpy as np
        import torch

        if self._data is None:
            self._data = np.memmap(self.path, np.uint8, "r", shape=(self.total, TINY_BYTES))
        rows = np.asarray(self._data[self.index(indices)])
        images = torch.from_numpy(np.ascontiguousarray(tiny_to_chw(rows))).float().div_(255)
        return [(image, -1) for image in images]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.__getitems__([index])[0]


def check_images_array(path: Path) -> Any:
    """The memory-mapped (N, H, W, 3) uint8 array in ``path``; a DataNotFoundError when it has
    another layout or one value everywhere (a blank file)."""
    import numpy as np

    array = np.load(path, mmap_mode="r")
    if array.ndim != 4 or array.shape[3] != 3 or array.dtype != np.uint8:
        raise DataNotFoundError(
            f"{path}: expected an (N, H, W, 3) uint8 array, got {array.shape} {array.dtype}"
        )
    sample = np.asarray(array[:: max(1, len(array) // 1000)])
    if sample.size and sample.min() == sample.max():
        raise DataNotFoundError(
            f"{path}: every sampled pixel is {int(sample.min())}: not real images"
        )
    return array


def tiny_to_chw(rows: Any) -> Any:
    """(N, 3072) column-major 32x32x3 records -> (N, 3, 32, 32): bytes are ordered [c][w][h]."""
    return rows.reshape(-1, 3, 32, 32).transpose(0, 1, 3, 2)


def cifar_indices(path: Path) -> Any:
    """The 0-based indices listed (1-based, one per line) in the CIFAR-overlap file."""
    import numpy as np

    values = [int(line) for line in path.read_text().split()]
    return np.asarray(values, dtype=np.int64) - 1


def replace_listed(index: Any, listed: Any, total: int, rng: Any) -> Any:
    """Redraw every entry of ``index`` found in ``listed`` uniformly until none is listed."""
    import numpy as np

    index = np.array(index, dtype=np.int64)
    if len(listed) >= total:
        raise DataNotFoundError("every image of the 80M binary is in the CIFAR index list")
    hit = np.isin(index, listed)
    while hit.any():
        index[hit] = rng.integers(total, size=int(hit.sum()))
        hit = np.isin(index, listed)
    return index


class DatasetOutliers(ImageSource):
    """Any registered dataset used as auxiliary outliers (labels dropped).

    ``dataset`` names it and every other option goes to it; ``dataset_split`` picks its split
    (default: the split asked for); ``max_images`` keeps a seeded random subset.
    """

    splits = ("train", "test")

    def __init__(
        self,
        dataset: str,
        dataset_split: str | None = None,
        max_images: Annotated[int, Ge(1)] | None = None,
        **options: Any,
    ):
        self.dataset, self.dataset_split, self.max_images = dataset, dataset_split, max_images
        self.options = options
        self.shape = tuple(oebench.create_dataset(dataset, **options).shape)

    def _source(self) -> ImageSource:
        return oebench.create_dataset(self.dataset, **self.options)

    def files(self) -> list[Path]:
        """The wrapped dataset's files."""
        return self._source().files()

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch
        from torch.utils.data import Subset

        source = self._source()
        data = source.load(self.dataset_split or split, shape=shape, seed=seed)
        index = np.arange(len(data))
        if self.max_images is not None and self.max_images < len(data):
            index = np.sort(_rng(seed, split).choice(len(data), self.max_images, replace=False))
        if isinstance(data, TensorImages):
            return TensorImages(data.images[torch.from_numpy(index)])
        return Unlabelled(Subset(data, index.tolist()))


class Unlabelled:
    """A dataset view whose labels are all ``-1``."""

    def __init__(self, data: Any):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.data[index][0], -1


@oebench.hookimpl
def register_outlier_sources(register):
    register(
        "300k-random-images",
        RandomImages300K,
        description="300K Random Images .npy (the usual stand-in for 80M Tiny Images)",
    )
    register(
        "tiny-images-80m",
        TinyImages80M,
        description="80M Tiny Images binary, CIFAR overlap removed (OE paper)",
    )
    register(
        "dataset",
        DatasetOutliers,
        description="any registered dataset as outliers: dataset=NAME plus its options",
    )
