"""OE with harder synthesised outliers: DOE (model perturbation), DivOE (extrapolated
outliers), DAL (a Wasserstein ball around the auxiliary distribution)."""

from __future__ import annotations

from typing import Any

import oebench.api as oebench
from oebench.api import Objective, TrainStep, UserError, cross_entropy, uniform_cross_entropy


def _fresh_buffers(model: Any) -> dict[str, Any]:
    """Copies of the model's buffers: a train-mode pass through them moves no running stats."""
    return {k: b.clone() for k, b in model.named_buffers()}


def doe_direction(model: Any, x: Any, n_in: int) -> dict[str, Any]:
    """DOE's per-layer perturbation of every weight matrix / kernel (``dim > 1``).

    ``-grad_w (d l_sur / d s)^2`` at ``s = 1``, ``l_sur = mean_out(mean_k(s z) - lse(s z))``,
    rescaled per layer to ``||w|| / ||d|| * d``; ``d l_sur / d s = mean_out(mean_k z - E_p z)``
    in closed form, so no double backward is needed. The pass is in train mode on copies of
    the buffers (the authors' throw-away proxy): no running statistic moves.
    """
    import torch
    from torch.func import functional_call

    weights = {k: p for k, p in model.named_parameters() if p.dim() > 1 and k.endswith("weight")}
    leaves = {k: p.detach().requires_grad_() for k, p in weights.items()}
    logits = functional_call(model, {**leaves, **_fresh_buffers(model)}, (x,)).float()
    out = logits[n_in:]
    slope = (out.mean(1) - (out.softmax(1) * out).sum(1)).mean()
    grads = torch.autograd.grad(slope.pow(2), list(leaves.values()), allow_unused=True)
    diff = {}
    for (k, w), g in zip(weights.items(), grads, strict=True):
        d = torch.zeros_like(w) if g is None else -g
        diff[k] = (w.detach().norm() / (d.norm() + 1e-20)) * d
    return diff


def perturbed_logits(model: Any, diff: dict[str, Any], gamma: float, x: Any) -> Any:
    """``model(x)`` with weights ``w + gamma * diff``; gradients reach the real ``w``."""
    from torch.func import functional_call

    params = dict(model.named_parameters())
    moved = {k: params[k] + gamma * d for k, d in diff.items()}
    return functional_call(model, moved, (x,)).float()


