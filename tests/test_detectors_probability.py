"""WEBO, PNML, DOCTOR, iODIN, GradNorm, GradUncertainty: hand-computed answers, the contract
and pytorch-ood parity (for the four pytorch-ood implements)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from detector_kit import as64 as _a
from detector_kit import fitted, make, outputs
from detector_kit import parity_split as _split
from detector_kit import tensor as _t
from torch import nn

from oebench.contracts.detector import Head, Outputs
from oebench.contracts.model import Classifier
from oebench.errors import UserError
from oebench.testing import check_detector

LN2, LN3 = math.log(2.0), math.log(3.0)
out = partial(outputs, classes=2)
NAMES = ["webo", "pnml", "doctor", "doctor-beta", "iodin", "gradnorm", "grad-uncertainty"]


@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
    check_detector(name)


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_a_citation(name):
    from oebench.registry.lookup import get_component

    description = get_component("detector", name).description
    assert description.endswith(")") and any(str(y) in description for y in range(2020, 2026))


@pytest.mark.parametrize("name", ["webo", "pnml", "doctor", "doctor-beta", "gradnorm"])
def test_read_only_inputs(name):
    rng = np.random.default_rng(0)
    z, f = rng.normal(size=(8, 3)), np.abs(rng.normal(size=(8, 4)))
    head = Head(rng.normal(size=(3, 4)), rng.normal(size=3))
    for a in (z, f, head.weight, head.bias):
        a.setflags(write=False)
    det = make(name)
    if det.needs & {"fit", "head"}:
        det.fit(Outputs(z, f, z.argmax(1)), head)
    assert det.score(Outputs(z, f)).shape == (8,)


# -- WEBO ----------------------------------------------------------------------------------------
def test_webo_by_hand():
    z = [[0.0, LN3]]
    # weights 1: -log(1 + 3); (2, 1/3): -log(2 + 1) ; negative weights count as 0: -log 3
    np.testing.assert_allclose(make("webo").score(out(z)), [-math.log(4)], rtol=1e-15)
    np.testing.assert_allclose(make("webo", weights=[2, 1 / 3]).score(out(z)), [-LN3], rtol=1e-15)
    np.testing.assert_allclose(make("webo", weights=[-1, 1]).score(out(z)), [-LN3], rtol=1e-15)
    # tied large logits: -(1000 + log 2), no overflow; a zero weight drops its class
    big = out([[1000.0, 1000.0], [1000.0, 1000.0]])
    np.testing.assert_allclose(make("webo").score(big), [-1000 - LN2] * 2, rtol=1e-15)
    np.testing.assert_allclose(make("webo", weights=[0, 1]).score(big), [-1000.0] * 2)


def test_webo_rejects_bad_weights():
    with pytest.raises(UserError, match="one positive"):
        make("webo", weights=[0, -1])
    with pytest.raises(ValueError, match="2 weights for 3 classes"):
        make("webo", weights=[1, 1]).score(out([[0.0, 0.0, 0.0]]))


# -- PNML ----------------------------------------------------------------------------------------
def _regret(p: np.ndarray, g: float) -> float:
    """The paper's regret, straight from its definition."""
    return math.log((p / (p + (1 - p) * p**g)).sum()) / math.log(len(p))


def test_pnml_by_hand():
    # train (1, 0), (0, 2): normalised to the unit vectors, X^T X = I. Test (3, 4): u = (.6, .8),
    # u^T u = 1, g = 1/2. Head 0 with bias (ln 3, 0): p = (3/4, 1/4), terms 6 / (6 + sqrt 3)
    # and (1/4) / (1/4 + 3/4 * 1/2) = 2/5
    train = out(features=[[1, 0], [0, 2]])
    det = fitted("pnml", train, Head(np.zeros((2, 2)), _a([LN3, 0])))
    expected = math.log(6 / (6 + math.sqrt(3)) + 2 / 5) / LN2
    assert expected == pytest.approx(_regret(np.array([0.75, 0.25]), 0.5), rel=1e-14)
    np.testing.assert_allclose(det.score(out(features=[[3, 4]])), [expected], rtol=1e-13)
    # uniform p: both terms 1 / (1 + 2^-1/2) = 2 - sqrt 2
    det = fitted("pnml", train, Head(np.zeros((2, 2)), np.zeros(2)))
    expected = math.log(2 * (2 - math.sqrt(2))) / LN2
    np.testing.assert_allclose(det.score(out(features=[[3, 4]])), [expected], rtol=1e-13)


