"""gmm, ssd, nrg, igeood: hand-derived values, the plugin kit's contract check, parity with
pytorch-ood (gmm) and scikit-learn (gmm's EM variant), an autograd re-implementation of
IGEOOD's official centroid estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from detector_kit import parity_split

import oebench
from oebench.contracts.detector import Outputs
from oebench.errors import UserError
from oebench.testing import check_detector

LN3 = math.log(3.0)
NAMES = ["gmm", "ssd", "nrg", "igeood"]


def fitted(name: str, train: Outputs, **options):
    det = oebench.create_detector(name, **options)
    det.fit(train, None)
    return det


def feats(x, labels=None, logits=None) -> Outputs:
    x = np.asarray(x, dtype=np.float64)
    z = np.zeros((len(x), 2)) if logits is None else np.asarray(logits, dtype=np.float64)
    return Outputs(z, x, None if labels is None else np.asarray(labels))


def readonly(o: Outputs) -> Outputs:
    for a in (o.logits, o.features, o.labels):
        if a is not None:
            a.flags.writeable = False
    return o


# -- registration and the plugin kit -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_registered_with_a_citation(name):
    from oebench.registry.lookup import get_component

    description = get_component("detector", name).description
    assert description.endswith(")") and any(str(y) in description[-6:] for y in range(2016, 2025))


@pytest.mark.parametrize(
    "name, options",
    [
        ("gmm", {}),
        ("gmm", {"covariance": "tied"}),
        ("gmm", {"covariance": "diag"}),
        ("gmm", {"covariance": "spherical"}),
        ("gmm", {"components": 3, "covariance": "tied"}),
        ("gmm", {"components": 2}),
        ("ssd", {}),
        ("ssd", {"clusters": 3}),
        ("ssd", {"labels": True}),
        ("nrg", {}),
        ("nrg", {"k": 5, "power": 2}),
        ("igeood", {}),
        ("igeood", {"centroids": "mean", "temperature": 1.0}),
    ],
)
def test_check_detector(name, options):
    check_detector(name, **options)


@pytest.mark.parametrize(
    "name, options",
    [
        ("gmm", {"components": -1}),
        ("gmm", {"reg": -1.0}),
        ("ssd", {"clusters": 0}),
        ("nrg", {"power": 0}),
        ("nrg", {"k": -1}),
        ("igeood", {"temperature": 0.0}),
    ],
)
def test_nonsense_options_are_refused(name, options):
    with pytest.raises((ValueError, UserError)):
        oebench.create_detector(name, **options)


# -- gmm ------------------------------------------------------------------------------------------
def test_gmm_one_gaussian_is_its_log_density():
    # mean (1, 1), biased covariance I: -log N(x) = log(2 pi) + |x - mu|^2 / 2
    train = readonly(feats([[0, 0], [2, 0], [0, 2], [2, 2]], [0, 0, 0, 0]))
    test = feats([[1, 1], [3, 1], [1, -1], [1, 1]])
    want = math.log(2 * math.pi) + np.array([0.0, 2.0, 2.0, 0.0])
    for covariance in ("full", "tied", "diag", "spherical"):
        got = fitted("gmm", train, reg=0.0, covariance=covariance).score(test)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-14)
        assert got[0] == got[3] and got[1] == got[2]  # ties stay ties


def test_gmm_two_classes_weighted_by_their_share():
    from scipy.stats import norm

    # class 0: {0, 2} (mean 1, var 1, weight 1/3); class 1: {10, 12, 14, 16} (mean 13, var 5)
    train = feats([[0], [2], [10], [12], [14], [16]], [0, 0, 1, 1, 1, 1])
    x = np.array([-3.0, 1.0, 6.0, 13.0, 40.0])
    want = -np.log(norm.pdf(x, 1, 1) / 3 + 2 * norm.pdf(x, 13, math.sqrt(5)) / 3)
    got = fitted("gmm", train, reg=0.0).score(feats(x[:, None]))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # tied: one pooled variance (2 * 1 + 4 * 5) / 6 = 11/3
    s = math.sqrt(11 / 3)
    want = -np.log(norm.pdf(x, 1, s) / 3 + 2 * norm.pdf(x, 13, s) / 3)
    got = fitted("gmm", train, reg=0.0, covariance="tied").score(feats(x[:, None]))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_gmm_dead_feature_needs_reg():
    # the second feature is constant: its variance is reg alone
    train = feats([[0, 5], [2, 5]], [0, 0])
    test = feats([[1, 5], [0, 5], [2, 5], [1, 5.001]])
    got = fitted("gmm", train, reg=1e-6).score(test)
    v = 1 + 1e-6, 1e-6
    base = 0.5 * math.log(2 * math.pi * v[0]) + 0.5 * math.log(2 * math.pi * v[1])
    want = base + np.array([0.0, 0.5 / v[0], 0.5 / v[0], 0.5 * 1e-6 / v[1]])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[1] == got[2]
    np.testing.assert_allclose(
        fitted("gmm", train, covariance="diag").score(test), want, rtol=1e-12
    )
    for covariance in ("full", "diag"):
        with pytest.raises(ValueError, match="increase reg"):
            fitted("gmm", train, reg=0.0, covariance=covariance)


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_gmm_components_is_scikit_learns_mixture(covariance):
    from sklearn.mixture import GaussianMixture

    train, test = _split()
    det = fitted("gmm", train, components=3, covariance=covariance, seed=4)
    gm = GaussianMixture(3, covariance_type=covariance, reg_covar=1e-6, random_state=4)
    gm.fit(train.features)
    np.testing.assert_allclose(det.score(test), -gm.score_samples(test.features), rtol=1e-10)
    again = fitted("gmm", train, components=3, covariance=covariance, seed=4).score(test)
    np.testing.assert_array_equal(det.score(test), again)


def _split():
    """The parity data (``detector_kit.parity_split``), its train outputs read-only."""
    train, test, _, _ = parity_split()
    return readonly(train), test


def test_parity_gmm_pytorch_ood():
    pood = pytest.importorskip("pytorch_ood.detector")
    train, test = _split()
    ref = pood.GMM(None).fit_features(torch.tensor(train.features), torch.tensor(train.labels))
    want = ref.predict_features(torch.as_tensor(test.features)).numpy()
    np.testing.assert_allclose(fitted("gmm", train).score(test), want, rtol=1e-9)


# -- ssd ------------------------------------------------------------------------------------------
def _ssd_reference(train, test, groups):
    """eval_ssd.py's get_eval_results, written out: normalise, standardise, pinv Mahalanobis."""
    ftrain = train / (np.linalg.norm(train, axis=-1, keepdims=True) + 1e-10)
    ftest = test / (np.linalg.norm(test, axis=-1, keepdims=True) + 1e-10)
    m, s = ftrain.mean(0, keepdims=True), ftrain.std(0, keepdims=True)
    ftrain, ftest = (ftrain - m) / (s + 1e-10), (ftest - m) / (s + 1e-10)
    d = []
    for g in np.unique(groups):
        x = ftrain[groups == g]
        if len(x) < 2:
            continue
        delta = ftest - x.mean(0, keepdims=True)
        d.append(np.sum(delta * (np.linalg.pinv(np.cov(x.T, bias=True)) @ delta.T).T, axis=-1))
    return np.min(d, axis=0)


