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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    except Exception:  # a model the probe cannot feed (token ids, no ``forward``): weights only
        saved = params
    finally:
        model.train(was)
    weights_in_graph = params  # parameters saved by the probe do not grow with the batch
    per_image = max(0, saved - weights_in_graph) / PROBE
    return int(3 * params + buffers + per_image * images)


def cell_peak(sources: Any, cell: Any) -> int:
    """The estimated peak bytes of one cell's training (its model, data shape and batches)."""
    source = sources.source("dataset", cell.id_ref)
    params = cell.training.params
    images = int(params.get("batch_size") or 128)
    if cell.training.outliers is not None:
        images += int(params.get("outlier_batch_size") or 0)
    return training_peak(_probe_model(cell, source), tuple(source.shape), images)


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


@dataclass(frozen=True)
class Scoring:
    """The estimated peak of one cell's scoring: its outputs held in memory, the forward
    pass's batch and the largest detector's fit and score (``Detector.memory``)."""

    outputs: int
    batch: int
    detector: int
    #: the detector with the largest estimate
    largest: str = ""
    #: bytes of outputs kept on disk, memory-mapped (``OutputCache``), not in memory
    on_disk: int = 0
    #: images through the model in the cell's forward passes, and in its ID training split
    images: int = 0
    train_images: int = 0
    #: seconds per image of a forward pass, timed on a probe batch (None: not timed)
    seconds_per_image: float | None = None

    @property
    def total(self) -> int:
        return self.outputs + self.batch + self.detector

    @property
    def host(self) -> int:
        """What stays in the host's memory when the batch is on a GPU."""
        return self.outputs + self.detector

    def parts(self) -> str:
        """``outputs 1.2 GiB, batch 0.3 GiB, detector gmm 40 GiB``: what the estimate holds."""
        detector = f"detector {self.largest} {fmt_size(self.detector)}" if self.largest else ""
        named = [f"outputs {fmt_size(self.outputs)}", f"batch {fmt_size(self.batch)}", detector]
        return ", ".join(p for p in named if p)


def scoring_peak(
    sources: Any, bench: Any, cell: Any, batch: int, mapped: bool, timed: Any = None
) -> Scoring:
    """``Scoring`` of ``cell``: outputs of ``MAP_BYTES`` or more stay on disk when ``mapped``
    (the cache is on), the rest is held; the detectors run one at a time. ``timed``: a device
    to time a probe batch's forward pass on."""
    import torch

    from oebench.execute.detect import eval_set_wheres, id_test_where, train_where
    from oebench.execute.outputs import MAP_BYTES
    from oebench.registry.lookup import create_detector

    source = sources.source("dataset", cell.id_ref)
    shape, classes = tuple(source.shape), int(source.num_classes)
    net = _probe_model(cell, source)
    per_image = _inference_bytes(net, shape)

    def features() -> int:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return int(net.eval().forward_features(torch.zeros(PROBE, *shape)).shape[1])

    dim = _quietly(features, 0)  # 0: a model without ``forward_features`` (its cells say so)
    detectors = {r.key: _quietly(lambda r=r: create_detector(r.name, **r.kwargs), None)
                 for r in bench.detectors}  # fmt: skip
    fits = any("fit" in d.needs for d in detectors.values() if d is not None)
    wheres = [id_test_where(cell)] + [
        w for _, w in eval_set_wheres(sources, bench, cell, source, shape)
    ]
    tests = [_quietly(lambda w=w: len(sources.load(*w)), 0) for w in wheres]
    train_split = 0
    if fits or timed is not None:
        train_split = _quietly(lambda: len(sources.load(*train_where(cell))), 0)
    train = train_split if fits else 0
    sizes = [n * ((dim + classes) * 4 + 8) for n in [*tests, train]]
    held = sum(b for b in sizes if not (mapped and b >= MAP_BYTES))
    costs = {
        key: _quietly(lambda d=d: int(d.memory(train if "fit" in d.needs else 0, max(tests),
                                               dim, classes)), 0)
        for key, d in detectors.items() if d is not None
    }  # fmt: skip
    largest = max(costs, key=costs.__getitem__) if costs else ""
    seconds = _seconds_per_image(net, shape, timed) if timed is not None else None
    return Scoring(held, per_image * batch, costs.get(largest, 0), largest, sum(sizes) - held,
                   sum(tests) + train, train_split, seconds)  # fmt: skip


#: images in the first timing probe, and the most in one (each probe doubles until one takes
#: ``TIMED_SECONDS``), so small models are timed at a batch they are run at
TIMED, TIMED_MAX, TIMED_SECONDS = 16, 1024, 0.25


def _seconds_per_image(net: Any, shape: tuple[int, ...], device: Any) -> float | None:
    """Seconds per image of an eval forward pass on ``device`` (after a warm-up pass), timed
    on batches of ``TIMED`` images and more, or None where the probe cannot feed the model."""
    import time

    import torch

    on_gpu = getattr(device, "type", str(device)) == "cuda"
    images = TIMED
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            net = net.to(device).eval()
            net(torch.zeros(PROBE, *shape, device=device))
            while True:
                x = torch.zeros(images, *shape, device=device)
                start = time.perf_counter()
                net(x)
                if on_gpu:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                if seconds >= TIMED_SECONDS or images >= TIMED_MAX:
                    return seconds / images
                images *= 2
    except Exception:
        return None


