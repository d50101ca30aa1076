"""Every registered detector: hand-computed answers, pytorch-ood parity, the fit/score contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import oebench
from oebench.contracts.detector import Head, Outputs, log_softmax64
from oebench.contracts.model import Classifier
from oebench.errors import UserError

LN3 = math.log(3.0)


def make(name: str, **options):
    return oebench.create_detector(name, **options)


def scores(name: str, logits=None, features=None, **options) -> np.ndarray:
    out = make(name, **options).score(Outputs(logits=_arr(logits), features=_arr(features)))
    assert out.dtype == np.float64
    return out


def fitted(name: str, train: Outputs, head: Head | None = None, **options):
    det = make(name, **options)
    det.fit(train, head)
    return det


def _arr(x):
    return None if x is None else np.asarray(x, dtype=np.float64)


class TinyNet(nn.Module):
    """Flatten -> Linear -> ReLU penultimate features, ``fc`` head: the model contract in small."""

    def __init__(self, in_dim: int = 48, dim: int = 12, classes: int = 5):
        super().__init__()
        self.body = nn.Linear(in_dim, dim)
        self.fc = nn.Linear(dim, classes)

    def forward_features(self, x):
        return torch.relu(self.body(x.flatten(1)))

    def forward_head(self, f):
        return self.fc(f)


class TinyConvNet(nn.Module):
    """Conv -> ReLU map, spatial-mean features, dropout + ``fc`` head: a CNN in small."""

    def __init__(self, channels: int = 3, dim: int = 12, classes: int = 5):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, dim, 3, padding=1), nn.ReLU())
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(dim, classes)

    def forward_features(self, x):
        return self.body(x).mean((2, 3))

    def forward_head(self, f):
        return self.fc(self.drop(f))


class ScalarNet(nn.Module):
    """Feature = the single pixel, logits = (f, -f): ODIN by hand."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, f):
        return self.fc(f)


def head_of(model: Classifier) -> Head:
    fc = model.head_linear()
    return Head(fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy())


def forward(model: Classifier, x: torch.Tensor, labels=None) -> Outputs:
    """What the engine's forward pass gives: float32 logits and features."""
    with torch.no_grad():
        f = model.forward_features(x)
        return Outputs(
            model.forward_head(f).numpy(), f.numpy(), None if labels is None else np.asarray(labels)
        )


# -- hand-computed answers -----------------------------------------------------------------------
# Logits (0, ln 3): softmax p = (1/4, 3/4).
def test_msp_by_hand():
    # log((1 - MSP) / MSP): (0, ln 3) -> log(1/3) = -ln 3; (0, 0) -> log(1) = 0
    np.testing.assert_allclose(scores("msp", [[0, LN3], [0, 0]]), [-LN3, 0.0], atol=1e-15)


def test_max_logit_by_hand():
    np.testing.assert_allclose(scores("max-logit", [[1, 3], [-2, -5]]), [-3.0, 2.0])


def test_energy_by_hand():
    # -log(e^0 + e^ln3) = -ln 4; T = 2: -2 log(e^0 + e^(ln3 / 2)) = -2 log(1 + sqrt 3)
    np.testing.assert_allclose(scores("energy", [[0, LN3]]), [-math.log(4)], atol=1e-15)
    np.testing.assert_allclose(
        scores("energy", [[0, LN3]], temperature=2.0), [-2 * math.log(1 + math.sqrt(3))], atol=1e-15
    )


def test_entropy_by_hand():
    # -(1/4 ln 1/4 + 3/4 ln 3/4) = ln 4 - (3/4) ln 3 = 0.5623351446; uniform over 2: ln 2
    np.testing.assert_allclose(
        scores("entropy", [[0, LN3], [5, 5]]), [math.log(4) - 0.75 * LN3, math.log(2)], atol=1e-15
    )


def test_uniform_ce_by_hand():
    # -(logsumexp - mean) = -(ln 4 - ln3 / 2) = -0.8369882167
    np.testing.assert_allclose(
        scores("uniform-ce", [[0, LN3]]), [-(math.log(4) - LN3 / 2)], atol=1e-15
    )


