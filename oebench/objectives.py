"""The training-objective contract and the OE loss terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    return torch.logsumexp(logits, dim=1) - logits.mean(dim=1)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)
