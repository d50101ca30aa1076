"""The dataset contract: a source declares its modality and yields examples and labels.

Image sources (``modality = "image"``) yield float CHW tensors in [0, 1]; text sources
(``modality = "text"``, see ``oebench.contracts.text``) yield fixed-length token ids. Models
declare the modalities they accept when they register (``modalities=["text"]``; default image
only); ``oebench.bench.modalities`` checks a benchmark's pairs against them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

OOD_LABEL = -1

IMAGE = "image"
TEXT = "text"


class Source(ABC):
    """A named source of examples of one modality: an ID dataset, an OOD set or outliers.

    ``modality`` says what ``load`` yields (``"image"``, ``"text"``, or a plugin's own kind);
    the engine pairs a source only with models that accept its modality, and OOD sets and
    outliers only with ID datasets of the same modality.
    """

    #: what the examples are; a model must accept it (see ``accepts``)
    modality: str = IMAGE
    #: number of classes for ID datasets; ``None`` for OOD-only sources
    num_classes: int | None = None
    #: splits this source provides
    splits: tuple[str, ...] = ("test",)

    @abstractmethod
    def load(self, split: str, *, shape: Any = None, seed: int = 0) -> Dataset:
        """The split as a ``Dataset``; ``shape``: the ID input spec an OOD set is used at."""

    def files(self) -> list[Path]:
        """The files this source reads (see ``ImageSource.files``)."""
        return []

    def config(self) -> dict[str, Any]:
        """Everything that determines the examples, for cache keys (default: the attributes)."""
        return {"class": type(self).__qualname__, **{k: _plain(v) for k, v in vars(self).items()}}


class ImageSource(Source):
    """A named source of images: an ID dataset, an OOD test set or auxiliary outliers.

    ``load(split)`` returns a torch ``Dataset`` whose items are ``(image, label)``: a float
    tensor of shape ``shape`` with values in [0, 1], and an int label (``-1`` when unlabelled).
    Normalisation is the model's job (see ``oebench.contracts.model.Classifier``), so every source
    shares one value range and OOD sets can be adapted to any ID dataset's shape.
    """

    #: native (channels, height, width)
    shape: tuple[int, int, int] = (3, 32, 32)
    #: number of classes for ID datasets; ``None`` for OOD-only sources
    num_classes: int | None = None
    #: per-channel normalisation a model trained on this source should apply
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    #: splits this source provides
    splits: tuple[str, ...] = ("test",)
    #: ``True`` for sets defined in the network's input space (after normalisation), such as
    #: the OE paper's synthetic sets: the runner then calls ``load(..., norm=(mean, std))``
    #: with the ID dataset's normalisation, and the source returns [0, 1] images that the
    #: Classifier's ``(x - mean) / std`` maps back to the recipe's values (see
    #: ``oebench_plugins.synthetic``). Such a source may define ``check_norm(mean, std, c)``,
    #: called before any work, to refuse a normalisation it cannot be expressed under.
    network_space: bool = False

    @abstractmethod
    def load(
        self, split: str, *, shape: tuple[int, int, int] | None = None, seed: int = 0
    ) -> Dataset:
        """Return the split as a ``Dataset``; ``shape`` is the ID shape an OOD set is used at."""

    def files(self) -> list[Path]:
        """The files this source reads, resolved now; raise ``DataNotFoundError`` if missing.

        oebench calls it for every source before any work starts (so a missing OOD set fails
        before hours of training), and keys caches by each file's content (its sha256,
        recomputed whenever size, mtime or ctime change). Sources that read no files
        return ``[]``.
        """
        return []

    def config(self) -> dict[str, Any]:
        """Everything that determines the images, for cache keys.

        The default is the instance's attributes (``files()`` are stamped separately).
        """
        return {"class": type(self).__qualname__, **{k: _plain(v) for k, v in vars(self).items()}}


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return repr(type(value))


class TensorImages:
    """An in-memory dataset: ``images`` (N, C, H, W) uint8 or float in [0, 1], ``labels`` (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        import torch

        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
        self.images = images
        self.labels = (
            labels.long()
            if labels is not None
            else torch.full((len(images),), OOD_LABEL, dtype=torch.long)
        )

    def __len__(self) -> int:
        return len(self.images)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels kept on ``device`` (copied once), so batches never cross the bus."""
        cached = getattr(self, "_on_device", None)
        if cached is None or cached[0] != device:
            cached = (device, self.images.to(device), self.labels.to(device))
            self._on_device = cached
        return cached[1], cached[2]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_float(self.images[index]), int(self.labels[index])

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``start:stop`` as float [0, 1] and their labels, without per-item collation."""
        return to_float(self.images[start:stop]), self.labels[start:stop]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    import torch

    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def adapt_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Bring a float batch (N, C, H, W) to ``shape``: channel conversion, resize, centre crop."""
    import torch.nn.functional as F

    c, h, w = shape
    if images.shape[1] != c:
        if c == 1:
            weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images[:, :3] * weights).sum(1, keepdim=True)
        elif images.shape[1] == 1:
            images = images.expand(-1, c, -1, -1)
        else:
            raise ValueError(f"cannot convert {images.shape[1]} channels to {c}")
    ih, iw = images.shape[-2:]
    if (ih, iw) != (h, w):
        scale = max(h / ih, w / iw)
        size = (max(h, round(ih * scale)), max(w, round(iw * scale)))
        images = F.interpolate(
            images, size=size, mode="bilinear", antialias=True, align_corners=False
        )
        top, left = (size[0] - h) // 2, (size[1] - w) // 2
        images = images[..., top : top + h, left : left + w]
    return images.clamp(0, 1).contiguous()


# -- modalities ----------------------------------------------------------------------------------
def modality_of(source: Any) -> str:
    """What a source yields: its ``modality`` attribute, ``"image"`` when it has none."""
    return str(getattr(source, "modality", IMAGE))


def accepted(component: Any, default: tuple[str, ...] | None = (IMAGE,)) -> tuple[str, ...] | None:
    """The modalities a registered component accepts: ``register(..., modalities=[...])``;
    ``default`` when it declares none (models: image only; detectors: ``None``, any)."""
    declared = component.meta.get("modalities")
    if declared is None:
        return default
    return (declared,) if isinstance(declared, str) else tuple(declared)


def is_text_shape(shape: Any) -> bool:
    """Whether ``shape`` is a text input spec (length, vocabulary size, digest)."""
    return shape is not None and len(shape) == 3 and isinstance(shape[2], str)


def example_inputs(shape: Any, n: int = 2) -> Any:
    """``n`` valid random inputs of an input spec: [0, 1] images for a (C, H, W) shape, token
    ids for a text spec ``(length, vocabulary size, vocabulary digest)``."""
    import torch

    if is_text_shape(shape):
        return torch.randint(0, int(shape[1]), (n, int(shape[0])))
    return torch.rand(n, *shape)
