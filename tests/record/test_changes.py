"""A store that notices change: cells carry the code and data fingerprints of everything they
use, and `oebench run` recomputes (and supersedes) a stored cell whose code or data changed,
without retraining a model whose own code did not."""

import importlib
import json
import sqlite3
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from oebench.cli import cli
from oebench.record.changes import ChangeCheck
from oebench.record.store import ResultStore

PLUGIN = '''
import numpy as np
import torch

import oebench


class Spread(oebench.Detector):
    def score(self, outputs):
        return -np.asarray(outputs.logits, dtype=np.float64).max(axis=1)


class Other(oebench.Detector):
    def score(self, outputs):
        return np.asarray(outputs.logits, dtype=np.float64).std(axis=1)


class NoiseFile(oebench.ImageSource):
    """OOD images read from a .npy file (N, 1, 28, 28) in [0, 1]."""

    shape = (1, 28, 28)

    def __init__(self, path: str):
        self.path = path

    def files(self):
        from pathlib import Path

        return [Path(self.path)]

    def load(self, split, *, shape=None, seed=0):
        return oebench.TensorImages(torch.from_numpy(np.load(self.path)).float())


@oebench.hookimpl
def register_detectors(register):
    register("spread", Spread)
    register("other", Other)


@oebench.hookimpl
def register_datasets(register):
    register("noise-file", NoiseFile)
'''