def test_ssd_on_the_circle_every_direction_ties():
    # unit-norm train features on the axes: standardised by sqrt(1/2), identity covariance, so
    # every nonzero test feature (normalised first) is at squared distance 2; zero is at 0
    train = feats([[1, 0], [0, 1], [-1, 0], [0, -1]])
    got = fitted("ssd", train).score(feats([[3, 4], [-1, 0], [0.5, 0.5], [0, 0]]))
    np.testing.assert_allclose(got, [2, 2, 2, 0], rtol=1e-9, atol=1e-12)


def test_ssd_one_cluster_is_the_papers_code():
    rng = np.random.default_rng(3)
    train, test = np.abs(rng.normal(size=(60, 5))), np.abs(rng.normal(size=(20, 5))) * 2
    got = fitted("ssd", readonly(feats(train))).score(feats(test))
    np.testing.assert_allclose(got, _ssd_reference(train, test, np.zeros(60)), rtol=1e-9)


def test_ssd_clusters_and_labels():
    rng = np.random.default_rng(5)
    centres = np.array([[5, 0, 0, 1], [0, 5, 0, 1], [0, 0, 5, 1]], dtype=np.float64)
    groups = np.arange(90) % 3
    train = centres[groups] + rng.normal(size=(90, 4)) * 0.5
    test = np.abs(rng.normal(size=(12, 4))) * 3
    want = _ssd_reference(train, test, groups)
    got = fitted("ssd", feats(train), clusters=3).score(feats(test))  # k-means finds the 3
    np.testing.assert_allclose(got, want, rtol=1e-8)
    got = fitted("ssd", feats(train, labels=groups), labels=True).score(feats(test))
    np.testing.assert_allclose(got, want, rtol=1e-8)
    again = fitted("ssd", feats(train), clusters=3).score(feats(test))
    np.testing.assert_array_equal(fitted("ssd", feats(train), clusters=3).score(feats(test)), again)


