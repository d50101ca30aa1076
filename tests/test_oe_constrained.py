"""WOODS, SCONE and the wild mixture: the augmented Lagrangian checked by hand on tiny tensors."""

import math

import pytest
import torch
from oebench_plugins.oe_constrained import alm_term, alm_update, gaussian_noise

from oebench.api import TrainStep, UserError, create_objective, create_outlier_source
from oebench.testing import check_objective, check_outlier_source


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _lse(row: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in row))


def _ce(rows: list[list[float]], targets: list[int]) -> float:
    return sum(_lse(r) - r[t] for r, t in zip(rows, targets, strict=True)) / len(rows)


def test_alm_term_is_the_augmented_lagrangian_when_active():
    v = torch.tensor(0.1, requires_grad=True)
    out = alm_term(v, lam=0.5, rho=2.0)
    assert float(out) == pytest.approx(0.5 * 0.1 + 2.0 / 2 * 0.01)
    out.backward()
    assert float(v.grad) == pytest.approx(0.5 + 2.0 * 0.1)  # lam + rho v


def test_alm_term_is_a_constant_without_gradient_when_slack():
    v = torch.tensor(-1.0, requires_grad=True)
    out = alm_term(v, lam=0.5, rho=1.0)  # rho v + lam = -0.5 < 0
    assert float(out) == pytest.approx(-(0.5**2) / 2)
    out.backward()
    assert float(v.grad) == 0.0


def test_alm_update_both_branches():
    assert alm_update(0.2, lam=0.0, rho=1.0, lr=1.0) == pytest.approx(0.2)
    assert alm_update(-2.0, lam=0.5, rho=1.0, lr=1.0) == pytest.approx(
        0.5 - 0.5
    )  # lam - lr lam/rho


Z_IN = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
Z_WILD = [[0.1, 0.2, 0.3], [3.0, -2.0, 0.0], [0.0, 0.0, 0.0]]
Y = [0, 1]


def _step(objective, extra, **kw):
    z_in = torch.tensor(Z_IN, requires_grad=True)
    z_out = torch.tensor(Z_WILD, requires_grad=True)
    step = TrainStep(
        model=None, x_in=torch.zeros(2, 1), targets=torch.tensor(Y), logits_in=z_in,
        x_out=torch.zeros(3, 1), logits_out=z_out, extra=extra, **kw,
    )  # fmt: skip
    return step, z_in, z_out


def _unit_layer(a: float = 1.0, b: float = 0.0):
    g = torch.nn.Linear(1, 1)
    with torch.no_grad():
        g.weight.fill_(a)
        g.bias.fill_(b)
    return g


def _hand_terms(a: float, b: float, eta: float) -> tuple[float, float, float]:
    fa = sum(_sig(a * _lse(r) + b) for r in Z_IN) / len(Z_IN)
    wild = sum(_sig(-(a * (_lse(r) - eta) + b)) for r in Z_WILD) / len(Z_WILD)
    return fa, wild, _ce(Z_IN, Y)


@pytest.mark.parametrize("name,eta", [("woods", 0.0), ("scone", 1.0)])
def test_first_step_is_ce_plus_wild_term_plus_penalised_false_alarms(name, eta):
    objective = create_objective(name, calibrate=2)
    objective.attach(4, 3)
    g = _unit_layer(-0.5, 0.25)
    step, _, _ = _step(objective, g)
    fa, wild, ce = _hand_terms(-0.5, 0.25, eta)
    t = fa - 0.05  # lam 0, rho 1: 0.5 t^2 where t >= 0, else 0
    want = ce + wild + (0.5 * t * t if t >= 0 else 0.0)
    assert float(objective.loss(step)) == pytest.approx(want, rel=1e-6)


def test_after_calibration_ce_enters_only_through_its_constraint():
    objective = create_objective("woods", calibrate=1)
    objective.attach(4, 3)
    g = _unit_layer(-0.5, 0.25)
    objective.loss(_step(objective, g)[0])  # calibrates ce_ref = CE of this batch
    step, z_in, _ = _step(objective, g)
    fa, wild, ce = _hand_terms(-0.5, 0.25, 0.0)
    t = fa - 0.05
    c = ce - 2.0 * ce  # ce_tol 2: the constraint is slack, lam2 0 -> constant 0
    want = 0.0 + wild + (0.5 * t * t if t >= 0 else 0.0)
    assert c < 0
    loss = objective.loss(step)
    assert float(loss) == pytest.approx(want, rel=1e-6)
    loss.backward()  # the CE term gives no gradient: only the false-alarm term reaches z_in
    lse_grad = torch.softmax(z_in.detach(), 1)
    s = torch.sigmoid(-0.5 * torch.logsumexp(z_in.detach(), 1) + 0.25)
    dfa = (s * (1 - s) * -0.5 / 2)[:, None] * lse_grad
    want_grad = max(t, 0.0) * dfa
    assert torch.allclose(z_in.grad, want_grad, atol=1e-6)


