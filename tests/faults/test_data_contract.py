"""Issue 20 (items 4, 5, NaN training): every item of a lazy split checked, a split's content
compared across reads, the logit width checked before training, a diverged training stopped
at once, non-finite logits blamed on the model: where a breach would store a wrong number."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import oebench
from oebench.bench.matrix import Ref
from oebench.bench.parse import parse_benchmark
from oebench.cli.cache import OWN_FILES
from oebench.contracts.checks import ContractError, check_item, check_split
from oebench.contracts.data import TensorImages
from oebench.errors import PluginFailed, UserError
from oebench.execute.drive import run_here
from oebench.execute.outputs import iterate_batches
from oebench.execute.runner import Runner
from oebench.execute.sources import ContentNotes, Sources
from oebench.execute.training import TrainingDiverged, train
from oebench.registry.lookup import create_dataset, create_model, create_objective

PLUGIN = "contract-toys"
CPU = torch.device("cpu")
#: a few seconds: mnist-5k, two steps of training, one fine-tune, two small OOD sets
TOML = """
name = "contract"
seeds = [0]
id_datasets = [{id}]
models = [{model}]
detectors = ["msp", "energy"]
ood_datasets = [{{ name = "letters", n = 100 }}, {ood}]
training = {{ epochs = 1, max_train = 256, batch_size = 128, lr = {lr} }}
[[trainings]]
name = "baseline"
objective = "cross-entropy"
[[trainings]]
name = "oe"
objective = "oe"
outliers = {{ name = "photo-crops", n = 256 }}
from = "baseline"
lr = 0.01
outlier_batch_size = 128
"""


def bench_text(
    id='"mnist-5k"', model='{ name = "small-cnn", width = 4 }', ood='"faces"', lr=0.1
) -> str:
    return TOML.format(id=id, model=model, ood=ood, lr=lr)


class Lazy(torch.utils.data.Dataset):
    """A split as a plain torch Dataset (not TensorImages); ``change(i, image, label)`` edits
    what item ``i`` gives."""

    def __init__(self, data, change=None):
        self.data, self.change = data, change

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        image, label = self.data[i]
        return self.change(i, image, label) if self.change else (image, label)


def _mnist(split, shape, seed):
    return create_dataset("mnist-5k").load(split, shape=shape, seed=seed)


class LazyMnist(oebench.ImageSource):
    """mnist-5k through a lazy Dataset; ``broken``: what its test split gets wrong."""

    shape, num_classes, splits, mean, std = (1, 28, 28), 10, ("train", "test"), (0.13,), (0.31,)

    def __init__(self, broken: str = ""):
        self.broken = broken

    def load(self, split, *, shape=None, seed=0):
        data = _mnist(split, shape, seed)
        if self.broken == "train-nan" and split == "train":
            images = data.images.float() / 255
            images[7, 0, 1, 1] = float("nan")
            return TensorImages(images, data.labels)
        if self.broken == "label" and split == "test":  # item 5 (not sampled): no class
            return Lazy(data, lambda i, image, label: (image, 12 if i == 5 else label))
        return Lazy(data)


def _pixels(kind):
    def change(i, image, label):
        if kind == "uint8":
            return (image * 255).round().to(torch.uint8), label
        if i != 5:  # (items 0, n // 2 and n - 1 are the ones checked at load)
            return image, label
        image = image.clone()
        image[0, 0, 0] = {"nan": float("nan"), "inf": float("inf"), "255": 255.0}[kind]
        return image, label

    return change


class LazyLetters(oebench.ImageSource):
    """The letters OOD set through a lazy Dataset, its items broken as ``pixels`` says."""

    shape = (1, 28, 28)

    def __init__(self, pixels: str = ""):
        self.pixels = pixels

    def load(self, split, *, shape=None, seed=0):
        data = create_dataset("letters", n=60).load(split, shape=shape, seed=seed)
        return Lazy(data, _pixels(self.pixels) if self.pixels else None)


class Shaky(oebench.ImageSource):
    """Other images on every load (a seed from the clock, not from ``seed``)."""

    shape = (1, 28, 28)

    def load(self, split, *, shape=None, seed=0):
        gen = torch.Generator().manual_seed(time.time_ns())
        return TensorImages(torch.rand(100, *(shape or self.shape), generator=gen))


class ShakyItems(oebench.ImageSource):
    """A lazy set whose items change from one read to the next (an unseeded augmentation)."""

    shape = (1, 28, 28)

    def load(self, split, *, shape=None, seed=0):
        return Lazy([(torch.zeros(1, 28, 28), -1)] * 10, lambda i, x, y: (torch.rand_like(x), y))


class WideNet(torch.nn.Module):
    """small-cnn with ``extra`` logits more than classes, or NaN logits (``nan``: ``"always"``,
    or ``"big-batches"``: in eval mode for more than two inputs, as on a test set)."""

    def __init__(self, num_classes: int, shape: tuple, extra: int = 0, nan: str = ""):
        super().__init__()
        self.net = create_model("small-cnn", num_classes + extra, shape, width=4)
        self.nan = nan

    def forward_features(self, x):
        return self.net.forward_features(x)

    def forward_head(self, f):
        big = self.nan == "big-batches" and not self.training and len(f) > 2
        return self.net.forward_head(f) * (float("nan") if self.nan == "always" or big else 1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class Toys:
    @oebench.hookimpl
    def register_datasets(self, register):
        register("lazy-mnist", LazyMnist)
        register("lazy-letters", LazyLetters)
        register("shaky", Shaky)
        register("shaky-items", ShakyItems)

    @oebench.hookimpl
    def register_models(self, register):
        register("wide-net", WideNet)


@pytest.fixture
def toys(oebench_plugin):
    oebench_plugin(Toys(), PLUGIN)


def run(text: str, cache: Path | None = None) -> tuple[Runner, list[dict]]:
    """Run a benchmark in-process (``cache``: its own cache folder, else the tests' one)."""
    runner = Runner(parse_benchmark(text), device="cpu", cache_root=cache)
    return runner, run_here(runner)


# -- every item of a lazy split, as it is read ----------------------------------------------------
def test_an_id_label_out_of_range_past_the_sampled_items_stores_nothing(toys):
    runner, rows = run(bench_text(id='{ name = "lazy-mnist", broken = "label" }'))
    assert rows == [] and len(runner.failed_cells) == 2 and not runner.failures
    for message in runner.failed_cells:
        assert f"dataset 'lazy-mnist' (plugin '{PLUGIN}') failed in split 'test'" in message
        assert "item 5: labels must lie in [0, 10), found 12" in message


@pytest.mark.parametrize(
    "pixels, why",
    [
        ("uint8", "item 0: image is uint8; a dataset's items are float in [0, 1]"),
        ("nan", "item 5: 1 NaN pixel value(s)"),
        ("inf", "item 5: float pixels must lie in [0, 1], found 0..inf"),
        ("255", "item 5: float pixels must lie in [0, 1], found 0..255"),
    ],
)
def test_a_lazy_ood_split_s_items_are_checked_as_they_are_read(toys, pixels, why):
    sources = Sources(parse_benchmark(bench_text()))
    ref = Ref("lazy-letters", (("pixels", pixels),))
    with pytest.raises(PluginFailed, match=re.escape(why)) as caught:  # (uint8: at load)
        split = sources.load("dataset", ref, "test", None, 0)
        list(iterate_batches(split, 16, (1, 28, 28), CPU))
    assert str(caught.value).startswith(f"dataset 'lazy-letters' (plugin '{PLUGIN}') failed")


def test_a_good_lazy_split_reads_as_before_and_keeps_its_own_attributes(toys):
    sources = Sources(parse_benchmark(bench_text()))
    split = sources.load("dataset", Ref("lazy-letters"), "test", None, 0)
    plain = create_dataset("letters", n=60).load("test", shape=None, seed=0)
    order = torch.randperm(len(plain))
    got = list(iterate_batches(split, 16, (1, 28, 28), CPU, order=order))
    want = list(iterate_batches(plain, 16, (1, 28, 28), CPU, order=order))
    for (x, y), (x0, y0) in zip(got, want, strict=True):  # 4 batches, as without the checks
        assert torch.equal(x, x0) and torch.equal(y, y0)
    assert len(split) == len(plain) and split.change is None  # the plugin's attribute


def test_check_item_wants_an_image_label_pair_with_an_int_label():
    image = torch.rand(1, 4, 4)
    check_item((image, np.int64(3)), "x", 1, 10)
    check_item((image, torch.tensor(3)), "x", 1, 10)
    check_item((image, 3.5), "x", 1, None)  # labels of OOD data are not used
    for item, why in [
        ([image], "not an \\(image, label\\) pair"),
        ((image, 3.0), "label 3.0 is not an int"),
        ((image, torch.tensor([1, 2])), "is not an int"),
        ((image, -1), r"labels must lie in \[0, 10\), found -1"),
    ]:
        with pytest.raises(ContractError, match=why):
            check_item(item, "x", 1, 10)


def test_tensor_images_with_another_number_of_labels_than_images_are_refused():
    images, labels = torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2])
    with pytest.raises(ContractError, match=r"\(3,\) labels for 4 images"):
        check_split(TensorImages(images, labels), "train", 10, 1)