BENCH = """
name = "change"
seeds = [0, 1]
id_datasets = ["mnist-5k"]
models = [{{ name = "small-cnn", width = 4 }}]
detectors = ["spread", "other"]
ood_datasets = [{{ name = "noise-file", path = "{npy}" }}]

[training]
epochs = 1
max_train = 256
batch_size = 128
lr = 0.1

[[trainings]]
name = "baseline"
objective = "cross-entropy"
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch, oebench_plugin):
    """A detector and dataset plugin in a file of its own; ``plugin.edit(old, new)`` changes
    its source and loads it again, as a new process would."""
    path = tmp_path / "oebench_change_plugin.py"
    path.write_text(PLUGIN)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a reload reads the edited file
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "oebench_change_plugin", raising=False)  # another test's
    module = importlib.import_module("oebench_change_plugin")
    oebench_plugin(module, "change-plugin")

    def edit(old: str, new: str) -> None:
        from oebench.registry.plugins import get_plugin_manager

        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
        pm = get_plugin_manager()
        pm.unregister(name="change-plugin")
        importlib.reload(module)
        pm.register(module, name="change-plugin")

    module.edit = edit
    yield module


@pytest.fixture
def bench(tmp_path):
    npy = tmp_path / "ood.npy"
    np.save(npy, np.random.default_rng(0).random((60, 1, 28, 28)).astype(np.float32))
    path = tmp_path / "change.toml"
    path.write_text(BENCH.format(npy=npy))
    return path


def _run(bench, *args):
    result = CliRunner().invoke(cli, ["run", str(bench), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _cells(store) -> list[dict]:
    """(key, seed, trained, fingerprints) of the stored cells, oldest first."""
    with sqlite3.connect(store) as conn:
        found = conn.execute("SELECT key, seed, trained, config FROM cells ORDER BY rowid")
        return [
            {"key": k, "seed": s, "trained": bool(t), "fp": json.loads(c)["fingerprints"]}
            for k, s, t, c in found
        ]


def _auroc(store, detector: str) -> list[float]:
    with ResultStore(store, create=False) as s:
        return [r["auroc"] for r in s.rows() if r["detector"] == detector]


def test_editing_a_detector_recomputes_its_cells_without_retraining(
    plugin, bench, _isolated_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))  # trained here, not before
    _run(bench)
    first = _cells(_isolated_store)
    assert [c["trained"] for c in first] == [True, True]
    other_before, spread_before = (
        _auroc(_isolated_store, "other"),
        _auroc(_isolated_store, "spread"),
    )

    again = _run(bench)  # nothing changed: both cells come from the store
    assert "2 of 2 cells came from the results store" in again.output
    assert _cells(_isolated_store) == first

    plugin.edit("return np.asarray(outputs.logits, dtype=np.float64).std(axis=1)",
                "return -np.asarray(outputs.logits, dtype=np.float64).std(axis=1)")  # fmt: skip
    edited = _run(bench)  # no --rerun
    assert "came from the results store" not in edited.output
    cells = _cells(_isolated_store)
    assert len(cells) == 2  # the stale cells are gone, superseded by the new ones
    assert {c["key"] for c in cells}.isdisjoint(c["key"] for c in first)
    assert not any(c["trained"] for c in cells)  # the checkpoints served: nothing retrained
    for new, old in zip(cells, first, strict=True):
        changed = {k for k in new["fp"]["code"] if new["fp"]["code"][k] != old["fp"]["code"][k]}
        assert changed == {"detector:other"}  # Spread shares the file but not the change
    # the negated score mirrors the AUROC; the untouched detector's numbers stay
    assert np.allclose(_auroc(_isolated_store, "other"), [100 - a for a in other_before])
    assert _auroc(_isolated_store, "spread") == spread_before


def test_replacing_a_dataset_file_recomputes(plugin, bench, tmp_path, _isolated_store):
    _run(bench)
    first = _cells(_isolated_store)
    before = _auroc(_isolated_store, "spread")
    npy = tmp_path / "ood.npy"
    replacement = tmp_path / "new.npy"
    np.save(replacement, np.zeros((60, 1, 28, 28), dtype=np.float32))
    replacement.replace(npy)  # same path, other content

    _run(bench)
    cells = _cells(_isolated_store)
    assert len(cells) == 2 and not any(c["trained"] for c in cells)
    for new, old in zip(cells, first, strict=True):
        changed = {k for k in new["fp"]["data"] if new["fp"]["data"][k] != old["fp"]["data"][k]}
        assert changed == {"dataset:noise-file"} and new["fp"]["code"] == old["fp"]["code"]
    assert _auroc(_isolated_store, "spread") != before  # other OOD images, other numbers


def test_change_check_names_what_changed_and_can_serve_the_stored_cell(
    plugin, bench, _isolated_store
):
    from oebench.bench.parse import load_benchmark
    from oebench.execute.runner import Runner

    _run(bench)
    stored = [c["key"] for c in _cells(_isolated_store)]
    plugin.edit("return -np.asarray(outputs.logits, dtype=np.float64).max(axis=1)",
                "return np.asarray(outputs.logits, dtype=np.float64).min(axis=1)")  # fmt: skip
    configs = [cell.config for cell in Runner(load_benchmark(str(bench))).cells()]
    with ResultStore(_isolated_store) as store:
        assert store.stale_cells(configs[0]) == {stored[0]: ["detector 'spread' code"]}
        warn = ChangeCheck(store, "warn")
        assert [warn.served_instead(c) for c in configs] == stored
        assert warn.lines() == [
            "detector 'spread' code changed since 2 cells were stored; serving their stored "
            "results (--on-change recompute recomputes them)"
        ]
        recompute = ChangeCheck(store)
        assert [recompute.served_instead(c) for c in configs] == [None, None]
        assert recompute.lines() == ["detector 'spread' code changed; recomputing 2 cells"]


def test_cells_of_other_settings_are_not_superseded(plugin, bench, _isolated_store):
    """Only the same cell computed with other code or data is stale, not a sibling."""
    _run(bench)
    _run(bench, "--detectors", "spread")  # another detector list: another cell, kept
    assert len(_cells(_isolated_store)) == 4


def test_code_fingerprint_is_the_class_not_the_file(tmp_path, monkeypatch):
    from oebench.keys.fingerprints import code_digest

    path = tmp_path / "oebench_fp_probe.py"
    source = textwrap.dedent(
        """
        LIMIT = 3


        def helper(x):
            return x + LIMIT


        class A:
            def f(self, x):
                return helper(x)


        class B:
            def f(self, x):
                return x
        """
    )
    path.write_text(source)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "oebench_fp_probe", raising=False)
    module = importlib.import_module("oebench_fp_probe")
    a, b = code_digest(module.A), code_digest(module.B)
    assert a != b and a is not None

    def digests_after(old: str, new: str) -> tuple:
        path.write_text(path.read_text().replace(old, new))
        importlib.reload(module)
        return code_digest(module.A), code_digest(module.B)

    # a comment, blank lines and an edit elsewhere in the file change neither
    assert digests_after("class B:", "# notes\n\n\nclass B:") == (a, b)
    # B's own code changes B only
    b2 = digests_after("return x\n", "return -x\n")[1]
    assert digests_after("", "") == (a, b2) and b2 != b
    # a helper A calls, and a constant that helper reads, are A's code too
    a2 = digests_after("return x + LIMIT", "return x + LIMIT + 1")[0]
    assert a2 != a and digests_after("", "")[1] == b2
    assert digests_after("LIMIT = 3", "LIMIT = 4")[0] not in (a, a2)


def test_on_change_warn_serves_the_stored_cells_and_names_the_change(
    plugin, bench, _isolated_store
):
    _run(bench)
    first = _cells(_isolated_store)
    before = _auroc(_isolated_store, "spread")
    plugin.edit("return -np.asarray(outputs.logits, dtype=np.float64).max(axis=1)",
                "return np.asarray(outputs.logits, dtype=np.float64).min(axis=1)")  # fmt: skip
    warned = _run(bench, "--on-change", "warn")
    assert (
        "detector 'spread' code changed since 2 cells were stored; serving their stored results"
        in " ".join(warned.output.split())
    )
    assert _cells(_isolated_store) == first and _auroc(_isolated_store, "spread") == before
    recomputed = _run(bench)  # the default: recompute, and say why
    assert "detector 'spread' code changed; recomputing 2 cells" in recomputed.output
    assert len(_cells(_isolated_store)) == 2 and _auroc(_isolated_store, "spread") != before
