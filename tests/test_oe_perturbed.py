"""DOE, DivOE and DAL: the perturbations checked against hand-derived values on linear models."""

import math

import pytest
import torch
from oebench_plugins.oe_perturbed import dal_bias, doe_direction, extrapolate
from torch import nn

from oebench.api import TrainStep, create_objective
from oebench.testing import check_objective


class Linear(nn.Module):
    """``z = W flatten(x) + b``, with the model contract's features/head split."""

    def __init__(self, dim: int = 4, classes: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(dim, classes)

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, f):
        return self.fc(f)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _uce(z):
    return (torch.logsumexp(z, 1) - z.mean(1)).mean()


def _ce(z, y):
    return -z.log_softmax(1)[torch.arange(len(y)), y].mean()


def _batch(seed=0, n_in=4, n_out=6, dim=4):
    g = torch.Generator().manual_seed(seed)
    x_in, x_out = torch.rand(n_in, dim, generator=g), torch.rand(n_out, dim, generator=g)
    return x_in, torch.tensor([0, 1, 2, 1])[:n_in], x_out


def _step(model, x_in, y, x_out, seed=0, step=0, steps=1, features=False):
    x = torch.cat([x_in, x_out])
    f = model.forward_features(x)
    z = model.forward_head(f)
    n = len(x_in)
    return TrainStep(
        model=model, x_in=x_in, targets=y, logits_in=z[:n], x_out=x_out, logits_out=z[n:],
        features_in=f[:n] if features else None, features_out=f[n:] if features else None,
        generator=torch.Generator().manual_seed(seed), step=step, steps=steps,
    )  # fmt: skip


def _doe_by_hand(w, b, x_out):
    """-grad_W (d l_sur/ds)^2 for z = W x + b, rescaled to ||W||: derived on paper."""
    z = x_out @ w.T + b
    p = z.softmax(1)
    e = (p * z).sum(1, keepdim=True)
    n, k = z.shape
    slope = (z.mean(1) - e[:, 0]).mean()
    dz = (1 / k - p * (1 + z - e)) / n  # d slope / d z
    d = -2 * slope * dz.T @ x_out
    return w.norm() / d.norm() * d


@pytest.mark.parametrize("name", ["doe", "divoe", "dal"])
def test_keeps_the_objective_contract(name):
    check_objective(name, classes=3)


def test_doe_direction_is_the_rescaled_surrogate_gradient():
    model = Linear()
    x_in, _, x_out = _batch()
    diff = doe_direction(model, torch.cat([x_in, x_out]), len(x_in))
    assert set(diff) == {"fc.weight"}  # biases (dim 1) are not perturbed
    expected = _doe_by_hand(model.fc.weight.detach(), model.fc.bias.detach(), x_out)
    torch.testing.assert_close(diff["fc.weight"], expected)
    assert model.fc.weight.grad is None


