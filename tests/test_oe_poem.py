"""POEM outlier mining (``outlier_sampling = {name = "poem"}``): the Bayesian linear
regression's closed-form posterior, Thompson sampling, the boundary rule, and training."""

import pytest
import torch

import oebench
from oebench.contracts.data import TensorImages
from oebench.errors import UserError
from oebench.execute.sampling import (
    blr_posterior,
    epoch_outliers,
    nearest_boundary,
    thompson_sample,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_posterior_is_the_closed_form_on_a_2d_case():
    # Z^T Z = [[2, 1], [1, 2]]; sigma_n = 1, sigma = 2: A = [[2.5, 1], [1, 2.5]], det 5.25
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([-1.0, 1.0, 1.0])  # Z^T y = (0, 2)
    mean, cov = blr_posterior(z, y, sigma=2.0, sigma_n=1.0)
    inv = torch.tensor([[2.5, -1.0], [-1.0, 2.5]], dtype=torch.float64) / 5.25
    assert torch.allclose(mean, torch.tensor([-2.0, 5.0], dtype=torch.float64) / 5.25)
    assert torch.allclose(cov, 2.0 * inv)  # POEM's sigma * A^-1
    # sigma_n scales the data term: sigma_n = 2 halves Z^T Z and Z^T y
    mean, cov = blr_posterior(z, y, sigma=2.0, sigma_n=2.0)
    inv = torch.tensor([[1.5, -0.5], [-0.5, 1.5]], dtype=torch.float64) / 2.0  # A = [[1.5, .5]..]
    assert torch.allclose(mean, inv @ torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(cov, 2.0 * inv)


def test_thompson_sample_is_mean_plus_cholesky_times_the_drawn_normal():
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[4.0, 2.0], [2.0, 5.0]], dtype=torch.float64)
    # chol(cov) = [[2, 0], [1, 2]]: 2 * 2 = 4, 1 * 2 = 2, 1 + 2 * 2 = 5
    e = torch.randn(2, generator=_gen(3), dtype=torch.float64)
    w = thompson_sample(mean, cov, _gen(3))
    assert torch.allclose(w, mean + torch.tensor([2 * e[0], e[0] + 2 * e[1]]))
    gen = _gen(0)
    draws = torch.stack([thompson_sample(mean, cov, gen) for _ in range(4000)])
    assert torch.allclose(draws.mean(0), mean, atol=0.15)
    assert torch.allclose(torch.cov(draws.T), cov, atol=0.4)


def test_the_boundary_rule_keeps_the_points_nearest_the_sampled_hyperplane():
    # w = (1, -1): the boundary is the line x = y; |w . z| = |x - y|
    z = torch.tensor([[0.0, 0.0], [1.0, 0.9], [2.0, 0.0], [0.0, 3.0], [5.0, 5.2], [-1.0, 1.0]])
    w = torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert nearest_boundary(z, w, 3).tolist() == [0, 1, 4]  # distances 0, 0.1, 0.2
    assert nearest_boundary(z, -w, 4).tolist() == [0, 1, 4, 2]  # the sign does not matter


