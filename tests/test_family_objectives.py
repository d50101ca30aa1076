"""The OE family of training objectives and outlier mining: contract tests for every
registered objective, and losses checked against values derived by hand."""

import json
import math

import pytest
import torch

import oebench
from oebench.contracts.data import TensorImages
from oebench.errors import UserError
from oebench.testing import check_objective

PARAMS = {
    "epochs": 1,
    "batch_size": 4,
    "outlier_batch_size": 6,
    "lr": 0.05,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.0,
}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))


def _step(objective, seed=0):
    """One loss evaluation as the training loop does it: prepare, one forward pass, loss."""
    gen = torch.Generator().manual_seed(seed)
    x_in, y = torch.rand(4, 1, 4, 4, generator=gen), torch.tensor([0, 1, 2, 1])
    x_out = torch.rand(6, 1, 4, 4, generator=gen)
    net = _net()
    extra = objective.prepare_outliers(x_in, y, x_out, gen) if objective.uses_outliers else None
    x = x_in if extra is None else torch.cat([x_in, extra])
    logits = net(x)
    loss = objective(logits[:4], y, logits[4:] if extra is not None else None)
    return loss, net


@pytest.mark.parametrize("name", oebench.list_objectives())
def test_every_objective_keeps_the_contract(name):
    objective = check_objective(name, classes=3)  # loss, gradients, state, 2 epochs, resume
    assert isinstance(objective, oebench.Objective)
    json.dumps(objective.config())  # checkpoint keys need JSON-able configuration


def test_the_oe_family_is_registered_with_citations():
    names = oebench.list_objectives()
    assert {"cross-entropy", "oe", "energy-margin", "mixoe", "logitnorm"} <= set(names)
    from oebench.registry.plugins import get_plugin_manager

    comps = get_plugin_manager().components("objective")
    for name, year in (("energy-margin", "2020"), ("mixoe", "2023"), ("logitnorm", "2022")):
        assert year in comps[name].description


def test_oe_loss_by_hand():
    oe = oebench.create_objective("oe")
    # CE([0, 0], y=0) = ln 2; H(U; softmax([ln 3, 0])) = -(ln 3/4 + ln 1/4) / 2
    loss = oe(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), torch.tensor([[math.log(3), 0.0]]))
    expected = math.log(2) + 0.5 * -(math.log(0.75) + math.log(0.25)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_energy_margin_is_the_energy_paper_loss_by_hand():
    em = oebench.create_objective("energy-margin")
    assert (em.lam, em.m_in, em.m_out) == (0.1, -25.0, -7.0)  # the paper's CIFAR defaults
    logits_in = torch.tensor([[0.0, 0.0], [30.0, 30.0]])
    logits_out = torch.tensor([[10.0, 10.0], [0.0, 0.0]])
    targets = torch.tensor([0, 1])
    # E = -logsumexp: in = (-ln 2, -30 - ln 2), out = (-10 - ln 2, -ln 2)
    ln2 = math.log(2)
    ce = ln2  # both rows have equal logits
    hinge_in = ((-ln2 + 25) ** 2 + 0.0) / 2  # E_in = -30 - ln 2 is below m_in: no penalty
    hinge_out = ((-7 + 10 + ln2) ** 2 + 0.0) / 2  # E_out = -ln 2 is above m_out: no penalty
    expected = ce + 0.1 * (hinge_in + hinge_out)
    assert em(logits_in, targets, logits_out).item() == pytest.approx(expected, rel=1e-6)


def test_logitnorm_by_hand():
    ln = oebench.create_objective("logitnorm")
    assert ln.tau == 0.04
    # z = (3, 4): ||z|| = 5, z / (0.04 * 5) = (15, 20); CE(y=1) = ln(1 + e^-5)
    z = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    loss = ln(z, torch.tensor([1, 0]), None)
    expected = (math.log1p(math.exp(-5)) + 5 + math.log1p(math.exp(-5))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # invariant to the scale of the logits (up to eps)
    assert ln(10 * z, torch.tensor([1, 0]), None).item() == pytest.approx(expected, rel=1e-5)


def test_mixoe_loss_by_hand():
    mix = oebench.create_objective("mixoe")
    assert (mix.alpha, mix.beta, mix.mix) == (1.0, 5.0, "cutmix")
    mix._lam = 0.5  # half ID: soft target for y = 0 with K = 2 is (0.75, 0.25)
    loss = mix(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), torch.tensor([[math.log(3), 0.0]]))
    # softmax([ln 3, 0]) = (3/4, 1/4)
    soft_ce = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert loss.item() == pytest.approx(math.log(2) + 5 * soft_ce, rel=1e-6)


def test_mixoe_cutmix_pastes_an_outlier_box_and_lam_is_the_id_area():
    mix = oebench.create_objective("mixoe")
    x_in, x_out = torch.zeros(3, 1, 8, 8), torch.ones(2, 1, 8, 8)
    for seed in range(20):
        mixed = mix.prepare_outliers(x_in, None, x_out, torch.Generator().manual_seed(seed))
        assert mixed.shape == x_in.shape  # one mixed image per ID image (outliers cycled)
        area = mixed[0, 0].sum().item() / 64  # ones came from the outlier
        assert mix._lam == pytest.approx(1 - area)
        rows, cols = mixed[0, 0].nonzero(as_tuple=True)
        if len(rows):  # a box: every pixel inside the bounding rectangle was pasted
            assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert torch.equal(mixed[0], mixed[2])  # the same box for the whole batch


def test_mixoe_mixup_blends_pairs():
    mix = oebench.create_objective("mixoe", mix="mixup")
    x_in, x_out = (
        torch.zeros(2, 1, 2, 2),
        torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)]),
    )
    mixed = mix.prepare_outliers(x_in, None, x_out, torch.Generator().manual_seed(3))
    lam = mix._lam
    assert 0 < lam < 1
    assert torch.allclose(mixed[0], torch.full((1, 2, 2), 1 - lam))
    assert torch.allclose(mixed[1], torch.full((1, 2, 2), 2 * (1 - lam)))