def test_gen_by_hand():
    # p = (1/4, 3/4): each term (1/4 * 3/4)^0.1 = (3/16)^0.1; both classes -> 2 (3/16)^0.1 = 1.6918
    # 4 equal logits: p = 1/4 each, 4 terms of (3/16)^0.1; top_m=2 keeps two of them
    t = (3 / 16) ** 0.1
    np.testing.assert_allclose(scores("gen", [[0, LN3]]), [2 * t], rtol=1e-14)
    np.testing.assert_allclose(scores("gen", [[0, 0, 0, 0]]), [4 * t], rtol=1e-14)
    np.testing.assert_allclose(scores("gen", [[0, 0, 0, 0]], top_m=2), [2 * t], rtol=1e-14)
    # gamma = 1, top_m = 1: only the top class, p (1 - p) = 3/16
    np.testing.assert_allclose(scores("gen", [[0, LN3]], gamma=1.0, top_m=1), [3 / 16], rtol=1e-14)


def test_gen_is_exact_for_saturated_softmax():
    # logits (0, 50): 1 - p_top = p_other = 1/(1 + e^50) underflows 1 - p in float64 but not here;
    # both terms equal (p (1 - p))^0.1 with p (1 - p) ~ e^-50, so 2 e^-5 (to 1e-21 relative).
    np.testing.assert_allclose(scores("gen", [[0, 50]]), [2 * math.exp(-5)], rtol=1e-12)


# Two classes in 2-D: class 0 = (+-1, 0), (0, +-2), mean (0, 0); class 1 = the same + (10, 0).
# Tied covariance: var_x = (4 * 1) / 8 = 0.5, var_y = (4 * 4) / 8 = 2, cov_xy = 0.
# Background (all 8): mean (5, 0); var_x = (16+36+25+25+36+16+25+25) / 8 = 25.5, var_y = 2.
GAUSS_X = np.array(
    [[1, 0], [-1, 0], [0, 2], [0, -2], [11, 0], [9, 0], [10, 2], [10, -2]], dtype=np.float64
)
GAUSS_TRAIN = Outputs(np.zeros((8, 2)), GAUSS_X, np.array([0, 0, 0, 0, 1, 1, 1, 1]))
GAUSS_TEST = [[1, 2], [5, 0]]


def test_mahalanobis_by_hand():
    # (1, 2): class 0: 1/0.5 + 4/2 = 4; class 1: 81/0.5 + 4/2 = 164 -> 4
    # (5, 0): 25/0.5 = 50 for both classes -> 50
    det = fitted("mahalanobis", GAUSS_TRAIN)
    np.testing.assert_allclose(
        det.score(Outputs(np.zeros((2, 2)), _arr(GAUSS_TEST))), [4, 50], rtol=1e-12
    )


def test_relative_mahalanobis_by_hand():
    # (1, 2): MD_0 = 16/25.5 + 4/2 = 2.62745; min_k MD_k - MD_0 = 4 - 2.62745 = 70/51 = 1.372549
    # (5, 0): MD_0 = 0 -> 50
    det = fitted("relative-mahalanobis", GAUSS_TRAIN)
    np.testing.assert_allclose(
        det.score(Outputs(np.zeros((2, 2)), _arr(GAUSS_TEST))), [70 / 51, 50], rtol=1e-12
    )


def test_knn_by_hand():
    # normalised bank: (1,0), (0,1), (1,0), (-1,0). Query (3,0) -> (1,0): sorted distances
    # 0, 0, sqrt 2, 2. Query (1,1) -> (1,1)/sqrt 2: distances to (1,0) are sqrt(2 - sqrt 2)
    # (twice), to (0,1) sqrt(2 - sqrt 2), to (-1,0) sqrt(2 + sqrt 2).
    train = Outputs(np.zeros((4, 2)), _arr([[1, 0], [0, 1], [2, 0], [-1, 0]]))
    test = Outputs(np.zeros((2, 2)), _arr([[3, 0], [1, 1]]))
    s1 = math.sqrt(2 - math.sqrt(2))
    np.testing.assert_allclose(fitted("knn", train, k=1).score(test), [0, s1], atol=1e-7)
    np.testing.assert_allclose(fitted("knn", train, k=3).score(test), [math.sqrt(2), s1], atol=1e-7)
    np.testing.assert_allclose(
        fitted("knn", train, k=4).score(test), [2, math.sqrt(2 + math.sqrt(2))], atol=1e-7
    )


