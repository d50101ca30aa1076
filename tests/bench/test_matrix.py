"""The benchmark as values: training settings declared once, frozen benchmarks, OOD groups."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from conftest import TINY

from oebench.bench.groups import group_label, group_problems, groups_in_text, is_summary
from oebench.bench.matrix import DEFAULT_TRAINING, TRAINING_SETTINGS
from oebench.bench.parse import load_benchmark, parse_benchmark
from oebench.bench.sampling import check_sampling
from oebench.errors import UserError


def test_default_training_is_pinned():
    """Every training's params (hence every cache key) carry these: they must never change."""
    assert DEFAULT_TRAINING == {
        "epochs": 6,
        "batch_size": 128,
        "outlier_batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "augment": False,
        "max_train": None,
        "eval_batch_size": None,
        "threads": 1,
    }
    assert all(type(v) is type(DEFAULT_TRAINING[k]) for k, v in DEFAULT_TRAINING.items())


def test_the_schema_and_the_parser_follow_the_one_declaration():
    from oebench.bench.validation import TrainingSettings

    fields = TrainingSettings.model_fields
    assert list(fields) == list(TRAINING_SETTINGS)
    assert {n for n, f in fields.items() if f.is_required()} == set(DEFAULT_TRAINING)
    assert TrainingSettings.model_validate(DEFAULT_TRAINING).amp == "auto"
    bench = parse_benchmark(TINY.read_text())
    assert set(bench.defaults) == set(DEFAULT_TRAINING)  # optional settings stay out of keys
    text = TINY.read_text().replace("epochs = 1", "epochs = 1\nevaluate_only = false\namp = 1")
    with pytest.raises(UserError, match=r"amp = 1: Input should be 'auto', 'bf16' or 'off'"):
        parse_benchmark(text)


def test_outlier_sampling_is_checked_when_parsed():
    check_sampling({"name": "ntom", "pool": 10, "quantile": 0.5, "score": "energy"}, "t")
    for bad, message in [
        ("ntom", "must be a table"),
        ({"name": "ntom", "quantile": 1}, "quantile must be in"),
        ({"name": "ntom", "score": "knn"}, "score must be one of"),
        ({"name": "random", "pool": 3}, r"has unknown key\(s\) pool; allowed keys: name"),
    ]:
        with pytest.raises(UserError, match=message):
            check_sampling(bad, "t")


def test_a_benchmark_is_frozen_hashable_and_picklable():
    bench = load_benchmark(str(TINY))
    with pytest.raises(dataclasses.FrozenInstanceError):
        bench.seeds = [1]  # type: ignore[misc]
    other = dataclasses.replace(bench, seeds=[0, 1])
    assert other.seeds == [0, 1] and bench.seeds == [0]
    assert hash(bench) == hash(load_benchmark(str(TINY))) and bench == load_benchmark(str(TINY))
    assert {bench: 1}[dataclasses.replace(bench)] == 1
    assert pickle.loads(pickle.dumps(other)) == other


def test_training_and_lineage():
    bench = load_benchmark(str(TINY))
    baseline, oe = bench.trainings
    assert bench.training("oe") is oe and bench.lineage(oe) == [oe, baseline]
    assert bench.lineage(baseline) == [baseline]
    with pytest.raises(KeyError):
        bench.training("nope")


def test_ood_groups():
    assert group_problems(None, ["a"]) == []
    assert group_problems({"near": ["a"], "far": ["b"]}, ["a"]) == [
        "ood_groups.far names 'b', not in ood_datasets (a)"
    ]
    assert group_problems({"near": []}, ["a"]) == [
        "ood_groups.near must be a non-empty list of OOD set names"
    ]
    assert groups_in_text('ood_groups = {near = ["a"], far = []}') == {"near": ["a"]}
    assert groups_in_text("not toml [") == {}
    assert group_label("near") == "mean:near" and is_summary("mean:near") and is_summary("mean")
    assert not is_summary("textures")


def test_parsing_stays_in_its_layer_and_light():
    """Reading a benchmark needs neither the layers above it nor torch (nor pydantic, until
    the file's settings are checked)."""
    import subprocess
    import sys

    code = (
        "import sys\nimport oebench.bench.parse, oebench.bench.sweep, oebench.bench.groups\n"
        "heavy = {'torch', 'pydantic', 'pandas'} & set(sys.modules)\n"
        "above = [m for m in sys.modules if m.split('.')[:2] in (['oebench', 'execute'],"
        " ['oebench', 'record'], ['oebench', 'report'], ['oebench', 'keys'])]\n"
        "assert not heavy and not above, (heavy, above)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