def test_bad_objective_options_are_user_errors():
    with pytest.raises(UserError, match="mixup"):
        oebench.create_objective("mixoe", mix="blend")
    with pytest.raises(UserError, match="tau"):
        oebench.create_objective("logitnorm", tau=0)


def _train(objective, sampling=None, seed=0):
    from oebench.execute.training import train

    gen = torch.Generator().manual_seed(1)
    ids = TensorImages(torch.rand(12, 1, 4, 4, generator=gen), torch.arange(12) % 3)
    outs = TensorImages(torch.rand(40, 1, 4, 4, generator=gen))
    params = {**PARAMS, **({"outlier_sampling": sampling} if sampling else {})}
    net = _net()
    train(net, ids, objective, params, seed, (1, 4, 4), torch.device("cpu"), outs)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("name", ["mixoe", "energy-margin", "oe"])
def test_oe_family_trains_reproducibly(name):
    a = _train(oebench.create_objective(name))
    b = _train(oebench.create_objective(name))
    assert torch.equal(a, b)
    assert not torch.equal(a, _train(oebench.create_objective(name), seed=1))


# -- outlier mining -------------------------------------------------------------------------
class MeanLogit(torch.nn.Module):
    """Logits (s * mean pixel, 0): MSP rises with |s * mean|, so the ranking is known."""

    def __init__(self, s=10.0):
        super().__init__()
        self.s = s

    def forward(self, x):
        v = self.s * x.flatten(1).mean(1)
        return torch.stack([v, torch.zeros_like(v)], 1)


def test_random_sampling_is_the_uniform_permutation():
    from oebench.execute.sampling import epoch_outliers

    order = epoch_outliers(None, None, list(range(7)), 16, (1, 2, 2), None, _gen(5))
    perm = torch.randperm(7, generator=_gen(5))
    assert torch.equal(order, torch.cat([perm, perm, perm])[:16])


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_ntom_keeps_the_quantile_band_of_the_ranking():
    from oebench.execute.sampling import epoch_outliers

    # outlier i has mean pixel i / 20 -> logit 10 i / 20 = i / 2; MSP grows with i, so
    # -MSP (the OOD score) falls with i: the most ID-like outliers are the highest i.
    values = torch.arange(20, dtype=torch.float32) / 20
    outs = TensorImages(values.view(20, 1, 1, 1).expand(20, 1, 2, 2).clone())
    spec = {"name": "ntom", "pool": 20, "quantile": 0.25}
    order = epoch_outliers(spec, MeanLogit(), outs, 8, (1, 2, 2), torch.device("cpu"), _gen(0))
    # pool = all 20; skip the 5 most ID-like (19..15), keep the next 8: 14..7
    assert sorted(order.tolist()) == list(range(7, 15))
    energy = {**spec, "score": "energy"}
    order = epoch_outliers(energy, MeanLogit(), outs, 8, (1, 2, 2), torch.device("cpu"), _gen(0))
    assert sorted(order.tolist()) == list(range(7, 15))  # energy ranks them the same way here


def test_ntom_pool_smaller_than_needed_repeats_and_model_mode_is_restored():
    from oebench.execute.sampling import epoch_outliers

    outs = TensorImages(torch.rand(30, 1, 2, 2))
    model = MeanLogit().train()
    spec = {"name": "ntom", "pool": 5}
    order = epoch_outliers(spec, model, outs, 12, (1, 2, 2), torch.device("cpu"), _gen(0))
    assert len(order) == 12 and len(set(order.tolist())) == 5
    assert model.training


def test_ntom_trains_any_objective_and_is_reproducible():
    spec = {"name": "ntom", "pool": 24, "quantile": 0.125}
    for name in ("oe", "energy-margin", "mixoe"):
        a = _train(oebench.create_objective(name), spec)
        assert torch.equal(a, _train(oebench.create_objective(name), spec))
    # other outliers, other weights (energy-margin ignores outliers above m_out here)
    assert not torch.equal(
        _train(oebench.create_objective("oe"), spec), _train(oebench.create_objective("oe"))
    )


@pytest.mark.parametrize(
    "sampling, message",
    [
        ('{name = "ntm"}', "unknown outlier_sampling 'ntm'"),
        ('{name = "ntom", quantile = 1.5}', "quantile must be in"),
        ('{name = "ntom", pool = 0}', "pool must be a positive integer"),
        ('{name = "ntom", size = 3}', "has unknown key(s) size"),
        ('"ntom"', "must be a table"),
    ],
)
def test_bad_outlier_sampling_is_a_one_line_error(sampling, message):
    from oebench.bench.parse import parse_benchmark

    text = f"""
id_datasets = ["a"]
models = ["m"]
detectors = ["msp"]
ood_datasets = ["b"]
[[trainings]]
name = "x"
objective = "oe"
outliers = "o"
outlier_sampling = {sampling}
"""
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_benchmark(text)


def test_outlier_sampling_without_outliers_is_an_error():
    from oebench.bench.parse import parse_benchmark

    text = """
id_datasets = ["a"]
models = ["m"]
detectors = ["msp"]
ood_datasets = ["b"]
[[trainings]]
name = "x"
objective = "cross-entropy"
outlier_sampling = {name = "ntom"}
"""
    with pytest.raises(UserError, match="needs 'outliers'"):
        parse_benchmark(text)
