"""Training a classifier with or without Outlier Exposure, and the checkpoint cache."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from oebench.data import cache_dir
from oebench.objectives import Objective
from oebench.outputs import iterate_batches

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


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding ``pad`` (CIFAR recipe)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
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
) -> float:
    """Train in place with SGD (Nesterov) + per-step cosine schedule; returns seconds taken.

    With an outlier-using objective, every ID batch is concatenated with an outlier batch and
    both go through ONE forward pass (BatchNorm sees both, as in the OE reference code).
    On a GPU: bf16 autocast (``amp``: auto|bf16|off; losses in float32), channels-last,
    data resident on the device, no host synchronisation inside the loop; ``compile``
    wraps the model in ``torch.compile``.
    """
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
    step = 0
    for _ in range(params["epochs"]):
        order = torch.randperm(len(train_set), generator=gen)[:n_train]
        out_iter = None
        if objective.uses_outliers:
            out_order = torch.randperm(len(outliers), generator=gen)
            reps = math.ceil(steps_per_epoch * obs / len(outliers))
            out_order = out_order.repeat(reps)[: steps_per_epoch * obs]
            out_iter = iterate_batches(outliers, obs, shape, device, order=out_order)
        for x_in, y in iterate_batches(train_set, bs, shape, device, order=order):
            n_in = len(x_in)
            x = x_in
            if out_iter is not None:
                x_out, _ = next(out_iter)
                x = torch.cat([x_in, x_out])
            if params.get("augment"):
                x = augment(x, gen)
            if fmt is not None:
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
            if on_step is not None:
                on_step(step, total)
    model.eval()
    if on_gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - start


class CheckpointCache:
    """Trained weights under ``<cache>/models/<key>.pt``; the key hashes all that made them."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = (root or cache_dir()) / "models"
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not self.enabled or not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            path.unlink(missing_ok=True)  # truncated or corrupt: retrain
            return None

    def save(self, key: str, state_dict: dict[str, torch.Tensor], seconds: float) -> None:
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            cpu = {k: v.detach().cpu() for k, v in state_dict.items()}
            torch.save({"state_dict": cpu, "seconds": seconds}, tmp)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
