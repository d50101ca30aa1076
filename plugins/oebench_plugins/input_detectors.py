"""Detectors that need the model itself (input gradients). Float64; higher = more anomalous."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

import oebench.api as oebench
from oebench.api import Detector, msp_log_odds

if TYPE_CHECKING:
    import torch

    from oebench.api import Classifier


class ODIN(Detector):
    """MSP at temperature T of an input perturbed towards its prediction (Liang et al., ICLR 2018).

    ``x' = x - epsilon * sign(grad_x CE(f(x) / T, argmax f(x)))`` with T = 1000 and
    epsilon = 0.0014 (the paper's defaults), applied to [0, 1] pixels before the model normalises
    them. The authors' code divides the sign gradient by the per-channel std in normalised space,
    which is the same step of epsilon per pixel here; a step of epsilon in normalised units would
    be ``epsilon * std`` in pixels. Score: ``log((1 - p) / p)`` of the perturbed input's max
    softmax ``p`` at temperature T, which ranks exactly as ``-p``. ``sign(0) = 0`` as in the
    paper's equation (the authors' code maps a zero gradient to +1).

    Cost: per image, one forward and one backward pass (the input gradient only; no weight
    gradients) and a second forward pass on the perturbed input, about 4 forward passes in
    all. Nothing of it can come from the output cache: the gradient needs the forward graph,
    and the second pass sees other inputs. On a CPU, batches are cut into chunks of
    ``CPU_CHUNK`` images that stay in the caches (the scores do not depend on the chunking:
    the model is in eval mode, so every image is scored on its own).
    """

    #: images per forward/backward on a CPU (larger batches spill out of the caches)
    CPU_CHUNK = 256

    needs = frozenset({"model"})

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)

    def _perturb(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model(x) / self.temperature
            loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        return x.detach() - self.epsilon * grad.sign()

    def _score_batch(self, model: Classifier, x: torch.Tensor) -> np.ndarray:
        import torch

        x_hat = self._perturb(model, x)
        with torch.no_grad():
            logits = model(x_hat).detach().cpu().double().numpy()
        return msp_log_odds(logits / self.temperature)

    def score_inputs(self, model: Classifier, batches: Iterable[torch.Tensor]) -> np.ndarray:
        parts = [
            self._score_batch(model, chunk)
            for x in batches
            for chunk in (x.split(self.CPU_CHUNK) if x.device.type == "cpu" else (x,))
        ]
        return np.concatenate(parts) if parts else np.zeros(0)


@oebench.hookimpl
def register_detectors(register):
    register(
        "odin",
        ODIN,
        description="ODIN, T=1000, epsilon=0.0014 on [0, 1] pixels (Liang et al. 2018)",
        # perturbs pixels along the input gradient: token ids have none (skipped on text)
        modalities=["image"],
    )
