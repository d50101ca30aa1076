"""The training-objective contract and the loss terms the OE family shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Objective:
    """A training loss. ``uses_outliers`` objectives receive the logits of an outlier batch
    that went through the SAME forward pass as the ID batch (as in the OE reference code).

    An objective that works on inputs (MixOE mixes ID and outlier images) overrides
    ``prepare_outliers``: the training loop calls it on every (augmented) batch pair before
    the forward pass, and forwards what it returns in place of the outlier batch.
    Attributes whose names start with ``_`` are per-step state, not configuration.
    """

    uses_outliers: bool = False

    def __call__(
        self, logits_in: torch.Tensor, targets: torch.Tensor, logits_out: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def prepare_outliers(
        self,
        x_in: torch.Tensor,
        targets: torch.Tensor,
        x_out: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The batch forwarded in place of ``x_out`` (default: ``x_out`` unchanged)."""
        return x_out

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
