"""Training a classifier with or without Outlier Exposure, and the checkpoint cache."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oebench.contracts.objective import Objective
from oebench.core.settings import cache_dir
from oebench.execute.outputs import iterate_batches
from oebench.execute.sampling import epoch_outliers

if TYPE_CHECKING:
    import torch

#: bump when a change to the training loop changes what a checkpoint contains
TRAINING_VERSION = 1


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    seconds: float
    cached: bool


def cosine_factor(step: int, total: int, lr: float, floor: float = 1e-6) -> float:
    """The OE reference schedule: cosine from 1 down to ``floor / lr``, stepped per iteration."""
    low = floor / lr
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without a host synchronisation.

    A copy from pageable memory makes the host wait for the GPU stream; drawing random numbers
    on the CPU generator and copying them from pinned memory keeps the values (and so the
    numbers a run gives) identical while letting the host queue the next step.
    """
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding ``pad`` (CIFAR recipe)."""
    import torch

    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(to_device(flip, x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = to_device(torch.randint(0, 2 * pad + 1, (n,), generator=generator), x.device)
    dx = to_device(torch.randint(0, 2 * pad + 1, (n,), generator=generator), x.device)
    rows = (dy.view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chan, rows, cols]


def train(
    model: torch.nn.Module,
    train_set: Any,
    objective: Objective,
    params: dict[str, Any],
    seed: int,
    shape: tuple[int, int, int],
    device: torch.device,
    outliers: Any = None,
    on_step: Callable[[int, int], None] | None = None,
    on_stats: Callable[[float, float], None] | None = None,
    partial: PartialCheckpoint | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> float:
    """Train in place with SGD (Nesterov) + per-step cosine schedule; returns seconds taken.

    With an outlier-using objective, every ID batch is concatenated with an outlier batch and
    both go through ONE forward pass (BatchNorm sees both, as in the OE reference code).
    On a GPU: bf16 autocast (``amp``: auto|bf16|off; losses in float32), channels-last,
    data resident on the device, no host synchronisation inside the loop; ``compile``
    wraps the model in ``torch.compile``. ``on_stats(loss, accuracy %)`` receives the mean
    loss and ID train accuracy about ten times per epoch (the only host synchronisations).

    With ``partial``, the state at the end of every epoch but the last (weights, optimizer,
    schedule, every random generator) is saved there, and a training that finds one resumes
    after its epoch, with the same weights as had it never stopped. ``on_epoch(done, epochs)``
    is called after each epoch (and its save).
    """
    import torch

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    on_gpu = device.type == "cuda"
    fmt = torch.channels_last if on_gpu and params.get("channels_last", True) else None
    model.to(device=device, memory_format=fmt or torch.preserve_format).train()
    amp = params.get("amp", "auto")
    amp_dtype = torch.bfloat16 if (amp == "auto" and on_gpu) or amp == "bf16" else None
    step_model = torch.compile(model) if params.get("compile") else model
    opt = torch.optim.SGD(
        model.parameters(),
        lr=params["lr"],
        momentum=params["momentum"],
        nesterov=params["nesterov"],
        weight_decay=params["weight_decay"],
    )
    n_train = (
        len(train_set)
        if params.get("max_train") is None
        else min(len(train_set), params["max_train"])
    )
    bs, obs = params["batch_size"], params["outlier_batch_size"]
    steps_per_epoch = math.ceil(n_train / bs)
    total = params["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: cosine_factor(step, total, params["lr"])
    )
    step = first_epoch = 0
    saved = partial.load(total) if partial is not None else None
    if saved is not None:  # resume after the last epoch an interrupted run finished
        first_epoch, step = saved["epoch"], saved["step"]
        start -= _restore(saved, model, opt, sched, gen)
        for done in range(step) if on_step is not None else ():
            on_step(done + 1, total)
    stats = _Stats(on_stats, max(1, steps_per_epoch // 10), device)
    for epoch in range(first_epoch, params["epochs"]):
        order = torch.randperm(len(train_set), generator=gen)[:n_train]
        out_iter = None
        if objective.uses_outliers:
            # the setting `outlier_sampling` picks them (default: uniform; see oebench.execute.sampling)
            spec = params.get("outlier_sampling")
            out_order = epoch_outliers(
                spec, model, outliers, steps_per_epoch * obs, shape, device, gen
            )
            out_iter = iterate_batches(outliers, obs, shape, device, order=out_order)
        for x_in, y in iterate_batches(train_set, bs, shape, device, order=order):
            n_in = len(x_in)
            x = x_in
            if out_iter is not None:
                x_out, _ = next(out_iter)
                if params.get("outlier_flip"):  # the OE reference's SVHN outliers: random flips
                    flip = torch.rand(len(x_out), generator=gen).to(x_out.device) < 0.5
                    x_out = torch.where(flip.view(-1, 1, 1, 1), x_out.flip(-1), x_out)
                x = torch.cat([x_in, x_out])
            if params.get("augment"):
                x = augment(x, gen)
            if out_iter is not None:  # objectives such as MixOE transform the outlier batch
                tail = x[n_in:]
                mixed = objective.prepare_outliers(x[:n_in], y, tail, gen)
                x = x if mixed is tail else torch.cat([x[:n_in], mixed])
            if fmt is not None and x.dim() == 4:  # images; token batches stay as they are
                x = x.contiguous(memory_format=fmt)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                logits = step_model(x).float()
            loss = objective(logits[:n_in], y, logits[n_in:] if out_iter is not None else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            stats.add(loss, logits[:n_in], y)
            if on_step is not None:
                on_step(step, total)
        if partial is not None and epoch + 1 < params["epochs"]:
            spent = time.perf_counter() - start
            partial.save(_snapshot(epoch + 1, step, total, spent, model, opt, sched, gen))
        if on_epoch is not None:
            on_epoch(epoch + 1, params["epochs"])
    model.eval()
    if on_gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _snapshot(
    epoch: int,
    step: int,
    total: int,
    seconds: float,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
) -> dict[str, Any]:
    """Everything a training needs to go on after ``epoch`` epochs, on the CPU."""
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state(legacy=True)
    return {
        "epoch": epoch,
        "step": step,
        "total": total,
        "seconds": float(seconds),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": {
            "generator": gen.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": [torch.from_numpy(np_state[1].astype("int64")), *map(float, np_state[2:])],
            "python": [list(random.getstate()[1]), random.getstate()[2]],
        },
    }


def _restore(
    saved: dict[str, Any],
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
) -> float:
    """Put a ``_snapshot`` back in place; returns the seconds the training had taken."""
    import random

    import numpy as np
    import torch

    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    gen.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    for device, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, device)
    keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state(
        ("MT19937", keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss)
    )
    words, gauss_next = rng["python"]
    random.setstate((3, tuple(words), gauss_next))
    return saved["seconds"]


class PartialCheckpoint:
    """A training cut short: its state after the last finished epoch, in
    ``<cache>/models/<key>.partial.pt`` beside the final checkpoint it becomes. Written
    atomically after every epoch, read back when valid, deleted when the final one is saved."""

    def __init__(self, cache: CheckpointCache, key: str):
        self.cache = cache
        self.key = key
        self.path = cache.root / f"{key}.partial.pt"

    def load(self, total: int) -> dict[str, Any] | None:
        """The saved state of this training (``total`` steps in all), or None; a file that
        cannot be trusted is reported and removed."""
        import torch

        from oebench.execute.outputs import remove_cache_file

        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            problem = _partial_problem(saved, self.key, total)
        except Exception as exc:
            problem = f"unreadable: {type(exc).__name__}"
        if problem is None:
            print(
                f"oebench: resuming the training {self.key} after epoch {saved['epoch']} "
                f"(from {self.path})",
                file=sys.stderr,
            )
            return saved
        print(
            f"oebench: ignoring {self.path} ({problem}); training from the start", file=sys.stderr
        )
        remove_cache_file(self.path)
        return None

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (a ``_snapshot``) atomically, with its key and a checksum."""
        import torch

        from oebench.execute.outputs import write_cache_file

        payload = {"format": PARTIAL_FORMAT, "key": self.key, **state}
        payload["checksum"] = _partial_checksum(payload)
        write_cache_file(self.cache, self.path, lambda tmp: torch.save(payload, tmp))

    def discard(self) -> None:
        """Delete the file, if any (a read-only folder keeps it)."""
        from oebench.execute.outputs import remove_cache_file

        remove_cache_file(self.path)