def test_vim_by_hand():
    # W = I, b = 0 -> u = 0. Train (2,0), (-2,0), (0,1), (0,-1): uncentred covariance
    # diag(2, 0.5), principal (dim=1) = x axis, residual = |y|: mean 0.5; mean max logit
    # (2 + 0 + 1 + 0) / 4 = 0.75 -> alpha = 1.5.
    # (0, 2): 1.5 * 2 - log(1 + e^2) = 0.8730719; (3, 0): 0 - log(e^3 + 1) = -3.0485874
    train = Outputs(np.zeros((4, 2)), _arr([[2, 0], [-2, 0], [0, 1], [0, -1]]))
    head = Head(np.eye(2), np.zeros(2))
    det = fitted("vim", train, head, dim=1)
    got = det.score(Outputs(np.zeros((2, 2)), _arr([[0, 2], [3, 0]])))
    np.testing.assert_allclose(
        got, [3 - math.log(1 + math.e**2), -math.log(math.e**3 + 1)], rtol=1e-12
    )


def test_vim_centres_at_minus_pinv_w_b():
    # W = I, b = (0, 1) -> u = (0, -1): train (2,-1), (-2,-1), (0,0), (0,-2) is the hand case
    # above shifted by u, logits x + b = the hand case's logits -> the same scores.
    train = Outputs(np.zeros((4, 2)), _arr([[2, -1], [-2, -1], [0, 0], [0, -2]]))
    det = fitted("vim", train, Head(np.eye(2), np.array([0.0, 1.0])), dim=1)
    got = det.score(Outputs(np.zeros((2, 2)), _arr([[0, 1], [3, -1]])))
    np.testing.assert_allclose(
        got, [3 - math.log(1 + math.e**2), -math.log(math.e**3 + 1)], rtol=1e-12
    )


def test_vim_default_dim():
    from oebench_plugins.feature_head import vim_default_dim

    assert [vim_default_dim(d) for d in (2048, 4096, 768, 1024, 512, 64)] == [
        1000,
        1000,
        512,
        512,
        256,
        32,
    ]


def test_react_by_hand():
    # train entries 0..9: 90th percentile (linear) at index 8.1 -> 8.1. Head = identity.
    # (20, 0) -> clipped (8.1, 0) -> -log(e^8.1 + 1); (ln 3, 0) unclipped -> -log(3 + 1)
    train = Outputs(np.zeros((5, 2)), np.arange(10, dtype=np.float64).reshape(5, 2))
    det = fitted("react", train, Head(np.eye(2), np.zeros(2)))
    got = det.score(Outputs(np.zeros((2, 2)), _arr([[20, 0], [LN3, 0]])))
    np.testing.assert_allclose(got, [-math.log(math.exp(8.1) + 1), -math.log(4)], rtol=1e-14)


@pytest.mark.parametrize(
    "variant, expected",
    [
        # x = (1, 2, 3, 4), percentile 50: keep k = 4 - round(2) = 2 largest -> (0, 0, 3, 4).
        # W rows (1,1,1,1), (0,0,0,1), b = 0 -> logits (sum, last).
        ("p", -math.log(math.exp(7) + math.exp(4))),  # (0,0,3,4): logits (7, 4)
        ("b", -math.log(math.exp(10) + math.exp(5))),  # kept -> 10/2 = 5: logits (10, 5)
        ("s", -math.log(math.exp(7 * math.exp(10 / 7)) + math.exp(4 * math.exp(10 / 7)))),
    ],
)  # ASH-S: (0,0,3,4) * exp(10/7): logits (7c, 4c), c = e^(10/7)
def test_ash_by_hand(variant, expected):
    head = Head(np.array([[1.0, 1, 1, 1], [0, 0, 0, 1]]), np.zeros(2))
    det = fitted("ash", Outputs(np.zeros((1, 2))), head, variant=variant, percentile=50)
    got = det.score(Outputs(np.zeros((1, 2)), _arr([[1, 2, 3, 4]])))
    np.testing.assert_allclose(got, [expected], rtol=1e-14)


