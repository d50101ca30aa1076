"""Gram-matrix and multi-layer Mahalanobis detectors: hand-derived answers and the engine's
``fit_inputs`` step (ID training images only)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY
from oebench_plugins.model_layers import Gram, gram_rows
from oebench_plugins.model_maps import layer_maps
from torch import nn

from oebench import create_detector
from oebench.bench.matrix import Ref
from oebench.bench.parse import load_benchmark
from oebench.contracts.detector import Outputs
from oebench.contracts.model import Classifier
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner


class OneMap(nn.Module):
    """ReLU map -> spatial mean features -> ``fc``: one layer for hand calculations."""

    def __init__(self, weight: list[list[float]], bias: list[float], pool: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), *([nn.AvgPool2d((1, 2))] if pool else []))
        self.fc = nn.Linear(len(weight[0]), len(weight))
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.copy_(torch.tensor(bias))

    def forward_features(self, x):
        return self.body(x).mean((2, 3))

    def forward_head(self, f):
        return self.fc(f)


def model_of(net: nn.Module, channels: int = 1) -> Classifier:
    return Classifier(net, [0.0] * channels, [1.0] * channels).double().eval()


def pixels(*rows: tuple[float, ...]) -> torch.Tensor:
    """(N, 1, 1, W) images from rows of pixel values."""
    return torch.tensor(rows, dtype=torch.float64).view(len(rows), 1, 1, -1)


def test_gram_rows_by_hand():
    f = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]]).view(1, 2, 1, 2)
    # G1 = F F^T = [[5, 1], [1, 10]]; G2 on F^2 = [[1, 4], [9, 1]] is [[17, 13], [13, 82]];
    # G3 on F^3 = [[1, 8], [27, -1]] is [[65, 19], [19, 730]]
    want = [[6, 11], [math.sqrt(30), math.sqrt(95)], [84 ** (1 / 3), 749 ** (1 / 3)]]
    np.testing.assert_allclose(gram_rows(f, 3)[0].numpy(), want, rtol=1e-12)


def test_gram_signed_root_of_negative_rows():
    f = torch.tensor([1.0, -2.0, 3.0, 0.0]).view(1, 2, 1, 2)  # rows (1, -2), (3, 0)
    # G1 = [[5, 3], [3, 9]] -> (8, 12); F^3 rows (1, -8), (27, 0): G3 = [[65, 27], [27, 729]]
    np.testing.assert_allclose(
        gram_rows(f, 3)[0, [0, 2]].numpy(), [[8, 12], [92 ** (1 / 3), 756 ** (1 / 3)]]
    )


def test_gram_bounds_and_deviation_by_hand():
    model = model_of(OneMap([[1.0]], [0.0]))
    det = Gram(powers=2, holdout=0)
    det.fit(None, None)
    det.fit_inputs(model, [pixels((1, 0), (0, 1)), pixels((1, 1))])
    # one channel (a, b): p=1 row a^2 + b^2, p=2 row sqrt(a^4 + b^4); bounds [1, 2], [1, sqrt 2]
    got = det.score_inputs(model, [pixels((2, 0), (0.5, 0), (1, 0.5))])
    r2 = math.sqrt(2)
    want = [
        (4 - 2) / (2 + 1e-6) + (4 - r2) / (r2 + 1e-6),
        (1 - 0.25) / (1 + 1e-6) * 2,
        0.0,  # 1.25 in [1, 2], sqrt(1.0625) in [1, sqrt 2]
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_gram_normalises_by_held_out_training_images():
    model = model_of(OneMap([[1.0]], [0.0]))
    train = [pixels((2, 0), (1, 0), (0.5, 0)), pixels((1, 1))]  # indices 0, 2 held out
    det = Gram(powers=1, holdout=2)
    det.fit(None, None)
    det.fit_inputs(model, train)
    # bounds [1, 2] from (1, 0), (1, 1); held out: 4 -> 2 / 2 = 1, 0.25 -> 0.75 / 1; mean 0.875
    got = det.score_inputs(model, [pixels((2, 0), (1, 0))])
    np.testing.assert_allclose(got, [1 / 0.875, 0.0], rtol=1e-5)

    capped = Gram(powers=1, holdout=2, max_holdout=1)
    capped.fit(None, None)
    capped.fit_inputs(model, train)  # only index 0 held out: bounds [0.25, 2], mean 1
    np.testing.assert_allclose(capped.score_inputs(model, [pixels((2, 0))]), [1.0], rtol=1e-5)


def test_gram_bounds_are_per_predicted_class():
    # logits (f - 1, 1 - f) with f the mean pixel: class 0 when f > 1
    model = model_of(OneMap([[1.0], [-1.0]], [-1.0, 1.0]))
    det = Gram(powers=1, holdout=0)
    det.fit(None, None)
    det.fit_inputs(model, [pixels((1, 0), (0, 1), (2, 2), (3, 1))])
    # class 1 rows: 1, 1 -> [1, 1]; class 0 rows: 8, 10 -> [8, 10]
    got = det.score_inputs(model, [pixels((1.5, 0)), pixels((3, 0))])
    np.testing.assert_allclose(got, [1.25, 0.0], rtol=1e-5)  # 2.25 in class 1; 9 in class 0


def test_gram_needs_fit_inputs_before_scoring():
    det = create_detector("gram")
    det.fit(None, None)
    with pytest.raises(ValueError, match="fit_inputs"):
        det.score_inputs(model_of(OneMap([[1.0]], [0.0])), [pixels((1, 0))])


def test_layer_maps_takes_the_last_map_at_each_size():
    from oebench import create_model

    model = Classifier(create_model("small-cnn", 3, (1, 28, 28), width=4), [0.5], [0.25]).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    seen = []
    handles = [r.register_forward_hook(lambda m, i, o: seen.append(o.clone())) for r in relus]
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        maps, logits = layer_maps(model, x, 4)
    for h in handles:
        h.remove()
    assert [tuple(m.shape[1:]) for m in maps] == [(4, 28, 28), (8, 14, 14), (16, 7, 7)]
    for got, want in zip(maps, seen[-3:], strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(logits, model(x))
    with torch.no_grad():
        assert [m.shape[1] for m in layer_maps(model, x, 2)[0]] == [8, 16]


def test_mahalanobis_ensemble_by_hand():
    # two stages, a (2, 2) ReLU map then a (2, 1) average pool: both pool to the mean pixel v.
    # Class 0: v = 0, 2; class 1: v = 10, 12 -> means 1, 11, tied variance 1, rank 1
    model = model_of(OneMap([[1.0]], [0.0], pool=True))

    def images(*means):
        return torch.tensor(means, dtype=torch.float64).view(-1, 1, 1, 1).repeat(1, 1, 2, 2)

    det = create_detector("mahalanobis-ensemble")
    det.fit(Outputs(np.zeros((4, 1)), labels=np.array([0, 0, 1, 1])), None)
    det.fit_inputs(model, [images(0, 2, 10), images(12)])
    with torch.no_grad():
        assert len(layer_maps(model, images(1), 4)[0]) == 2
    got = det.score_inputs(model, [images(4, 1, 6)])
    # per layer min((v - 1)^2, (v - 11)^2) / rank 1, two layers
    np.testing.assert_allclose(got, [2 * 9, 0, 2 * 25], rtol=1e-9, atol=1e-9)


def test_mahalanobis_ensemble_rank_weights_and_tied_covariance():
    # 2 channels, one stage: x = (v, 3 v) spans a rank-1 covariance; weight 1 / rank = 1
    model = model_of(OneMap([[1.0, 0.0]], [0.0]), channels=2)

    def images(*vs):
        return (
            torch.tensor([[v, 3 * v] for v in vs], dtype=torch.float64)
            .view(-1, 2, 1, 1)
            .repeat(1, 1, 1, 2)
        )

    det = create_detector("mahalanobis-ensemble", layers=1)
    det.fit(Outputs(np.zeros((4, 1)), labels=np.array([0, 0, 1, 1])), None)
    det.fit_inputs(model, [images(0, 2, 10, 12)])
    # along the span, variance of v is 1 (as above); distance in v units is unchanged
    np.testing.assert_allclose(det.score_inputs(model, [images(4, 8)]), [9, 9], rtol=1e-9)


def test_mahalanobis_ensemble_rejects_images_without_labels():
    model = model_of(OneMap([[1.0]], [0.0]))
    det = create_detector("mahalanobis-ensemble")
    det.fit(Outputs(np.zeros((2, 1)), labels=np.array([0, 1])), None)
    with pytest.raises(ValueError, match="training images"):
        det.fit_inputs(model, [pixels((1, 0), (0, 1), (1, 1))])


def test_runner_passes_only_id_training_images_to_fit_inputs(monkeypatch):
    from oebench.execute.outputs import iterate_batches

    seen: list[torch.Tensor] = []
    fit_inputs = Gram.fit_inputs

    def spy(self, model, batches):
        kept = [x.clone() for x in batches]
        seen.extend(kept)
        return fit_inputs(self, model, kept)

    monkeypatch.setattr(Gram, "fit_inputs", spy)
    bench = load_benchmark(str(TINY))
    detectors = [Ref("gram"), Ref("mahalanobis-ensemble")]
    bench = replace(bench, detectors=detectors, trainings=bench.trainings[:1])
    runner = Runner(bench, device="cpu")
    rows = run_here(runner)
    cell_ref, shape = bench.id_datasets[0], (1, 28, 28)
    train = runner.sources.load("dataset", cell_ref, "train", None, 0)
    want = torch.cat([x for x, _ in iterate_batches(train, 500, shape, torch.device("cpu"))])
    assert len(seen) >= 1
    torch.testing.assert_close(torch.cat(seen), want, rtol=0, atol=0)
    assert len(want) != len(runner.sources.load("dataset", cell_ref, "test", None, 0))
    aurocs = {(r["detector"], r["ood_dataset"]): r["auroc"] for r in rows}
    assert {d for d, _ in aurocs} == {"gram", "mahalanobis-ensemble"}
    assert all(0 <= v <= 100 for v in aurocs.values())


def test_parity_gram_statistics_and_deviation_with_pytorch_ood(pood):
    """The shared formulas agree with pytorch-ood's Gram: the row sums of each p-th order Gram
    matrix and the relative out-of-bounds deviation (the pipelines differ by design: which
    layers, the poles, and how the layer norms are estimated; see the README's row)."""
    from oebench_plugins.model_layers import _gram_deviation, gram_rows

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 5, 4, 4, generator=g, dtype=torch.float64)  # signed, like BN outputs
    rows = gram_rows(maps, 4)
    for p in range(1, 5):
        want = pood.Gram._gram_vector(maps, p)
        torch.testing.assert_close(rows[:, p - 1], want, rtol=1e-10, atol=1e-12)
    low, high = rows.min(0).values - 0.5, rows.max(0).values - 1.0  # some rows outside
    got = _gram_deviation(rows[:, :1], low[:1].unsqueeze(0), high[:1].unsqueeze(0))
    want = pood.Gram._deviation(rows[:, 0], low[0], high[0])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert bool((got > 0).any())