#: bump when the layout of a ``.partial.pt`` file changes
PARTIAL_FORMAT = 1


def _partial_checksum(payload: dict[str, Any]) -> str:
    """``state_checksum`` over every tensor of a partial checkpoint (found by path)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            tensors[path] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{path}/{i}")

    walk({k: v for k, v in payload.items() if k != "checksum"}, "")
    meta = f"{payload['epoch']}|{payload['step']}|{payload['total']}|{payload['rng']['numpy'][1:]}"
    return state_checksum(f"{payload['key']}|{meta}", payload["seconds"], tensors)


def _partial_problem(saved: Any, key: str, total: int) -> str | None:
    """Why a loaded partial checkpoint cannot be resumed from for ``key`` (None when it can)."""
    if not isinstance(saved, dict) or saved.get("format") != PARTIAL_FORMAT:
        return "an old or unknown format"
    if saved.get("key") != key:
        return f"it holds the state of another training ({str(saved.get('key'))[:12]}...)"
    epoch = saved.get("epoch")
    if saved.get("total") != total or not isinstance(epoch, int) or epoch < 1:
        return "it was made for another number of steps"
    if saved.get("checksum") != _partial_checksum(saved):
        return "checksum mismatch: the file was damaged"
    return None


class CheckpointCache:
    """Trained weights under ``<cache>/models/<key>.pt``; the key hashes all that made them."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = (root or cache_dir()) / "models"
        self.enabled = enabled
        #: set after a failed write: the cache is read but no longer written
        self.write_failed = False

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def partial(self, key: str) -> PartialCheckpoint | None:
        """Where the training of ``key`` keeps its per-epoch state (None when disabled)."""
        return PartialCheckpoint(self, key) if self.enabled else None

    def load(self, key: str) -> dict[str, Any] | None:
        """The verified checkpoint for ``key``, or None (a bad file is reported and removed)."""
        import torch

        from oebench.execute.outputs import remove_cache_file

        path = self.path(key)
        if not self.enabled or not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            problem = _checkpoint_problem(saved, key)
        except Exception as exc:
            problem = f"unreadable: {type(exc).__name__}"
        if problem is None:
            PartialCheckpoint(self, key).discard()  # left by a run killed as it finished
            return saved
        message = f"oebench: ignoring cached checkpoint {path} ({problem}); retraining"
        print(message, file=sys.stderr)
        remove_cache_file(path)
        return None

    def save(self, key: str, state_dict: dict[str, torch.Tensor], seconds: float) -> None:
        """Store weights with their key and a checksum inside the file (atomically)."""
        import torch

        from oebench.execute.outputs import write_cache_file

        if not self.enabled:
            return
        cpu = {k: v.detach().cpu() for k, v in state_dict.items()}
        payload = {
            "format": CHECKPOINT_FORMAT,
            "key": key,
            "state_dict": cpu,
            "seconds": float(seconds),
            "checksum": state_checksum(key, float(seconds), cpu),
        }
        write_cache_file(self, self.path(key), lambda tmp: torch.save(payload, tmp))
        if self.path(key).exists():  # the final weights are safe: the per-epoch state goes
            PartialCheckpoint(self, key).discard()


