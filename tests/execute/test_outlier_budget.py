"""`outlier_budget`: a training sees only a fixed, seeded subset of its outlier source."""

import pytest
import torch

import oebench
from oebench.contracts.data import TensorImages
from oebench.errors import UserError

PARAMS = {
    "epochs": 2,
    "batch_size": 4,
    "outlier_batch_size": 6,
    "lr": 0.05,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.0,
}


def _train(monkeypatch, budget, seed=0, sampling=None, n_out=50):
    """Train briefly; returns the set of outlier indices every outlier read touched."""
    import oebench.execute.outputs as outputs
    import oebench.execute.training as training

    gen = torch.Generator().manual_seed(1)
    ids = TensorImages(torch.rand(24, 1, 4, 4, generator=gen), torch.arange(24) % 3)
    outs = TensorImages(torch.rand(n_out, 1, 4, 4, generator=gen))
    seen: set[int] = set()
    real = outputs.iterate_batches

    def recording(dataset, batch_size, shape, device, order=None):
        if dataset is outs:  # every read of the outlier source, training and mining alike
            seen.update(range(len(outs)) if order is None else order.tolist())
        return real(dataset, batch_size, shape, device, order=order)

    monkeypatch.setattr(training, "iterate_batches", recording)
    monkeypatch.setattr(outputs, "iterate_batches", recording)
    params = {**PARAMS, "outlier_budget": budget}
    if sampling is not None:
        params["outlier_sampling"] = sampling
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    objective = oebench.create_objective("oe")
    training.train(net, ids, objective, params, seed, (1, 4, 4), torch.device("cpu"), outs)
    return seen


def test_a_count_budget_bounds_the_distinct_outliers_seen(monkeypatch):
    unbudgeted = _train(monkeypatch, None)
    assert len(unbudgeted) > 30  # 2 epochs x 6 steps x 6 outliers from 50: most of them
    seen = _train(monkeypatch, 7)
    assert len(seen) == 7  # 72 draws, all from the 7 of the subset


def test_a_fraction_budget_and_the_seed_fix_the_subset(monkeypatch):
    from oebench.execute.sampling import budget_subset

    seen = _train(monkeypatch, 0.2)
    assert seen == set(budget_subset(0.2, 50, 0).tolist()) and len(seen) == 10
    assert _train(monkeypatch, 0.2) == seen  # same seed, same subset
    assert _train(monkeypatch, 0.2, seed=1) != seen
    assert len(_train(monkeypatch, 1.0)) > 30  # the whole source


def test_ntom_mines_its_pool_from_the_budgeted_subset(monkeypatch):
    from oebench.execute.sampling import budget_subset

    spec = {"name": "ntom", "pool": 40, "quantile": 0.25}
    seen = _train(monkeypatch, 12, sampling=spec)
    assert seen == set(budget_subset(12, 50, 0).tolist())


def test_budget_sizes_and_the_too_large_error():
    from oebench.execute.sampling import budget_size

    assert budget_size(0.1, 1000) == 100 and budget_size(0.0001, 1000) == 1
    assert budget_size(1.0, 1000) == 1000 and budget_size(5, 1000) == 5
    with pytest.raises(UserError, match="outlier_budget = 2000 .* has 1000 images"):
        budget_size(2000, 1000)


def test_the_key_changes_only_when_set_and_values_are_checked():
    from oebench.bench.matrix import canonical_hash
    from oebench.bench.sweep import parse_values, with_value
    from oebench.bench.validation import settings_problems, size_problems
    from oebench.keys.cells import training_config

    bench = oebench.load_benchmark("quickstart")
    oe = bench.training("oe")
    plain = training_config(bench, oe)
    assert "outlier_budget" not in plain["params"]  # existing keys unchanged
    keys = {canonical_hash(plain)}
    for value in parse_values("100,1000,0.5"):  # what `--set trainings.oe.outlier_budget=` gives
        swept = with_value(bench, "trainings.oe.outlier_budget", value)
        assert settings_problems(swept) == []
        keys.add(canonical_hash(training_config(swept, swept.training("oe"))))
    assert len(keys) == 4
    for bad in (0, 1.5, True, "all"):
        (line,) = settings_problems(with_value(bench, "trainings.oe.outlier_budget", bad))
        assert line.startswith("training 'oe': outlier_budget = ")
    big = with_value(bench, "trainings.oe.outlier_budget", 1000)
    none = lambda ref: None  # noqa: E731
    (line,) = size_problems(big, none, none, lambda ref: 300)
    assert "outlier_budget = 1000" in line and "which has 300 images" in line
    assert size_problems(big, none, none, lambda ref: 1000) == []
