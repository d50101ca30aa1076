"""Training a classifier with or without Outlier Exposure (checkpoints: ``checkpoints.py``)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from oebench.contracts.objective import Objective, TrainStep
from oebench.execute.outputs import iterate_batches
from oebench.execute.sampling import budget_subset, epoch_outliers

if TYPE_CHECKING:
    import torch

    from oebench.execute.checkpoints import PartialCheckpoint

#: bump when a change to the training loop changes what a checkpoint contains
TRAINING_VERSION = 1


class TrainingDiverged(RuntimeError):
    """The loss (or, after the last step, the weights) of a training stopped being finite."""


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
    both go through ONE forward pass (BatchNorm sees both, as in the OE reference code); with
    ``outlier_budget``, outlier batches come only from the seeded subset ``budget_subset``.
    On a GPU: bf16 autocast (``amp``: auto|bf16|off; losses in float32), channels-last,
    data resident on the device, no host synchronisation inside the loop; ``compile``
    wraps the model in ``torch.compile``. ``on_stats(loss, accuracy %)`` receives the mean
    loss and ID train accuracy about ten times per epoch (the only host synchronisations).

    With ``partial``, the state at the end of every epoch but the last (weights, optimizer,
    schedule, every random generator) is saved there, and a training that finds one resumes
    after its epoch, with the same weights as had it never stopped. ``on_epoch(done, epochs)``
    is called after each epoch (and its save).

    A loss that is not finite (NaN, inf: a diverged training, NaN logits) raises
    ``TrainingDiverged`` as soon as it is seen, before the epoch's state is saved (see
    ``_Guard`` for when it looks); so do weights that are not finite after the last step.
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
    objective = as_objective(objective)
    extra = _attach(objective, model, train_set, shape, device)
    opt = torch.optim.SGD(
        [*model.parameters(), *(extra.parameters() if extra is not None else ())],
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
        start -= _restore(saved, model, opt, sched, gen, (objective, extra))
        for done in range(step) if on_step is not None else ():
            on_step(done + 1, total)
    stats = _Stats(on_stats, max(1, steps_per_epoch // 10), device)
    guard = _Guard(max(1, steps_per_epoch // 10), device, step, (params["lr"], total))
    budget = params.get("outlier_budget")
    subset = None
    if objective.uses_outliers and budget is not None:  # a fixed, seeded subset of the source
        subset = budget_subset(budget, len(outliers), seed)
    for epoch in range(first_epoch, params["epochs"]):
        order = torch.randperm(len(train_set), generator=gen)[:n_train]
        out_iter = None
        if objective.uses_outliers:
            # the setting `outlier_sampling` picks them (default: uniform; see execute/sampling.py)
            spec = params.get("outlier_sampling")
            out_order = epoch_outliers(
                spec, model, outliers, steps_per_epoch * obs, shape, device, gen, subset, train_set
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
            features = None
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                if objective.uses_features:  # the same pass, split at the penultimate layer
                    features = model.forward_features(x)
                    logits = model.forward_head(features).float()
                    features = features.float()
                else:
                    logits = step_model(x).float()
            outs = out_iter is not None
            loss = objective.loss(
                TrainStep(
                    model=model,
                    x_in=x[:n_in],
                    targets=y,
                    logits_in=logits[:n_in],
                    x_out=x[n_in:] if outs else None,
                    logits_out=logits[n_in:] if outs else None,
                    features_in=None if features is None else features[:n_in],
                    features_out=None if features is None or not outs else features[n_in:],
                    generator=gen,
                    extra=extra,
                    step=step,
                    steps=total,
                    epoch=epoch,
                    epochs=params["epochs"],
                )
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            stats.add(loss, logits[:n_in], y)
            guard.add(loss, step, epoch, logits)
            if on_step is not None:
                on_step(step, total)
        guard.check(step, epoch)
        objective.end_epoch(epoch, params["epochs"])
        if partial is not None and epoch + 1 < params["epochs"]:
            spent = time.perf_counter() - start
            state = _snapshot(epoch + 1, step, total, spent, model, opt, sched, gen)
            partial.save({**state, "objective": _objective_state(objective, extra)})
        if on_epoch is not None:
            on_epoch(epoch + 1, params["epochs"])
    model.eval()
    guard.check_weights(model)
    if on_gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - start


class _Plain(Objective):
    """A bare loss callable ``f(logits_in, targets, logits_out)`` as an ``Objective``."""

    def __init__(self, loss: Any):
        self._loss = loss
        self.uses_outliers = bool(getattr(loss, "uses_outliers", False))

    def __call__(self, logits_in: Any, targets: Any, logits_out: Any) -> Any:
        return self._loss(logits_in, targets, logits_out)


def as_objective(objective: Any) -> Objective:
    """``objective`` itself, or a bare loss callable wrapped with the contract's defaults."""
    return objective if isinstance(objective, Objective) else _Plain(objective)