def test_a_broken_id_training_split_fails_its_cells_and_the_other_dataset_goes_on(toys):
    text = bench_text().replace(
        'id_datasets = ["mnist-5k"]',
        'id_datasets = ["mnist-5k", { name = "lazy-mnist", broken = "train-nan" }]',
    )
    runner, rows = run(text)
    assert {r["id_dataset"] for r in rows} == {"mnist-5k"} and len(runner.failed_cells) == 2
    for message in runner.failed_cells:
        assert "cell lazy-mnist" in message and "1 NaN pixel value(s)" in message
        assert f"dataset 'lazy-mnist' (plugin '{PLUGIN}') failed in split 'train'" in message


# -- the content of a split, compared across reads ------------------------------------------------
def test_a_source_whose_reads_differ_is_named_when_its_cached_outputs_meet_another_read(
    toys, tmp_path
):
    text = bench_text(ood='"shaky"')
    first, rows = run(text, tmp_path / "cache")
    assert rows and not first.failed_cells  # one read: nothing to compare with yet
    again, same = run(text, tmp_path / "cache")  # all cached: the first read's numbers
    assert [r["auroc"] for r in same] == [r["auroc"] for r in rows]
    for entry in (tmp_path / "cache" / "outputs").iterdir():  # e.g. `cache clear --outputs-only`
        entry.unlink()
    runner, rows = run(text, tmp_path / "cache")
    assert rows == [] and len(runner.failed_cells) == 2 and not runner.failures
    # ID train and test, two OOD sets, the outliers: each noted once
    assert len(list((tmp_path / "cache" / "models" / "splits").glob("*.json"))) == 5
    for message in runner.failed_cells:
        assert (
            f"dataset 'shaky' (plugin '{PLUGIN}') returned other images for the same split and "
            "seed than when its outputs were cached: its reads are not deterministic"
        ) in message


