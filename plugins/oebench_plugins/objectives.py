"""Training objectives: cross-entropy, LogitNorm, and the Outlier Exposure family.

Each objective keeps its paper's defaults; ``oebench list objectives`` shows the citations.
"""

from __future__ import annotations

from typing import Any

import oebench.api as oebench
from oebench.api import (
    Objective,
    UserError,
    cross_entropy,
    energy,
    soft_cross_entropy,
    uniform_cross_entropy,
)


class CrossEntropy(Objective):
    """Cross-entropy on ID data only (the baseline without OE)."""

    def __call__(self, logits_in, targets, logits_out=None):
        return cross_entropy(logits_in, targets)


class LogitNorm(Objective):
    """CE on ``z / (tau * ||z||_2)`` (Wei et al., ICML 2022; tau = 0.04 on CIFAR-10).

    A training baseline without outliers; ``eps`` (1e-7) guards zero logits as in the
    authors' code.
    """

    def __init__(self, tau: float = 0.04, eps: float = 1e-7):
        if tau <= 0:
            raise UserError(f"logitnorm: tau must be > 0, got {tau}")
        self.tau, self.eps = tau, eps

    def __call__(self, logits_in, targets, logits_out=None):
        norms = logits_in.norm(p=2, dim=1, keepdim=True) + self.eps
        return cross_entropy(logits_in / (norms * self.tau), targets)


class OutlierExposure(Objective):
    """CE(f(x_in), y) + lam * mean H(U; f(x_out)) (Hendrycks et al., ICLR 2019)."""

    uses_outliers = True

    def __init__(self, lam: float = 0.5):
        self.lam = lam

    def __call__(self, logits_in, targets, logits_out=None):
        loss = cross_entropy(logits_in, targets)
        return loss + self.lam * uniform_cross_entropy(logits_out).mean()


class EnergyMargin(Objective):
    """Energy-bounded OE (Liu et al., NeurIPS 2020), exactly as the authors' code:
    ``CE + lam * (mean relu(E_in - m_in)^2 + mean relu(m_out - E_out)^2)``,
    ``E = -logsumexp(z)``; CIFAR defaults lam = 0.1, m_in = -25, m_out = -7."""

    uses_outliers = True

    def __init__(self, lam: float = 0.1, m_in: float = -25.0, m_out: float = -7.0):
        self.lam, self.m_in, self.m_out = lam, m_in, m_out

    def __call__(self, logits_in, targets, logits_out=None):
        hinge_in = (energy(logits_in) - self.m_in).clamp(min=0).pow(2).mean()
        hinge_out = (self.m_out - energy(logits_out)).clamp(min=0).pow(2).mean()
        return cross_entropy(logits_in, targets) + self.lam * (hinge_in + hinge_out)


class MixOE(Objective):
    """Mixture Outlier Exposure (Zhang et al., WACV 2023): ``CE(f(x), y) + beta *
    SoftCE(f(x_mix), lam * onehot(y) + (1 - lam) * U)``, one ``lam ~ Beta(alpha, alpha)``
    per batch; defaults alpha = 1, beta = 5, ``mix = "cutmix"`` (or ``"mixup"``).

    ``cutmix`` pastes a random box of outlier i into ID image i and sets ``lam`` to the ID
    area left; ``mixup`` blends ``lam * x_in + (1 - lam) * x_out``. ID image i is paired with
    outlier i (cycled when the outlier batch is smaller). The mixed batch shares the ID
    batch's forward pass (the authors' code runs two passes).
    """

    uses_outliers = True

    def __init__(self, alpha: float = 1.0, beta: float = 5.0, mix: str = "cutmix"):
        if mix not in ("cutmix", "mixup"):
            raise UserError(f"mixoe: mix must be 'cutmix' or 'mixup', got {mix!r}")
        if alpha <= 0:
            raise UserError(f"mixoe: alpha must be > 0, got {alpha}")
        self.alpha, self.beta, self.mix = alpha, beta, mix
        self._lam: float | None = None

    def prepare_outliers(self, x_in, targets, x_out, generator):
        import numpy as np
        import torch

        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        lam = float(rng.beta(self.alpha, self.alpha))
        pairs = x_out[torch.arange(len(x_in), device=x_out.device) % len(x_out)]
        if self.mix == "mixup":
            self._lam = lam
            return lam * x_in + (1 - lam) * pairs
        top, bottom, left, right = cut_box(x_in.shape[-2], x_in.shape[-1], lam, rng)
        mixed = x_in.clone()
        mixed[..., top:bottom, left:right] = pairs[..., top:bottom, left:right]
        self._lam = 1 - (bottom - top) * (right - left) / (x_in.shape[-2] * x_in.shape[-1])
        return mixed

    def __call__(self, logits_in, targets, logits_out=None):
        import torch.nn.functional as F

        if self._lam is None:
            raise RuntimeError("mixoe: prepare_outliers() must run before the loss")
        k = logits_in.shape[1]
        soft = self._lam * F.one_hot(targets, k).float() + (1 - self._lam) / k
        mixed = soft_cross_entropy(logits_out, soft)
        return cross_entropy(logits_in, targets) + self.beta * mixed


def cut_box(h: int, w: int, lam: float, rng: Any) -> tuple[int, int, int, int]:
    """The CutMix box (Yun et al. 2019): sides ``sqrt(1 - lam)`` of the image around a
    uniform centre, clipped to the image; returns (top, bottom, left, right)."""
    import numpy as np

    ratio = np.sqrt(1.0 - lam)
    ch, cw = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = int(np.clip(cy - ch // 2, 0, h)), int(np.clip(cy + ch // 2, 0, h))
    left, right = int(np.clip(cx - cw // 2, 0, w)), int(np.clip(cx + cw // 2, 0, w))
    return top, bottom, left, right


@oebench.hookimpl
def register_objectives(register):
    register("cross-entropy", CrossEntropy, description="CE on ID data only (baseline)")
    register(
        "logitnorm",
        LogitNorm,
        description="CE on logits / (0.04 ||logits||), no outliers (Wei et al., ICML 2022)",
    )
    register(
        "oe",
        OutlierExposure,
        description="CE + 0.5 H(U; p) on outliers (Hendrycks et al., ICLR 2019)",
    )
    register(
        "energy-margin",
        EnergyMargin,
        description="energy-bounded OE: CE + 0.1 squared energy hinges, m_in -25, m_out -7 "
        "(Liu et al., NeurIPS 2020)",
    )
    register(
        "mixoe",
        MixOE,
        description="CE + 5 soft-CE on CutMix(ID, outlier) with lam-weighted soft targets "
        "(Zhang et al., WACV 2023)",
    )
