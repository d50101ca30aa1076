"""The dress rehearsal (benchmarks/perf/rehearsal.py) end to end at 1/100 of the real sizes:
synthetic data in the exact on-disk formats, the three paper benchmarks through ``--set``
overrides (small WRNs, so that it takes seconds), and its JSON with every phase."""

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

SCRIPT = REPO / "benchmarks" / "perf" / "rehearsal.py"


def _rehearsal():
    spec = importlib.util.spec_from_file_location("rehearsal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_md5(monkeypatch):
    """Synthetic files cannot match torchvision's md5s: check that the files exist."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.places365 as places
    import torchvision.datasets.svhn as svhn

    for module in (cifar, svhn, places):
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: Path(path).is_file())


def test_data_in_the_loaders_formats_at_scaled_real_sizes(tmp_path, monkeypatch, no_md5):
    import oebench

    reh = _rehearsal()
    root = tmp_path / "data"
    names = ["cifar10", "cifar100", "svhn", "dtd", "places365", "lsun", "icons50", "chars74k",
             "300k"]  # fmt: skip
    written = reh.ensure_data(root, 0.01, names)
    assert sorted(written) == sorted(names)
    assert reh.ensure_data(root, 0.01, names) == {}  # cached: nothing written again
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(root))
    sizes = {
        ("cifar10", "train"): 500, ("cifar10", "test"): 100, ("cifar100", "train"): 500,
        ("svhn", "test"): 260, ("dtd", "test"): 47, ("places365", "test"): 365,
        ("lsun", "test"): 100, ("icons50", "test"): 49 * 2, ("chars74k", "test"): 77 + 48,
    }  # fmt: skip
    for (name, split), n in sizes.items():
        data = oebench.create_dataset(name).load(split, shape=(3, 32, 32))
        assert len(data) == n, name
        x, y = data[0]
        assert tuple(x.shape) == (3, 32, 32), name
    svhn = oebench.create_dataset("svhn", use_extra=True).load("train")
    assert len(svhn) == 733 + 5311 and int(svhn.labels.max()) == 9  # label 10 is digit 0
    batch = pickle.loads((root / "cifar-100-python" / "train").read_bytes())
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (500, 3072)
    assert (
        len(pickle.loads((root / "cifar-100-python" / "meta").read_bytes())["fine_label_names"])
        == 100
    )
    images = np.load(root / "300K_random_images.npy", mmap_mode="r")
    assert images.shape == (3000, 32, 32, 3) and images.dtype == np.uint8
    outliers = oebench.create_outlier_source("300k-random-images").load("train", shape=(3, 32, 32))
    assert len(outliers) == 3000


def test_rehearsal_runs_the_three_benchmarks_and_writes_every_phase(tmp_path):
    reh = _rehearsal()
    output = tmp_path / "rehearsal.json"
    code = reh.main(["--scale", "0.01", "--data-root", str(tmp_path / "data"),
                     "--small-models", "--output", str(output)])  # fmt: skip
    assert code == 0
    report = json.loads(output.read_text())
    assert report["scale"] == 0.01 and set(report["benchmarks"]) == set(reh.BENCHMARKS)
    from oebench.bench.parse import load_benchmark

    for name, result in report["benchmarks"].items():
        bench = load_benchmark(name)
        assert result["exit"] == 0 and not result["partial"] and not result["failures"]
        assert "--set trainings.baseline.epochs=1" in result["command"]
        phases = result["phases"]
        id_key = bench.id_datasets[0].key
        expected = {"setup", "metrics", "store", f"load: {id_key} train", f"load: {id_key} test",
                    "load: 300k-random-images train", "train: baseline", "train: oe",
                    f"forward: {id_key} test"}  # fmt: skip
        expected |= {f"forward: {ref.key} test" for ref in bench.ood_datasets}
        expected |= {f"data files: {ref.key}" for ref in bench.ood_datasets}
        for det in bench.detectors:
            expected |= {f"detector: {det.key}", f"fit: {det.key}"}
        expected |= {f"score: {ref.key}" for ref in bench.ood_datasets}
        assert expected <= set(phases), sorted(expected - set(phases))
        assert all(phases[p]["peak_rss_bytes"] > 0 for p in expected)
        assert all(phases[p]["calls"] >= 1 for p in expected - {"setup"})
        # two models (baseline, oe) on each set; every item of the set passed through each
        test_items = phases[f"forward: {id_key} test"]["items"]
        assert phases[f"forward: {id_key} test"]["calls"] == 2
        assert test_items == 2 * (260 if name == "oe-svhn" else 100)
        assert result["peak_rss_bytes"] >= max(p["peak_rss_bytes"] for p in phases.values())
        wall = result["wall_seconds"]
        assert sum(p["seconds"] for p in phases.values()) == pytest.approx(wall, rel=0.25)
        steps = result["projection"]["recipe_steps"]
        full = 73_257 + 531_131 if name == "oe-svhn" else 50_000
        epochs = {t.name: t.params["epochs"] for t in bench.trainings}
        assert steps == {t: e * -(-full // 128) for t, e in epochs.items()}
        assert result["projection"]["projected_total_hours"] > 0
        assert {t for t, s in result["projection"]["seconds_per_step"].items() if s > 0} == set(
            epochs
        )