def test_ssd_leaves_out_one_sample_clusters():
    # a one-sample class has covariance 0 (pinv 0: distance 0 to everything): left out
    rng = np.random.default_rng(6)
    train = np.r_[np.abs(rng.normal(size=(29, 3))) + 1, [[9, 0, 0]]]
    labels = np.r_[np.zeros(29, int), 1]
    test = np.abs(rng.normal(size=(5, 3)))
    got = fitted("ssd", feats(train, labels), labels=True).score(feats(test))
    np.testing.assert_allclose(got, _ssd_reference(train, test, labels), rtol=1e-9)
    assert (got > 0).all()


# -- nrg ------------------------------------------------------------------------------------------
# train: A f=(1,0) p=(3/4,1/4); B f=(0,1) p=(1/4,3/4); C f=(-1,0) p=(1/2,1/2)
NRG_TRAIN = feats([[1, 0], [0, 1], [-1, 0]], logits=[[LN3, 0], [0, LN3], [0, 0]])


def test_nrg_by_hand():
    test = feats(
        [[3, 4], [0, 1], [-1, 0], [0.02, 1], [0, 0]],
        logits=[[LN3, 0], [0, 0], [LN3, 0], [0, 0], [0, 0]],
    )
    # (3,4): cos 0.6 / 0.8 / -0.6, <p,p'> = 10/16, 6/16, 1/2 -> 0.375 + 0.3
    # (0,1), p = 1/2: only B, 1 * 1/2;  (-1,0): only C, 1 * 1/2 (a tie)
    # (0.02,1): A's edge 0.02/|f| * 1/2 < 0.03 is cut; B: 1/|f| * 1/2;  zero feature: no edge
    norm = math.sqrt(1.0004)
    want = -np.array([0.675, 0.5, 0.5, 0.5 / norm, 0.0])
    got = fitted("nrg", readonly(NRG_TRAIN)).score(test)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert got[1] == got[2]
    got = fitted("nrg", NRG_TRAIN, power=2).score(test)
    np.testing.assert_allclose(got[:3], -np.array([0.375**2 + 0.3**2, 0.25, 0.25]), rtol=1e-9)
    got = fitted("nrg", NRG_TRAIN, k=1).score(test)
    np.testing.assert_allclose(got[:3], -np.array([0.375, 0.5, 0.5]), rtol=1e-9)
    got = fitted("nrg", NRG_TRAIN, threshold=0.0).score(test)
    np.testing.assert_allclose(got[3], -(0.02 * 0.5 + 0.5) / norm, rtol=1e-9)


def test_nrg_blocks_change_nothing(monkeypatch):
    from oebench_plugins import density_detectors

    rng = np.random.default_rng(2)
    train = feats(np.abs(rng.normal(size=(50, 6))), logits=rng.normal(size=(50, 3)))
    test = feats(np.abs(rng.normal(size=(23, 6))), logits=rng.normal(size=(23, 3)))
    whole = {k: fitted("nrg", train, k=k).score(test) for k in (0, 7)}
    monkeypatch.setattr(density_detectors, "NRG_QUERY_CHUNK", 4)
    monkeypatch.setattr(density_detectors, "NRG_BANK_CHUNK", 5)
    for k in (0, 7):
        np.testing.assert_allclose(fitted("nrg", train, k=k).score(test), whole[k], rtol=1e-12)


# -- igeood ---------------------------------------------------------------------------------------
def test_fisher_rao_is_twice_the_arccos_of_the_bhattacharyya_coefficient():
    from oebench_plugins.density_detectors import fisher_rao

    p, q = np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.75, 0.25], [0.0, 1.0]])
    got = fisher_rao(np.sqrt(p), np.sqrt(q))
    bc = np.sqrt(p[:, None, :] * q[None, :, :]).sum(-1)
    np.testing.assert_allclose(got, 2 * np.arccos(bc), rtol=1e-14)
    # cos(pi/12) = (sqrt 3 + 1) / (2 sqrt 2); disjoint supports are pi apart
    np.testing.assert_allclose(got, [[math.pi / 6, math.pi / 2], [math.pi / 3, math.pi]])