def test_doe_loss_is_oe_under_the_perturbed_weights_and_leaves_the_model_alone():
    model = Linear()
    x_in, y, x_out = _batch()
    doe = create_objective("doe", strengths=[0.1], warmup=0.5, lam=1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    warm = doe.loss(_step(model, x_in, y, x_out, step=0, steps=4))  # warm-up: CE + OE
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    torch.testing.assert_close(warm, _ce(x_in @ w.T + b, y) + _uce(x_out @ w.T + b))
    loss = doe.loss(_step(model, x_in, y, x_out, step=2, steps=4))
    d1 = _doe_by_hand(w, b, x_out)
    oe = _uce(x_out @ (w + 0.1 * d1).T + b)
    torch.testing.assert_close(loss, _ce(x_in @ w.T + b, y) + oe)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # only the optimizer changes the weights
    loss.backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    _, _, x_out2 = _batch(seed=1)  # a second step: the EMA 0.6 old + 0.4 new
    doe.loss(_step(model, x_in, y, x_out2, step=3, steps=4))
    d2 = _doe_by_hand(w, b, x_out2)
    torch.testing.assert_close(doe.state()["diff"]["fc.weight"], 0.6 * d1 + 0.4 * d2)


def test_doe_proxy_pass_moves_no_batchnorm_statistics():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    model.train()
    x_in, _, x_out = _batch()
    before = model[2].running_mean.clone()
    doe_direction(model, torch.cat([x_in, x_out]), len(x_in))
    assert torch.equal(model[2].running_mean, before)


def test_divoe_extrapolation_stays_in_the_ball_and_raises_the_oe_loss():
    model = Linear(dim=16)
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(3))
    x[0] = 0.0  # at the box's edge: the [0, 1] clamp must hold
    eps = 0.05
    adv = extrapolate(model, x, eps, 0.25, 5, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert _uce(model(adv)) > _uce(model(x))
    assert model.training  # the mode is put back


def test_divoe_one_step_and_loss_by_hand():
    model = Linear()
    x_in, y, x_out = _batch()
    eps, n_aug = 0.1, 3
    noise = torch.rand(x_out[:n_aug].shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    start = (x_out[:n_aug] + eps * noise).clamp(0, 1)
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    p = (start @ w.T + b).softmax(1)
    grad = (p - 1 / 3) @ w  # d uce / d x for a linear model (up to the positive 1/n)
    stepped = start + eps * 0.5 * grad.sign()
    expected = torch.minimum(torch.maximum(stepped, x_out[:n_aug] - eps), x_out[:n_aug] + eps)
    expected = expected.clamp(0, 1)
    divoe = create_objective("divoe", ratio=0.5, epsilon=eps, rel_step=0.5, steps=1)
    loss = divoe.loss(_step(model, x_in, y, x_out, seed=0))
    outs = torch.cat([expected, x_out[n_aug:]])
    torch.testing.assert_close(loss, _ce(x_in @ w.T + b, y) + 0.5 * _uce(outs @ w.T + b))


def test_divoe_loss_pass_moves_no_batchnorm_statistics():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    x_in, y, x_out = _batch()
    z = model(torch.cat([x_in, x_out]))
    before = model[2].running_mean.clone()
    step = TrainStep(model=model, x_in=x_in, targets=y, logits_in=z[:4], x_out=x_out,
                     logits_out=z[4:], generator=torch.Generator().manual_seed(0))  # fmt: skip
    create_objective("divoe").loss(step)
    assert torch.equal(model[2].running_mean, before)


def test_dal_first_step_follows_the_normalised_gradient():
    model = Linear()
    _, _, x_out = _batch()
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    bias, _ = dal_bias(model.fc, x_out, torch.zeros_like(x_out), 0.0, 0.5, 1)
    g = ((x_out @ w.T + b).softmax(1) - 1 / 3) @ w  # per-sample d uce / d f (times n)
    torch.testing.assert_close(bias, 0.5 * g / g.norm(dim=1, keepdim=True))
    far, _ = dal_bias(model.fc, x_out, torch.zeros_like(x_out), 0.0, 0.5, 4)
    assert (far.norm(dim=1) <= 4 * 0.5 + 1e-5).all()  # each step moves by `strength`
    with torch.no_grad():  # and it raises the OE loss
        assert _uce(model.fc(x_out + far)) > _uce(model.fc(x_out + bias)) > _uce(model.fc(x_out))


def test_dal_penalty_keeps_the_bias_in_the_ball():
    model = Linear(dim=16)
    f = torch.rand(6, 16, generator=torch.Generator().manual_seed(2))
    init = torch.full_like(f, 1e-4)
    free, _ = dal_bias(model.fc, f, init, 0.0, 1.0, 10)
    held, penalty = dal_bias(model.fc, f, init, 1e6, 1.0, 10)
    # a dominant penalty steps every entry by strength / sqrt(d) towards 0: it stays that small
    assert held.abs().max() <= 1.0 / math.sqrt(16) + 1e-4
    assert penalty <= 1.0 / math.sqrt(16) + 1e-4
    assert free.norm(dim=1).min() > 3 * held.norm(dim=1).max()


def test_dal_dual_update_and_oe_when_unperturbed():
    model = Linear()
    x_in, y, x_out = _batch()
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    oe = _ce(x_in @ w.T + b, y) + 0.5 * _uce(x_out @ w.T + b)
    dal = create_objective("dal", strength=0.0, iters=1, beta=1.0, rho=0.0)
    loss = dal.loss(_step(model, x_in, y, x_out, seed=0, features=True))
    init = torch.rand(x_out.shape, generator=torch.Generator().manual_seed(0)) * 1e-4
    torch.testing.assert_close(dal.state()["gamma"], 0.01 + init.abs().mean())
    torch.testing.assert_close(loss, oe, atol=1e-4, rtol=0)  # only the U(0, 1e-4) start
    warm = create_objective("dal", warmup=1.0)
    torch.testing.assert_close(warm.loss(_step(model, x_in, y, x_out, features=True)), oe)
    capped = create_objective("dal", gamma=0.02, beta=1000.0, rho=0.0, iters=1, strength=0.0)
    capped.load_state({"gamma": torch.tensor(0.015)})  # 0.015 + 1000 * ~5e-5 > 0.02
    capped.loss(_step(model, x_in, y, x_out, features=True))
    assert float(capped.state()["gamma"]) == pytest.approx(0.02)
    floored = create_objective("dal", beta=1.0, rho=1.0, iters=1, strength=0.0)
    floored.loss(_step(model, x_in, y, x_out, features=True))  # 0.01 - (1 - ~5e-5) < 0
    assert float(floored.state()["gamma"]) == 0.0


@pytest.mark.parametrize("name,options", [("doe", {"warmup": 0.0}), ("divoe", {}), ("dal", {})])
def test_same_seed_same_loss(name, options):
    x_in, y, x_out = _batch()
    losses = [
        create_objective(name, **options).loss(
            _step(Linear(), x_in, y, x_out, seed=s, features=True)
        )
        for s in (5, 5, 6)
    ]
    assert torch.equal(losses[0], losses[1])
    if name != "doe":  # DOE's only randomness is the strength, which may repeat
        assert not torch.equal(losses[0], losses[2])