def test_pnml_head_sees_the_normalised_feature():
    # W = (1, 0; 0, 0), f = (3, 4): logits (0.6, 0) on u, not (3, 0) on f
    det = fitted("pnml", out(features=[[1, 0], [0, 2]]), Head(_a([[1, 0], [0, 0]]), np.zeros(2)))
    p0 = 1 / (1 + math.exp(-0.6))
    expected = _regret(np.array([p0, 1 - p0]), 0.5)
    np.testing.assert_allclose(det.score(out(features=[[3, 4]])), [expected], rtol=1e-13)


def test_pnml_rank_deficient_and_degenerate():
    # train along (1, 0) only: X^T X = diag(2, 0), pinv = diag(1/2, 0). (1, 0): u^T P u = 1/2,
    # g = 1/3; (0, 5) is outside the span and the zero row has u = 0: g = 0, regret 0
    head = Head(np.zeros((3, 2)), _a([LN3, 0, 0]))  # p = (3/5, 1/5, 1/5)
    det = fitted("pnml", out(features=[[1, 0], [2, 0]]), head)
    got = det.score(out(features=[[1, 0], [0, 5], [0, 0]]))
    expected = _regret(np.array([0.6, 0.2, 0.2]), 1 / 3)
    np.testing.assert_allclose(got, [expected, 0, 0], rtol=1e-13, atol=1e-15)
    # a one-hot p (logit gap 800) has regret 0 at any g, without NaN
    det = fitted("pnml", out(features=[[1, 0], [2, 0]]), Head(np.zeros((2, 2)), _a([800, 0])))
    np.testing.assert_allclose(det.score(out(features=[[1, 0]])), [0.0], atol=1e-15)


# -- DOCTOR --------------------------------------------------------------------------------------
def test_doctor_alpha_by_hand():
    # p = (3/4, 1/4): g = 10/16, (1 - g) / g = 3/5; uniform over 4: g = 1/4 -> 3; ties over 3 -> 2
    got = make("doctor").score(out([[LN3, 0]]))
    np.testing.assert_allclose(got, [math.log(3 / 5)], rtol=1e-14)
    np.testing.assert_allclose(make("doctor").score(out([[7.0] * 4])), [LN3], rtol=1e-14)
    np.testing.assert_allclose(make("doctor").score(out([[5.0] * 3])), [LN2], rtol=1e-14)
    # T = 2 halves the logits
    got = make("doctor", temperature=2.0).score(out([[2 * LN3, 0]]))
    np.testing.assert_allclose(got, [math.log(3 / 5)], rtol=1e-14)
    # a gap of 800: 1 - g = 2 e^-800 (1 + O(e^-800)) underflows in a direct computation
    np.testing.assert_allclose(make("doctor").score(out([[0, -800]])), [LN2 - 800], rtol=1e-15)


def test_doctor_alpha_is_the_ratio():
    z = np.random.default_rng(0).normal(size=(50, 6)) * 3
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    g = (p * p).sum(1)
    # the direct 1 - g cancels digits where g is near 1 (ours sums p_k (1 - p_k) in log space)
    np.testing.assert_allclose(np.exp(make("doctor").score(out(z))), (1 - g) / g, rtol=1e-10)


def test_doctor_beta_by_hand():
    # P_err = 1/4 -> 1/3; uniform over 4: P_err = 3/4 -> 3; gap 800 -> e^-800
    det = make("doctor-beta")
    np.testing.assert_allclose(det.score(out([[LN3, 0]])), [-LN3], rtol=1e-14)
    np.testing.assert_allclose(det.score(out([[1.0] * 4])), [LN3], rtol=1e-14)
    np.testing.assert_allclose(det.score(out([[0, -800]])), [-800.0], rtol=1e-15)
    got = make("doctor-beta", temperature=2.0).score(out([[2 * LN3, 0]]))
    np.testing.assert_allclose(got, [-LN3], rtol=1e-14)


@pytest.mark.parametrize("name", ["doctor", "doctor-beta", "gradnorm"])
def test_rejects_a_non_positive_temperature(name):
    with pytest.raises(UserError, match="temperature must be positive"):
        make(name, temperature=0.0)


