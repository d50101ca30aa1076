"""Warm runs: with every output and score cached, a cell needs neither its model nor torch,
and the notes that make that possible are believed only while they hold."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from conftest import TINY

from oebench.bench.parse import load_benchmark
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner

COLUMNS = ["training", "detector", "ood_dataset", "auroc", "aupr_in", "fpr95", "train_seconds"]


def _run_in_a_new_process(cache, store, *args: str) -> tuple[str, bool]:
    """``oebench run TINY --csv ...`` in a fresh interpreter: (the CSV, torch imported?)."""
    code = textwrap.dedent(
        f"""
        import sys
        from oebench.cli import cli
        try:
            cli.main(["run", {str(TINY)!r}, "--csv", "-", *{list(args)!r}], prog_name="oebench")
        except SystemExit as exc:
            assert not exc.code, exc.code
        print("torch:", "torch" in sys.modules)
        """
    )
    env = {"OEBENCH_CACHE_DIR": str(cache), "OEBENCH_STORE": str(store)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    csv, _, flag = out.stdout.rpartition("torch: ")
    return csv, flag.strip() == "True"


def test_a_warm_rerun_gives_the_same_csv_without_importing_torch(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store.sqlite"
    cold, cold_torch = _run_in_a_new_process(cache, store)
    warm, warm_torch = _run_in_a_new_process(cache, store, "--rerun")
    served, served_torch = _run_in_a_new_process(cache, store)
    assert cold_torch and not warm_torch and not served_torch
    assert warm == cold == served and cold.count("\n") > 10


def _rows(runner: Runner) -> pd.DataFrame:
    return pd.DataFrame(run_here(runner))[COLUMNS]


@pytest.fixture
def bench():
    return load_benchmark(str(TINY))


def _notes(cache) -> list:
    return sorted((cache / "models" / "notes").glob("*.json"))


def test_a_replaced_checkpoint_is_not_vouched_for_by_its_old_note(bench, tmp_path):
    cache = tmp_path / "cache"
    first = _rows(Runner(bench, device="cpu", cache_root=cache))
    baseline = next(p for p in _notes(cache) if not p.name.startswith("init-"))
    checkpoint = cache / "models" / baseline.name.replace(".json", ".pt")
    assert checkpoint.exists()
    noted = json.loads(baseline.read_text())["file"]
    assert noted == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    checkpoint.write_bytes(checkpoint.read_bytes()[:-10] + b"0123456789")  # damaged
    runner = Runner(bench, device="cpu", cache_root=cache)
    again = _rows(runner)
    # the note no longer matches the file: the model was loaded, found damaged and retrained
    assert runner.models._states, "the model was not loaded"
    pd.testing.assert_frame_equal(
        again.drop(columns="train_seconds"), first.drop(columns="train_seconds")
    )
    # and noted again, for the file now there
    note = json.loads(baseline.read_text())
    assert note["file"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_a_note_that_lies_about_the_weights_stores_nothing(bench, tmp_path):
    cache = tmp_path / "cache"
    _rows(Runner(bench, device="cpu", cache_root=cache))
    from oebench.keys.weights import note_checksum

    for path in _notes(cache):
        if not path.name.startswith("init-"):  # a lie with a valid checksum: not damage
            note = json.loads(path.read_text()) | {"digest": "0" * 20}
            path.write_text(json.dumps(note | {"checksum": note_checksum(note)}))
    runner = Runner(bench, device="cpu", cache_root=cache)
    rows = run_here(runner)
    # no output is cached under the made-up digest: the model is built, its digest checked
    assert rows == [] and len(runner.failed_cells) == 2
    assert all("hash to" in message for message in runner.failed_cells)


def test_cached_scores_follow_the_detector_options(bench, tmp_path):
    # another temperature is another detector: its scores are computed, not served
    from dataclasses import replace

    from oebench.bench.matrix import Ref

    cache = tmp_path / "cache"
    plain = _rows(Runner(bench, device="cpu", cache_root=cache))
    hot = replace(bench, detectors=[Ref("energy", (("temperature", 1000.0),))])
    hot_rows = _rows(Runner(hot, device="cpu", cache_root=cache))
    plain_energy = plain[plain.detector == "energy"].reset_index(drop=True)
    assert not hot_rows["auroc"].equals(plain_energy["auroc"])


def test_outputs_held_in_memory_stay_under_the_bound(monkeypatch):
    import numpy as np

    from oebench.contracts.detector import Outputs
    from oebench.execute import outputs

    monkeypatch.setattr(outputs, "MEMORY_BYTES", 10 * 8_000)
    cache = outputs.OutputCache(enabled=False)
    made = []

    def make(i: int):
        made.append(i)
        return Outputs(np.full((1000, 1), float(i)))  # 8,000 bytes

    for i in range(30):
        cache.get_or_compute(f"k{i}", lambda i=i: make(i))
    assert cache._memory_bytes <= 10 * 8_000 and len(cache._memory) == 10
    assert cache.get_or_compute("k29", lambda: make(-1)).logits[0, 0] == 29  # still held
    cache.get_or_compute("k0", lambda: make(0))  # long gone (and no disk cache): made again
    assert made == [*range(30), 0]
