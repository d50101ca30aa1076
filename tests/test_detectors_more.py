"""The detectors of issue 13: hand-computed answers and pytorch-ood parity.

The shared contract tests (test_detectors_suite.py) run over every registered detector,
these included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from detector_kit import as64 as _a
from detector_kit import fitted, make
from detector_kit import outputs as out
from detector_kit import parity_split as _split
from detector_kit import tensor as _t
from torch import nn

import oebench
from oebench.contracts.detector import Head, Outputs
from oebench.contracts.model import Classifier
from oebench.errors import UserError

LN2, LN3 = math.log(2.0), math.log(3.0)

NEW = [
    "kl-matching",
    "temp-scale",
    "openmax",
    "dice",
    "scale",
    "fdbd",
    "nnguide",
    "residual",
    "she",
    "max-cosine",
    "ash-p",
    "ash-b",
    "ash-s",
    "rankfeat",
    "mc-dropout",
    "mahalanobis-preproc",
]


def test_at_least_25_detectors_with_the_new_ones():
    names = oebench.list_detectors()
    assert set(NEW) <= set(names)
    assert len(names) >= 25


@pytest.mark.parametrize("name", NEW)
def test_descriptions_cite_a_paper(name):
    from oebench.registry.lookup import get_component

    description = get_component("detector", name).description
    assert any(str(year) in description for year in range(2016, 2025)), description


# -- logits --------------------------------------------------------------------------------------
def test_kl_matching_by_hand():
    # predicted class 0: softmax (3/4, 1/4) and (1/2, 1/2) (ties go to class 0): d_0 = (5/8, 3/8)
    # predicted class 1: (1/4, 3/4) -> d_1 = (1/4, 3/4)
    train = out([[LN3, 0], [0, 0], [0, LN3]])
    det = fitted("kl-matching", train)
    # p = (3/4, 1/4): KL to d_0 = 3/4 ln(6/5) + 1/4 ln(2/3); to d_1 = 3/4 ln 3 - 1/4 ln 3
    # p = (1/4, 3/4) is d_1 itself -> 0
    kl0 = 0.75 * math.log(6 / 5) + 0.25 * math.log(2 / 3)
    assert kl0 < 0.5 * LN3
    got = det.score(out([[LN3, 0], [0, LN3]]))
    np.testing.assert_allclose(got, [kl0, 0.0], atol=1e-15)


def test_kl_matching_ignores_classes_never_predicted():
    # every train sample predicted as class 0: only d_0 = (3/4, 1/4, 0+) exists
    det = fitted("kl-matching", out([[LN3, 0, -50], [LN3, 0, -50]]))
    assert det._log_typical.shape == (1, 3)
    np.testing.assert_allclose(det.score(out([[LN3, 0, -50]])), [0.0], atol=1e-12)


def test_temp_scale_by_hand():
    # logits (1, 0) with labels 0, 0, 1: mean NLL(beta) = log(1 + e^beta) - 2 beta / 3, minimal at
    # sigmoid(beta) = 2/3 -> beta = ln 2, T = 1 / ln 2. Logits (ln 3, 0) at T: log-odds of the
    # top class = -(ln 3 - 0) / T = -ln 3 ln 2.
    det = fitted("temp-scale", out([[1, 0]] * 3, labels=[0, 0, 1]))
    assert det._temperature == pytest.approx(1 / LN2, rel=1e-10)
    np.testing.assert_allclose(det.score(out([[LN3, 0]])), [-LN3 * LN2], rtol=1e-10)


def test_temp_scale_clips_at_its_bounds():
    # all correct: NLL keeps falling as T -> 0; all wrong: the optimum is T -> infinity
    det = make("temp-scale")
    det.fit(out([[1, 0], [0, 1]], labels=[0, 1]), None)
    assert det._temperature == det.T_MIN
    det.fit(out([[1, 0], [0, 1]], labels=[1, 0]), None)
    assert det._temperature == det.T_MAX


# OpenMax: class 0 logits (2, 0), (4, 0) -> MAV (3, 0); class 1 (0, 2), (0, 4) -> MAV (0, 3)
OM_TRAIN = out([[2, 0], [4, 0], [0, 2], [0, 4], [0, 5]], labels=[0, 0, 1, 1, 0])


def _openmax_exponential(**options):
    """OpenMax fitted on OM_TRAIN with every Weibull replaced by CDF 1 - exp(-d)."""
    det = fitted("openmax", OM_TRAIN, eu_weight=1.0, cos_weight=0.0, **options)
    det._weibull[:] = (1.0, 1.0, 0.0)  # shape 1, scale 1, no shift
    return det


def test_openmax_uses_only_correct_samples_for_the_mav():
    # (0, 5) is labelled 0 but predicted 1: left out of class 0's mean
    np.testing.assert_allclose(_openmax_exponential()._mav, [[3, 0], [0, 3]])


def test_openmax_revision_by_hand():
    # z = (3, 1): ranks class 0 then 1, alpha = 2 -> weights 1 and 1/2.
    # d_0 = |(3,1) - (3,0)| = 1, d_1 = |(3,1) - (0,3)| = sqrt 13; w = 1 - e^-d
    z = np.array([3.0, 1.0])
    r = np.array([1 * (1 - math.exp(-1)), 0.5 * (1 - math.exp(-math.sqrt(13)))])
    revised, v0 = z * (1 - r), (z * r).sum()
    expected = v0 - math.log(math.exp(revised[0]) + math.exp(revised[1]))
    got = _openmax_exponential().score(out([[3, 1]]))
    np.testing.assert_allclose(got, [expected], rtol=1e-12)
    # alpha = 1: only the top class is revised, with weight 1
    r1 = 1 - math.exp(-1)
    expected1 = 3 * r1 - math.log(math.exp(3 * (1 - r1)) + math.exp(1))
    got1 = _openmax_exponential(alpha=1).score(out([[3, 1]]))
    np.testing.assert_allclose(got1, [expected1], rtol=1e-12)


def test_openmax_weibull_fit_and_libmr_shift():
    from scipy.stats import weibull_min

    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 3)) + 4 * np.eye(3)[np.arange(200) % 3]
    labels = z.argmax(1)  # all correct
    det = fitted("openmax", out(z, labels=labels), eu_weight=1.0, cos_weight=0.0, tail_size=20)
    members = z[labels == 0]
    dist = np.linalg.norm(members - members.mean(0), axis=1)
    tail = np.sort(dist)[-20:]
    c, scale, shift = det._weibull[0]
    assert shift == pytest.approx(10000 - tail.min())
    # the maximum-likelihood fit: a nearby shape/scale has a lower likelihood
    ll = weibull_min.logpdf(tail + shift, c, scale=scale).sum()
    for dc, ds in [(1.01, 1), (0.99, 1), (1, 1.0001), (1, 0.9999)]:
        assert weibull_min.logpdf(tail + shift, c * dc, scale=scale * ds).sum() < ll


def test_openmax_class_without_correct_samples_is_unknown():
    # class 1 is never predicted correctly: its Weibull is missing and counts as w = 1
    det = fitted("openmax", out([[2, 0], [4, 0], [3, 0]], labels=[0, 0, 1]))
    assert np.isnan(det._weibull[1]).all()
    assert np.isfinite(det.score(out([[0, 5], [5, 0]]))).all()


# -- features ------------------------------------------------------------------------------------
def test_max_cosine_by_hand():
    # class means (2, 0) and (0, 2)
    train = out(features=[[1, 0], [3, 0], [0, 1], [0, 3]], labels=[0, 0, 1, 1])
    got = fitted("max-cosine", train).score(out(features=[[1, 1], [2, -1], [0, 0]]))
    np.testing.assert_allclose(got, [-1 / math.sqrt(2), -2 / math.sqrt(5), 0.0], rtol=1e-14)


def test_she_by_hand():
    # class 0: correct (1, 0), (3, 0) -> S_0 = (2, 0); (100, 100) is labelled 0 but predicted 1.
    # class 1: correct (0, 2) -> S_1 = (0, 2).
    train = out(
        [[1, 0], [1, 0], [0, 1], [0, 1]],
        [[1, 0], [3, 0], [100, 100], [0, 2]],
        [0, 0, 0, 1],
    )
    det = fitted("she", train)
    # (1, 1) predicted 1 -> -<(1,1), (0,2)> = -2; (1, 1) predicted 0 -> -2; (3, 0) pred 0 -> -6
    got = det.score(out([[0, 1], [1, 0], [1, 0]], [[1, 1], [1, 1], [3, 0]]))
    np.testing.assert_allclose(got, [-2, -2, -6])


def test_she_falls_back_to_all_samples_of_a_class():
    # class 1 has no correct sample: its pattern is the mean of its samples (4, 4)
    train = out([[1, 0], [1, 0]], [[1, 0], [4, 4]], [0, 1])
    np.testing.assert_allclose(fitted("she", train).score(out([[0, 1]], [[1, 2]])), [-12])


def test_dice_by_hand():
    # W = [[1, 2], [3, -1]], b = (0.5, 0); mean train feature (1, 1) -> contributions = W.
    # percentile 50 of (-1, 1, 2, 3) = 1.5 -> keep 2 and 3: W' = [[0, 2], [3, 0]].
    # f = (1, 2): logits (4.5, 3). Default 90: threshold 2.7 -> W' = [[0, 0], [3, 0]]: (0.5, 3)
    head = Head(_a([[1, 2], [3, -1]]), _a([0.5, 0]))
    train = out(features=[[0, 2], [2, 0]])
    test = out(features=[[1, 2]])
    got = fitted("dice", train, head, percentile=50).score(test)
    np.testing.assert_allclose(got, [-math.log(math.exp(4.5) + math.exp(3))], rtol=1e-14)
    got = fitted("dice", train, head).score(test)
    np.testing.assert_allclose(got, [-math.log(math.exp(0.5) + math.exp(3))], rtol=1e-14)


def test_scale_by_hand():
    # x = (1, 2, 3, 4), percentile 50: top 2 sum 7, total 10 -> every entry times c = e^(10/7)
    # W rows (1,1,1,1), (0,0,0,1): logits (10 c, 4 c)
    c = math.exp(10 / 7)
    head = Head(_a([[1, 1, 1, 1], [0, 0, 0, 1]]), np.zeros(2))
    got = fitted("scale", None, head, percentile=50).score(out(features=[[1, 2, 3, 4]]))
    np.testing.assert_allclose(got, [-math.log(math.exp(10 * c) + math.exp(4 * c))], rtol=1e-14)


def test_fdbd_by_hand():
    # w = (1,0), (0,1), (0,0), b = 0: |w0 - w1| = sqrt 2, |w0 - w2| = 1. Train mean (1, 0).
    # f = (3, 1): logits (3, 1, 0), predicted 0: (2 / sqrt 2 + 3 / 1) / 2 over |(2, 1)| = sqrt 5
    head = Head(_a([[1, 0], [0, 1], [0, 0]]), np.zeros(3))
    det = fitted("fdbd", out(features=[[0, 0], [2, 0]]), head)
    got = det.score(out(features=[[3, 1]]))
    np.testing.assert_allclose(got, [-(math.sqrt(2) + 3) / (2 * math.sqrt(5))], rtol=1e-14)


def test_nnguide_by_hand():
    # bank: (1, 0) with confidence logsumexp(0, 0) = ln 2 -> (ln 2, 0);
    #       (0, 2) with logsumexp(ln 3, 0) = ln 4 -> (0, 2 ln 2).
    # test (1, 1), logits (0, 0): inner products ln2 / sqrt2 and sqrt2 ln 2; confidence ln 2.
    train = out([[0, 0], [LN3, 0]], [[1, 0], [0, 2]])
    test = out([[0, 0]], [[1, 1]])
    got1 = fitted("nnguide", train, k=1).score(test)
    np.testing.assert_allclose(got1, [-math.sqrt(2) * LN2 * LN2], rtol=1e-14)
    got2 = fitted("nnguide", train, k=2).score(test)
    np.testing.assert_allclose(got2, [-3 / (2 * math.sqrt(2)) * LN2 * LN2], rtol=1e-14)


def test_residual_by_hand():
    # ViM's hand case: W = I, b = 0, principal axis x -> residual = |y|
    train = out(features=[[2, 0], [-2, 0], [0, 1], [0, -1]])
    det = fitted("residual", train, Head(np.eye(2), np.zeros(2)), dim=1)
    np.testing.assert_allclose(det.score(out(features=[[0, 2], [3, 0], [1, -0.5]])), [2, 0, 0.5])


def test_ash_variants_by_hand():
    # x = (1, 2, 3, 4, 5), W rows (1,1,1,1,1), (0,0,0,0,1).
    # ASH-P@60: keep 5 - round(3) = 2 -> (0,0,0,4,5): logits (9, 5).
    # ASH-B@65: keep 5 - round(3.25) = 2 set to 15 / 2: logits (15, 7.5).
    head = Head(_a([[1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]), np.zeros(2))
    x = out(features=[[1, 2, 3, 4, 5]])
    got_p = fitted("ash-p", None, head).score(x)
    np.testing.assert_allclose(got_p, [-math.log(math.exp(9) + math.exp(5))], rtol=1e-14)
    got_b = fitted("ash-b", None, head).score(x)
    np.testing.assert_allclose(got_b, [-math.log(math.exp(15) + math.exp(7.5))], rtol=1e-14)


def test_ash_names_and_defaults():
    assert (make("ash-p").variant, make("ash-p").percentile) == ("p", 60.0)
    assert (make("ash-b").variant, make("ash-b").percentile) == ("b", 65.0)
    assert (make("ash-s").variant, make("ash-s").percentile) == ("s", 90.0)
    assert (make("ash").variant, make("ash").percentile) == ("s", 90.0)
    assert make("ash-b", percentile=90).percentile == 90.0
    with pytest.raises(UserError, match="variant"):
        make("ash-b", variant="p")


# -- model detectors -----------------------------------------------------------------------------
class MapNet(nn.Module):
    """Feature map = the input itself (ReLU on [0, 1] pixels), features = its spatial mean."""

    def __init__(self, channels: int = 2, classes: int = 2):
        super().__init__()
        self.body = nn.ReLU()
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(channels, classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(classes, channels))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return self.body(x).mean((2, 3))

    def forward_head(self, f):
        return self.fc(self.drop(f))


def _plain(net: nn.Module, channels: int = 2) -> Classifier:
    return Classifier(net, [0.0] * channels, [1.0] * channels).eval()


def test_rankfeat_by_hand():
    # one sample, C = 2, H x W = 1 x 2. Map [[1, 1], [1, 1]] is rank 1: nothing is left ->
    # features (0, 0) -> energy -ln 2. Map [[1, 0], [0, 0.5]]: singular values 1 and 0.5, the
    # rank-1 part is [[1, 0], [0, 0]] -> [[0, 0], [0, 0.5]] -> features (0, 0.25).
    x = torch.tensor([[[[1.0, 1.0]], [[1.0, 1.0]]], [[[1.0, 0.0]], [[0.0, 0.5]]]])
    got = make("rankfeat").score_inputs(_plain(MapNet()), [x[:1], x[1:]])
    np.testing.assert_allclose(got, [-LN2, -math.log(1 + math.exp(0.25))], rtol=1e-6)


def test_feature_map_rule_holds_for_the_built_in_cnns():
    from oebench_plugins.model_maps import feature_map

    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    for name, options in [("small-cnn", {"width": 4}), ("wrn-16-4", {"widen_factor": 1})]:
        net = oebench.create_model(name, 5, (3, 8, 8), **options)
        model = Classifier(net, [0.5] * 3, [0.25] * 3).eval()
        with torch.no_grad():
            maps, features = feature_map(model, x)
        assert maps.dim() == 4 and maps.shape[2] * maps.shape[3] > 1, name
        torch.testing.assert_close(maps.mean((2, 3)), model.forward_features(x))


def test_feature_map_rule_rejects_a_network_without_a_map():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = nn.Linear(8, 3), nn.Linear(3, 2)

        def forward_features(self, x):
            return self.body(x.flatten(1))

        def forward_head(self, f):
            return self.fc(f)

    with pytest.raises(ValueError, match="feature map"):
        make("rankfeat").score_inputs(_plain(Flat()), [torch.rand(2, 2, 2, 2)])


class DropNet(nn.Module):
    """Feature = 1 pixel through Dropout(0.5) (0 or 2x), logits (f, -f), and a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return self.bn(x).flatten(1)

    def forward_head(self, f):
        return self.fc(self.drop(f))