class DOE(Objective):
    """DOE (Wang et al., ICLR 2023, "Out-of-distribution Detection with Implicit Outlier
    Transformation"): OE under a worst-case model perturbation. Defaults from the authors'
    ``doe_final.py``: ``warmup = 0.5`` of the training (their 5 of 10 epochs) of plain
    ``CE + lam OE`` with ``lam = 1``; afterwards ``CE + lam * OE(f_{w + gamma P}(x_out))`` with
    ``gamma`` drawn uniformly from ``strengths = (1e-1, 1e-2, 1e-3, 1e-4)`` every step and
    ``P`` an EMA (``beta = 0.6``) of ``doe_direction``.

    Matches their code: the perturbed layers (weights with ``dim > 1``), the surrogate
    ``(d l_sur / d scale)^2`` and its one SGD step of lr 1, the per-layer rescaling to the
    weight's norm, the EMA kept across steps and epochs, the ID + outlier batch through both
    passes (BatchNorm sees both), the perturbed pass in train mode moving running statistics
    (the authors' real-net pass) and the proxy's not. Differs: their two optimizer steps per
    batch (OE at ``w + gamma P``, then CE at ``w``) are one step on the sum here, the warm-up is
    a fraction of the steps rather than an epoch count, no gradient clipping (ours has no
    clip), and the proxy pass keeps the network's dropout (theirs has none).
    """

    uses_outliers = True

    def __init__(
        self,
        warmup: float = 0.5,
        strengths: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4),
        beta: float = 0.6,
        lam: float = 1.0,
    ):
        if not 0 <= warmup <= 1:
            raise UserError(f"doe: warmup must be a fraction in [0, 1], got {warmup}")
        if not strengths or any(s < 0 for s in strengths):
            raise UserError(f"doe: strengths must be non-empty and >= 0, got {strengths}")
        if not 0 <= beta < 1:
            raise UserError(f"doe: beta must be in [0, 1), got {beta}")
        self.warmup, self.strengths = warmup, [float(s) for s in strengths]
        self.beta, self.lam = beta, lam
        self._diff: dict[str, Any] | None = None

    def loss(self, step: TrainStep) -> Any:
        import torch

        ce = cross_entropy(step.logits_in, step.targets)
        if step.step < self.warmup * step.steps:
            return ce + self.lam * uniform_cross_entropy(step.logits_out).mean()
        pick = torch.randint(len(self.strengths), (1,), generator=step.generator)
        gamma = self.strengths[int(pick)]
        n = len(step.x_in)
        x = torch.cat([step.x_in, step.x_out])
        new = doe_direction(step.model, x, n)
        if self._diff is None:
            self._diff = new
        else:
            old = {k: v.to(new[k].device) for k, v in self._diff.items()}
            self._diff = {k: self.beta * old[k] + (1 - self.beta) * new[k] for k in new}
        logits = perturbed_logits(step.model, self._diff, gamma, x)
        return ce + self.lam * uniform_cross_entropy(logits[n:]).mean()

    def state(self) -> dict[str, Any]:
        if self._diff is None:
            return {}
        return {"diff": {k: v.detach().cpu() for k, v in self._diff.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self._diff = state.get("diff")


def extrapolate(
    model: Any, x: Any, epsilon: float, rel_step: float, steps: int, generator: Any
) -> Any:
    """DivOE's extrapolated outliers: from ``x`` + U(-eps, eps), ``steps`` signed-gradient
    ascent steps of size ``rel_step * eps`` on the OE loss, projected on the L_inf ball of
    radius ``eps`` and on [0, 1]; in eval mode (no BatchNorm statistic moves, no dropout)."""
    import torch

    was = model.training
    model.eval()
    noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * epsilon
    x = x.detach()
    adv = (x + noise.to(device=x.device, dtype=x.dtype)).clamp(0, 1)
    try:
        for _ in range(steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                loss = uniform_cross_entropy(model(adv).float()).mean()
                (grad,) = torch.autograd.grad(loss, [adv])
            adv = adv.detach() + epsilon * rel_step * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - epsilon), x + epsilon).clamp(0, 1)
    finally:
        model.train(was)
    return adv.detach()


class DivOE(Objective):
    """DivOE (Zhu et al., NeurIPS 2023, "Diversified Outlier Exposure for Out-of-Distribution
    Detection via Informative Extrapolation"): the first ``ratio`` of each outlier batch is
    replaced by ``extrapolate``-d outliers, then ``CE + lam * OE`` on ID + extrapolated + the
    rest. Defaults from the authors' ``train_DivOE.py``: ``ratio = 0.5``, ``epsilon = 0.01``,
    ``rel_step = 1/4``, ``steps = 5``, ``lam = 0.5``; their inputs are in [0, 1] with the
    normalisation inside the network, as ours (so epsilon needs no rescaling).

    Matches their code: the random start, eval mode during extrapolation, the signed steps,
    the projection, replacing (not adding) half the batch, one train-mode pass over ID +
    outliers for the loss. Differs: our loop has already forwarded the original batch, so the
    loss pass here runs on copies of the buffers (running statistics move once per step, from
    the original outliers, rather than from the extrapolated ones) and that first pass is
    wasted compute; only the MSP-score (uniform-CE) variant is provided.
    """

    uses_outliers = True

    def __init__(
        self,
        ratio: float = 0.5,
        epsilon: float = 0.01,
        rel_step: float = 0.25,
        steps: int = 5,
        lam: float = 0.5,
    ):
        if not 0 <= ratio <= 1:
            raise UserError(f"divoe: ratio must be in [0, 1], got {ratio}")
        if epsilon < 0 or rel_step < 0 or steps < 0:
            raise UserError("divoe: epsilon, rel_step and steps must be >= 0")
        self.ratio, self.epsilon, self.rel_step = ratio, epsilon, rel_step
        self.steps, self.lam = int(steps), lam

    def loss(self, step: TrainStep) -> Any:
        import torch
        from torch.func import functional_call

        n_aug = int(len(step.x_out) * self.ratio)
        if n_aug == 0:
            ce = cross_entropy(step.logits_in, step.targets)
            return ce + self.lam * uniform_cross_entropy(step.logits_out).mean()
        adv = extrapolate(
            step.model, step.x_out[:n_aug], self.epsilon, self.rel_step, self.steps,
            step.generator,
        )  # fmt: skip
        x = torch.cat([step.x_in, adv, step.x_out[n_aug:]])
        logits = functional_call(step.model, _fresh_buffers(step.model), (x,)).float()
        n = len(step.x_in)
        ce = cross_entropy(logits[:n], step.targets)
        return ce + self.lam * uniform_cross_entropy(logits[n:]).mean()


def dal_bias(
    head: Any, features: Any, bias: Any, gamma: Any, strength: float, iters: int
) -> tuple[Any, Any]:
    """DAL's feature perturbation: ``iters`` ascent steps on ``OE(head(f + b)) - gamma *
    mean|b|``, each ``b += strength * g / ||g||`` (per-sample L2 normalised gradient), from
    ``bias``; returns the (detached) bias and the penalty ``mean|b|`` of the last step's
    starting point (as the authors' dual update uses it)."""
    import torch

    features = features.detach()
    penalty = bias.abs().mean()
    for _ in range(iters):
        bias = bias.detach().requires_grad_(True)
        with torch.enable_grad():
            oe = uniform_cross_entropy(head(features + bias).float()).mean()
            penalty = bias.abs().mean(-1).mean()
            (grad,) = torch.autograd.grad(oe - gamma * penalty, [bias])
        grad = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        bias = bias.detach() + strength * grad
    return bias.detach(), penalty.detach()


class DAL(Objective):
    """DAL (Wang et al., NeurIPS 2023, "Learning to Augment Distributions for
    Out-of-Distribution Detection"): ``CE + lam * OE(head(f_out + b))``, ``b`` from
    ``dal_bias`` (started at U(0, 1e-4)), with the Lagrange multiplier of the ball updated per
    step, ``gamma_t <- clip(gamma_t - beta * (rho - mean|b|), 0, gamma)``, from
    ``gamma_init = 0.01``. Defaults are the authors' CIFAR-10 command in their README
    (``gamma = 10, beta = 0.01, rho = 10, iters = 10, strength = 1``; CIFAR-100 uses
    ``beta = 0.005``), ``lam = 0.5``, ``warmup = 0`` (a fraction of the steps with plain OE).

    Matches their ``main.py``: the head on the perturbed, non-detached features (gradients
    reach the body), the penalty, the per-sample normalisation, the dual update (also during
    warm-up) and ``gamma_t`` kept across epochs. As in their code the unperturbed OE term is
    computed there but not used, so the loss has only the perturbed one. Differs: the
    normalisation is guarded against a zero gradient, and the warm-up is a fraction of steps.
    """

    uses_outliers = True
    uses_features = True

    def __init__(
        self,
        gamma: float = 10.0,
        beta: float = 0.01,
        rho: float = 10.0,
        strength: float = 1.0,
        iters: int = 10,
        lam: float = 0.5,
        warmup: float = 0.0,
        gamma_init: float = 0.01,
    ):
        if min(gamma, beta, rho, strength, iters, gamma_init) < 0:
            raise UserError("dal: gamma, beta, rho, strength, iters and gamma_init must be >= 0")
        if not 0 <= warmup <= 1:
            raise UserError(f"dal: warmup must be a fraction in [0, 1], got {warmup}")
        self.gamma, self.beta, self.rho, self.strength = gamma, beta, rho, strength
        self.iters, self.lam, self.warmup, self.gamma_init = int(iters), lam, warmup, gamma_init
        self._gamma: Any = None

    def loss(self, step: TrainStep) -> Any:
        import torch

        feats, head = step.features_out, step.model.forward_head
        init = torch.rand(feats.shape, generator=step.generator) * 1e-4
        init = init.to(device=feats.device, dtype=feats.dtype)
        gamma = self._gamma if self._gamma is not None else torch.tensor(self.gamma_init)
        gamma = gamma.to(feats.device)
        bias, penalty = dal_bias(head, feats, init, gamma, self.strength, self.iters)
        self._gamma = (gamma - self.beta * (self.rho - penalty)).clamp(0.0, self.gamma)
        ce = cross_entropy(step.logits_in, step.targets)
        if step.step < self.warmup * step.steps:
            return ce + self.lam * uniform_cross_entropy(step.logits_out).mean()
        return ce + self.lam * uniform_cross_entropy(head(feats + bias).float()).mean()

    def state(self) -> dict[str, Any]:
        return {} if self._gamma is None else {"gamma": self._gamma.detach().cpu()}

    def load_state(self, state: dict[str, Any]) -> None:
        self._gamma = state.get("gamma")


@oebench.hookimpl
def register_objectives(register):
    register(
        "doe",
        DOE,
        description="OE under a worst-case weight perturbation after a 50% warm-up "
        "(Wang et al., ICLR 2023)",
    )
    register(
        "divoe",
        DivOE,
        description="OE with half the outliers extrapolated by 5 L_inf (0.01) ascent steps "
        "(Zhu et al., NeurIPS 2023)",
    )
    register(
        "dal",
        DAL,
        description="OE on outlier features perturbed in a Wasserstein ball "
        "(Wang et al., NeurIPS 2023)",
    )