def _attach(
    objective: Objective, model: torch.nn.Module, train_set: Any, shape: tuple, device: Any
) -> torch.nn.Module | None:
    """The objective's own trained parameters (``Objective.attach``), on ``device``."""
    import torch

    if type(objective).attach is Objective.attach:
        return None
    probe, _ = next(iterate_batches(train_set, 2, shape, device, order=torch.arange(2)))
    was = model.training
    model.eval()  # a probe for the sizes: no BatchNorm statistics move
    with torch.no_grad():
        features = model.forward_features(probe)
        classes = model.forward_head(features).shape[1]
    model.train(was)
    extra = objective.attach(int(features.shape[1]), int(classes))
    return None if extra is None else extra.to(device)


def _objective_state(objective: Objective, extra: Any) -> dict[str, Any]:
    """An objective's own parameters and per-step state, on the CPU, for a partial checkpoint."""
    weights = (
        None if extra is None else {k: v.detach().cpu() for k, v in extra.state_dict().items()}
    )
    return {"extra": weights, "state": objective.state()}


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
    owner: tuple[Objective, Any] | None = None,
) -> float:
    """Put a ``_snapshot`` back in place; returns the seconds the training had taken."""
    import random

    import numpy as np
    import torch

    model.load_state_dict(saved["model"])
    if owner is not None and "objective" in saved:  # the objective's own parameters and state
        objective, extra = owner
        if extra is not None:
            extra.load_state_dict(saved["objective"]["extra"])
        objective.load_state(saved["objective"]["state"])
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


class _Guard:
    """The loss summed on the device, which must stay finite. It is looked at (one host
    synchronisation) after the first step, every ``every`` steps and at each epoch's end; on
    a CPU, where looking costs nothing, after every step. Summing and looking change no
    weight: a training stopped by it would have given the same weights up to there."""

    def __init__(self, every: int, device: Any, step: int, lr_total: tuple[float, int]):
        import torch

        self.every = 1 if device.type == "cpu" else every
        self.sum = torch.zeros((), device=device)
        self.first = self.checked = step  # the steps before ``checked`` had finite losses
        self.lr, self.total = lr_total

    def add(self, loss: torch.Tensor, step: int, epoch: int, logits: torch.Tensor) -> None:
        self.sum += loss.detach()
        if step == self.first + 1 or step - self.checked >= self.every:
            self.check(step, epoch, logits)

    def check(self, step: int, epoch: int, logits: torch.Tensor | None = None) -> None:
        """Raise ``TrainingDiverged`` unless every loss up to ``step`` was finite."""
        if step == self.checked:
            return
        value = float(self.sum)
        if math.isfinite(value):
            self.checked = step
            return
        steps = f"{self.checked + 1}..{step}" if step > self.checked + 1 else str(step)
        found = f"the loss became {value} at step {steps} of {self.total} (epoch {epoch + 1})"
        if step == self.first + 1 == 1:  # the initial weights: not the learning rate
            import torch

            bad = logits is not None and not bool(torch.isfinite(logits).all())
            culprit = "the model's logits are" if bad else "the objective's loss is"
            raise TrainingDiverged(f"{found}: {culprit} not finite before any update")
        raise TrainingDiverged(f"{found}; lower the training's `lr` (now {self.lr:g})")

    def check_weights(self, model: torch.nn.Module) -> None:
        """Raise ``TrainingDiverged`` when a weight or buffer is not finite after training."""
        import torch

        floats = [t for t in model.state_dict().values() if t.is_floating_point()]
        if floats and not bool(torch.stack([torch.isfinite(t).all() for t in floats]).all()):
            raise TrainingDiverged(
                f"the weights are not finite after the last step; lower the training's `lr` "
                f"(now {self.lr:g})"
            )


@contextlib.contextmanager
def training_numerics(
    params: dict[str, Any], device: torch.device, what: str = "the training"
) -> Iterator[dict[str, Any]]:
    """The numerics a training's settings ask for, during the training; yields its platform
    (``oebench.core.platforms.platform_info``, with the flags as they are inside).

    ``numerics = "portable"``: the process must have pinned its CPU kernels before importing
    torch (``pin_portable``; a ``UserError`` saying how otherwise). ``deterministic``:
    deterministic algorithms in torch, cuDNN deterministic and not benchmarking, and cuBLAS's
    workspace setting (unless the environment has one), all restored afterwards.
    """
    import os

    import torch

    from oebench.core.platforms import CUBLAS_DETERMINISTIC, platform_info, portable_problem
    from oebench.errors import UserError

    if params.get("numerics") == "portable":
        problem = portable_problem(what)
        if problem is not None:
            raise UserError(problem)
    if not params.get("deterministic"):
        yield platform_info(device, params.get("threads", 0))
        return
    cudnn = torch.backends.cudnn
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    env_before = {k: os.environ.get(k) for k in CUBLAS_DETERMINISTIC}
    for k, v in CUBLAS_DETERMINISTIC.items():
        os.environ.setdefault(k, v)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield platform_info(device, params.get("threads", 0))
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
