"""Each cell's model (oebench.execute.cell_models): trained once, then loaded from the checkpoint
cache; its digest noted so that a later run knows it without building the model."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from conftest import TINY

import oebench.execute.training
from oebench.bench.parse import load_benchmark
from oebench.core.progress import Progress
from oebench.execute.cell_models import TrainedModels, cache_lock, torch_threads
from oebench.execute.checkpoints import CheckpointCache
from oebench.execute.context import Context
from oebench.execute.runner import Runner
from oebench.execute.sources import Sources
from oebench.keys.fingerprints import model_digest


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(str(TINY))


@pytest.fixture(scope="module")
def cells(bench):
    """The keyed cells of TINY: baseline, then the oe fine-tune that starts from it."""
    return list(Runner(bench, device="cpu").cells())


@pytest.fixture
def trainings(monkeypatch):
    """The cells trained in this test (by label), counted where the training loop starts."""
    trained: list[str] = []
    real = oebench.execute.training.train

    def counted(model, train_set, objective, params, seed, *args, **kwargs):
        trained.append(type(objective).__name__)
        return real(model, train_set, objective, params, seed, *args, **kwargs)

    monkeypatch.setattr(oebench.execute.training, "train", counted)
    return trained


def models(bench, cells, root, use_cache=True) -> TrainedModels:
    """A fresh TrainedModels, as a new run on the cache ``root`` would make it."""
    context = Context(bench, Sources(bench), Progress(), "cpu")

    def sibling(cell, training):
        return next(c for c in cells if c.seed == cell.seed and c.training.name == training)

    return TrainedModels(context, sibling, use_cache, root)


def test_a_model_is_trained_once_then_loaded_from_the_checkpoint_cache(
    bench, cells, tmp_path, trainings
):
    base = cells[0]
    first = models(bench, cells, tmp_path)
    model, seconds, cached = first.build(base)
    assert (cached, len(trainings)) == (False, 1) and seconds > 0
    (saved,) = first.checkpoints.root.glob("*.pt")
    digest = model_digest(model)

    again, seconds_again, cached_again = first.build(base)  # kept in this process
    assert (cached_again, seconds_again) == (True, 0.0)
    assert model_digest(again) == digest

    later = models(bench, cells, tmp_path)  # another run: from the file
    loaded, seconds_later, cached_later = later.build(base)
    assert cached_later and seconds_later == pytest.approx(seconds)
    assert model_digest(loaded) == digest
    assert len(trainings) == 1  # trained once in all
    assert list(later.checkpoints.root.glob("*.pt")) == [saved]


def test_a_fine_tune_trains_the_checkpoint_it_starts_from_first(bench, cells, tmp_path, trainings):
    tuned = models(bench, cells, tmp_path)
    _, _, cached = tuned.build(cells[1])  # oe, from baseline
    assert not cached
    assert len(trainings) == 2 and trainings[0] != trainings[1]  # cross-entropy, then OE
    assert len(list(tuned.checkpoints.root.glob("*.pt"))) == 2
    _, _, cached = models(bench, cells, tmp_path).build(cells[0])  # the start was saved too
    assert cached and len(trainings) == 2


def test_a_placed_model_s_digest_is_noted_for_the_next_run(bench, cells, tmp_path):
    base = cells[0]
    first = models(bench, cells, tmp_path)
    assert first.noted(base) is None  # nothing known yet
    _, trained_seconds, _ = first.build(base)
    assert first.noted(base) is None  # trained, but its digest not yet noted
    model, digest, seconds, cached = first.placed(base)
    assert not model.training  # in eval mode
    assert (seconds, cached) == (0.0, True)  # built again from this process's weights
    assert first.noted(base) == (digest, pytest.approx(trained_seconds))  # the training's
    later = models(bench, cells, tmp_path)
    assert later.noted(base) == first.noted(base)  # known without building the model
    _, digest_later, _, cached_later = later.placed(base, expect=digest)
    assert cached_later and digest_later == digest


def test_weights_other_than_the_noted_ones_are_refused(bench, cells, tmp_path):
    placed = models(bench, cells, tmp_path)
    with pytest.raises(RuntimeError, match=r"hash to [0-9a-f]+, not to the 0000 noted in"):
        placed.placed(cells[0], expect="0000")


def test_a_disabled_cache_notes_nothing_and_keeps_no_file(bench, cells, tmp_path, trainings):
    off = models(bench, cells, tmp_path, use_cache=False)
    off.placed(cells[0])
    assert off.noted(cells[0]) is None
    assert not off.checkpoints.root.exists()
    models(bench, cells, tmp_path, use_cache=False).build(cells[0])
    assert len(trainings) == 2  # nothing to load: trained again


def test_the_models_are_checked_once(bench, cells, tmp_path, monkeypatch):
    import oebench.bench.validation

    calls = []
    monkeypatch.setattr(
        oebench.bench.validation, "model_problems", lambda b: calls.append(b.name) or []
    )
    checked = models(bench, cells, tmp_path)
    checked.check()
    checked.check()
    assert calls == ["tiny"]
    monkeypatch.setattr(oebench.bench.validation, "model_problems", lambda b: ["width: bad"])
    with pytest.raises(oebench.errors.UserError, match="width: bad"):
        models(bench, cells, tmp_path).check()


def test_cache_lock_is_a_no_op_for_a_disabled_or_unwritable_cache(tmp_path):
    from filelock import FileLock

    off = CheckpointCache(tmp_path / "off", enabled=False)
    assert isinstance(cache_lock(off, "k"), contextlib.nullcontext)
    assert not (tmp_path / "off").exists()

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert isinstance(cache_lock(CheckpointCache(blocked), "k"), contextlib.nullcontext)

    on = CheckpointCache(tmp_path / "on")
    lock = cache_lock(on, "k")
    assert isinstance(lock, FileLock) and lock.lock_file == str(on.path("k")) + ".lock"
    with lock:
        assert lock.is_locked and on.root.is_dir()


def test_torch_threads_sets_the_count_for_the_block_and_restores_it():
    import torch

    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    with torch_threads(wanted):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: torch's own choice
        assert torch.get_num_threads() == before
    with pytest.raises(KeyError), torch_threads(wanted):
        raise KeyError("restored all the same")
    assert torch.get_num_threads() == before


def test_an_evaluate_only_training_is_never_trained_nor_cached(bench, tmp_path, trainings):
    baseline = bench.trainings[0]
    settings = tuple(sorted({**baseline.params, "evaluate_only": True}.items()))
    only = replace(bench, trainings=[replace(baseline, settings=settings)])
    cells = list(Runner(only, device="cpu").cells())
    evaluated = models(only, cells, tmp_path)
    assert evaluated.noted(cells[0]) is None
    _, digest, seconds, cached = evaluated.placed(cells[0])
    assert (seconds, cached, trainings) == (0.0, True, [])
    assert not list(evaluated.checkpoints.root.glob("*.pt"))
    assert evaluated.noted(cells[0]) == (digest, 0.0)  # the seeded weights, noted at init