def test_end_epoch_moves_multipliers_by_the_epochs_mean_constraints():
    objective = create_objective("woods", calibrate=1, lr_lam=1.0, penalty_mult=1.5)
    objective.attach(4, 3)
    g = _unit_layer(1.0, 0.0)  # lse > 0 -> sigmoid > 0.5: false alarms violate alpha
    for _ in range(3):
        objective.loss(_step(objective, g)[0])
    fa, _, ce = _hand_terms(1.0, 0.0, 0.0)
    objective.end_epoch(0, 2)
    state = objective.state()
    assert state["lam"] == pytest.approx(fa - 0.05)
    assert state["rho"] == pytest.approx(1.5)  # violated: the penalty grows
    assert state["ce_ref"] == pytest.approx(ce, rel=1e-6)
    assert state["lam2"] == pytest.approx(0.0)  # CE = ce_ref < 2 ce_ref: slack, lam2 stays 0
    assert state["rho2"] == pytest.approx(1.0)


def test_state_round_trip_restores_the_multipliers():
    a = create_objective("scone", calibrate=1)
    a.attach(4, 3)
    g = _unit_layer(1.0, 0.0)
    a.loss(_step(a, g)[0])
    a.end_epoch(0, 2)
    b = create_objective("scone", calibrate=1)
    b.attach(4, 3)
    b.load_state(a.state())
    step = _step(b, g)[0]
    assert float(b.loss(step)) == pytest.approx(float(a.loss(_step(a, g)[0])))


def test_without_wild_data_the_error_is_one_line():
    objective = create_objective("woods")
    g = objective.attach(4, 3)
    step = TrainStep(
        model=None, x_in=torch.zeros(2, 1), targets=torch.tensor(Y),
        logits_in=torch.tensor(Z_IN), extra=g,
    )  # fmt: skip
    with pytest.raises(UserError, match="needs wild data"):
        objective.loss(step)


@pytest.mark.parametrize("name", ["woods", "scone"])
def test_objective_contract(name):
    check_objective(name, classes=3)


def test_wild_mixes_the_stated_fractions_of_each_part():
    wild = create_outlier_source("wild", outliers="noise", pi=0.25, covariate=0.25, n=40)
    assert wild.counts() == (10, 10, 20)
    data = wild.load("train", shape=(1, 28, 28), seed=0)
    assert tuple(data.images.shape) == (40, 1, 28, 28)
    assert bool((data.labels == -1).all())
    again = wild.load("train", shape=(1, 28, 28), seed=0)
    assert torch.equal(data.images, again.images)
    other = wild.load("train", shape=(1, 28, 28), seed=1)
    assert not torch.equal(data.images, other.images)


def test_wild_parts_come_from_their_sources():
    shape = (1, 28, 28)
    mnist = create_outlier_source("wild", outliers="noise", pi=0.0, n=30)
    clean = mnist.load("train", shape=shape, seed=0).images
    train = create_outlier_source("wild", pi=0.0, n=1)._sources()[0].load("train", shape=shape)
    pool = {bytes(x.numpy()) for x in (train.batch(0, len(train))[0] * 255).round().byte()}
    assert all(bytes(x.numpy()) in pool for x in clean)  # clean ID: training images
    noise = create_outlier_source("wild", outliers="noise", pi=1.0, n=30)
    ood = noise.load("train", shape=shape, seed=0).images
    assert not any(bytes(x.numpy()) in pool for x in ood)


def test_gaussian_noise_has_imagenet_c_sigma():
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 1, 16, 16), 0.5)
    noisy = gaussian_noise(x, 3, g)
    assert float((noisy - x).std()) == pytest.approx(0.18, rel=0.03)


def test_wild_refuses_fractions_over_one():
    with pytest.raises(UserError, match="pi \\+ covariate"):
        create_outlier_source("wild", pi=0.7, covariate=0.5)


def test_wild_source_contract():
    check_outlier_source("wild", outliers="noise", pi=0.5, n=64)