def test_mc_dropout_by_hand():
    # x = 1 -> each pass: logits (0, 0) (dropped, p_0 = 1/2) or (2, -2) (kept x2, p_0 = s(4)).
    # m kept passes out of T: mean p_0 = (m s(4) + (T - m) / 2) / T >= 1/2, score log((1-p)/p).
    samples = 6
    model = _plain(DropNet(), 1).double()
    model.net.bn.eps = 0.0  # running stats (0, 1): batch norm is the identity
    before = model.net.bn.running_mean.clone()
    x = torch.ones(4, 1, 1, 1, dtype=torch.float64)
    got = make("mc-dropout", samples=samples).score_inputs(model, [x])
    s4 = 1 / (1 + math.exp(-4))
    allowed = []
    for m in range(samples + 1):
        p = (m * s4 + (samples - m) * 0.5) / samples
        allowed.append(math.log((1 - p) / p))
    for value in got:
        assert min(abs(value - a) for a in allowed) < 1e-12, (value, allowed)
    assert len({round(v, 12) for v in got}) > 1  # the masks differ per sample
    assert not model.training and not model.net.drop.training  # modes restored
    torch.testing.assert_close(model.net.bn.running_mean, before)  # batch norm stayed in eval


def test_mc_dropout_is_seeded_and_leaves_the_global_rng_alone():
    model = _plain(DropNet(), 1)
    x = torch.rand(16, 1, 1, 1) + 0.5
    torch.manual_seed(123)
    a = make("mc-dropout", samples=5).score_inputs(model, [x])
    after = torch.rand(1)
    torch.manual_seed(123)
    b = make("mc-dropout", samples=5).score_inputs(model, [x])
    assert torch.equal(after, torch.rand(1))
    np.testing.assert_array_equal(a, b)
    c = make("mc-dropout", samples=5, seed=1).score_inputs(model, [x])
    assert not np.array_equal(a, c)


