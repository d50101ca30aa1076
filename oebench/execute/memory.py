"""How much memory one cell needs at its peak, and whether N cells fit on one device at once.

The estimate per cell: weights + gradients + SGD momentum (3 x 4 bytes a parameter), plus the
tensors autograd saves for the backward pass, counted on a 2-image probe forward in train mode
and scaled to the training's batch (ID batch + outlier batch when the objective takes
outliers), plus a fixed cost per process: on CUDA its context (``CUDA_CONTEXT``); on the CPU
what this (driver) process holds now, torch and the loaded data included, since every worker
process loads the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from oebench.errors import UserError

#: bytes a CUDA context takes per process, outside the caching allocator (measured ~0.5 GiB)
CUDA_CONTEXT = 512 * 2**20
#: images in the activation probe
PROBE = 2
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """``"1MB"``, ``"8GiB"``, ``"512k"``, ``"1048576"`` -> bytes (powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise UserError(f"memory size {text!r}: not a size; e.g. 512MB, 8GiB or 1048576")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def fmt_size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def available_memory(device: Any) -> int:
    """Free bytes where the cells compute: the GPU's free memory, else the RAM available."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024


def process_overhead(device: Any) -> int:
    """The fixed bytes a worker process costs on ``device`` besides its training."""
    if getattr(device, "type", str(device)) == "cuda":
        return CUDA_CONTEXT
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/status") as f:
            rss = next(line for line in f if line.startswith("VmRSS:"))
        return int(rss.split()[1]) * 1024


def training_peak(model: Any, shape: tuple[int, ...], images: int) -> int:
    """Bytes of weights, gradients and momentum plus the activations saved for ``images``."""
    import torch

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    was = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(torch.zeros(PROBE, *shape))
        del out
    finally:
        model.train(was)
    weights_in_graph = params  # parameters saved by the probe do not grow with the batch
    per_image = max(0, saved - weights_in_graph) / PROBE
    return int(3 * params + buffers + per_image * images)


def cell_peak(sources: Any, cell: Any) -> int:
    """The estimated peak bytes of one cell's training (its model, data shape and batches)."""
    import torch

    from oebench.registry.lookup import create_model

    source = sources.source("dataset", cell.id_ref)
    shape = tuple(source.shape)
    params = cell.training.params
    images = int(params.get("batch_size") or 128)
    if cell.training.outliers is not None:
        images += int(params.get("outlier_batch_size") or 0)
    with torch.random.fork_rng(devices=[]):  # the probe leaves the run's generators alone
        net = create_model(cell.model_ref.name, source.num_classes, shape, **cell.model_ref.kwargs)
    return training_peak(net, shape, images)


def training_peaks(sources: Any, cells: Iterable[Any]) -> dict[str, int]:
    """``cell_peak`` of every cell by its key, estimated once per model, data and training."""
    found: dict[tuple, int] = {}
    peaks = {}
    for cell in cells:
        what = (cell.model_ref.key, cell.id_ref.key, repr(cell.training.settings))
        if what not in found:
            found[what] = cell_peak(sources, cell)
        peaks[cell.key] = found[what]
    return peaks


def check_fits(
    sources: Any, cells: Iterable[Any], workers: int, device: Any, limit: int | None = None
) -> tuple[int, int]:
    """A ``UserError`` (one line) when ``workers`` cells at once do not fit in the memory
    available on ``device`` (or ``limit`` bytes); returns (estimate per cell, available)."""
    peaks = training_peaks(sources, cells)
    if not peaks:
        return 0, 0
    each = max(peaks.values()) + process_overhead(device)
    free = limit if limit is not None else available_memory(device)
    if each * workers > free:
        fits = free // each
        advice = (
            f"the largest number that fits is {fits} (--workers)"
            if fits
            else "not even one cell fits: free memory, or raise --memory-limit"
        )
        raise UserError(
            f"{workers} cell(s) at once need about {fmt_size(each * workers)} "
            f"({fmt_size(each)} each) but {fmt_size(free)} is available on "
            f"{getattr(device, 'type', device)}; {advice}"
        )
    return each, free