def task_seconds(task: Any, scoring: Scoring | None, trains_apart: bool) -> float | None:
    """A rough estimate of a plan task's seconds from ``scoring.seconds_per_image``: forward
    passes at that rate; a training step at 3 forward passes (forward and backward) per image,
    outliers included, for its epochs (``trains_apart``: a ``train`` task makes the cell's
    checkpoint, not the cell)."""
    if scoring is None or scoring.seconds_per_image is None:
        return None
    per = scoring.seconds_per_image
    if task.kind == "forward":
        return scoring.images / task.shard[1] * per
    passes = scoring.images * per if task.kind == "cell" and task.shard[1] == 1 else 0.0
    training = task.cell.training
    if task.kind == "cell" and trains_apart or training.params.get("evaluate_only"):
        return passes
    params = training.params
    rows = min(scoring.train_images, int(params.get("max_train") or scoring.train_images))
    batch = int(params.get("batch_size") or 128)
    extra = int(params.get("outlier_batch_size") or 0) if training.outliers is not None else 0
    epochs = int(params.get("epochs") or 0)
    return passes + 3 * per * rows * epochs * (1 + extra / batch)


def _quietly(estimate: Callable[[], Any], otherwise: Any) -> Any:
    """``estimate()``, or ``otherwise`` where it raises: a broken plugin or split is reported
    by its cell, by name; the memory plan only leaves it out."""
    try:
        return estimate()
    except Exception:
        return otherwise


def _probe_model(cell: Any, source: Any) -> Any:
    import torch

    from oebench.registry.lookup import create_model

    with torch.random.fork_rng(devices=[]):  # the probe leaves the run's generators alone
        return create_model(
            cell.model_ref.name, source.num_classes, tuple(source.shape), **cell.model_ref.kwargs
        )


def _inference_bytes(net: Any, shape: tuple[int, ...]) -> int:
    """Bytes per image of a forward pass without gradients: three times the largest output of
    any layer (its input, its output and the next layer's), measured on a probe."""
    import torch

    largest = 0

    def seen(module: Any, inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    hooks = [m.register_forward_hook(seen) for m in net.modules()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            net.eval()(torch.zeros(PROBE, *shape))
    except Exception:  # text models and others the probe cannot feed: no estimate
        return 0
    finally:
        for hook in hooks:
            hook.remove()
    return int(3 * largest / PROBE)


def scoring_peaks(
    sources: Any, bench: Any, cells: Iterable[Any], batch: int, mapped: bool, timed: Any = None
) -> dict[str, Scoring]:
    """``scoring_peak`` of every cell by its key, estimated once per model and data."""
    found: dict[tuple, Scoring] = {}
    peaks = {}
    for cell in cells:
        what = (cell.model_ref.key, cell.id_ref.key, cell.seed)
        if what not in found:
            found[what] = scoring_peak(sources, bench, cell, batch, mapped, timed)
        peaks[cell.key] = found[what]
    return peaks


def check_fits(
    sources: Any,
    cells: Iterable[Any],
    workers: int,
    device: Any,
    limit: int | None = None,
    scoring: dict[str, Scoring] | None = None,
) -> tuple[int, int]:
    """A ``UserError`` (one line) when ``workers`` cells at once do not fit in the memory
    available on ``device`` (or ``limit`` bytes), each cell at the larger of its training
    step and its ``scoring``; returns (estimate per cell, available)."""
    cells = list(cells)
    by_key = {cell.key: cell for cell in cells}
    peaks = training_peaks(sources, cells)
    if not peaks:
        return 0, 0
    scoring = scoring or {}
    on_gpu = getattr(device, "type", str(device)) == "cuda"
    if on_gpu and scoring:  # outputs and fits are on the host: checked against its memory
        host = limit if limit is not None else available_memory("cpu")
        key = max(scoring, key=lambda k: scoring[k].host)
        if scoring[key].host > host:
            raise UserError(_too_big(by_key[key], 0, scoring[key], scoring[key].host, host, "host"))
        scoring = {}

    def need(key: str) -> int:
        return max(peaks[key], scoring[key].total if key in scoring else 0)

    worst = max(peaks, key=need)
    each = need(worst) + process_overhead(device)
    free = limit if limit is not None else available_memory(device)
    if each > free:
        raise UserError(
            _too_big(by_key[worst], peaks[worst], scoring.get(worst), each, free, device)
        )
    if each * workers > free:
        raise UserError(
            f"{workers} cell(s) at once need about {fmt_size(each * workers)} "
            f"({fmt_size(each)} each) but {fmt_size(free)} is available on "
            f"{getattr(device, 'type', device)}; the largest number that fits is "
            f"{free // each} (--workers)"
        )
    return each, free


def _too_big(
    cell: Any, training: int, scoring: Scoring | None, each: int, free: int, device: Any
) -> str:
    """The one line that refuses a cell whose peak does not fit at all."""
    label = getattr(cell, "label", cell.key)
    process = each - max(training, scoring.total if scoring is not None else 0)
    if scoring is not None and scoring.total > training:
        what = f"scoring: {scoring.parts()}" + (
            f"; the process itself {fmt_size(process)}" if process > 0 else ""
        )
        advice = "leave out the largest detector, or keep the cache on (large outputs stay on disk)"
    else:
        what = f"a training step: {fmt_size(training)}"
        advice = "lower batch_size"
    return (
        f"cell {label} needs about {fmt_size(each)} at its peak ({what}) but "
        f"{fmt_size(free)} is available on {getattr(device, 'type', device)}; {advice}, "
        "or raise --memory"
    )
