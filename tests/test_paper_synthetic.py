"""The OE paper's synthetic OOD sets reach the network as the reference code builds them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import oebench
from oebench.bench.parse import parse_benchmark
from oebench.errors import UserError
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner

CIFAR = ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NONE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
MNIST = ((0.1307,), (0.3081,))
NORMS = {"cifar": CIFAR, "imagenet": IMAGENET, "none": NONE, "mnist": MNIST}
N = 300
RECEIVED: list[torch.Tensor] = []


class SpyID(oebench.ImageSource):
    """A tiny labelled ID dataset with the normalisation it is given."""

    splits = ("train", "test")
    num_classes = 2

    def __init__(self, norm: str):
        self.mean, self.std = NORMS[norm]
        self.shape = (len(self.mean), 32, 32)

    def load(self, split, *, shape=None, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return oebench.TensorImages(
            torch.rand(40, *self.shape, generator=gen), torch.arange(40) % 2
        )


def spy_net(num_classes, shape):
    """Records every tensor it receives (after the Classifier's normalisation)."""

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, num_classes)

        def forward_features(self, x):
            RECEIVED.append(x.detach().clone())
            return x.flatten(1)[:, :4]

        def forward_head(self, f):
            return self.fc(f)

    return Spy()


class Plugin:
    @oebench.hookimpl
    def register_datasets(self, register):
        register("spy-id", SpyID)

    @oebench.hookimpl
    def register_models(self, register):
        register("spy-net", spy_net)


@pytest.fixture(autouse=True)
def _plugin():
    from oebench.registry.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.register(Plugin(), name="paper-spy-plugin")
    yield
    pm.unregister(name="paper-spy-plugin")


def received(norm: str, ood: list[str]) -> dict[str, np.ndarray]:
    """What the network receives for each OOD set, under an ID dataset with ``norm``."""
    sets = ", ".join(f'{{ name = "{name}", n = {N} }}' for name in ood)
    bench = parse_benchmark(
        f"""
        name = "spy"
        id_datasets = [{{ name = "spy-id", norm = "{norm}" }}]
        models = ["spy-net"]
        detectors = ["msp"]
        ood_datasets = [{sets}]
        [training]
        evaluate_only = true
        eval_batch_size = 1000
        [[trainings]]
        name = "baseline"
        objective = "cross-entropy"
        """
    )
    RECEIVED.clear()
    run_here(Runner(bench, device="cpu", use_cache=False))
    # one forward pass per dataset, in order: the ID test set, then each OOD set (the engine
    # may probe the model on a few samples first)
    passes = RECEIVED[-len(ood) - 1 :]
    assert [len(x) for x in passes] == [40] + [N] * len(ood)
    return {name: x.numpy().astype(np.float64) for name, x in zip(ood, passes[1:], strict=True)}


def clipped_normal_std(sigma: float, bound: float) -> float:
    """Std of clip(N(0, sigma), -bound, bound), from the truncated-moment formula."""
    a = bound / sigma
    inside = math.erf(a / math.sqrt(2))  # P(|Z| < a)
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    second = sigma**2 * (inside - 2 * a * pdf) + bound**2 * (1 - inside)
    return math.sqrt(second)


@pytest.mark.parametrize("norm", ["cifar", "imagenet"])
def test_normalised_id_gets_the_minus_one_to_one_recipes(norm):
    got = received(norm, ["gaussian", "rademacher", "blobs"])
    g = got["gaussian"]
    assert g.min() >= -1 - 2e-7 and g.max() <= 1 + 2e-7
    assert abs(g.mean()) < 0.005
    assert g.std() == pytest.approx(clipped_normal_std(0.5, 1.0), abs=0.004)  # 0.4797
    assert np.mean(np.abs(g) > 1 - 1e-6) == pytest.approx(0.0455, abs=0.003)  # clipped mass
    for c in range(3):  # no per-channel offset left over from the normalisation
        assert abs(g[:, c].mean()) < 0.01
    r = got["rademacher"]
    assert np.abs(np.abs(r) - 1).max() <= 2.4e-7  # ±1 to float32 rounding
    assert (r > 0).mean() == pytest.approx(0.5, abs=0.005)
    b = got["blobs"]
    low = np.abs(b + 1) <= 2.4e-7  # blurred values < 0.75 -> 0 -> -1
    assert low.mean() > 0.3 and (~low).mean() > 0.05
    assert b[~low].min() >= 2 * 0.75 - 1 - 1e-6 and b.max() <= 1 + 2.4e-7


def test_unnormalised_id_gets_the_zero_to_one_recipes_svhn():
    got = received("none", ["gaussian", "rademacher", "blobs"])
    g = got["gaussian"]  # clip(N(0.5, 0.5), 0, 1)
    assert g.min() == 0 and g.max() == 1
    assert g.mean() == pytest.approx(0.5, abs=0.005)
    assert g.std() == pytest.approx(clipped_normal_std(0.5, 0.5), abs=0.004)  # 0.3592
    r = got["rademacher"]
    assert set(np.unique(r)) == {0.0, 1.0}
    b = got["blobs"]
    assert b.min() == 0 and b.max() <= 1 and b[b > 0].min() >= 0.75 - 1e-7


def test_pixel_variants_keep_the_old_amplitude_under_cifar_normalisation():
    got = received("cifar", ["gaussian-pixel", "rademacher-pixel"])
    # clip(N(0.5, 0.25), 0, 1) pixels divided by CIFAR's std (~0.25): about twice the paper's
    assert got["gaussian-pixel"].std() > 1.8 * clipped_normal_std(0.5, 1.0)
    r = got["rademacher-pixel"]
    for c in range(3):  # (0 - mean) / std and (1 - mean) / std: ±2, offset per channel
        lo, hi = -CIFAR[0][c] / CIFAR[1][c], (1 - CIFAR[0][c]) / CIFAR[1][c]
        np.testing.assert_allclose(np.unique(r[:, c]), [lo, hi], rtol=1e-6)


def test_dataset_still_yields_images_in_unit_range():
    data = oebench.create_dataset("gaussian", n=50).load("test", shape=(3, 32, 32), norm=CIFAR)
    x = data.images
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    # default when nobody says: ImageSource's (0.5, 0.5), so pixels are (z + 1) / 2
    plain = oebench.create_dataset("rademacher", n=10).load("test", shape=(1, 8, 8))
    assert set(plain.images.unique().tolist()) == {0.0, 1.0}


def test_recipe_that_is_no_image_under_the_id_normalisation_is_refused():
    with pytest.raises(UserError, match="gaussian-pixel|-pixel"):
        received("mnist", ["gaussian"])
    with pytest.raises(UserError, match="space must be one of"):
        oebench.create_dataset("blobs", space="pixels")
