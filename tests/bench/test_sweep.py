"""Validation sets from held-out ID training images, and a sweep that picks λ on them only."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

import oebench
from oebench.bench.parse import load_benchmark
from oebench.bench.sweep import parse_values, validation_benchmark, with_value
from oebench.errors import UserError
from oebench.execute.sweep import sweep

SETS = ("uniform", "invert", "jigsaw")


def flat(images: torch.Tensor) -> set[bytes]:
    return {bytes(x) for x in images.reshape(len(images), -1).numpy()}


def test_holdout_splits_the_training_split_and_never_touches_test():
    source = oebench.create_dataset("mnist-5k")
    train, test = source.load("train"), source.load("test")
    held = oebench.create_dataset("holdout", dataset="mnist-5k", fraction=0.1)
    kept, out = held.load("train"), held.load("test")
    assert (len(kept), len(out)) == (len(train) - 400, 400)
    assert flat(kept.images) | flat(out.images) == flat(train.images)
    assert not flat(kept.images) & flat(out.images)
    assert not flat(out.images) & flat(test.images)
    assert held.num_classes == 10 and held.mean == source.mean


def patches(image: torch.Tensor) -> list[bytes]:
    """The 16 7x7 patches of a 28x28 image, sorted."""
    grid = image.reshape(4, 7, 4, 7).permute(0, 2, 1, 3).reshape(16, -1)
    return sorted(bytes(p) for p in grid.numpy())


def test_validation_ood_sets_follow_their_recipes():
    held = oebench.create_dataset("holdout", dataset="mnist-5k").load("test").images.float() / 255

    def make(transform):
        data = oebench.create_dataset("val-ood", dataset="mnist-5k", transform=transform)
        return data.load("test", shape=(1, 28, 28)).images

    assert torch.allclose(make("invert"), 1 - held)
    jig = make("jigsaw")  # the same 7x7 patches, in another order
    for i in range(5):
        assert patches(jig[i, 0]) == patches(held[i, 0])
    assert not torch.equal(jig, held)
    pix = make("pixelate")  # constant on 4x4 blocks (28 = 7 x 4)
    assert torch.equal(pix, pix[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1))
    mean = make("arith-mean")[0]
    assert any(torch.allclose(mean, (held[0] + other) / 2) for other in held)
    uniform = make("uniform")
    assert abs(float(uniform.mean()) - 0.5) < 0.01 and uniform.min() >= 0 and uniform.max() <= 1
    with pytest.raises(UserError, match="transform must be one of"):
        oebench.create_dataset("val-ood", dataset="mnist-5k", transform="blur")


def small_tiny(folder) -> str:
    """The tests' tiny benchmark, smaller still: msp only, 256 training images."""
    text = TINY.read_text().replace('detectors = ["msp", "energy"]', 'detectors = ["msp"]')
    text = text.replace("max_train = 1024", "max_train = 256").replace("n = 2048", "n = 512")
    path = folder / "tiny.toml"
    path.write_text(text)
    return str(path)


def tiny_bench():
    bench = load_benchmark(str(TINY))
    return replace(bench, detectors=bench.detectors[:1])  # msp


def test_sweep_selects_lambda_on_validation_sets_only(monkeypatch, tmp_path):
    from oebench_plugins.images import Mnist5k

    splits, load = [], Mnist5k.load

    def spy(self, split, **kwargs):
        splits.append(split)
        return load(self, split, **kwargs)

    monkeypatch.setattr(Mnist5k, "load", spy)
    bench = load_benchmark(small_tiny(tmp_path))
    result = sweep(bench, "trainings.oe.objective.lam", [0.0, 2.0], sets=SETS, device="cpu")
    assert set(splits) == {"train"}  # the ID test split is never read while choosing
    assert len(set(result.scores.values())) == 2  # λ changed the validation score
    assert result.best == max(result.scores, key=result.scores.get)
    oe = result.chosen.training("oe")
    assert oe.objective.kwargs["lam"] == result.best
    assert result.chosen.ood_datasets == bench.ood_datasets  # the test matrix is unchanged
    record = json.loads(result.chosen.text.splitlines()[-1].removeprefix("# sweep: "))
    assert record["chosen"] == result.best and record["metric"] == "auroc"


def test_validation_benchmark_and_paths():
    bench = tiny_bench()
    val = validation_benchmark(bench, 0.2, SETS)
    assert [r.name for r in val.id_datasets] == ["holdout"]
    assert {r.name for r in val.ood_datasets} == {"val-ood"}
    assert {r.kwargs["transform"] for r in val.ood_datasets} == set(SETS)
    assert val.id_datasets[0].kwargs == {"dataset": "mnist-5k", "fraction": 0.2}
    assert with_value(bench, "trainings.oe.lr", 0.5).trainings[1].params["lr"] == 0.5
    det = with_value(bench, "detectors.msp.temperature", 2).detectors[0]
    assert det.kwargs == {"temperature": 2}
    assert parse_values("0, 0.5,true,abc") == [0, 0.5, True, "abc"]
    for bad in ("trainings.nope.lr", "detectors.energy.temperature", "models.x"):
        with pytest.raises(UserError):
            with_value(bench, bad, 1)


def test_cli_sweep_records_the_choice_in_the_store(tmp_path):
    path = small_tiny(tmp_path)
    store = tmp_path / "store.sqlite"
    result = run_cli(
        "sweep", path, "--set", "trainings.oe.objective.lam=0,2", "--device", "cpu",
        "--store", str(store),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "chosen: trainings.oe.objective.lam =" in result.stdout
    with sqlite3.connect(store) as db:
        texts = [t for (t,) in db.execute("SELECT text FROM benchmarks")]
        configs = [json.loads(c) for (c,) in db.execute("SELECT config FROM cells")]
    record = json.loads(next(t for t in texts if "# sweep:" in t).split("# sweep: ")[1])
    lams = {c["training"]["objective"]["options"].get("lam") for c in configs}
    assert record["chosen"] in (0, 2) and lams == {None, record["chosen"]}
    assert np.isfinite(list(record["validation"].values())).all()