#: bump when the layout of a cached checkpoint file changes
CHECKPOINT_FORMAT = 2


def state_checksum(key: str, seconds: float, state: dict[str, torch.Tensor]) -> str:
    """sha256 over the key, the seconds and every tensor's name, dtype, shape and bytes."""
    import torch

    h = hashlib.sha256(f"{key}|{seconds!r}".encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _checkpoint_problem(saved: Any, key: str) -> str | None:
    """Why a loaded checkpoint file cannot be trusted for ``key`` (None when it can)."""
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        return "an old or unknown format"
    if saved.get("key") != key:
        return f"it holds the weights of another cell ({str(saved.get('key'))[:12]}...)"
    state, seconds = saved.get("state_dict"), saved.get("seconds")
    if not isinstance(state, dict) or not isinstance(seconds, float):
        return "incomplete"
    if saved.get("checksum") != state_checksum(key, seconds, state):
        return "checksum mismatch: the file was damaged"
    return None


class _Stats:
    """Running loss and accuracy on the device, reported every ``every`` steps."""

    def __init__(self, report: Callable[[float, float], None] | None, every: int, device: Any):
        import torch

        self.report, self.every, self.steps = report, every, 0
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        if self.report is None:
            return
        self.loss += loss.detach()
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += len(y)
        self.steps += 1
        if self.steps % self.every == 0:
            self.report(float(self.loss) / self.steps, 100.0 * float(self.correct) / self.seen)
            self.loss.zero_()
            self.correct.zero_()
            self.seen = self.steps = 0
