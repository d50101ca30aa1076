"""Per-epoch checkpoints: a training cut short resumes after its last finished epoch and ends
with exactly the weights of a training that never stopped."""

from dataclasses import replace

import pytest
import torch

import oebench
from oebench.contracts.data import TensorImages
from oebench.execute.checkpoints import CheckpointCache
from oebench.execute.training import train

SHAPE = (1, 6, 6)
PARAMS = {
    "epochs": 3,
    "batch_size": 8,
    "outlier_batch_size": 8,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "augment": True,
    "outlier_flip": True,
}


def _net() -> torch.nn.Module:
    """BatchNorm buffers, and dropout that draws from torch's global generator."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(4 * 6 * 6, 3),
    )


def _data() -> tuple[TensorImages, TensorImages]:
    gen = torch.Generator().manual_seed(1)
    ids = TensorImages(torch.rand(30, *SHAPE, generator=gen), torch.arange(30) % 3)
    outs = TensorImages(torch.rand(50, *SHAPE, generator=gen))
    return ids, outs


def _train(partial=None, on_epoch=None) -> torch.nn.Module:
    """Train a fresh net with OE (shuffles, crops, flips, dropout: every generator in use)."""
    ids, outs = _data()
    net = _net()
    torch.manual_seed(7)  # the global generator dropout draws from
    objective = oebench.create_objective("oe")
    train(net, ids, objective, PARAMS, 3, SHAPE, torch.device("cpu"), outs,
          partial=partial, on_epoch=on_epoch)  # fmt: skip
    return net


def _stop_after(epoch: int):
    def on_epoch(done: int, total: int) -> None:
        if done == epoch:
            raise KeyboardInterrupt

    return on_epoch


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("stop", [1, 2])
def test_a_resumed_training_gives_the_same_weights(tmp_path, stop, capsys):
    reference = _train()
    partial = CheckpointCache(tmp_path).partial("k")
    with pytest.raises(KeyboardInterrupt):
        _train(partial, _stop_after(stop))
    assert partial.path.exists()
    torch.manual_seed(12345)  # another process would start with other generator states
    epochs_run: list[int] = []
    resumed = _train(partial, lambda done, total: epochs_run.append(done))
    assert epochs_run == list(range(stop + 1, 4))  # only the epochs left were trained
    assert f"after epoch {stop}" in capsys.readouterr().err
    _assert_same_weights(resumed, reference)
    # the last epoch writes no state (the final checkpoint follows and removes the file)
    assert torch.load(partial.path, weights_only=True)["epoch"] == 2


def test_the_check_can_fail_a_wrong_generator_state_gives_other_weights(tmp_path):
    """The test above can fail: resuming with dropout's generator in another state does."""
    reference = _train()
    partial = CheckpointCache(tmp_path).partial("k")
    with pytest.raises(KeyboardInterrupt):
        _train(partial, _stop_after(1))
    saved = torch.load(partial.path, weights_only=True)
    saved["rng"]["torch"] = torch.manual_seed(99).get_state()  # dropout's generator, wrong
    saved.pop("checksum")
    partial.save({k: v for k, v in saved.items() if k not in ("format", "key")})
    with pytest.raises(AssertionError):
        _assert_same_weights(_train(partial), reference)


def test_final_checkpoint_removes_the_partial_one(tmp_path):
    cache = CheckpointCache(tmp_path)
    partial = cache.partial("k")
    with pytest.raises(KeyboardInterrupt):
        _train(partial, _stop_after(1))
    assert partial.path.exists()
    cache.save("k", _net().state_dict(), 1.0)
    assert cache.path("k").exists() and not partial.path.exists()
    # a run killed between the two: loading the final checkpoint removes the partial one
    with pytest.raises(KeyboardInterrupt):
        _train(partial, _stop_after(1))
    assert cache.load("k") is not None and not partial.path.exists()


@pytest.mark.parametrize("damage", ["other key", "changed weights", "other length"])
def test_an_untrustworthy_partial_file_is_ignored(tmp_path, damage, capsys, monkeypatch):
    cache = CheckpointCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _train(cache.partial("a"), _stop_after(1))
    partial = cache.partial("a")
    if damage == "other key":
        partial = cache.partial("b")
        cache.partial("a").path.rename(partial.path)
    elif damage == "changed weights":  # a bit flip in a tensor: the checksum no longer fits
        saved = torch.load(partial.path, weights_only=True)
        saved["model"]["0.weight"][0, 0, 0, 0] += 1
        torch.save(saved, partial.path)
    else:  # the same key cannot mean other settings, but a file is checked against them
        monkeypatch.setitem(PARAMS, "epochs", 4)
    epochs_run: list[int] = []
    model = _train(partial, lambda done, total: epochs_run.append(done))
    assert epochs_run[0] == 1  # trained from the start
    assert "ignoring" in capsys.readouterr().err
    if damage != "other length":
        _assert_same_weights(model, _train())


def test_a_disabled_cache_keeps_no_partial_state(tmp_path):
    assert CheckpointCache(tmp_path, enabled=False).partial("k") is None


def test_an_interrupted_benchmark_resumes_its_training(tmp_path, monkeypatch, capsys):
    """Through the runner: Ctrl-C after epoch 1, run again, same checkpoint as never stopped."""
    from conftest import TINY

    from oebench.bench.matrix import Ref
    from oebench.bench.parse import load_benchmark
    from oebench.execute.checkpoints import PartialCheckpoint
    from oebench.execute.drive import run_here
    from oebench.execute.runner import Runner

    def bench():
        b = load_benchmark(str(TINY))
        params = {**b.trainings[0].params, "epochs": 2}
        trainings = [replace(b.trainings[0], settings=tuple(sorted(params.items())))]
        return replace(b, detectors=[Ref("msp")], ood_datasets=b.ood_datasets[:1],
                       trainings=trainings)  # fmt: skip

    def weights(root):
        (path,) = [p for p in (root / "models").glob("*.pt") if ".partial" not in p.name]
        return torch.load(path, weights_only=True)["state_dict"]

    run_here(Runner(bench(), device="cpu", cache_root=tmp_path / "straight"))
    save = PartialCheckpoint.save

    def save_then_stop(self, state):
        save(self, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(PartialCheckpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_here(Runner(bench(), device="cpu", cache_root=tmp_path / "cut"))
    assert len(list((tmp_path / "cut" / "models").glob("*.partial.pt"))) == 1
    monkeypatch.setattr(PartialCheckpoint, "save", save)
    rows = run_here(Runner(bench(), device="cpu", cache_root=tmp_path / "cut"))
    assert "after epoch 1" in capsys.readouterr().err and rows
    assert not list((tmp_path / "cut" / "models").glob("*.partial.pt"))  # done: removed
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_every_random_generator_comes_back(tmp_path):
    """Python's, numpy's (a cached Gaussian too) and torch's global generators, through a file."""
    import random

    import numpy as np

    from oebench.execute.training import _restore, _snapshot

    random.seed(3)
    random.gauss(0, 1)  # leaves half a pair of Gaussians cached
    np.random.seed(4)
    np.random.standard_normal()
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    gen = torch.Generator().manual_seed(1)
    partial = CheckpointCache(tmp_path).partial("k")
    partial.save(_snapshot(1, 1, 2, 0.5, net, opt, sched, gen))

    def draws():
        return (random.random(), random.gauss(0, 1), np.random.standard_normal(),
                torch.rand(1).item(), torch.rand(1, generator=gen).item())  # fmt: skip

    expected = draws()
    assert draws() != expected
    assert _restore(partial.load(2), net, opt, sched, gen) == 0.5
    assert draws() == expected
