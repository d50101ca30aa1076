"""The training-objective contract and the OE loss terms."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Objective:
    """A training loss. ``uses_outliers`` objectives receive the logits of an outlier batch
    that went through the SAME forward pass as the ID batch (as in the OE reference code)."""

    uses_outliers: bool = False

    def __call__(
        self, logits_in: torch.Tensor, targets: torch.Tensor, logits_out: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict:
        """Everything that determines the loss, for checkpoint cache keys."""
        return {"class": type(self).__qualname__, **vars(self)}


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(U; softmax(z)) per sample: ``logsumexp(z) - mean(z)``."""
    import torch

    return torch.logsumexp(logits, dim=1) - logits.mean(dim=1)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(logits, targets)
