import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from oebench.metrics import MetricInputError, ood_metrics


def _tie_heavy(rng):
    n_id, n_ood = rng.integers(1, 60, size=2)
    levels = rng.integers(2, 6)
    ids = rng.integers(0, levels, n_id).astype(float)
    oods = rng.integers(0, levels, n_ood).astype(float) + rng.integers(0, 2)
    return ids, oods


def _fpr_oracle(ids, oods, level=0.95):
    """Brute force of the OE reference rule, written from its description.

    Walk the distinct thresholds from high to low, stopping at the first one that detects every
    OOD sample; pick the one whose OOD recall is nearest to ``level``, ties to the lower one.
    """
    best = None
    for t in sorted(set(np.r_[ids, oods]), reverse=True):
        recall = np.mean(oods >= t)
        fpr = np.mean(ids >= t)
        if best is None or abs(recall - level) <= best[0]:
            best = (abs(recall - level), fpr)
        if recall == 1:
            break
    return 100 * best[1]


def test_auroc_and_aupr_match_sklearn_on_tie_heavy_inputs():
    rng = np.random.default_rng(0)
    for _ in range(300):
        ids, oods = _tie_heavy(rng)
        y = np.r_[np.zeros(ids.size), np.ones(oods.size)]
        s = np.r_[ids, oods]
        m = ood_metrics(ids, oods)
        assert m["auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=1e-9)
        assert m["aupr_out"] == pytest.approx(100 * average_precision_score(y, s), abs=1e-9)
        assert m["aupr_in"] == pytest.approx(100 * average_precision_score(1 - y, -s), abs=1e-9)


def test_auroc_matches_sklearn_on_continuous_scores():
    rng = np.random.default_rng(1)
    ids, oods = rng.normal(0, 1, 500), rng.normal(1, 1, 300)
    y = np.r_[np.zeros(500), np.ones(300)]
    assert ood_metrics(ids, oods)["auroc"] == pytest.approx(
        100 * roc_auc_score(y, np.r_[ids, oods]), abs=1e-9
    )


def test_fpr95_follows_the_nearest_point_rule():
    rng = np.random.default_rng(2)
    for _ in range(300):
        ids, oods = _tie_heavy(rng)
        assert ood_metrics(ids, oods)["fpr95"] == pytest.approx(_fpr_oracle(ids, oods), abs=1e-9)


def test_fpr95_by_hand():
    # 20 OOD scores 1..20; recall at threshold t is (21 - t) / 20, so t = 2 gives 0.95.
    # ID scores 0, 1, 2, 3: at t = 2, IDs 2 and 3 are flagged -> FPR 2/4.
    m = ood_metrics(np.array([0.0, 1, 2, 3]), np.arange(1.0, 21))
    assert m["fpr95"] == pytest.approx(50.0)
    # ID positive (ODIN/Energy): ID recall is 1/4, 2/4, 3/4, 1 at thresholds 0, 1, 2, 3; the
    # nearest to 0.95 is 1.0 at threshold 3, which accepts OOD scores 1, 2, 3 -> 3/20.
    assert m["fpr95_id"] == pytest.approx(15.0)


def test_nearest_rule_breaks_ties_towards_the_lower_threshold():
    # OOD recall is 0.95 at every threshold from 5.5 down to 1 (only ID scores lie there).
    # The reference rule takes the lowest of those thresholds (1): IDs 1..9 flagged -> 90%;
    # the "first point with recall >= 0.95" rule (OpenOOD) stops at 5.5: IDs 6..9 -> 40%.
    ids = np.arange(10.0)
    oods = np.r_[np.full(90, 10.0), np.full(5, 5.5), np.full(5, 0.5)]
    assert ood_metrics(ids, oods)["fpr95"] == pytest.approx(90.0)
    assert ood_metrics(ids, oods, fpr_rule="first")["fpr95"] == pytest.approx(40.0)


def test_perfect_and_inverted_separation():
    ids, oods = np.zeros(10), np.ones(10)
    good, bad = ood_metrics(ids, oods), ood_metrics(oods, ids)
    assert (good["auroc"], good["fpr95"], good["detection_error"]) == (100.0, 0.0, 0.0)
    assert (bad["auroc"], bad["fpr95"]) == (0.0, 100.0)


@pytest.mark.parametrize(
    ("ids", "oods", "message"),
    [
        ([], [1.0], "id_scores is empty"),
        ([1.0], [], "ood_scores is empty"),
        ([1.0, np.nan], [1.0], "NaN"),
    ],
)
def test_bad_input_is_a_clear_error(ids, oods, message):
    with pytest.raises(MetricInputError, match=message):
        ood_metrics(np.array(ids), np.array(oods))


def _finite_ranking(scores: np.ndarray) -> np.ndarray:
    """The same ranking with +inf/-inf replaced by finite values above/below all others."""
    finite = scores[np.isfinite(scores)]
    top, bottom = (finite.max() + 1, finite.min() - 1) if finite.size else (1.0, -1.0)
    return np.where(scores == np.inf, top, np.where(scores == -np.inf, bottom, scores))


def _with_infinities(rng):
    ids, oods = _tie_heavy(rng)
    for arr in (ids, oods):  # turn some of the lowest / highest levels into -inf / +inf
        arr[arr == arr.max()] = np.inf if rng.random() < 0.7 else arr.max()
        arr[rng.random(arr.size) < 0.2] = -np.inf
    return ids, oods


def test_infinite_scores_match_sklearn_on_the_same_ranking():
    rng = np.random.default_rng(3)
    for _ in range(300):
        ids, oods = _with_infinities(rng)
        y = np.r_[np.zeros(ids.size), np.ones(oods.size)]
        s = _finite_ranking(np.r_[ids, oods])
        m = ood_metrics(ids, oods)
        assert m["auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=1e-9)
        assert m["aupr_out"] == pytest.approx(100 * average_precision_score(y, s), abs=1e-9)
        assert m["aupr_in"] == pytest.approx(100 * average_precision_score(1 - y, -s), abs=1e-9)
        assert m["fpr95"] == pytest.approx(_fpr_oracle(ids, oods), abs=1e-9)
        assert m == ood_metrics(*np.split(s, [ids.size]))


def test_tied_infinities_are_one_threshold_by_hand():
    # Pairs (OOD, ID): (inf, inf) ties -> 1/2, (inf, 0) -> 1, (1, inf) -> 0, (1, 0) -> 1.
    m = ood_metrics(np.array([np.inf, 0.0]), np.array([np.inf, 1.0]))
    assert m["auroc"] == pytest.approx(100 * 2.5 / 4)
    # All OOD at +inf, all ID at -inf: perfect; the reverse: the worst.
    good = ood_metrics(np.full(3, -np.inf), np.full(4, np.inf))
    bad = ood_metrics(np.full(3, np.inf), np.full(4, -np.inf))
    assert (good["auroc"], good["fpr95"], good["detection_error"]) == (100.0, 0.0, 0.0)
    assert (bad["auroc"], bad["fpr95"]) == (0.0, 100.0)
    # Everything tied at +inf: one threshold, chance level.
    assert ood_metrics(np.full(5, np.inf), np.full(5, np.inf))["auroc"] == 50.0


def test_nan_is_an_error_even_next_to_infinities():
    with pytest.raises(MetricInputError, match="1 NaN"):
        ood_metrics(np.array([np.inf, -np.inf]), np.array([np.nan, np.inf]))


def test_large_continuous_inputs_match_sklearn_and_both_orientations_agree():
    rng = np.random.default_rng(4)
    ids, oods = rng.normal(0, 1, 40_000), rng.normal(0.5, 1, 30_000).astype(np.float32)
    y, s = np.r_[np.zeros(ids.size), np.ones(oods.size)], np.r_[ids, oods.astype(np.float64)]
    m = ood_metrics(ids, oods)
    assert m["auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=1e-9)
    assert m["aupr_out"] == pytest.approx(100 * average_precision_score(y, s), abs=1e-9)
    assert m["aupr_in"] == pytest.approx(100 * average_precision_score(1 - y, -s), abs=1e-9)
    # FPR95-ID of (ids, oods) is FPR95 of the mirrored problem (-oods as ID, -ids as OOD).
    assert m["fpr95_id"] == pytest.approx(ood_metrics(-oods, -ids)["fpr95"], abs=1e-12)