def test_igeood_by_hand():
    # class centroids (mean logits) (ln 3, 0) and (0, ln 3): softmax (3/4, 1/4), (1/4, 3/4)
    train = readonly(feats(np.zeros((3, 1)), [0, 0, 1], [[LN3, 0], [LN3, 0], [0, LN3]]))
    det = fitted("igeood", train, centroids="mean", temperature=1.0)
    # (1/2, 1/2) is pi/6 from both; (3/4, 1/4) is 0 and pi/3 away: a tie at -pi/3; shifts tie
    got = det.score(feats(np.zeros((4, 1)), logits=[[0, 0], [LN3, 0], [7, 7], [0, LN3]]))
    np.testing.assert_allclose(got, -math.pi / 3 * np.ones(4), rtol=1e-12)
    # temperature 2 on doubled logits gives the same
    train2 = feats(np.zeros((3, 1)), [0, 0, 1], 2 * train.logits)
    det2 = fitted("igeood", train2, centroids="mean", temperature=2.0)
    got2 = det2.score(feats(np.zeros((2, 1)), logits=[[0, 0], [2 * LN3, 0]]))
    np.testing.assert_allclose(got2, -math.pi / 3 * np.ones(2), rtol=1e-12)


def test_igeood_without_steps_keeps_the_one_hot_start():
    # epochs=0: centroids e_0, e_1 -> softmax (e, 1) / (e + 1) and (1, e) / (e + 1)
    train = feats(np.zeros((2, 1)), [0, 1], [[3.0, 0], [0, 3.0]])
    det = fitted("igeood", train, epochs=0, temperature=1.0)
    e = math.e
    q = np.array([[e, 1], [1, e]]) / (e + 1)
    p = np.array([0.5, 0.5])
    want = -2 * np.arccos(np.sqrt(p * q).sum(1)).sum()
    np.testing.assert_allclose(det.score(feats(np.zeros((1, 1)), logits=[[0, 0]])), [want])


def _official_centroids(logits, targets, classes, epochs=100, lr=0.01):
    """IGEOOD's logits_centroid_estimator (its gradient is never zeroed) by torch autograd."""
    z, y = torch.tensor(logits), torch.tensor(targets)
    mus = [torch.eye(classes, dtype=torch.float64)[c].reshape(1, -1) for c in range(classes)]
    for mu in mus:
        mu.requires_grad_(True)
    for _ in range(epochs):
        for c in range(classes):
            p = torch.softmax(z[y == c], 1) * torch.softmax(mus[c], 1)
            inner = torch.clamp(torch.sqrt(p).sum(1), -1 + 1e-6, 1 - 1e-6)
            (2 * torch.acos(inner)).mean().backward()
            with torch.no_grad():
                mus[c].copy_(mus[c] - lr * mus[c].grad)
    return torch.vstack(mus).detach().numpy()


def test_igeood_centroids_follow_the_official_estimator():
    from oebench_plugins.density_detectors import _sqrt_softmax, fisher_rao

    rng = np.random.default_rng(7)
    labels = np.arange(120) % 4
    z = rng.normal(size=(120, 4)) + 4 * np.eye(4)[labels]
    z[0] = [40, 0, 0, 0]  # a one-hot softmax: its coefficient clamps, no gradient
    det = fitted("igeood", readonly(feats(np.zeros((120, 1)), labels, z)))
    mu = _official_centroids(z, labels, 4)
    test = rng.normal(size=(10, 4)) * 3
    want = -fisher_rao(_sqrt_softmax(test, 5.3), _sqrt_softmax(mu, 5.3)).sum(1)
    np.testing.assert_allclose(det.score(feats(np.zeros((10, 1)), logits=test)), want, rtol=1e-9)


def test_needs():
    want = {"gmm": {"features", "fit"}, "ssd": {"features", "fit"}, "igeood": {"logits", "fit"}}
    want["nrg"] = {"logits", "features", "fit"}
    for name in NAMES:
        assert oebench.create_detector(name).needs == want[name]