def test_ash_default_is_ash_s_at_90():
    det = make("ash")
    assert (det.variant, det.percentile) == ("s", 90.0)
    assert make("ash", variant="ash-b").variant == "b"
    with pytest.raises(UserError, match="variant must be one of p, b, s"):
        make("ash", variant="q")


def _odin_scores(mean: float, std: float, pixels, **options) -> np.ndarray:
    model = Classifier(ScalarNet(), [mean], [std]).eval()
    return make("odin", **options).score_inputs(model, [torch.tensor(pixels).view(-1, 1, 1, 1)])


def test_odin_by_hand():
    # logits (f, -f), f = (x - mean) / std. Prediction: class 0 for f > 0, class 1 for f < 0;
    # CE at T decreases when |f| grows, so x' = x + eps sign(f) and the MSP log-odds at T is
    # -2 |f'| / T. Defaults T = 1000, eps = 0.0014:
    # mean 0, std 1: x = 0.5 -> x' = 0.5014 -> -1.0028e-3; x = -0.5 -> -1.0028e-3 too.
    np.testing.assert_allclose(
        _odin_scores(0.0, 1.0, [0.5, -0.5]), [-1.0028e-3, -1.0028e-3], rtol=1e-6
    )
    # mean 0.2, std 0.5: x = 0.5 -> x' = 0.5014 (eps is in [0, 1] pixels) -> f' = 0.6028
    # -> -2 * 0.6028 / 1000 = -1.2056e-3
    np.testing.assert_allclose(_odin_scores(0.2, 0.5, [0.5]), [-1.2056e-3], rtol=1e-6)
    # T = 1, eps = 0.1, mean 0, std 1: x = 0.3 -> x' = 0.4 -> -0.8
    np.testing.assert_allclose(
        _odin_scores(0.0, 1.0, [0.3], temperature=1.0, epsilon=0.1), [-0.8], rtol=1e-6
    )


def test_odin_without_perturbation_is_msp():
    torch.manual_seed(0)
    model = Classifier(TinyNet(), [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).double().eval()
    x = torch.rand(20, 3, 4, 4, dtype=torch.float64)
    got = make("odin", temperature=1.0, epsilon=0.0).score_inputs(model, [x[:7], x[7:]])
    np.testing.assert_allclose(got, make("msp").score(forward(model, x)), rtol=1e-12, atol=1e-12)


def test_odin_works_under_inference_mode():
    model = Classifier(ScalarNet(), [0.0], [1.0]).eval()
    with torch.inference_mode():
        x = torch.tensor([0.5]).view(1, 1, 1, 1)
        got = make("odin").score_inputs(model, [x])
    np.testing.assert_allclose(got, [-1.0028e-3], rtol=1e-6)
    assert all(p.grad is None for p in model.parameters())


# -- parity with pytorch-ood ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pood():
    return pytest.importorskip("pytorch_ood.detector")


def _logits(n: int = 64, classes: int = 10, scale: float = 2.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, classes)) * scale


