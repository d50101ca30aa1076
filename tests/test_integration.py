"""Cross-cutting checks: score-cache keys, list options, calibration in reports."""

from dataclasses import replace

import numpy as np
from conftest import TINY

import oebench
from oebench.bench.matrix import Ref
from oebench.bench.parse import load_benchmark
from oebench.execute.drive import run_here
from oebench.execute.runner import Runner
from oebench.registry.plugins import get_plugin_manager


class CountingDetector(oebench.Detector):
    """A model detector (max logit from a fresh forward pass) that counts its scoring calls."""

    needs = frozenset({"model"})
    calls = 0

    def score_inputs(self, model, batches):
        import torch

        type(self).calls += 1
        with torch.no_grad():
            return np.concatenate([-model(x).max(1).values.numpy() for x in batches])


class Plugin:
    @oebench.hookimpl
    def register_detectors(self, register):
        register("counting", CountingDetector)


def _run_tiny() -> None:
    bench = load_benchmark(str(TINY))
    bench = replace(bench, detectors=[Ref("counting")], trainings=bench.trainings[:1])
    run_here(Runner(bench, device="cpu"))


def test_model_detector_scores_are_recomputed_when_its_code_changes(monkeypatch):
    pm = get_plugin_manager()
    pm.register(Plugin(), name="counting-plugin")
    try:
        _run_tiny()
        cold = CountingDetector.calls
        assert cold > 0
        _run_tiny()
        assert CountingDetector.calls == cold  # same code: every score from the cache

        import oebench.execute.detect as runner_module

        real = runner_module.code_digest

        def edited(factory):
            return "edited" if factory is CountingDetector else real(factory)

        monkeypatch.setattr(runner_module, "code_digest", edited)
        _run_tiny()
        assert CountingDetector.calls == 2 * cold  # edited code: scored again, not served stale
    finally:
        pm.unregister(name="counting-plugin")


def test_a_list_option_in_a_benchmark_file_is_checked_not_crashed_on(tmp_path):
    """TOML arrays as component options (``data_files = [...]``) reach the data check."""
    from conftest import run_cli

    bench = tmp_path / "b.toml"
    bench.write_text(
        TINY.read_text().replace(
            '"faces",', '{ name = "hf", data_files = ["missing-a.parquet", "missing-b.parquet"] },'
        )
    )
    result = run_cli("run", str(bench))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "unhashable" not in result.stderr
    assert "missing-a.parquet" in result.stderr


def test_leaderboard_caption_and_csv_carry_calibration_with_and_without_oe(tmp_path):
    import csv

    from conftest import run_cli

    out = tmp_path / "r.csv"
    result = run_cli("run", str(TINY), "--csv", str(out), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Calibration error (ID ECE / ID+OOD RMS, %): baseline" in result.stdout
    assert "→ oe" in result.stdout.split("Calibration error")[1].splitlines()[0]
    rows = list(csv.DictReader(out.open()))
    for row in rows:
        assert 0 <= float(row["ece"]) <= 100 and 0 <= float(row["rms_calib_mixed"]) <= 100
        assert row["recall"] == "0.95" and row["fpr_rule"] == "nearest"
        share = float(row["n_ood"]) / (float(row["n_ood"]) + float(row["n_id"]))
        if row["ood_dataset"] != "mean":
            assert abs(float(row["aupr_baseline"]) - 100 * share) < 1e-9


def test_fit_inputs_runs_only_when_a_score_must_be_computed(monkeypatch, tmp_path):
    """A warm rerun of a layer-statistics detector reads no training images again."""
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "cache"))  # cold, whatever ran before
    from oebench_plugins.model_detectors import MahalanobisEnsemble

    calls = []
    real = MahalanobisEnsemble.fit_inputs

    def counting(self, model, batches):
        calls.append(1)
        return real(self, model, batches)

    monkeypatch.setattr(MahalanobisEnsemble, "fit_inputs", counting)

    def run() -> np.ndarray:
        bench = replace(load_benchmark(str(TINY)), detectors=[Ref("mahalanobis-ensemble")])
        rows = run_here(Runner(bench, device="cpu"))
        return np.array([r["auroc"] for r in rows])

    cold = run()
    assert len(calls) == 2  # once per trained model (baseline, oe)
    warm = run()
    assert len(calls) == 2  # every score came from the cache
    assert np.array_equal(cold, warm)
