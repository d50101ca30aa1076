"""Detectors computed exactly as the OE reference code computes them, for bit-for-bit comparisons.

oebench's own ``msp`` scores the exact log-odds ``log((1 - MSP) / MSP)`` in float64, which
keeps apart predictions whose float32 softmax rounds to 1.0. The reference code scores
``-max(softmax(logits))`` with a float32 softmax, so saturated predictions tie at -1.0 and
those ties change AUROC on easy OOD sets. ``msp-reference`` reproduces that.
"""

from __future__ import annotations

import numpy as np

import oebench.api as oebench
from oebench.api import Detector


class MSPReference(Detector):
    """``-max softmax`` in float32 (PyTorch's softmax), as the OE reference code scores MSP."""

    def score(self, outputs):
        import torch

        logits = torch.from_numpy(np.ascontiguousarray(outputs.logits, dtype=np.float32))
        msp = torch.softmax(logits, dim=1).amax(dim=1)
        return -msp.numpy().astype(np.float64)


@oebench.hookimpl
def register_detectors(register):
    register(
        "msp-reference",
        MSPReference,
        description="-MSP from a float32 softmax, ties at 1.0 as in the OE reference code",
    )
