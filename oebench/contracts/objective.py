"""The training-objective contract and the loss terms the OE family shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class TrainStep:
    """One training step as an objective's ``loss`` sees it.

    ``model`` is the network being trained (``forward_features``, ``forward_head``,
    ``head_linear``; an objective may run extra passes through it, e.g. DOE's perturbed
    weights or DivOE's extrapolated outliers). ``features_*`` are the penultimate features of
    the same forward pass when the objective sets ``uses_features``, else ``None``;
    ``*_out`` are ``None`` for objectives that use no outliers. ``extra`` is what the
    objective's ``attach`` returned. ``step`` counts from 0 over ``steps`` in all, ``epoch``
    from 0 over ``epochs``.
    """

    model: Any
    x_in: torch.Tensor
    targets: torch.Tensor
    logits_in: torch.Tensor
    x_out: torch.Tensor | None = None
    logits_out: torch.Tensor | None = None
    features_in: torch.Tensor | None = None
    features_out: torch.Tensor | None = None
    generator: torch.Generator | None = None
    extra: Any = None
    step: int = 0
    steps: int = 1
    epoch: int = 0
    epochs: int = 1


class Objective:
    """A training loss. ``uses_outliers`` objectives receive the logits of an outlier batch
    that went through the SAME forward pass as the ID batch (as in the OE reference code).

    The simple form is ``__call__(logits_in, targets, logits_out)``. An objective that needs
    more (features, the model, its own trained parameters, per-epoch updates) overrides the
    optional parts below; the training loop calls them in this order:

    - ``attach(feature_dim, classes)`` once before the optimizer is built: a module of the
      objective's own trained parameters (a second head, a logistic layer), optimised with
      the network by the same SGD; ``None`` (default) for none.
    - ``prepare_outliers(x_in, targets, x_out, generator)`` on every (augmented) batch pair
      before the forward pass: the batch forwarded in place of the outliers (MixOE).
    - ``loss(step)`` with a ``TrainStep``: the loss to minimise (default: ``__call__``).
      With ``uses_features`` the step carries the penultimate features of the same pass.
    - ``end_epoch(epoch, epochs)`` after every epoch (Lagrange multipliers, re-clustering).
    - ``state()`` / ``load_state(state)``: the per-step state (queues, multipliers) an
      interrupted training saves and resumes with, as tensors and plain values.

    Attributes whose names start with ``_`` are per-step state, not configuration.
    """

    uses_outliers: bool = False
    uses_features: bool = False

    def __call__(
        self, logits_in: torch.Tensor, targets: torch.Tensor, logits_out: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, step: TrainStep) -> torch.Tensor:
        """The loss of one training step (default: ``self(logits_in, targets, logits_out)``)."""
        return self(step.logits_in, step.targets, step.logits_out)

    def attach(self, feature_dim: int, classes: int) -> torch.nn.Module | None:
        """The objective's own trained parameters, optimised with the network (default: none)."""
        return None

    def prepare_outliers(
        self,
        x_in: torch.Tensor,
        targets: torch.Tensor,
        x_out: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The batch forwarded in place of ``x_out`` (default: ``x_out`` unchanged)."""
        return x_out

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Called after epoch ``epoch`` (from 0) of ``epochs`` (default: nothing)."""

    def state(self) -> dict[str, Any]:
        """Per-step state to save with an interrupted training (default: none)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back what ``state()`` returned."""

    def config(self) -> dict:
        """Everything that determines the loss, for checkpoint cache keys."""
        public = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"class": type(self).__qualname__, **public}


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(U; softmax(z)) per sample: ``logsumexp(z) - mean(z)``."""
    import torch

    return torch.logsumexp(logits, dim=1) - logits.mean(dim=1)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against integer class targets."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, targets)


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``-sum_k q_k log softmax(z)_k`` for target distributions ``q``."""
    return -(soft_targets * logits.log_softmax(dim=1)).sum(dim=1).mean()


def energy(logits: torch.Tensor) -> torch.Tensor:
    """The free energy ``E(x) = -logsumexp(z)`` per sample (temperature 1)."""
    import torch

    return -torch.logsumexp(logits, dim=1)