def test_mc_dropout_refuses_a_model_without_dropout():
    with pytest.raises(ValueError, match="no active dropout"):
        make("mc-dropout").score_inputs(_plain(MapNet()), [torch.rand(3, 2, 1, 2)])


class PixelNet(nn.Module):
    """Feature = the single pixel; a 2-class head (unused by Mahalanobis)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2)

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, f):
        return self.fc(f)


def test_mahalanobis_preproc_by_hand():
    # class 0 at 0.1, 0.3 (mean 0.2); class 1 at 0.7, 0.9 (mean 0.8); tied variance 0.01.
    # x = 0.45: closest 0.2, moves to 0.40 with eps 0.05 -> 0.2^2 / 0.01 = 4.
    # x = 0.55: closest 0.8, moves to 0.60 -> 4. eps = 0 -> plain Mahalanobis: 6.25, 6.25.
    train = out(features=[[0.1], [0.3], [0.7], [0.9]], labels=[0, 0, 1, 1])
    model = _plain(PixelNet(), 1)
    x = torch.tensor([0.45, 0.55]).view(2, 1, 1, 1)
    det = fitted("mahalanobis-preproc", train, epsilon=0.05)
    np.testing.assert_allclose(det.score_inputs(model, [x]), [4.0, 4.0], rtol=1e-5)
    det0 = fitted("mahalanobis-preproc", train, epsilon=0.0)
    np.testing.assert_allclose(det0.score_inputs(model, [x]), [6.25, 6.25], rtol=1e-5)


# -- parity with pytorch-ood ---------------------------------------------------------------------
def test_parity_kl_matching(pood):
    train, test, _, _ = _split()
    ref = pood.KLMatching(None).fit_logits(_t(train.logits))
    got = fitted("kl-matching", train).score(test)
    np.testing.assert_allclose(got, ref.predict_logits(_t(test.logits)).numpy(), rtol=1e-9)


def test_parity_temp_scale(pood):
    # pytorch-ood's 50 L-BFGS steps (lr 0.01) stop short of the optimum from T = 1; started at
    # our T, they stay there (its NLL gradient is 0). The scores are then -MSP at the same T.
    train, test, _, _ = _split()
    det = fitted("temp-scale", train)
    assert 0.1 < det._temperature < 10
    ref = pood.TemperatureScaling(None)
    ref.t.data = torch.tensor(det._temperature, dtype=torch.float64)
    ref.fit_logits(_t(train.logits), _t(train.labels))
    assert det._temperature == pytest.approx(ref.t.item(), rel=1e-6)
    msp = -1 / (1 + np.exp(det.score(test)))
    with torch.no_grad():
        np.testing.assert_allclose(msp, ref.predict_logits(_t(test.logits)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("eu_weight", [1.0, 0.5])
def test_parity_openmax(pood, eu_weight):
    # pytorch-ood uses every sample of a class (ours: the correctly classified ones, as the
    # paper): fit on correct samples only. p_0 = sigmoid(our score); Weibull fits by different
    # scipy parametrisations (exponweib with a = 1 vs weibull_min) agree to ~1e-6.
    train, test, _, _ = _split()
    keep = train.logits.argmax(1) == train.labels
    z, y = train.logits[keep], train.labels[keep]
    options = {"eu_weight": eu_weight, "cos_weight": 1 - eu_weight, "tail_size": 20}
    det = fitted("openmax", Outputs(z, None, y), **options)
    ref = pood.OpenMax(None, tailsize=20, alpha=10, euclid_weight=eu_weight)
    expected = ref.fit_logits(_t(z), _t(y)).predict_logits(_t(test.logits)).numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-det.score(test))), expected, atol=1e-5)


def test_parity_dice(pood):
    # pytorch-ood keeps the masked weights in float32
    train, test, fc, head = _split()
    ref = pood.DICE(None, w=fc.weight, b=fc.bias, p=0.9)
    ref.fit_features(_t(train.features), _t(train.labels))
    expected = ref.predict_features(_t(test.features)).numpy()
    got = fitted("dice", train, head).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_parity_scale(pood):
    _, test, fc, head = _split()
    ref = pood.SCALE(None, head=lambda t: fc(t.flatten(1)), percentile=0.85)
    expected = ref.predict_feature_maps(_t(test.features)[:, :, None, None]).numpy()
    np.testing.assert_allclose(fitted("scale", None, head).score(test), expected, rtol=1e-12)


def test_parity_fdbd(pood):
    # pytorch-ood computes in float32
    train, test, fc, head = _split()
    ref = pood.fDBD(None, fc.float()).fit_features(_t(train.features).float())
    expected = ref.predict_features(_t(test.features).float()).numpy()
    np.testing.assert_allclose(fitted("fdbd", train, head).score(test), expected, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_parity_nnguide(pood, k):
    train, test, fc, _ = _split()
    # pytorch-ood builds the bank in float32
    ref = pood.NNGuide(None, fc.float(), k=k).fit_features(_t(train.features), _t(train.labels))
    with torch.no_grad():
        expected = ref.predict_features(_t(test.features).float()).numpy()
    got = fitted("nnguide", train, k=k).score(test)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_parity_she(pood):
    train, test, fc, _ = _split()
    ref = pood.SHE(None, fc).fit_features(_t(train.features), _t(train.labels))
    with torch.no_grad():
        expected = ref.predict_features(_t(test.features)).numpy()
    np.testing.assert_allclose(fitted("she", train).score(test), expected, rtol=1e-12)


class SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 4)

    def forward_features(self, x):
        return self.body(x).mean((2, 3))

    def forward_head(self, f):
        return self.fc(self.drop(f))


def _conv_model() -> Classifier:
    torch.manual_seed(3)
    return Classifier(SmallConv(), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]).double().eval()


def test_parity_rankfeat(pood):
    from oebench_plugins.model_maps import feature_map

    model = _conv_model()
    x = torch.rand(20, 3, 6, 6, dtype=torch.float64)
    ref = pood.RankFeat(
        backbone=lambda t: feature_map(model, t)[0],
        head=lambda m: model.forward_head(m.mean((2, 3))),
    )
    with torch.no_grad():
        expected = ref.predict(x).numpy()
    got = make("rankfeat").score_inputs(model, [x[:7], x[7:]])
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_parity_mc_dropout(pood):
    # the same seed gives the same dropout masks; pytorch-ood reports -max mean softmax
    model = _conv_model()
    x = torch.rand(20, 3, 6, 6, dtype=torch.float64)
    got = make("mc-dropout", samples=8, seed=5).score_inputs(model, [x])
    torch.manual_seed(5)
    expected = pood.MCD(model, samples=8, mode="mean").predict(x).numpy()
    np.testing.assert_allclose(-1 / (1 + np.exp(got)), expected, rtol=1e-6)


def test_parity_mahalanobis_preproc(pood):
    # pytorch-ood inverts the summed scatter (+ 1e-6 I) and reports half the squared distance:
    # ours (covariance = scatter / N) = 2 N * pytorch-ood; the gradient signs agree. Its class
    # means are float32, so the model runs in float32.
    model = _conv_model().float()
    g = torch.Generator().manual_seed(0)
    x_train = torch.rand(200, 3, 6, 6, generator=g)
    x_test = torch.rand(30, 3, 6, 6, generator=g)
    with torch.no_grad():
        f = model.forward_features(x_train)
    labels = torch.arange(200) % 4
    train = Outputs(np.zeros((200, 1)), f.numpy(), labels.numpy())
    det = fitted("mahalanobis-preproc", train)
    ref = pood.MahalanobisODIN(model.forward_features, eps=0.002).fit_features(f, labels)
    expected = 2 * len(f) * ref.predict(x_test).detach().numpy()
    np.testing.assert_allclose(det.score_inputs(model, [x_test]), expected, rtol=1e-4)
