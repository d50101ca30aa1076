"""Image datasets and outliers through Hugging Face ``datasets``: local Parquet, image folders, hub.

Without ``--download`` the hub is never contacted (``datasets`` runs in offline mode), so local
files always work and a hub name works only when it is already in the Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oebench.api as oebench
from oebench.api import (
    DataNotFoundError,
    ImageSource,
    TensorImages,
    UserError,
    adapt_images,
    cache_dir,
    download_allowed,
)

GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


@contextlib.contextmanager
def offline_unless_allowed() -> Iterator[None]:
    """Put ``datasets`` and ``huggingface_hub`` in offline mode unless downloads are allowed."""
    import datasets
    import huggingface_hub.constants as hub

    if download_allowed():
        yield
        return
    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


class HfImages(ImageSource):
    """Images from Hugging Face ``datasets``, loaded into memory.

    Give exactly one of ``path`` (a hub name; fetched only with ``--download``, else read from
    the local HF cache), ``data_files`` (local Parquet: a path, glob, list, or a table of
    split -> files) or ``data_dir`` (an ``imagefolder``: ``<split>/<class>/*.png`` or
    ``<class>/*.png``). ``split`` pins the HF split every oebench split reads (handy for OOD sets
    and outliers); without it oebench's ``train`` / ``test`` read the HF splits of those names,
    and a dataset with a single split serves it for any name.

    Label ids: with ``labels`` (a list of class names), a class name's id is its position in the
    list (ClassLabel ids are turned into names first; integer labels are kept as they are).
    Without ``labels``: ClassLabel ids as stored (an ``imagefolder`` numbers its classes in
    sorted folder-name order), integers as they are, and strings by their sorted order.
    Images are converted to 1 channel (greyscale modes) or 3 (everything else) unless
    ``channels`` says, and to the first image's size unless ``size`` says.
    """

    unlabelled = False

    def __init__(
        self,
        path: str | None = None,
        data_files: Any = None,
        data_dir: str | None = None,
        split: str | None = None,
        image_column: str = "image",
        label_column: str | None = "label",
        labels: list[str] | None = None,
        size: int | list[int] | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        given = [
            k for k, v in (("path", path), ("data_files", data_files), ("data_dir", data_dir)) if v
        ]
        if len(given) != 1:
            raise UserError(
                "hf: give exactly one of path (hub name), data_files (Parquet) or "
                f"data_dir (image folder); got {', '.join(given) or 'none'}"
            )
        if isinstance(data_files, tuple):  # TOML arrays may arrive frozen as tuples
            data_files = list(data_files)
        self.path, self.data_files, self.data_dir = path, data_files, data_dir
        self.split, self.image_column, self.label_column = split, image_column, label_column
        self.labels, self.size, self.channels = labels, size, channels
        self.user_mean, self.user_std = mean, std
        self._dict: Any = None

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in super().config().items() if not k.startswith("_")}

    # -- metadata --------------------------------------------------------------------------------
    @property
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        if self.split:
            return ("train", "test")
        return tuple(self.hf_dict())

    @property
    def shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        first = self.hf_split(None)[0][self.image_column]
        image = to_pil(first)
        c = self.channels or (1 if image.mode in GREY_MODES else 3)
        if self.size is not None:
            h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
        else:
            w, h = image.size
        return (c, h, w)

    @property
    def num_classes(self) -> int | None:  # type: ignore[override]
        if self.unlabelled or not self.label_column:
            return None
        if self.labels is not None:
            return len(self.labels)
        data = self.hf_split(None)
        if self.label_column not in data.column_names:
            return None
        feature = data.features[self.label_column]
        if hasattr(feature, "num_classes"):
            return int(feature.num_classes)
        values = list(data[self.label_column])
        if values and isinstance(values[0], str):
            return len(set(values))
        return int(max(values)) + 1 if values else None

    @property
    def mean(self) -> tuple[float, ...]:  # type: ignore[override]
        return tuple(self.user_mean) if self.user_mean else (0.5,) * self.shape[0]

    @property
    def std(self) -> tuple[float, ...]:  # type: ignore[override]
        return tuple(self.user_std) if self.user_std else (0.5,) * self.shape[0]

    # -- loading ---------------------------------------------------------------------------------
    def hf_dict(self) -> Any:
        """The ``DatasetDict`` (loaded once)."""
        if self._dict is None:
            self._dict = self._load_dict()
        return self._dict

    def _load_dict(self) -> Any:
        import datasets

        with offline_unless_allowed():
            if self.path:
                try:
                    return datasets.load_dataset(self.path)
                except (ConnectionError, FileNotFoundError) as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    what = (
                        "could not be fetched ({}). Check the network connection"
                        if download_allowed()  # --download was given: that hint cannot help
                        else "is not available offline ({}). Rerun with --download to fetch it"
                    )
                    raise DataNotFoundError(
                        f"hf: hub dataset {self.path!r} {what.format(reason)}, or give "
                        "data_files (local Parquet) or data_dir (an image folder) instead"
                    ) from None
            local = str(cache_dir() / "hf")
            if self.data_files:
                local_files(self.data_files)
                return datasets.load_dataset("parquet", data_files=self.data_files, cache_dir=local)
            return datasets.load_dataset(
                "imagefolder", data_dir=str(self._image_folder()), cache_dir=local
            )

    def _image_folder(self) -> Path:
        """The ``data_dir`` folder, or a one-line DataNotFoundError."""
        folder = Path(self.data_dir).expanduser()
        if not folder.is_dir():
            raise DataNotFoundError(
                f"hf: image folder {self.data_dir} not found: expected "
                "<split>/<class>/<image> or <class>/<image> files there"
            )
        return folder

    def files(self) -> list[Path]:
        """Local Parquet files matched by ``data_files``, or every file under ``data_dir``.

        A hub name reads no local files: with ``--download`` it is fetched by ``load``; without,
        it must already be in the Hugging Face cache, which this checks now (loading it there).
        """
        if self.path:
            if not download_allowed():
                self.hf_dict()  # raises the one-line DataNotFoundError when not cached
            return []
        if self.data_files:
            return local_files(self.data_files)
        return sorted(p for p in self._image_folder().rglob("*") if p.is_file())

    def hf_split(self, split: str | None) -> Any:
        """The HF split that oebench's ``split`` reads (``None``: the first one / pinned one)."""
        data = self.hf_dict()
        want = self.split or split
        if want is None:
            return data["train"] if "train" in data else data[next(iter(data))]
        if want in data:
            return data[want]
        if len(data) == 1:
            return data[next(iter(data))]
        raise UserError(
            f"hf: no split {want!r}; splits: {', '.join(data)} (the 'split' option pins one)"
        )

    def load(self, split, *, shape=None, seed=0):
        import numpy as np
        import torch

        data = self.hf_split(split)
        if self.image_column not in data.column_names:
            raise UserError(
                f"hf: no image column {self.image_column!r}; columns: "
                f"{', '.join(data.column_names)}"
            )
        c, h, w = self.shape
        if shape is not None:
            h, w = shape[1], shape[2]
        pictures = [to_array(to_pil(v), c) for v in data[self.image_column]]
        if all(p.shape[:2] == (h, w) for p in pictures):
            images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
        else:
            images = torch.stack([fit(p, (c, h, w)) for p in pictures])
        return TensorImages(images, self.label_ids(data))

    def label_ids(self, data: Any) -> Any:
        """Integer labels following the documented rule, or ``None`` when unlabelled."""
        import torch

        column = self.label_column
        if self.unlabelled or not column or column not in data.column_names:
            return None
        values = list(data[column])
        feature = data.features[column]
        if self.labels is not None:
            ids = {name: i for i, name in enumerate(self.labels)}
            if hasattr(feature, "int2str"):
                values = feature.int2str(values)
            if values and isinstance(values[0], str):
                unknown = sorted(set(values) - set(ids))
                if unknown:
                    raise UserError(
                        f"hf: label(s) {', '.join(map(str, unknown[:5]))} are not "
                        f"in 'labels' ({', '.join(self.labels)})"
                    )
                values = [ids[v] for v in values]
        elif values and isinstance(values[0], str):
            ids = {name: i for i, name in enumerate(sorted(set(values)))}
            values = [ids[v] for v in values]
        return torch.as_tensor(values, dtype=torch.long)


class HfOutliers(HfImages):
    """Auxiliary outliers from Hugging Face ``datasets`` (labels dropped); options as ``hf``."""

    unlabelled = True


def local_files(data_files: Any, what: str = "hf: Parquet file(s)") -> list[Path]:
    """The files the paths and globs match, sorted; a one-line DataNotFoundError naming
    ``what`` when one of them matches nothing."""
    if isinstance(data_files, dict):
        patterns = [p for v in data_files.values() for p in ([v] if isinstance(v, str) else v)]
    else:
        patterns = [data_files] if isinstance(data_files, str) else list(data_files)
    matches = {p: glob.glob(str(Path(p).expanduser())) for p in patterns}
    missing = [p for p, found in matches.items() if not found]
    if missing:
        raise DataNotFoundError(f"{what} not found: {', '.join(map(str, missing))}")
    return sorted({Path(f) for found in matches.values() for f in found})


def to_pil(value: Any) -> Any:
    """A PIL image from a decoded image, an ``{'bytes', 'path'}`` dict or an array."""
    import io

    import numpy as np
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        return Image.open(value["path"])
    array = np.asarray(value)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def to_array(image: Any, channels: int) -> Any:
    """HWC uint8 array with 1 or 3 channels."""
    import numpy as np

    array = np.array(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def fit(picture: Any, shape: tuple[int, int, int]) -> Any:
    """HWC uint8 -> CHW uint8 at ``shape`` (resize so the image covers it, centre crop)."""
    import torch

    x = torch.from_numpy(picture).permute(2, 0, 1)[None].float().div_(255)
    return (adapt_images(x, shape)[0] * 255).round().to(torch.uint8)


@oebench.hookimpl
def register_datasets(register):
    register(
        "hf",
        HfImages,
        description="Hugging Face datasets: local Parquet, image folder, or cached hub name",
    )


@oebench.hookimpl
def register_outlier_sources(register):
    register("hf", HfOutliers, description="outliers from Hugging Face datasets (as dataset 'hf')")