def test_two_processes_sharing_a_cache_see_a_source_whose_reads_differ(toys, tmp_path):
    class Cache:
        enabled, write_failed = True, False

    bench = parse_benchmark(bench_text(ood='"shaky"'))
    workers = [Sources(bench, ContentNotes(tmp_path, Cache())) for _ in range(2)]
    for sources, good in [(w, ref) for ref in ("letters", "mnist-5k") for w in workers]:
        sources.load("dataset", Ref(good), "test", None, 0)  # deterministic: the same digests
    workers[0].load("dataset", Ref("shaky"), "test", (1, 28, 28), 0)
    with pytest.raises(PluginFailed, match="its reads are not deterministic"):
        workers[1].load("dataset", Ref("shaky"), "test", (1, 28, 28), 0)
    paths = list(tmp_path.glob("*.json"))  # named as `oebench cache clear` knows them
    assert len(paths) == 3 and all(OWN_FILES["models/splits"].fullmatch(p.name) for p in paths)
    assert all(len(json.loads(p.read_text())["digest"]) == 64 for p in paths)


def test_a_lazy_source_whose_items_change_between_reads_is_named_at_load(toys):
    sources = Sources(parse_benchmark(bench_text()))
    with pytest.raises(PluginFailed) as caught:
        sources.load("dataset", Ref("shaky-items"), "test", None, 0)
    assert str(caught.value) == (
        f"dataset 'shaky-items' (plugin '{PLUGIN}') returned other images for the same split "
        "and seed on two reads of the same items: its reads are not deterministic (draw every "
        "random number from the `seed` argument)"
    )


