"""VRA, BATS, LTS, AdaScale-A/-L, NCI and NAC-UE: hand-derived values and pytorch-ood parity.

The shared contract tests (test_detectors_suite.py) run over these too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from detector_kit import as64 as _a
from detector_kit import parity_split as _split
from detector_kit import tensor as _t
from torch import nn

import oebench
from oebench.contracts.detector import Head, Outputs
from oebench.contracts.model import Classifier
from oebench.errors import UserError
from oebench.testing import check_detector

FEATURE_DETECTORS = ["vra", "bats", "lts", "nci", "nac-ue"]
MODEL_DETECTORS = ["adascale-a", "adascale-l"]
LN2 = math.log(2.0)


def feats(x) -> Outputs:
    x = _a(x)
    return Outputs(np.zeros((len(x), 1)), x, np.zeros(len(x), dtype=np.int64))


def fitted(name: str, train: Outputs | None, head: Head, **options):
    det = oebench.create_detector(name, **options)
    det.fit(train, head)
    return det


def energy(logits) -> np.ndarray:
    z = _a(logits)
    return -np.log(np.exp(z).sum(1))


EYE2 = Head(np.eye(2), np.zeros(2))


@pytest.mark.parametrize("name", FEATURE_DETECTORS + MODEL_DETECTORS)
def test_registered_with_a_citation(name):
    from oebench.registry.describe import _citation
    from oebench.registry.lookup import get_component

    assert _citation(get_component("detector", name).description)


@pytest.mark.parametrize("name", FEATURE_DETECTORS)
def test_check_detector(name):
    check_detector(name)


@pytest.mark.parametrize("name", MODEL_DETECTORS)
def test_check_detector_with_fit_inputs(name):
    # the kit calls fit_inputs with ID training images before scoring, as the engine does
    from oebench.testing import SHAPE, _checked_scores, fake_outputs, tiny_classifier

    check_detector(name)
    det = oebench.create_detector(name)
    det.fit(fake_outputs(256, seed=1), None)
    model = tiny_classifier()
    g = torch.Generator().manual_seed(0)
    det.fit_inputs(model, iter([torch.rand(256, *SHAPE, generator=g)]))
    batches = [torch.rand(32, *SHAPE, generator=g), torch.rand(32, *SHAPE, generator=g)]
    first = _checked_scores(name, det.score_inputs(model, iter(batches)), 64)
    np.testing.assert_array_equal(first, det.score_inputs(model, iter(batches)))
    np.testing.assert_array_equal(first[32:], det.score_inputs(model, iter(batches[1:])))


@pytest.mark.parametrize(
    ("name", "options"),
    [("vra", {"lower": 70.0, "upper": 60.0}), ("vra", {"below": "cap"}), ("bats", {"lam": 0.0})]
    + [("lts", {"percentile": 100.5}), ("nci", {"alpha": -1.0}), ("nac-ue", {"bins": 1})]
    + [("adascale-a", {"min_percentile": 90.0, "max_percentile": 80.0})],
)
def test_bad_options_fail_up_front(name, options):
    with pytest.raises(UserError):
        oebench.create_detector(name, **options)


# -- VRA -----------------------------------------------------------------------------------------
# column 0 = 0..4: 60th / 90th percentiles 2.4 / 3.6; column 1 = (0, 0, 0, 0, 10), tie-heavy:
# 0 / 6. Head: identity.
VRA_TRAIN = feats([[0, 0], [1, 0], [2, 0], [3, 0], [4, 10]])
VRA_TEST = feats([[1, 0], [3, 8], [5, -1]])


def test_vra_by_hand():
    got = fitted("vra", VRA_TRAIN, EYE2).score(VRA_TEST)
    # (1, 0) -> (0, 0): 1 < 2.4 is zeroed, 0 is inside [0, 6]; (3, 8) -> (3, 6); (5, -1) -> (3.6, 0)
    np.testing.assert_allclose(got, energy([[0, 0], [3, 6], [3.6, 0]]), rtol=1e-12)


def test_vra_clip_below_and_gamma_by_hand():
    clip = fitted("vra", VRA_TRAIN, EYE2, below="clip").score(VRA_TEST)
    np.testing.assert_allclose(clip, energy([[2.4, 0], [3, 6], [3.6, 0]]), rtol=1e-12)
    plus = fitted("vra", VRA_TRAIN, EYE2, gamma=0.5).score(VRA_TEST)
    np.testing.assert_allclose(plus, energy([[0, 0.5], [3.5, 6], [3.6, 0]]), rtol=1e-12)


# -- BATS ----------------------------------------------------------------------------------------
def test_bats_by_hand():
    # column 0: mean 1, std 1 -> [0, 2] at lam = 1; column 1 constant 1 (std 0) -> [1, 1]
    det = fitted("bats", feats([[0, 1], [2, 1]]), EYE2, lam=1.0)
    got = det.score(feats([[3, 5], [-1, 0], [0.5, 1]]))
    np.testing.assert_allclose(got, energy([[2, 1], [0, 1], [0.5, 1]]), rtol=1e-12)
    wide = fitted("bats", feats([[0, 1], [2, 1]]), EYE2)  # lam 3.25: [-2.25, 4.25]
    np.testing.assert_allclose(wide.score(feats([[5, 0]])), energy([[4.25, 1]]), rtol=1e-12)


# -- LTS -----------------------------------------------------------------------------------------
def test_lts_by_hand():
    # percentile 50 of 4 features: k = 2. Head: logits (z0, z1 + 1)
    head = Head(_a([[1, 0, 0, 0], [0, 1, 0, 0]]), _a([0, 1]))
    det = fitted("lts", None, head, percentile=50.0)
    x = [[4, 2, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [-3, 2, 2, 0]]
    # ratios: 8/6; 4/2 (ties); a zero row is left unscaled; relu -> (0, 2, 2, 0): 4/4
    expected = [
        [4 * 16 / 9, 3 * 16 / 9],
        [1 * 4, 2 * 4],
        [0, 1],
        [-3, 3],
    ]
    np.testing.assert_allclose(det.score(feats(x)), energy(expected), rtol=1e-12)


# -- NCI -----------------------------------------------------------------------------------------
def test_nci_by_hand():
    # mean (1, 1); W = diag(1, 2): w_0 = (1, 0), w_1 = (0, 2); alpha 0.5
    det = fitted("nci", feats([[0, 0], [2, 2]]), Head(np.diag([1.0, 2.0]), np.zeros(2)), alpha=0.5)
    got = det.score(feats([[3, 1], [1, 2], [1, 1], [2, 1]]))
    # (3, 1): class 0, (2, 0) / 2 . (1, 0) = 1, |h|_1 4;  (1, 2): class 1, (0, 1) . (0, 2) = 2;
    # (1, 1) = mu: 0;  (2, 1): tied logits (2, 2) -> class 0, (1, 0) . (1, 0) = 1
    expected = [-(1 + 0.5 * 4), -(2 + 0.5 * 3), -(0 + 0.5 * 2), -(1 + 0.5 * 3)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# -- NAC-UE --------------------------------------------------------------------------------------
def test_nac_geometric_bins():
    from oebench_plugins.shaping_detectors import geometric_bins

    mid = math.sqrt(1e-6 * 0.5)
    expected = [1e-6, mid, 0.5, 1 - mid, 1 - 1e-6]
    np.testing.assert_allclose(geometric_bins(4), expected, rtol=1e-12)


def test_nac_ue_by_hand():
    # 2 bins: edges (1e-6, 0.5, 1 - 1e-6), so a neuron is in bin 1 iff z dKL/dz > 0. Identity
    # head: dKL/dz = (p0 - 1/2, 1/2 - p0). (2, 0), (3, 0): p0 > 1/2 -> bins (1, 0); (0, 1):
    # (0, 1); (1, 1) (tie, zero gradient): (0, 0). Counts: neuron 0 = (2, 2), neuron 1 = (3, 1).
    train = feats([[2, 0], [0, 1], [1, 1], [3, 0]])
    det = fitted("nac-ue", train, EYE2, bins=2, o_star=4)
    got = det.score(feats([[5, 0], [0, 2], [1, 1], [0, 0]]))
    # (5, 0): hits (2, 3) -> (1/2, 3/4); (0, 2): (2, 1) -> (1/2, 1/4); (1, 1), (0, 0): (2, 3)
    np.testing.assert_allclose(got, [-0.625, -0.375, -0.625, -0.625], rtol=1e-12)
    capped = fitted("nac-ue", train, EYE2, bins=2, o_star=2).score(feats([[0, 2]]))
    np.testing.assert_allclose(capped, [-0.75], rtol=1e-12)


# -- AdaScale ------------------------------------------------------------------------------------
class FlatNet(nn.Module):
    """Features = the (normalised) input, flattened; head ``fc``."""

    def __init__(self, weight, bias):
        super().__init__()
        self.fc = nn.Linear(len(weight[0]), len(weight)).double()
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight, dtype=torch.float64))
            self.fc.bias.copy_(torch.tensor(bias, dtype=torch.float64))

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, f):
        return self.fc(f)


def _ada_setting():
    # pixels / std 0.5 = features; class 0 always predicted; its weights' smallest |w| is w_3,
    # so the one moved pixel (o = 1/4) is pixel 3: +0.5 * 0.5 in pixels, +0.5 in features
    model = Classifier(FlatNet([[1, 2, 3, 0.5], [0, 0, 0, 0]], [0, -100]), [0.0], [0.5])
    model = model.double().eval()

    def images(f):
        return torch.tensor(f, dtype=torch.float64).view(-1, 1, 1, 4) / 2

    options = {"min_percentile": 50.0, "max_percentile": 75.0, "k1": 50.0, "k2": 25.0, "o": 0.25}
    return model, images, options


@pytest.mark.parametrize("name", MODEL_DETECTORS)
def test_adascale_by_hand(name):
    model, images, options = _ada_setting()
    det = oebench.create_detector(name, lmbda=10.0, **options)
    det.fit(Outputs(np.zeros((3, 2))), None)
    # Q' = relu(f') over the top 2 of f + 10 |f - f'| over the top 1 of f:
    # (4, 3, 2, 1): 4 + 3 + 0 = 7; (1, 1, 1, 5): 5.5 + 1 + 10 * 0.5 = 11.5 (ties: lowest index
    # first); (2, 2, 2, 2): 2 + 2 + 0 = 4
    det.fit_inputs(model, [images([[4, 3, 2, 1], [1, 1, 1, 5]]), images([[2, 2, 2, 2]])])
    np.testing.assert_allclose(det._id_q, [4.0, 7.0, 11.5], rtol=1e-12)
    got = det.score_inputs(model, [images([[4, 3, 2, 1], [1, 1, 1, 5], [0, 0, 0, 0]])])
    # ECDF 2/3, 1, 0 -> p = 50 + 25/3, 50, 75 -> k = 4 - round(4p/100) = 2, 2, 1
    # r = 10/7, 8/6, and 1 for the zero row; w_0 . f = 16.5, 8.5, 0; class 1: -100
    r = np.array([10 / 7, 8 / 6, 1.0])
    w_f = np.array([16.5, 8.5, 0.0])
    if name == "adascale-a":
        expected = energy(np.stack([w_f * np.exp(r), np.full(3, -100.0)], 1))
    else:
        expected = energy(np.stack([w_f * r**2, np.full(3, -100.0 * r**2)], 1))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_adascale_fit_spreads_max_fit_over_the_training_images():
    model, images, options = _ada_setting()
    det = oebench.create_detector("adascale-l", max_fit=3, **options)
    det.fit(Outputs(np.zeros((6, 2))), None)  # every 2nd image: rows 0, 2, 4
    rows = [[4, 3, 2, 1], [9, 9, 9, 9], [1, 1, 1, 5], [9, 9, 9, 9], [2, 2, 2, 2], [9, 9, 9, 9]]
    det.fit_inputs(model, [images(rows[:3]), images(rows[3:])])
    np.testing.assert_allclose(det._id_q, [4.0, 7.0, 11.5], rtol=1e-12)


def test_adascale_needs_fit_inputs_and_leaves_the_model_alone():
    model, images, options = _ada_setting()
    det = oebench.create_detector("adascale-a", **options)
    det.fit(Outputs(np.zeros((3, 2))), None)
    with pytest.raises(ValueError, match="fit_inputs"):
        det.score_inputs(model, [images([[1, 2, 3, 4]])])
    det.fit_inputs(model, [images([[4, 3, 2, 1]])])
    with torch.inference_mode():
        det.score_inputs(model, [images([[1, 2, 3, 4]])])
    assert all(p.grad is None for p in model.parameters())


# -- parity with pytorch-ood ---------------------------------------------------------------------
@pytest.mark.parametrize(("lower", "upper"), [(1.0, 99.0), (10.0, 90.0)])
def test_parity_vra(pood, lower, upper):
    # pytorch-ood clips below at the lower percentile (below="clip"); it keeps the per-feature
    # thresholds in float32
    train, test, fc, head = _split()
    ref = pood.VRA(None, fc, lower_percentile=lower / 100, upper_percentile=upper / 100)
    ref.fit_feature_maps(_t(train.features), _t(train.labels))
    expected = ref.predict_feature_maps(_t(test.features)).numpy()
    det = fitted("vra", train, head, lower=lower, upper=upper, below="clip")
    np.testing.assert_allclose(det.score(test), expected, rtol=1e-6)


@pytest.mark.parametrize("p", [0.05, 0.25])
def test_parity_lts(pood, p):
    _, test, fc, head = _split()
    expected = pood.LTS(None, fc, p=p).predict_features(_t(test.features)).numpy()
    got = fitted("lts", None, head, percentile=100 * (1 - p)).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.01])
def test_parity_nci(pood, alpha):
    # pytorch-ood computes in float32
    train, test, fc, head = _split()
    ref = pood.NCI(None, fc.float(), alpha=alpha).fit_features(_t(train.features))
    expected = ref.predict_features(_t(test.features)).numpy()
    got = fitted("nci", train, head, alpha=alpha).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_parity_nac_ue(pood):
    # pytorch-ood hooks a layer whose output is the features (an identity Linear here) and gets
    # dKL/dz by autograd of -mean log(p + 1e-12); ours is W^T (p - u) in closed form. The two
    # agree while no softmax probability is near 1e-12 (at 7e-9, the full-scale head of _split
    # flips one neuron's bin: 1 / 800 of a score), so the head is halved; its bin edges are
    # float32 (agree to 3e-8), its scores float32
    train, test, fc, _ = _split()
    with torch.no_grad():
        fc.weight.mul_(0.5)
        fc.bias.mul_(0.5)
    head = Head(fc.weight.detach().numpy(), fc.bias.detach().numpy())
    x = np.concatenate([train.features, test.features])
    logits = x @ head.weight.T + head.bias
    assert (np.exp(logits - logits.max(1, keepdims=True))).min() > 1e-5
    dim = train.features.shape[1]
    layer = nn.Linear(dim, dim).double()
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim, dtype=torch.float64))
        layer.bias.zero_()
    model = nn.Sequential(layer, fc).eval()
    ref = pood.NACUE(model, layers=[layer], m_bins=50, alpha=100.0, o_star=50)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(_t(train.features)), batch_size=64
    )
    ref.fit(loader)
    expected = ref.predict(_t(test.features)).numpy()
    got = fitted("nac-ue", train, head).score(test)
    assert len(np.unique(got)) > 50  # the scores spread: bins and counts are compared
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
