"""Feature maps from a model's forward pass (the rules of model_detectors' doc), score joining."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from oebench.api import Classifier


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def feature_map(model: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last 4-D submodule output whose spatial mean is the penultimate features, and those."""
    import torch

    last: list[torch.Tensor] = []

    def keep(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output[0, 0].numel() > 1:
            last[:] = [output]

    handles = [m.register_forward_hook(keep) for m in model.net.modules() if m is not model.net]
    try:
        features = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    if not last or last[0].shape[:2] != features.shape:
        raise ValueError("found no (N, C, H, W) feature map in front of the penultimate features")
    pooled = last[0].mean((2, 3))
    if not torch.allclose(pooled, features, rtol=1e-4, atol=1e-5 * float(features.abs().max())):
        raise ValueError(
            "the penultimate features are not the spatial mean of the last feature map"
        )
    return last[0], features


def layer_maps(
    model: Classifier, x: torch.Tensor, layers: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The deepest ``layers`` stage outputs of ``x`` (rule in the module doc) and its logits."""
    import torch

    last: dict[tuple[int, ...], torch.Tensor] = {}

    def keep(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output[0, 0].numel() > 1:
            size = tuple(output.shape[2:])
            last.pop(size, None)  # re-insert: dict order = order of each size's last output
            last[size] = output

    handles = [m.register_forward_hook(keep) for m in model.net.modules() if m is not model.net]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not last:
        raise ValueError("found no (N, C, H, W) feature map with H * W > 1 in the network")
    return list(last.values())[-layers:], logits