# -- the model's logits ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, why",
    [
        ("extra = 3", "its logits for 2 inputs are (2, 13), not (2, 10): one per ID class"),
        ('nan = "always"', "its logits for 2 random inputs are not finite"),
    ],
)
def test_a_model_with_other_logits_than_one_per_class_is_one_line_before_training(
    toys, options, why, tmp_path
):
    with pytest.raises(UserError) as caught:
        run(bench_text(model=f'{{ name = "wide-net", {options} }}'), tmp_path / "cache")
    assert str(caught.value).endswith(f"model 'wide-net' on 'mnist-5k' (plugin '{PLUGIN}'): {why}")
    assert "\n" not in str(caught.value) and not list(tmp_path.rglob("*.pt"))  # nothing trained


def test_non_finite_logits_on_the_test_pass_fail_the_cell_naming_the_model(toys):
    runner, rows = run(bench_text(model='{ name = "wide-net", nan = "big-batches" }'))
    assert rows == [] and len(runner.failed_cells) == 2
    assert not runner.failures  # no detector is blamed
    for message in runner.failed_cells:
        assert f"model 'wide-net' (plugin '{PLUGIN}') gave 10000 NaN and 0 infinite" in message
        assert "on mnist-5k (test) after training" in message and "detector" not in message


# -- a training whose loss is not finite ----------------------------------------------------------
def test_a_diverged_training_fails_its_cells_naming_the_training_with_a_hint(tmp_path):
    text = bench_text(lr="1e6").replace("max_train = 256", "max_train = 1024")  # 8 steps
    runner, rows = run(text, tmp_path / "cache")
    assert rows == [] and len(runner.failed_cells) == 2 and not runner.failures
    for message in runner.failed_cells:
        assert "training 'baseline' (objective 'cross-entropy') of small-cnn on mnist-5k" in message
        assert re.search(
            r"diverged: the loss became (nan|inf) at step [1-7] of 8 \(epoch 1\)", message
        )
        assert "lower the training's `lr` (now 1e+06)" in message
    assert not list((tmp_path / "cache" / "models").glob("*.pt"))  # nothing saved


def _train(lr: float, model=None) -> tuple[int, str]:
    """Three epochs of 8 steps with cross-entropy: (losses computed, TrainingDiverged's text)."""
    torch.manual_seed(0)
    model = model or create_model("small-cnn", 10, (1, 28, 28), width=4)
    calls, ce = [], create_objective("cross-entropy")
    objective = lambda *args: calls.append(1) or ce(*args)  # noqa: E731
    objective.uses_outliers = False  # type: ignore[attr-defined]
    params = {
        "lr": lr, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "epochs": 3,
        "batch_size": 32, "outlier_batch_size": 32, "max_train": 256,
    }  # fmt: skip
    try:
        train(model, _mnist("train", None, 0), objective, params, 0, (1, 28, 28), CPU)
    except TrainingDiverged as exc:
        return len(calls), str(exc)
    return len(calls), ""


def test_a_diverged_training_stops_at_the_step_its_loss_stops_being_finite():
    calls, message = _train(lr=1e6)
    assert 0 < calls < 3 * 8  # stopped long before the end
    assert re.match(rf"the loss became (nan|inf) at step {calls} of 24 \(epoch 1\); lower", message)


def test_nan_logits_from_the_start_are_not_blamed_on_the_learning_rate():
    calls, message = _train(lr=0.1, model=WideNet(10, (1, 28, 28), nan="always"))
    assert calls == 1
    assert message == (
        "the loss became nan at step 1 of 24 (epoch 1): the model's logits are not finite "
        "before any update"
    )


def test_the_guard_looks_at_the_first_step_then_every_n_steps_and_at_each_epoch_s_end():
    from oebench.execute.training import _Guard

    def guard():
        made = _Guard(3, CPU, 0, (0.1, 12))
        made.every = 3  # a GPU's cadence (a CPU looks after every step)
        return made

    steps = guard()
    steps.add(torch.tensor(1.0), 1, 0, None)  # looked at: the first step
    steps.add(torch.tensor(math.inf), 2, 0, None)  # not yet
    steps.add(torch.tensor(1.0), 3, 0, None)
    with pytest.raises(TrainingDiverged, match=r"^the loss became inf at step 2..4 of 12 \(ep"):
        steps.add(torch.tensor(1.0), 4, 0, None)  # three steps after the last look
    epoch = guard()
    for step, loss in enumerate([1.0, 1.0, math.nan], start=1):
        epoch.add(torch.tensor(loss), step, 0, None)
    with pytest.raises(TrainingDiverged, match=r"became nan at step 2..3 of 12 \(epoch 1\); lower"):
        epoch.check(3, 0)  # the epoch's end
