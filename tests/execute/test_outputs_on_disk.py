"""Outputs larger than memory: forward passes spilled to files a batch at a time, the cache
mapping them in place (verified a block at a time), row shards joined into the whole, and
the memory plan that refuses a run before any work."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from conftest import run_cli

from oebench.contracts.arrays import is_mapped
from oebench.contracts.data import TensorImages
from oebench.errors import UserError
from oebench.execute import memory, outputs
from oebench.execute.outputs import OutputCache, forward, join_outputs, shard_rows

SHAPE = (3, 8, 8)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = torch.nn.Linear(3 * 8 * 8, 32), torch.nn.Linear(32, 10)

    def forward_features(self, x):
        return torch.relu(self.body(x.flatten(1)))

    def forward_head(self, f):
        return self.head(f)


def _images(n: int) -> TensorImages:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=g)
    return TensorImages(x, torch.arange(n) % 10)


@pytest.fixture
def spill_small(monkeypatch):
    """Every output of more than 1 KiB goes to files."""
    monkeypatch.setattr(outputs, "MAP_BYTES", 1024)


def _same(a, b) -> None:
    for name in ("logits", "features", "labels"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_a_spilled_forward_pass_equals_the_in_memory_one_and_leaves_no_files(tmp_path, spill_small):
    data = _images(700)
    whole = forward(Net(), data, SHAPE, "cpu", 64)
    spilled = forward(Net(), data, SHAPE, "cpu", 64, spill=tmp_path)
    _same(whole, spilled)
    assert not is_mapped(whole.logits)
    assert all(is_mapped(a) for a in (spilled.logits, spilled.features, spilled.labels))
    assert not spilled.features.flags.writeable
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped: the space goes with them


def test_a_spilled_pass_holds_one_batch_not_the_whole(tmp_path, spill_small):
    data, net = _images(4000), Net()
    tracemalloc.start()
    try:
        out = forward(net, data, SHAPE, "cpu", 100, spill=tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = out.logits.nbytes + out.features.nbytes + out.labels.nbytes
    assert peak < whole / 4, (peak, whole)


def test_the_cache_maps_large_entries_in_place_and_verifies_them(tmp_path, spill_small):
    data, key = _images(500), "a" * 20
    cache = OutputCache(tmp_path)
    made = cache.get_or_compute(key, lambda: forward(Net(), data, SHAPE, "cpu", 64, cache.spill()))
    assert is_mapped(made.features) and made.intact()
    again = OutputCache(tmp_path).get_or_compute(key, lambda: pytest.fail("read, not computed"))
    _same(made, again)
    assert is_mapped(again.features) and again.intact()
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == [f"{key}.npz"]


def test_a_changed_byte_in_a_mapped_cache_file_is_noticed_and_recomputed(
    tmp_path, spill_small, capsys
):
    data, key = _images(500), "b" * 20
    cache = OutputCache(tmp_path)
    made = cache.get_or_compute(key, lambda: forward(Net(), data, SHAPE, "cpu", 64, cache.spill()))
    expected = np.array(made.features)
    path = cache.path(key)
    raw = bytearray(path.read_bytes())
    at = raw.index(expected[3].tobytes())  # a feature row, in the middle of its member
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    computed = []
    again = OutputCache(tmp_path).get_or_compute(
        key, lambda: computed.append(1) or forward(Net(), data, SHAPE, "cpu", 64)
    )
    assert computed == [1] and "ignoring corrupt cache file" in capsys.readouterr().err
    assert np.array_equal(again.features, expected)


@pytest.mark.parametrize("total", [0, 1, 63, 64, 65, 700, 1000])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_are_whole_batches_that_cover_the_rows_once(total, n):
    parts = [shard_rows(total, 64, i, n) for i in range(n)]
    assert [r for part in parts for r in part] == list(range(total))
    assert all(part.start % 64 == 0 for part in parts if len(part))


@pytest.mark.parametrize("spill", [False, True])
def test_joined_shards_equal_the_unsharded_pass(tmp_path, monkeypatch, spill):
    if spill:
        monkeypatch.setattr(outputs, "MAP_BYTES", 1024)
    data, net = _images(700), Net()
    whole = forward(net, data, SHAPE, "cpu", 64)
    parts = [forward(net, data, SHAPE, "cpu", 64, rows=shard_rows(700, 64, i, 3)) for i in range(3)]
    joined = join_outputs(parts, tmp_path if spill else None)
    _same(whole, joined)
    assert is_mapped(joined.features) == spill


def _cell(key="cell", label="tiny / cell"):
    class Ref:
        key = "x"

    class Training:
        settings = ()

    class Cell:
        model_ref = id_ref = Ref()
        training = Training()

    cell = Cell()
    cell.key, cell.label = key, label
    return cell


def test_the_memory_plan_names_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(memory, "cell_peak", lambda s, c: 100)
    monkeypatch.setattr(memory, "process_overhead", lambda device: 0)
    scoring = {"cell": memory.Scoring(outputs=50, batch=50, detector=900, largest="gmm")}
    assert memory.check_fits(None, [_cell()], 1, "cpu", 1000, scoring) == (1000, 1000)
    with pytest.raises(UserError) as err:
        memory.check_fits(None, [_cell()], 1, "cpu", 999, scoring)
    line = str(err.value)
    assert "\n" not in line and "cell tiny / cell needs about 1000 B" in line
    assert "detector gmm 900 B" in line and "--memory" in line
    with pytest.raises(UserError, match="a training step: 2.00 KiB"):
        monkeypatch.setattr(memory, "cell_peak", lambda s, c: 2048)
        memory.check_fits(None, [_cell()], 1, "cpu", 1500, scoring)


def test_an_impossible_run_is_refused_in_one_line_before_any_work(tmp_path):
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cache"), "OEBENCH_STORE": str(tmp_path / "s.db")}
    result = run_cli("run", "quickstart", "--memory", "64MB", env=env)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "needs about" in errors[0] and "detector knn" in errors[0]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "cache").glob("models/*.pt"))  # nothing was trained
    assert not list((tmp_path / "cache").glob("outputs/*.npz"))  # nor passed forward


def test_the_plan_shows_the_scoring_peak_and_the_forward_shards(tmp_path):
    env = {"OEBENCH_CACHE_DIR": str(tmp_path / "cache"), "OEBENCH_STORE": str(tmp_path / "s.db")}
    result = run_cli("run", "quickstart", "--shards", "2", "--plan", env=env | {"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "scoring peak" in result.stdout and "on disk" in result.stdout
    assert "est. time" in result.stdout and "Nothing was run" in result.stdout


def test_plan_rows_estimate_each_task(tmp_path, monkeypatch):
    from oebench.bench.parse import load_benchmark
    from oebench.session import plan_rows

    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    rows = plan_rows(load_benchmark("quickstart"), tmp_path / "s.db", "cpu", shards=2)
    assert [r["kind"] for r in rows] == ["train", "forward", "forward", "cell"] * 2
    for r in rows:  # a sharded cell's passes are its forward tasks': it only joins them
        assert r["seconds"] is not None and (r["seconds"] > 0) == (r["kind"] != "cell")
        assert (r["scoring_bytes"] is None) == (r["kind"] == "train")
        assert (r["peak_bytes"] is None) == (r["kind"] == "forward")
    for first in (0, 4):  # a shard holds one batch; its cell all of its outputs
        _, one, two, cell = rows[first : first + 4]
        assert one["scoring_bytes"] == two["scoring_bytes"] < cell["scoring_bytes"]


def test_a_spill_folder_that_cannot_be_written_keeps_the_outputs_in_memory(
    tmp_path, spill_small, capsys
):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    data = _images(300)
    out = forward(Net(), data, SHAPE, "cpu", 64, spill=blocked / "sub")
    _same(out, forward(Net(), data, SHAPE, "cpu", 64))
    assert not is_mapped(out.features)
    assert "cannot spill outputs" in capsys.readouterr().err


def test_cells_on_memory_mapped_outputs_give_the_in_memory_rows(tmp_path, monkeypatch):
    """The whole engine on outputs that live in files: every detector's rows as in memory."""
    from dataclasses import replace

    from conftest import TINY

    from oebench.bench.matrix import Ref
    from oebench.bench.parse import load_benchmark
    from oebench.execute.drive import run_here
    from oebench.execute.runner import Runner

    names = ("msp", "knn", "mahalanobis", "vim", "react", "she", "kl-matching", "gmm")
    bench = load_benchmark(str(TINY))
    bench = replace(bench, detectors=[Ref(n) for n in names], trainings=bench.trainings[:1])
    whole = run_here(Runner(bench, device="cpu", cache_root=tmp_path / "whole"))
    mapped = []
    monkeypatch.setattr(outputs, "MAP_BYTES", 4096)
    real = outputs.OutputCache.get_or_compute

    def noting(self, key, compute):
        found = real(self, key, compute)
        mapped.append(is_mapped(found.features))
        return found

    monkeypatch.setattr(outputs.OutputCache, "get_or_compute", noting)
    spilled = run_here(Runner(bench, device="cpu", cache_root=tmp_path / "spilled"))
    assert mapped and all(mapped)  # the train split and every test set
    assert len(whole) == len(spilled) == len(names) * (len(bench.ood_datasets) + 1)
    for a, b in zip(whole, spilled, strict=True):
        assert (a["detector"], a["ood_dataset"]) == (b["detector"], b["ood_dataset"])
        for metric in ("auroc", "aupr_in", "aupr_out", "fpr95"):
            assert a[metric] == b[metric], (a["detector"], metric)