class TwoFeatures(torch.nn.Module):
    """Features: the first two pixels; logits from a linear head."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(2, 2)

    def forward_features(self, x):
        return x.flatten(1)[:, :2]

    def forward(self, x):
        return self.head(self.forward_features(x))


def _images(points):
    return TensorImages(torch.tensor(points).view(-1, 1, 1, 2), torch.zeros(len(points)).long())


def test_poem_mines_the_outliers_that_look_like_id():
    # ID features all (1, 0), outliers mostly (0, 1): the fit w is near (-3, 3), so the few
    # outliers at (1, 1) (w . z near 0) are the boundary ones; (0, 1) scores near 3.
    ids = _images([[1.0, 0.0]] * 200)
    points = [[0.0, 1.0]] * 200
    for i in (10, 70, 130, 190):
        points[i] = [1.0, 1.0]
    outs, model = _images(points), TwoFeatures().train()
    spec = {"name": "poem", "pool": 200}
    for seed in range(5):
        order = epoch_outliers(
            spec, model, outs, 4, (1, 1, 2), torch.device("cpu"), _gen(seed), train_set=ids
        )
        assert sorted(order.tolist()) == [10, 70, 130, 190]
    assert model.training  # eval mode for the features only
    # another target scale (conf) scales w and keeps the same boundary
    spec = {"name": "poem", "pool": 200, "conf": 1.0}
    order = epoch_outliers(spec, model, outs, 4, (1, 1, 2), None, _gen(0), train_set=ids)
    assert sorted(order.tolist()) == [10, 70, 130, 190]


def test_poem_draws_the_pool_from_the_budget_subset_and_needs_features():
    ids = _images([[1.0, 0.0]] * 20)
    outs = _images([[0.0, 1.0]] * 30)
    subset = torch.tensor([2, 5, 7])
    order = epoch_outliers(
        {"name": "poem"}, TwoFeatures(), outs, 9, (1, 1, 2), None, _gen(0), subset, ids
    )
    assert len(order) == 9 and set(order.tolist()) == {2, 5, 7}
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with pytest.raises(UserError, match="needs a model with forward_features"):
        epoch_outliers({"name": "poem"}, plain, outs, 4, (1, 1, 2), None, _gen(0), None, ids)


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
        self.head = torch.nn.Linear(5, 3)

    def forward_features(self, x):
        return self.body(x).relu()

    def forward_head(self, f):
        return self.head(f)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _train(objective, sampling=None, seed=0):
    from oebench.execute.training import train

    params = {
        "epochs": 2,
        "batch_size": 4,
        "outlier_batch_size": 6,
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 0.0,
        **({"outlier_sampling": sampling} if sampling else {}),
    }
    gen = _gen(1)
    ids = TensorImages(torch.rand(12, 1, 4, 4, generator=gen), torch.arange(12) % 3)
    outs = TensorImages(torch.rand(60, 1, 4, 4, generator=gen))
    net = SmallNet()
    train(net, ids, objective, params, seed, (1, 4, 4), torch.device("cpu"), outs)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_poem_trains_any_outlier_objective_reproducibly():
    spec = {"name": "poem", "pool": 36}
    for name in ("oe", "energy-margin", "mixoe"):
        a = _train(oebench.create_objective(name), spec)
        assert torch.equal(a, _train(oebench.create_objective(name), spec))
    oe = oebench.create_objective
    poem = _train(oe("oe"), spec)
    assert not torch.equal(poem, _train(oe("oe")))  # other outliers than uniform draws
    assert not torch.equal(poem, _train(oe("oe"), {"name": "ntom", "pool": 36}))
    assert not torch.equal(poem, _train(oe("oe"), spec, seed=1))


@pytest.mark.parametrize(
    "sampling, message",
    [
        ({"sigma": 0}, "t: poem sigma must be a positive number, got 0"),
        ({"sigma_n": -0.5}, "t: poem sigma_n must be a positive number, got -0.5"),
        ({"conf": "high"}, "t: poem conf must be a positive number, got 'high'"),
        ({"sigma": True}, "t: poem sigma must be a positive number, got True"),
        ({"pool": 0}, "t: poem pool must be a positive integer, got 0"),
        ({"id_pool": 2.5}, "t: poem id_pool must be a positive integer, got 2.5"),
        ({"quantile": 0.1}, "has unknown key(s) quantile"),
    ],
)
def test_bad_poem_options_are_one_line_errors(sampling, message):
    from oebench.bench.sampling import check_sampling

    with pytest.raises(UserError) as caught:
        check_sampling({"name": "poem", **sampling}, "t")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_misspelt_poem_is_a_parse_error_with_a_hint():
    from oebench.bench.parse import parse_benchmark

    text = """
id_datasets = ["a"]
models = ["m"]
detectors = ["msp"]
ood_datasets = ["b"]
[[trainings]]
name = "x"
objective = "oe"
outliers = "o"
outlier_sampling = {name = "poen", sigma = 0}
"""
    with pytest.raises(UserError, match=r"unknown outlier_sampling 'poen' \(did you mean 'poem'"):
        parse_benchmark(text)


def test_good_poem_options_pass():
    from oebench.bench.sampling import check_sampling

    check_sampling({"name": "poem"}, "t")
    check_sampling(
        {"name": "poem", "pool": 10, "id_pool": 5, "sigma": 1, "sigma_n": 0.1, "conf": 2.0}, "t"
    )