def _gauss_features(n: int, dim: int = 16, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    means = rng.normal(size=(classes, dim)) * 3
    x = np.abs(means[labels] + rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, size=dim))
    return x, labels


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def test_parity_logit_detectors(pood):
    z = _logits()
    out = Outputs(z)
    # MaxSoftmax = -p; ours = log((1 - p) / p) -> p = 1 / (1 + e^score)
    msp = -1.0 / (1.0 + np.exp(make("msp").score(out)))
    np.testing.assert_allclose(msp, pood.MaxSoftmax.score(_t(z)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        make("max-logit").score(out), pood.MaxLogit.score(_t(z)).numpy(), rtol=1e-14
    )
    for t in (1.0, 2.0):
        np.testing.assert_allclose(
            make("energy", temperature=t).score(out),
            pood.EnergyBased.score(_t(z), t=t).numpy(),
            rtol=1e-12,
        )
    # pytorch-ood clips p at 1e-7; these logits keep every p above that
    assert np.exp(log_softmax64(z)).min() > 1e-7
    np.testing.assert_allclose(
        make("entropy").score(out), pood.Entropy.score(_t(z)).numpy(), rtol=1e-10
    )


@pytest.mark.parametrize("top_m", [100, 5])
def test_parity_gen(pood, top_m):
    # pytorch-ood averages the top-M terms instead of summing them (factor 1 / min(M, C)) and
    # clamps p to [1e-7, 1 - 1e-7]; moderate logits keep p inside that range.
    z = _logits(scale=1.5)
    ref = pood.GEN.score(_t(z), gamma=0.1, M=top_m).numpy() * min(top_m, z.shape[1])
    np.testing.assert_allclose(make("gen", top_m=top_m).score(Outputs(z)), ref, rtol=1e-10)


def test_parity_odin(pood):
    torch.manual_seed(1)
    model = Classifier(TinyNet(), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]).double().eval()
    x = torch.rand(32, 3, 4, 4, dtype=torch.float64)
    ours = make("odin").score_inputs(model, [x[:10], x[10:]])
    # pytorch-ood's ODIN on the [0, 1]-input model with norm_std=None perturbs [0, 1] pixels
    ref = pood.ODIN(model, eps=0.0014, temperature=1000.0).predict(x).numpy()
    np.testing.assert_allclose(-1.0 / (1.0 + np.exp(ours)), ref, rtol=1e-12)


def _feature_split(n_train: int = 400, n_test: int = 100):
    x, y = _gauss_features(n_train + n_test)
    return Outputs(np.zeros((n_train, 1)), x[:n_train], y[:n_train]), x[n_train:]


