"""Training objectives: plain cross-entropy (baseline) and Outlier Exposure."""

from __future__ import annotations

import oebench
from oebench.objectives import Objective, cross_entropy, uniform_cross_entropy


class CrossEntropy(Objective):
    """Cross-entropy on ID data only (the baseline without OE)."""

    def __call__(self, logits_in, targets, logits_out=None):
        return cross_entropy(logits_in, targets)


class OutlierExposure(Objective):
    """CE(f(x_in), y) + lam * mean H(U; f(x_out)) (Hendrycks et al., ICLR 2019)."""

    uses_outliers = True

    def __init__(self, lam: float = 0.5):
        self.lam = lam

    def __call__(self, logits_in, targets, logits_out=None):
        loss = cross_entropy(logits_in, targets)
        return loss + self.lam * uniform_cross_entropy(logits_out).mean()


class EnergyMargin(Objective):
    """Energy-bounded fine-tuning (Liu et al., NeurIPS 2020): squared hinges on the energy."""

    uses_outliers = True

    def __init__(self, lam: float = 0.1, m_in: float = -25.0, m_out: float = -7.0):
        self.lam, self.m_in, self.m_out = lam, m_in, m_out

    def __call__(self, logits_in, targets, logits_out=None):
        import torch

        e_in = -torch.logsumexp(logits_in, dim=1)
        e_out = -torch.logsumexp(logits_out, dim=1)
        reg = (e_in - self.m_in).clamp(min=0).pow(2).mean() + (self.m_out - e_out).clamp(min=0).pow(
            2
        ).mean()
        return cross_entropy(logits_in, targets) + self.lam * reg


@oebench.hookimpl
def register_objectives(register):
    register("cross-entropy", CrossEntropy, description="CE on ID data only (baseline)")
    register("oe", OutlierExposure, description="CE + 0.5 H(U; p) on outliers (OE paper)")
    register(
        "energy-margin", EnergyMargin, description="CE + energy hinge losses (Liu et al. 2020)"
    )
