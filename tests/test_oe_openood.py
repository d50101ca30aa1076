"""MCD and UDG (OpenOOD's OE-style trainings): losses by hand, clustering, the contract."""

from __future__ import annotations

import math

import pytest
import torch
from oebench_plugins.oe_openood import (
    discrepancy_hinge,
    embed,
    entropy,
    group_rules,
    kmeans,
    whitening,
)

import oebench
from oebench.contracts.objective import TrainStep
from oebench.errors import UserError
from oebench.testing import check_objective

LN2 = math.log(2)
H_QUARTER = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # entropy of (1/4, 3/4)


def _logits(*probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs).log()


# -- MCD ---------------------------------------------------------------------------------------
def test_entropy_of_known_distributions():
    h = entropy(_logits([0.5, 0.5], [0.25, 0.75]))
    assert torch.allclose(h, torch.tensor([LN2, H_QUARTER]))


def test_discrepancy_hinge_by_hand():
    # H(p1) - H(p2) = ln 2 - H(1/4, 3/4) = 0.1308 < margin 1.2: hinge 1.2 - 0.1308
    hinge = discrepancy_hinge(_logits([0.5, 0.5]), _logits([0.25, 0.75]), 1.2)
    assert hinge.item() == pytest.approx(1.2 - (LN2 - H_QUARTER))
    # past the margin: zero
    far = discrepancy_hinge(_logits([0.25] * 4), torch.tensor([[50.0, 0, 0, 0]]), 1.0)
    assert far.item() == 0.0
    # the hinge of the batch mean (OpenOOD), not the mean of per-sample hinges:
    # differences +ln2 and -ln2 average to 0, so the hinge is the margin itself
    one_hot = torch.tensor([[50.0, 0.0]])
    l1 = torch.cat([_logits([0.5, 0.5]), one_hot])
    l2 = torch.cat([one_hot, _logits([0.5, 0.5])])
    assert discrepancy_hinge(l1, l2, 0.5).item() == pytest.approx(0.5, abs=1e-6)


def _mcd_step(objective, head, epoch=0, epochs=1, seed=0):
    features = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    return TrainStep(
        model=None,
        x_in=torch.zeros(1),
        targets=torch.tensor([1]),
        logits_in=torch.tensor([[0.0, 0.0]]),
        logits_out=torch.tensor([[0.0, 0.0]]),
        features_in=features[:1],
        features_out=features[1:],
        generator=torch.Generator().manual_seed(seed),
        extra=head,
        epoch=epoch,
        epochs=epochs,
    )