def test_parity_mahalanobis(pood):
    # pytorch-ood inverts the *summed* scatter S (+ 1e-6 I) and reports half the squared
    # distance, in float32: ours (covariance S / N) = 2 N * pytorch-ood.
    train, test = _feature_split()
    ref = pood.Mahalanobis(None).fit_features(_t(train.features).float(), _t(train.labels))
    got = fitted("mahalanobis", train).score(Outputs(np.zeros((len(test), 1)), test))
    expected = 2 * len(train) * ref.predict_features(_t(test).float()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_parity_relative_mahalanobis(pood):
    # both covariances are summed scatters in pytorch-ood: ours = N * pytorch-ood (float32 there)
    train, test = _feature_split()
    ref = pood.RMD(None).fit_features(_t(train.features).float(), _t(train.labels))
    got = fitted("relative-mahalanobis", train).score(Outputs(np.zeros((len(test), 1)), test))
    expected = len(train) * ref.predict_features(_t(test).float()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("k", [1, 50])
def test_parity_knn(pood, k):
    train, test = _feature_split()
    ref = pood.KNN(None, k=k).fit_features(_t(train.features), _t(train.labels))
    got = fitted("knn", train, k=k).score(Outputs(np.zeros((len(test), 1)), test))
    np.testing.assert_allclose(got, ref.predict_features(_t(test)).numpy(), atol=1e-6)


def _fc(dim: int = 16, classes: int = 4, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(dim, classes).double()


def test_parity_vim(pood):
    train, test = _feature_split()
    fc = _fc()
    head = Head(fc.weight.detach().numpy(), fc.bias.detach().numpy())
    ref = pood.ViM(None, d=6, w=fc.weight, b=fc.bias)
    ref.fit_features(_t(train.features), _t(train.labels))
    det = fitted("vim", train, head, dim=6)
    assert det._alpha == pytest.approx(ref.alpha, rel=1e-5)
    got = det.score(Outputs(np.zeros((len(test), 1)), test))
    np.testing.assert_allclose(got, ref.predict_features(_t(test)).numpy(), rtol=1e-5, atol=5e-5)


def test_parity_react(pood):
    train, test = _feature_split()
    fc = _fc()
    ref = pood.ReAct(None, head=fc, percentile=0.9)
    ref.fit_feature_maps(_t(train.features), _t(train.labels))
    det = fitted("react", train, Head(fc.weight.detach().numpy(), fc.bias.detach().numpy()))
    assert det._threshold == pytest.approx(ref.threshold, rel=1e-14)
    with torch.no_grad():
        expected = ref.predict_feature_maps(_t(test)).numpy()
    np.testing.assert_allclose(
        det.score(Outputs(np.zeros((len(test), 1)), test)), expected, rtol=1e-12
    )


@pytest.mark.parametrize("variant", ["p", "b", "s"])
@pytest.mark.parametrize("percentile", [90, 65])
def test_parity_ash(pood, variant, percentile):
    # pytorch-ood's ASH takes B x C x H x W maps and a fraction: pooled features as B x C x 1 x 1
    _, test = _feature_split()
    fc = _fc()
    ref = pood.ASH(
        None, head=lambda t: fc(t.flatten(1)), variant=f"ash-{variant}", percentile=percentile / 100
    )
    expected = ref.predict_feature_maps(_t(test)[:, :, None, None]).numpy()
    det = fitted(
        "ash",
        Outputs(np.zeros((1, 1))),
        Head(fc.weight.detach().numpy(), fc.bias.detach().numpy()),
        variant=variant,
        percentile=percentile,
    )
    np.testing.assert_allclose(
        det.score(Outputs(np.zeros((len(test), 1)), test)), expected, rtol=1e-12
    )


# -- the contract, for every registered detector -------------------------------------------------
class GuardedOutputs:
    """Outputs whose fields outside ``allowed`` raise when read; arrays are read-only."""

    def __init__(self, outputs: Outputs, allowed: set[str]):
        self._outputs, self._allowed = outputs, allowed
        for name in ("logits", "features", "labels"):
            value = getattr(outputs, name)
            if value is not None:
                value.flags.writeable = False

    def _get(self, name: str):
        assert name in self._allowed, f"detector read outputs.{name} (allowed: {self._allowed})"
        return getattr(self._outputs, name)

    logits = property(lambda self: self._get("logits"))
    features = property(lambda self: self._get("features"))
    labels = property(lambda self: self._get("labels"))

    def __len__(self) -> int:
        return len(self._outputs)


@pytest.fixture(scope="module")
def setting():
    """A small model, its ID train / test / OOD outputs, its head, and the raw test inputs."""
    torch.manual_seed(0)
    model = Classifier(TinyConvNet(3, dim=12, classes=5), [0.5] * 3, [0.25] * 3).eval()
    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.rand(300, 3, 4, 4, generator=g), torch.rand(40, 3, 4, 4, generator=g)
    x_ood = torch.rand(30, 3, 4, 4, generator=g) * 0.3
    with torch.no_grad():
        labels = model(x_train).argmax(1).numpy()
    return {
        "model": model,
        "head": head_of(model),
        "train": forward(model, x_train, labels),
        "test": forward(model, x_test),
        "ood": forward(model, x_ood),
        "x_train": x_train,
        "x_test": x_test,
        "x_ood": x_ood,
    }


def _readable(needs: frozenset, fitting: bool) -> set[str]:
    return (set(needs) & {"logits", "features"}) | ({"labels"} if fitting else set())


def run(
    name: str, s: dict, which: str = "test", train: Outputs | None = None, **options
) -> np.ndarray:
    """Fit (if needed) and score one set the way the engine does, guarding what is read."""
    det = make(name, **options)
    if "model" in det.needs:
        if "fit" in det.needs:  # the engine fits on ID train outputs, then scores inputs
            det.fit(GuardedOutputs(train or s["train"], _readable(det.needs, True)), None)
            fit_inputs(det, s)
        return _score(det, s, which)
    if "fit" in det.needs:
        guarded = GuardedOutputs(train or s["train"], _readable(det.needs, fitting=True))
        det.fit(guarded, s["head"] if "head" in det.needs else None)
    elif "head" in det.needs:  # the engine passes the head alone: fit(None, head)
        det.fit(None, s["head"])
    return _score(det, s, which)


def fit_inputs(det, s: dict) -> None:
    """The engine's optional second fit step: ID training images, in batches."""
    if callable(getattr(det, "fit_inputs", None)):
        x = s["x_train"]
        det.fit_inputs(s["model"], [x[:128], x[128:]])


def _score(det, s: dict, which: str) -> np.ndarray:
    """Score one set of the setting: raw inputs for model detectors, guarded outputs otherwise."""
    if "model" in det.needs:
        x = s[f"x_{which}"]
        return det.score_inputs(s["model"], [x[:16], x[16:]])
    return det.score(GuardedOutputs(s[which], _readable(det.needs, fitting=False)))


ALL = oebench.list_detectors()


def test_every_expected_detector_is_registered():
    expected = {
        "msp",
        "max-logit",
        "energy",
        "entropy",
        "uniform-ce",
        "mahalanobis",
        "relative-mahalanobis",
        "knn",
        "vim",
        "react",
        "ash",
        "gen",
        "odin",
    }
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_contract_float64_finite_right_length(name, setting):
    for which in ("test", "ood"):
        got = run(name, setting, which)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        assert got.shape == (len(setting[which]),)
        assert np.isfinite(got).all()


@pytest.mark.parametrize("name", ALL)
def test_needs_is_exact_and_known(name):
    det = make(name)
    assert isinstance(det.needs, frozenset)
    assert det.needs <= {"logits", "features", "fit", "head", "model"}
    if "model" in det.needs:
        assert det.needs <= {"model", "fit", "logits", "features"}, "no head for model detectors"
        assert "fit" in det.needs or det.needs == {"model"}, "outputs are only read by fit"


@pytest.mark.parametrize("name", [n for n in ALL if "fit" in make(n).needs])
def test_fit_uses_only_the_train_outputs(name, setting):
    """Fit reads only the train Outputs (no mutation); scoring never changes the fitted state."""
    train = setting["train"]
    before = {k: np.array(getattr(train, k)) for k in ("logits", "features", "labels")}
    alone = run(name, setting, "test")
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(train, k), v)

    det = make(name)
    det.fit(GuardedOutputs(setting["train"], _readable(det.needs, True)), setting["head"])
    fit_inputs(det, setting)
    _score(det, setting, "ood")
    after_ood = _score(det, setting, "test")
    np.testing.assert_array_equal(after_ood, alone)


@pytest.mark.parametrize("name", [n for n in ALL if "fit" in make(n).needs])
def test_refit_forgets_the_previous_fit(name, setting):
    s = setting
    other = Outputs(
        s["train"].logits[::-1], s["train"].features * 2 + 0.1, np.arange(len(s["train"])) % 5
    )
    det = make(name)
    det.fit(other, s["head"] if "head" in det.needs else None)
    det.fit(s["train"], s["head"] if "head" in det.needs else None)
    fit_inputs(det, s)
    np.testing.assert_array_equal(_score(det, s, "test"), run(name, s, "test"))


@pytest.mark.parametrize("name", [n for n in ALL if "model" not in make(n).needs])
def test_scores_are_rowwise(name, setting):
    """A sample's score does not depend on the other samples scored with it."""
    whole = run(name, setting, "test")
    s = dict(setting, test=Outputs(setting["test"].logits[5:9], setting["test"].features[5:9]))
    np.testing.assert_allclose(run(name, s, "test"), whole[5:9], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_config_is_plain_data(name):
    config = make(name).config()
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in config.values())


@pytest.mark.parametrize("name", [n for n in ALL if "features" in make(n).needs or n == "gen"])
def test_streaming_in_blocks_changes_nothing(name, setting, monkeypatch):
    """Fitting and scoring in many small row blocks gives the single-block answer."""
    from oebench_plugins import feature_common, feature_distances

    whole = run(name, setting, "test")
    monkeypatch.setattr(feature_common, "CHUNK", 7)
    monkeypatch.setattr(feature_distances, "KNN_QUERY_CHUNK", 5)
    monkeypatch.setattr(feature_distances, "KNN_BANK_CHUNK", 16)
    np.testing.assert_allclose(run(name, setting, "test"), whole, rtol=1e-10, atol=1e-10)


def test_detector_modules_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, oebench_plugins.feature_detectors, oebench_plugins.input_detectors; "
        "assert 'torch' not in sys.modules, 'torch imported at module level'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