# -- iODIN ---------------------------------------------------------------------------------------
class LinearNet(nn.Module):
    """Features = the flattened pixels, logits (a . f, -a . f)."""

    def __init__(self, a):
        super().__init__()
        self.fc = nn.Linear(len(a), 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([a, [-v for v in a]]))

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, f):
        return self.fc(f)


def _iodin(a, shape, mean, std, pixels, name="iodin", **options) -> np.ndarray:
    model = Classifier(LinearNet(a), mean, std).double().eval()
    x = torch.tensor(pixels, dtype=torch.float64).view(-1, *shape)
    return make(name, **options).score_inputs(model, [x])


def test_iodin_by_hand():
    # s = a . x, a = (1, 2), x = (.5, .5): class 0, CE falls as s grows; d CE / dx ~ -a, largest
    # at pixel 2, which alone moves +eps: s' = 1.5 + 2 eps. Score (MSP log-odds) -2 s' / T
    got = _iodin([1.0, 2.0], (1, 1, 2), [0.0], [1.0], [0.5, 0.5])
    np.testing.assert_allclose(got, [-2 * (1.5 + 2 * 0.0014) / 1000], rtol=1e-10)
    # ODIN moves both pixels: s' = 1.5 + 3 eps
    odin = _iodin([1.0, 2.0], (1, 1, 2), [0.0], [1.0], [0.5, 0.5], name="odin")
    np.testing.assert_allclose(odin, [-2 * (1.5 + 3 * 0.0014) / 1000], rtol=1e-10)
    # T = 1, eps = 0.1, class 1 predicted (s = -1.5): pixel 2 moves -eps, s' = -1.7
    got = _iodin([1.0, 2.0], (1, 1, 2), [0.0], [1.0], [-0.5, -0.5], temperature=1.0, epsilon=0.1)
    np.testing.assert_allclose(got, [-2 * 1.7], rtol=1e-10)


def test_iodin_picks_the_largest_gradient_of_the_normalised_input():
    # two channels, std (0.25, 1), a = (1, 2) on normalised inputs: the pixel gradients are
    # ~(4, 2), the normalised ones ~(1, 2) (OpenOOD's): channel 2 moves, s' = 3 + 2 eps
    got = _iodin([1.0, 2.0], (2, 1, 1), [0.0, 0.0], [0.25, 1.0], [0.5, 0.5])
    np.testing.assert_allclose(got, [-2 * (3 + 2 * 0.0014) / 1000], rtol=1e-10)
    # tied gradients: one entry (the first) moves, not both
    got = _iodin([1.0, 1.0], (1, 1, 2), [0.0], [1.0], [0.5, 0.5])
    np.testing.assert_allclose(got, [-2 * (1 + 0.0014) / 1000], rtol=1e-10)


def test_iodin_on_one_pixel_is_odin():
    model = Classifier(LinearNet([1.0]), [0.2], [0.5]).double().eval()
    x = torch.tensor([0.5, -0.3, 0.9], dtype=torch.float64).view(-1, 1, 1, 1)
    np.testing.assert_allclose(
        make("iodin").score_inputs(model, [x]), make("odin").score_inputs(model, [x]), rtol=1e-14
    )


def _openood_iodin(model: Classifier, x: torch.Tensor, temperature: float, noise: float):
    """OpenOOD's iodin postprocessor, re-stated on normalised inputs: the max softmax."""
    data = ((x - model.mean) / model.std).detach().requires_grad_(True)
    output = model.net.forward_head(model.net.forward_features(data))
    loss = nn.functional.cross_entropy(output / temperature, output.detach().argmax(1))
    loss.backward()
    grad = data.grad.detach()
    flat = grad.abs().flatten(1)
    mask = torch.zeros_like(flat)
    mask[torch.arange(len(flat)), flat.argmax(1)] = 1
    step = (torch.ge(grad, 0).double() * 2 - 1) / model.std * mask.view_as(grad)
    moved = data.detach() - noise * step
    logits = model.net.forward_head(model.net.forward_features(moved)) / temperature
    return logits.softmax(1).max(1).values.detach().numpy()


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 4)

    def forward_features(self, x):
        return self.body(x).mean((2, 3))

    def forward_head(self, f):
        return self.fc(f)


