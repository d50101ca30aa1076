"""The model contract: ``forward_features`` and ``forward_head`` on normalised inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Classifier(nn.Module):
    """Wraps a registered network: normalises [0, 1] inputs, exposes features and head.

    With ``mean`` / ``std`` of ``None`` (text sources) inputs such as token ids pass unchanged.

    A registered model factory returns an ``nn.Module`` with ``forward_features(x) -> (N, D)``
    (penultimate features) and ``forward_head(f) -> (N, K)`` (logits); ``forward_head`` should
    be a single ``nn.Linear`` named ``fc`` when detectors that use the head weights
    (ReAct, ASH, ViM) are wanted.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        for method in ("forward_features", "forward_head"):
            if not callable(getattr(net, method, None)):
                raise TypeError(f"{type(net).__name__} has no {method}(): see CONTRIBUTING.md")
        self.net = net
        # a network trained with other statistics than the ID dataset's (a model-zoo entry)
        # declares them as ``input_normalization = (mean, std)``; it then gets those
        own = getattr(net, "input_normalization", None)
        if own is not None and mean is not None:
            mean, std = own
        if mean is None or std is None:  # token ids and other non-image inputs: as they are
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
            return
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return self.net.forward_features(x)
        return self.net.forward_features((x - self.mean) / self.std)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def head_linear(self) -> nn.Linear | None:
        """The final linear layer, when the network has one named ``fc``."""
        fc = getattr(self.net, "fc", None)
        return fc if isinstance(fc, nn.Linear) else None
