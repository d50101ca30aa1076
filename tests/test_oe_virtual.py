"""VOS and NPOS: the queue, each selection rule and loss term by hand, and the contract."""

import math

import pytest
import torch
from oebench_plugins import oe_virtual as ov

import oebench
from oebench.contracts.objective import TrainStep
from oebench.errors import UserError
from oebench.testing import check_objective


def _authors_queues(batches, classes, size):
    """The authors' per-sample loop: fill each class to ``size`` until all are full, then
    shift out the oldest and append."""
    queues, full = [[] for _ in range(classes)], False
    for feats, ys in batches:
        full = all(len(q) == size for q in queues)
        for f, y in zip(feats.tolist(), ys.tolist(), strict=True):
            if full:
                queues[y] = [*queues[y][1:], f]
            elif len(queues[y]) < size:
                queues[y].append(f)
    return queues


def test_queues_hold_what_the_authors_loop_holds():
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(n, 1, generator=gen), torch.randint(0, 2, (n,), generator=gen))
        for n in (3, 5, 1, 7, 4, 6)
    ]
    q = ov.ClassQueues(2, 3, 1, "cpu")
    for feats, ys in batches:
        q.push(feats, ys)
    expected = _authors_queues(batches, 2, 3)
    for c in range(2):
        assert sorted(q.items()[c, :, 0].tolist()) == sorted(x[0] for x in expected[c])


def test_vos_shared_gaussian_by_hand():
    queues = torch.tensor([[[0.0], [2.0]], [[10.0], [12.0]]])
    means, chol = ov.shared_gaussian(queues, eps=1e-4)
    assert means.flatten().tolist() == [1.0, 11.0]
    assert chol.item() == pytest.approx(math.sqrt(1.0001))


def test_vos_keeps_the_least_likely_candidate():
    mean, chol = torch.tensor([[1.0, -1.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.5], [0.5, 0.5]]])
    # samples (3, -1), (1, 0.5), (2, -0.5); cov diag(4, 1): -log p - const = 0.5, 1.125, 0.25
    kept = ov.least_likely(mean, chol, z, select=1)
    assert kept.tolist() == [[1.0, 0.5]]
    two = ov.least_likely(mean, chol, z, select=2)
    assert two.tolist() == [[1.0, 0.5], [3.0, -1.0]]


def test_weighted_energy_and_vos_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3)]])
    assert ov.weighted_logsumexp(logits, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(
        math.log(4)
    )
    assert ov.weighted_logsumexp(logits, torch.tensor([[2.0, -1.0]])).item() == pytest.approx(
        math.log(2)
    )
    extra = ov.VOS().attach(4, 2)
    with torch.no_grad():
        extra["weight_energy"].weight.fill_(1.0)
        extra["logistic"].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        extra["logistic"].bias.zero_()
    # ID energy ln 4 -> logits (ln 4, -ln 4), label 1: CE = ln 17; virtual ln 2, label 0: ln 5/4
    loss = ov.vos_uncertainty(logits, torch.zeros(1, 2), extra)
    assert loss.item() == pytest.approx((math.log(17) + math.log(5 / 4)) / 2, rel=1e-6)


def _angles(*degrees):
    rad = torch.tensor(degrees) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1)


def test_npos_boundary_is_the_point_with_the_largest_kth_distance():
    bank = 3 * _angles(0, 10, 20, 90)[None]  # norms do not matter: the search normalises
    dist = ov.kth_distance(bank, bank, k=2)  # k = 2: the point itself is the first
    assert dist[0, 3].item() == pytest.approx(2 - 2 * math.cos(math.radians(70)), rel=1e-5)
    assert ov.boundary(bank, k=2, select=1).tolist() == [[3]]


def test_npos_keeps_the_farthest_candidates():
    bank = _angles(0, 10, 20)[None]
    candidates = _angles(5, 45, 180)[None, None]  # one class, one boundary point
    assert ov.farthest(candidates, bank, k=1, keep=1)[0].tolist() == pytest.approx(
        [-1.0, 0.0], abs=1e-6
    )
    two = ov.farthest(candidates, bank, k=1, keep=2)
    assert two[1].tolist() == pytest.approx(_angles(45)[0].tolist(), abs=1e-6)


def _steps(objective, epoch=0, epochs=1, n=4, seed=0):
    """Three steps of a linear model on random features, as the training loop calls loss."""
    torch.manual_seed(0)
    head = torch.nn.Linear(3, 2)
    model = type("M", (), {"forward_head": staticmethod(head)})
    extra = objective.attach(3, 2)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for i in range(3):
        f = torch.rand(n, 3, generator=gen)
        y = torch.arange(n) % 2
        logits = head(f)
        step = TrainStep(model, f, y, logits, features_in=f, generator=gen, extra=extra)
        step.step, step.epoch, step.epochs = i, epoch, epochs
        ce = torch.nn.functional.cross_entropy(logits, y)
        losses.append((objective.loss(step), ce))
    return losses


@pytest.mark.parametrize(
    "objective",
    [
        lambda **kw: ov.VOS(sample_number=2, sample_from=20, **kw),
        lambda **kw: ov.NPOS(sample_number=2, k=1, select=2, sample_from=10, **kw),
    ],
)
def test_plain_ce_until_the_queues_fill_and_before_start(objective):
    # 2 per class per step, 2 per queue: step 0 fills, step 1 is the first with the term
    (l0, ce0), (l1, ce1), _ = _steps(objective(start=0.0))
    assert torch.equal(l0, ce0) and not torch.allclose(l1, ce1)
    for loss, ce in _steps(objective(start=0.5), epoch=0, epochs=2):  # full, before start
        assert torch.equal(loss, ce)
    for loss, ce in _steps(objective(start=0.5), epoch=1, epochs=2)[1:]:
        assert not torch.allclose(loss, ce)


@pytest.mark.parametrize("name", ["vos", "npos"])
def test_same_seed_same_loss(name):
    small = {"vos": {"sample_number": 2, "sample_from": 50}, "npos": {"sample_number": 2, "k": 1,
             "select": 2, "sample_from": 10}}[name]  # fmt: skip
    runs = [_steps(oebench.create_objective(name, start=0.0, **small), seed=s) for s in (0, 0, 1)]
    a, b, c = ([loss.detach().item() for loss, _ in r] for r in runs)
    assert a == b and a != c


def test_vos_and_npos_keep_the_contract():
    check_objective("vos", classes=3)
    check_objective("npos", classes=3)
    # small queues, from the first epoch: the synthesis runs in both epochs and on resume
    check_objective("vos", classes=3, sample_number=2, sample_from=50, start=0.0)
    check_objective("npos", classes=3, sample_number=4, k=2, select=2, sample_from=20, start=0.0)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="select"):
        ov.VOS(select=0)
    with pytest.raises(UserError, match="k"):
        ov.NPOS(sample_number=10, k=11)
