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
