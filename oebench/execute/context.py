"""What the parts of one run share: the benchmark, its data sources, progress and the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oebench.bench.matrix import Benchmark
from oebench.core.progress import Progress
from oebench.errors import UserError
from oebench.execute.sources import Sources


def resolve_device(name: str = "auto") -> Any:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)


@dataclass
class Context:
    """A run's benchmark, the sources it reads, where progress goes, and the device."""

    bench: Benchmark
    sources: Sources
    progress: Progress = field(default_factory=Progress)
    device_name: str = "auto"
    _device: Any = None

    @property
    def device(self) -> Any:
        """The torch device, picked when first needed (a cell whose outputs and scores are
        all cached needs none, nor torch)."""
        if self._device is None:
            self._device = resolve_device(self.device_name)
        return self._device

    @property
    def device_used(self) -> str:
        """The device as provenance records it: ``cache`` when no model ever ran here."""
        return str(self._device) if self._device is not None else "cache"

    def eval_batch(self) -> int:
        """``eval_batch_size`` of the benchmark, else 500 on CPU and 2048 on a GPU."""
        size = self.bench.defaults.get("eval_batch_size")
        return int(size) if size else (2048 if self.device.type == "cuda" else 500)