def test_iodin_matches_openoods_procedure():
    torch.manual_seed(1)
    model = Classifier(ConvNet(), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]).double().eval()
    x = torch.rand(12, 3, 5, 5, dtype=torch.float64)
    ours = make("iodin").score_inputs(model, [x[:5], x[5:]])
    expected = _openood_iodin(model, x, 1000.0, 0.0014)
    np.testing.assert_allclose(1 / (1 + np.exp(ours)), expected, rtol=1e-12)


# -- GradNorm and GradUncertainty ----------------------------------------------------------------
def test_gradnorm_by_hand():
    # p = (3/4, 1/4), u = 1/2: ||p - u||_1 = 1/2; ||f||_1 = 3 -> -3/2; with the bias 4 * 1/2
    o = out([[LN3, 0]], [[1, -2]])
    np.testing.assert_allclose(make("gradnorm").score(o), [-1.5], rtol=1e-14)
    np.testing.assert_allclose(make("gradnorm", bias=True).score(o), [-2.0], rtol=1e-14)
    # T = 2 on doubled logits: the same p, the gradient halved
    got = make("gradnorm", temperature=2.0).score(out([[2 * LN3, 0]], [[1, -2]]))
    np.testing.assert_allclose(got, [-0.75], rtol=1e-14)
    # ties: a uniform softmax has zero gradient whatever the features; so does f = 0
    got = make("gradnorm").score(out([[3, 3, 3], [9, 9, 9], [LN3, 0, 0]], [[1, 2], [5, 5], [0, 0]]))
    np.testing.assert_array_equal(got, [0, 0, 0])


def test_grad_uncertainty_by_hand():
    # C p - 1 = (1/2, -1/2): squared norm 1/2; ||f||^2 = 5 -> -5/2, with the bias -(5 + 1)/2
    o = out([[LN3, 0]], [[1, -2]])
    np.testing.assert_allclose(make("grad-uncertainty").score(o), [-3.0], rtol=1e-14)
    np.testing.assert_allclose(make("grad-uncertainty", bias=False).score(o), [-2.5], rtol=1e-14)
    got = make("grad-uncertainty").score(out([[4, 4, 4], [0, 0, 0]], [[1, 2], [0, 0]]))
    np.testing.assert_array_equal(got, [0, 0])


# -- parity with pytorch-ood ---------------------------------------------------------------------
def test_parity_webo(pood):
    _, test, _, _ = _split()
    weights = [0.7, -0.2, 1.5, 0.1]  # the negative one is clipped by both
    ref = pood.WeightedEBO(None, torch.tensor(weights, dtype=torch.float64))
    expected = ref.predict_logits(_t(test.logits)).numpy()
    got = make("webo", weights=weights).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_parity_pnml(pood):
    # pytorch-ood computes in float32 (and clamps p to [1e-12, 1 - 1e-12])
    train, test, fc, head = _split(n_train=40)  # few samples: g up to ~1/2
    ref = pood.PNML(None, fc.float()).fit_features(_t(train.features), _t(train.labels))
    expected = ref.predict_features(_t(test.features)).numpy()
    got = fitted("pnml", train, head).score(test)
    assert got.std() > 1e-3  # the regret varies across the test set
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("bias", [False, True])
def test_parity_gradnorm(pood, temperature, bias):
    # pytorch-ood's GradNorm on the head alone, features as its input: the default filter
    # takes weight and bias; the paper's (our default) the weight only
    _, test, fc, _ = _split()
    filt = None if bias else (lambda name: name == "weight")
    ref = pood.GradNorm(fc, param_filter=filt, temperature=temperature)
    expected = ref.predict(_t(test.features)).numpy()
    got = make("gradnorm", temperature=temperature, bias=bias).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("bias", [False, True])
def test_parity_grad_uncertainty(pood, bias):
    # torch's BCE clamps its gradient where p (1 - p) < 1e-12: the logits keep p clear of that
    _, test, fc, _ = _split()
    p = np.exp(test.logits - test.logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert (p * (1 - p)).min() > 1e-12
    filt = None if bias else (lambda name: name == "weight")
    ref = pood.GradUncertainty(fc, param_filter=filt)
    expected = ref.predict(_t(test.features)).numpy()
    got = make("grad-uncertainty", bias=bias).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