def _set_head(head):
    """Head 2 outputs (0, ln 3) whatever the features: p2 = (1/4, 3/4)."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, math.log(3)]))


def test_mcd_loss_by_hand_with_and_without_warmup():
    objective = oebench.create_objective("mcd", warmup=0.5)
    head = objective.attach(2, 2)
    objective.loss(_mcd_step(objective, head))  # draws head 2
    _set_head(head)
    ce1, ce2 = LN2, -math.log(0.75)  # head 1 uniform, head 2 (1/4, 3/4), target 1
    # epoch 0 of 2 is warm-up: the ID part alone, CE(head 1) + CE(head 2)
    warm = objective.loss(_mcd_step(objective, head, epoch=0, epochs=2))
    assert warm.item() == pytest.approx(ce1 + ce2)
    hinge = 1.2 - (LN2 - H_QUARTER)  # outlier: head 1 uniform, head 2 (1/4, 3/4); lam 1
    full = objective.loss(_mcd_step(objective, head, epoch=1, epochs=2))
    assert full.item() == pytest.approx(ce1 + ce2 + hinge)


def test_mcd_draws_head_two_from_the_training_generator():
    heads = []
    for seed in (0, 0, 1):
        objective = oebench.create_objective("mcd")
        head = objective.attach(2, 3)
        assert torch.all(head.weight == 0)  # nothing drawn before the first step
        objective.loss(_mcd_step(objective, head, seed=seed))
        assert objective.head is head and objective.state() == {"fresh": False}
        heads.append(head.weight.detach().clone())
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    assert heads[0].abs().max() <= 2**-0.5 and heads[0].abs().max() > 0  # U(-1/sqrt(d), .)


# -- UDG: clustering ---------------------------------------------------------------------------
def _blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """Five points around each of four centres (+-5, +-5), and their blob index."""
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [-5.0, -5.0], [5.0, -5.0]])
    jitter = torch.tensor([[0.0, 0.0], [0.3, 0.1], [-0.2, 0.3], [0.1, -0.3], [-0.3, -0.1]])
    points = (centres[:, None, :] + jitter[None]).reshape(-1, 2)
    return points, torch.arange(4).repeat_interleave(5)


def test_whitening_gives_unit_covariance_and_drops_dead_units():
    points, _ = _blobs()
    dead = torch.cat([points * torch.tensor([1.0, 3.0]), torch.zeros(20, 1)], dim=1)
    mean, projection = whitening(dead, 256)
    assert projection.shape == (3, 2)  # the all-zero unit has no variance: dropped
    white = (dead - mean) @ projection
    assert torch.allclose(white.T @ white / 20, torch.eye(2), atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_finds_the_obvious_clusters(seed):
    points, blob = _blobs()
    mean, projection = whitening(points, 256)
    x = embed(points, mean, projection)
    assert torch.allclose(x.norm(dim=1), torch.ones(20))
    centroids = kmeans(x, 4, torch.Generator().manual_seed(seed))
    ids = ((x[:, None] - centroids[None]) ** 2).sum(2).argmin(1)
    for b in range(4):  # each blob is one cluster, and the four clusters differ
        assert (ids[blob == b] == ids[blob == b][0]).all()
    assert len(set(ids.tolist())) == 4


def test_group_rules_select_the_right_samples():
    # cluster 0: five of class 0 and one outlier (5/6 > 0.8: ID-pure, the outlier relabelled 0)
    # cluster 1: five outliers and one of class 1 (outlier-pure: OE, weight 1)
    # cluster 2: two of class 1, two outliers (mixed: OE; enhanced only if 0.5 > purity_ood)
    # cluster 3: empty
    ids = torch.tensor([0] * 6 + [1] * 6 + [2] * 4)
    labels = torch.tensor([0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, 1, 1, 1, -1, -1])
    pseudo, oe_weight, weight = group_rules(ids, labels, 4, 2, (0.8, 0.8), 2.0)
    assert pseudo.tolist() == [0, -1, -1, -1]
    assert oe_weight.tolist() == [1.0, 1.0, 1.0, 1.0]  # equal thresholds: never enhanced
    raw = torch.tensor([6**-0.5, 6**-0.5, 4**-0.5])
    assert torch.allclose(weight[:3], raw / raw.mean())
    _, boosted, _ = group_rules(ids, labels, 4, 2, (0.8, 0.4), 2.0)
    assert boosted.tolist() == [1.0, 1.0, 2.0, 1.0]


# -- UDG: the loss -----------------------------------------------------------------------------
def _udg_step(head, seed=0):
    return TrainStep(
        model=None,
        x_in=torch.zeros(1),
        targets=torch.tensor([0]),
        logits_in=torch.tensor([[0.0, 0.0]]),
        logits_out=torch.tensor([[0.0, math.log(3)], [0.0, 0.0]]),
        features_in=torch.tensor([[1.0, 0.0]]),
        features_out=torch.tensor([[2.0, 0.1], [0.0, 3.0]]),
        generator=torch.Generator().manual_seed(seed),
        extra=head,
    )


def test_udg_before_clustering_is_oe():
    objective = oebench.create_objective("udg", clusters=2, bank=64)
    head = objective.attach(2, 2)
    loss = objective.loss(_udg_step(head))
    uniform_ce = (LN2 + (math.log(4) - math.log(3) / 2)) / 2  # logsumexp - mean, per outlier
    assert loss.item() == pytest.approx(LN2 + 0.5 * uniform_ce)


def test_udg_loss_by_hand():
    objective = oebench.create_objective("udg", clusters=2, bank=64)
    head = objective.attach(2, 2)
    with torch.no_grad():
        head.weight.zero_()
    # cluster 0 (direction (1, 0)) is ID-pure class 1; cluster 1 (direction (0, 1)) outliers
    objective._groups = {
        "mean": torch.zeros(2),
        "projection": torch.eye(2),
        "centroids": torch.eye(2),
        "pseudo": torch.tensor([1, -1]),
        "oe_weight": torch.tensor([1.0, 2.0]),
        "weight": torch.tensor([0.5, 1.5]),
    }
    loss, pseudo = objective.grouped_loss(_udg_step(head))
    assert pseudo.tolist() == [1, -1]  # outlier 1 is in cluster 0: relabelled as class 1
    loss_cls = (LN2 + -math.log(0.75)) / 2  # ID sample (class 0) + relabelled outlier
    loss_oe = 2.0 * LN2  # the other outlier, in cluster 1: weight 2 times H(U; uniform)
    loss_aux = LN2 * (0.5 + 0.5 + 1.5) / 3  # zero aux head: CE ln 2, clusters (0, 0, 1)
    assert loss.item() == pytest.approx(loss_cls + 0.5 * loss_oe + 0.1 * loss_aux)


def test_udg_clusters_when_the_bank_fills_and_redraws_its_head():
    objective = oebench.create_objective("udg", clusters=2, bank=3)
    head = objective.attach(2, 2)
    objective.loss(_udg_step(head))  # three samples fill the bank
    groups = objective._groups
    assert groups is not None and groups["centroids"].shape == (2, 2)
    assert 0 < head.weight.abs().max() < 0.1  # N(0, 0.01)
    state = objective.state()
    assert state["bank"][0].shape == (0, 2) and state["runs"] == 1  # emptied after clustering
    again = oebench.create_objective("udg", clusters=2, bank=3)
    again.attach(2, 2)
    again.load_state(state)
    a = objective.grouped_loss(_udg_step(head))[0]
    b = again.grouped_loss(_udg_step(head))[0]
    assert torch.equal(a, b)


def test_same_seed_same_losses():
    for name, options in (("mcd", {}), ("udg", {"clusters": 2, "bank": 3})):
        losses = []
        for _ in range(2):
            objective = oebench.create_objective(name, **options)
            head = objective.attach(2, 2)
            step = _udg_step(head) if name == "udg" else _mcd_step(objective, head)
            losses.append([objective.loss(step).item() for _ in range(3)])
        assert losses[0] == losses[1]


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="warmup"):
        oebench.create_objective("mcd", warmup=1.0)
    with pytest.raises(UserError, match="bank"):
        oebench.create_objective("udg", clusters=10, bank=5)


@pytest.mark.parametrize(
    ("name", "options"), [("mcd", {}), ("udg", {}), ("udg", {"bank": 16, "clusters": 4})]
)
def test_contract_with_training_and_resume(name, options):
    check_objective(name, classes=3, **options)
