"""Fitted detectors on memory-mapped train outputs (issue 25): the same scores as on in-memory
arrays when read in many tiny row blocks, the same as the former whole-array fits (written
out here as references), and fits whose traced memory stays far below one N x d copy."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from detector_kit import make, parity_split
from oebench_plugins import density_detectors, feature_common, feature_distances

from oebench.api import Head, Outputs, log_softmax64, logsumexp64
from oebench.contracts.arrays import load_rows

#: (registered name, options, rtol of memory-mapped tiny blocks vs in-memory default blocks;
#: 0 = bit for bit, where blocks change no summation order)
FITTED = [
    ("knn", {"k": 5}, 0.0),
    ("nnguide", {"k": 5}, 0.0),
    ("mahalanobis", {}, 1e-10),
    ("relative-mahalanobis", {}, 1e-10),
    ("max-cosine", {}, 1e-10),
    ("vim", {"dim": 8}, 1e-10),
    ("residual", {"dim": 8}, 1e-10),
    ("fdbd", {}, 1e-10),
    ("dice", {}, 1e-10),
    ("bats", {}, 1e-10),
    ("nci", {}, 1e-10),
    ("pnml", {}, 1e-10),
    ("nac-ue", {}, 0.0),
    ("react", {}, 0.0),
    ("vra", {}, 0.0),
    ("she", {}, 1e-10),
    ("kl-matching", {}, 1e-10),
    ("openmax", {}, 1e-10),
    ("temp-scale", {}, 1e-10),
    ("gmm", {}, 1e-10),
    ("gmm", {"covariance": "diag"}, 1e-10),
    ("gmm", {"covariance": "tied"}, 1e-10),
    ("ssd", {}, 1e-10),
    ("ssd", {"labels": True}, 1e-10),
    ("ssd", {"clusters": 3}, 1e-10),
    ("nrg", {}, 1e-10),
    ("nrg", {"k": 4}, 1e-10),
    ("igeood", {"epochs": 5}, 1e-10),
]


def _float32(o: Outputs) -> Outputs:
    return Outputs(o.logits.astype(np.float32), o.features.astype(np.float32), o.labels)


@pytest.fixture(scope="module")
def split():
    train, test, _, head = parity_split(n_train=300, n_test=40, dim=16, classes=4)
    return _float32(train), _float32(test), head


def _mapped(o: Outputs, where) -> Outputs:
    """``o`` saved with ``np.save`` and loaded back as read-only memory maps."""
    arrays = []
    for name in ("logits", "features", "labels"):
        path = where / f"{name}.npy"
        np.save(path, getattr(o, name))
        arrays.append(load_rows(path))
    return Outputs(*arrays)


def _tiny_blocks(monkeypatch, rows: int = 7) -> None:
    monkeypatch.setattr(feature_common, "CHUNK", rows)
    for name in ("KNN_QUERY_CHUNK", "KNN_BANK_CHUNK"):
        monkeypatch.setattr(feature_distances, name, rows)
    for name in ("NRG_QUERY_CHUNK", "NRG_BANK_CHUNK"):
        monkeypatch.setattr(density_detectors, name, rows)


def _scores(name, options, train, test, head):
    det = make(name, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit(train, head)
        return det.score(test)


@pytest.mark.parametrize(("name", "options", "rtol"), FITTED, ids=lambda v: str(v))
def test_memory_mapped_tiny_blocks_score_as_in_memory(
    name, options, rtol, split, tmp_path, monkeypatch
):
    train, test, head = split
    expected = _scores(name, options, train, test, head)
    mapped = _mapped(train, tmp_path)
    assert isinstance(mapped.features, np.memmap) and not mapped.features.flags.writeable
    _tiny_blocks(monkeypatch)
    got = _scores(name, options, mapped, test, head)
    assert got.dtype == np.float64 and got.shape == expected.shape
    if rtol == 0.0:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-12)


# --- the new fits against the former whole-array ones -------------------------------------


def _old_percentile(array, q):
    flat = np.asarray(array).reshape(-1)
    pos = q / 100.0 * (flat.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, flat.size - 1)
    part = np.partition(flat, [lo, hi])
    a, b = float(part[lo]), float(part[hi])
    return a + (b - a) * (pos - lo)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_streaming_percentile_is_the_exact_order_statistic(dtype, monkeypatch, tmp_path):
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(501, 9)) * 3).astype(dtype)  # tie-heavy
    x[:40] = -0.0
    x[40:60] = rng.normal(size=(20, 9)) * 1e-30  # tiny and subnormal float32
    x[60:70] = rng.normal(size=(10, 9)) * (1e3 if dtype == np.float16 else 1e6)
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(feature_common, "CHUNK", 7)
    for q in [0.0, 1.0, 10.0, 33.3, 50.0, 90.0, 99.0, 99.99]:
        for source in (x, load_rows(tmp_path / "x.npy")):
            got = feature_common._percentile(source, q)
            assert got == _old_percentile(x, q)
            # np.percentile interpolates in the array's dtype; the order statistics are the same
            reference = float(np.percentile(x.astype(np.float64), q, method="linear"))
            assert got == pytest.approx(reference, rel=1e-12, abs=1e-300)
    y = x.astype(np.float64)
    y[5, 5] = np.nan  # NaN sorts last, as np.partition puts it
    assert np.isnan(feature_common._percentile(y, 100 - 1e-9))
    assert feature_common._percentile(y, 50.0) == _old_percentile(y, 50.0)


def _old_knn(train_x, test_x, k):
    bank = feature_common._normalise(train_x.astype(np.float64)).astype(np.float32)
    q = feature_common._normalise(test_x.astype(np.float64))
    sims = torch.from_numpy(q.astype(np.float32)) @ torch.from_numpy(bank).T
    _, idx = torch.topk(sims, k, dim=1)
    kth = bank[idx[:, -1].numpy()].astype(np.float64)
    return np.linalg.norm(q - kth, axis=1)


def _old_nnguide(train, test, k):
    conf = logsumexp64(train.logits)
    bank = feature_common._normalise(train.features.astype(np.float64)) * conf[:, None]
    sims = feature_common._normalise(test.features.astype(np.float64)) @ bank.T
    best = np.sort(sims, axis=1)[:, -k:].mean(1)
    return -best * logsumexp64(test.logits)


def test_knn_and_nnguide_equal_the_former_bank(split, tmp_path, monkeypatch):
    train, test, _ = split
    mapped = _mapped(train, tmp_path)
    _tiny_blocks(monkeypatch, 13)
    knn = _scores("knn", {"k": 5}, mapped, test, None)
    np.testing.assert_allclose(knn, _old_knn(train.features, test.features, 5), rtol=1e-6)
    guide = _scores("nnguide", {"k": 5}, mapped, test, None)
    np.testing.assert_allclose(guide, _old_nnguide(train, test, 5), rtol=1e-10)


def test_she_patterns_equal_the_former_class_loop(split, tmp_path, monkeypatch):
    train, _, _ = split
    labels = train.labels.copy()
    labels[labels == 3] = 2  # class 3 has no samples: zero pattern
    z = train.logits.copy()
    z[labels == 1, 1] = -1e3  # class 1 never correct: all its samples
    train = Outputs(z, train.features, labels)
    x = train.features.astype(np.float64)
    correct = z.argmax(1) == labels
    old = np.zeros((4, x.shape[1]))
    for k in range(4):
        rows = np.flatnonzero((labels == k) & correct)
        rows = rows if len(rows) else np.flatnonzero(labels == k)
        if len(rows):
            old[k] = x[rows].mean(0)
    _tiny_blocks(monkeypatch)
    det = make("she")
    det.fit(_mapped(train, tmp_path), None)
    np.testing.assert_array_equal(det._patterns, old)  # np.add.at sums rows in order: exact
    assert not det._patterns[3].any()


def test_kl_matching_equals_the_former_log_mean_exp(split, tmp_path, monkeypatch):
    train, _, _ = split
    z = train.logits.copy()
    z[:20] = -np.inf  # -inf logits: log-softmax entries of -inf stay -inf
    z[:20, 0] = 0.0
    train = Outputs(z, train.features, train.labels)
    logp = log_softmax64(z)
    predicted = logp.argmax(1)
    old = np.stack(
        [
            logsumexp64(logp[predicted == k], axis=0) - np.log((predicted == k).sum())
            for k in np.unique(predicted)
        ]
    )
    mapped = _mapped(train, tmp_path)
    det = make("kl-matching")
    det.fit(mapped, None)  # one block: the whole-array logsumexp bit for bit
    np.testing.assert_array_equal(det._log_typical, old)
    _tiny_blocks(monkeypatch)
    det.fit(mapped, None)  # running maxima rescaled across blocks
    np.testing.assert_allclose(det._log_typical, old, rtol=1e-12)


def test_openmax_equals_the_former_class_loop(split, tmp_path, monkeypatch):
    from scipy.stats import weibull_min

    train, _, _ = split
    z, labels = train.logits.astype(np.float64), train.labels
    det_old = make("openmax", tail_size=6)
    correct = z.argmax(1) == labels
    det_old._mav = np.zeros((4, 4))
    weibull = np.full((4, 3), np.nan)
    for k in range(4):
        members = z[correct & (labels == k)]
        if len(members):
            det_old._mav[k] = members.mean(0)
    for k in range(4):
        members = z[correct & (labels == k)]
        if len(members):
            tail = np.sort(det_old._distances(members)[:, k])[-6:]
            shift = det_old.SHIFT - tail.min()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c, _, scale = weibull_min.fit(tail + shift, floc=0)
            weibull[k] = (c, scale, shift)
    _tiny_blocks(monkeypatch)
    det = make("openmax", tail_size=6)
    det.fit(_mapped(train, tmp_path), None)
    np.testing.assert_array_equal(det._mav, det_old._mav)
    np.testing.assert_allclose(det._weibull, weibull, rtol=1e-10)


def test_gmm_and_ssd_equal_the_former_class_loops(split, tmp_path, monkeypatch):
    train, _, _ = split
    x, labels = train.features.astype(np.float64), train.labels
    gmm = make("gmm")
    gmm.fit(_mapped(train, tmp_path), None)  # default blocks: each class is one chunk
    for k in range(4):
        part = x[labels == k] - x[labels == k].mean(0)
        prec = gmm._precision_cholesky(part.T @ part / len(part))
        np.testing.assert_allclose(gmm._prec[k], prec, rtol=1e-10, atol=1e-12)
    ssd = make("ssd")
    ssd.fit(train, None)
    z = ssd._standardise(x)
    part = z - z.mean(0)
    np.testing.assert_allclose(ssd._centres[0], z.mean(0), rtol=1e-10, atol=1e-12)
    old = feature_common._whitener(part.T @ part / len(z))
    new = ssd._whiteners[0]
    np.testing.assert_allclose(new @ new.T, old @ old.T, rtol=1e-9, atol=1e-9)


def test_nrg_equals_the_former_bank(split, tmp_path, monkeypatch):
    train, test, _ = split
    bank = density_detectors._nrg_normalise(train.features.astype(np.float64))
    probs = np.exp(log_softmax64(train.logits))
    f = density_detectors._nrg_normalise(test.features.astype(np.float64))
    rel = np.maximum(f @ bank.T, 0.0) * (np.exp(log_softmax64(test.logits)) @ probs.T)
    old = -np.where(rel > 0.03, rel, 0.0).sum(1)
    _tiny_blocks(monkeypatch)
    np.testing.assert_allclose(
        _scores("nrg", {}, _mapped(train, tmp_path), test, None), old, rtol=1e-10
    )


def test_temp_scale_equals_the_whole_array_root(split, tmp_path, monkeypatch):
    from scipy.optimize import brentq

    train, _, _ = split
    z = (train.logits * 3).astype(np.float64)
    target = z[np.arange(len(z)), train.labels]

    def slope(beta):
        p = np.exp(log_softmax64(beta * z))
        return float(((p * z).sum(1) - target).mean())

    old = 1.0 / brentq(slope, 0.01, 100.0, xtol=1e-12, rtol=1e-12)
    _tiny_blocks(monkeypatch)
    det = make("temp-scale")
    det.fit(_mapped(Outputs(z.astype(np.float32), train.features, train.labels), tmp_path), None)
    assert det._temperature == pytest.approx(old, rel=1e-9)


# --- memory: no N x d array during a fit on memory-mapped train features ------------------

MEMORY = [
    ("knn", {"k": 5}),
    ("nnguide", {"k": 5}),
    ("mahalanobis", {}),
    ("she", {}),
    ("kl-matching", {}),
    ("react", {}),
    ("gmm", {}),
    ("vim", {}),
    ("openmax", {}),
    ("ssd", {}),
    ("ssd", {"labels": True}),
    ("nrg", {}),
]


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    n, d, c = 20000, 64, 10
    rng = np.random.default_rng(0)
    labels = rng.integers(0, c, n)
    means = rng.normal(size=(c, d)) * 2
    x = np.abs(means[labels] + rng.normal(size=(n, d))).astype(np.float32)
    w, b = rng.normal(size=(c, d)) / 8, rng.normal(size=c)
    z = (x @ w.T + b).astype(np.float32)
    where = tmp_path_factory.mktemp("large")
    train = _mapped(Outputs(z, x, labels), where)
    test = Outputs(z[:50].copy(), x[:50].copy(), labels[:50].copy())
    return Outputs(train.logits, train.features, np.asarray(labels)), test, Head(w, b)


@pytest.mark.parametrize(("name", "options"), MEMORY, ids=lambda v: str(v))
def test_fit_on_memory_maps_holds_no_n_by_d_array(name, options, large, monkeypatch):
    train, test, head = large
    n, d = train.features.shape
    _tiny_blocks(monkeypatch, 256)
    det = make(name, **options)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det.fit(train, head)
            scores = det.score(test)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(scores).all()
    assert peak < n * d * 8 / 4, f"{name} peaked at {peak} bytes (N x d float64: {n * d * 8})"
