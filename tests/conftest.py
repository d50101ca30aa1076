import os
import subprocess
import sys
from pathlib import Path

import pytest

#: oebench's plugin kit: the `oebench_plugin` fixture (registers a plugin for one test)
pytest_plugins = ["oebench.testing"]

TESTS = Path(__file__).parent
TINY = TESTS / "data" / "tiny.toml"
REPO = TESTS.parent


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test shares one throwaway cache directory, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "oebench-cache"
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(cache))
    monkeypatch.delenv("OEBENCH_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("OEBENCH_BLOCK_PLUGINS", raising=False)
    return cache


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Every test gets its own results store, never the user's."""
    store = tmp_path / "results.sqlite"
    monkeypatch.setenv("OEBENCH_STORE", str(store))
    return store


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the ``oebench`` CLI in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from oebench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def fake_dist(tmp_path):
    """Write a fake installed distribution with ``oebench`` entry points; returns a factory."""

    def make(name: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
        root = tmp_path / "site"
        root.mkdir(exist_ok=True)
        for mod, source in modules.items():
            (root / f"{mod}.py").write_text(source)
        info = root / f"{name.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
        lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[oebench]\n{lines}\n")
        return root

    return make


def store_record(key: str, **changes) -> dict:
    """A cell record for the store with placeholder values (``changes`` override them)."""
    from oebench.record.schema import CELL_COLUMNS

    record = {c: "x" for c in CELL_COLUMNS}
    record.update(
        key=key,
        benchmark="b",
        benchmark_digest="d",
        benchmark_text="name = 'b'",
        seed=0,
        cell_index=0,
        outlier_source="",
        train_seconds=1.0,
        score_seconds=1.0,
        trained=1,
        created_at="2026-01-01T00:00:00",
    )
    record.update(changes)
    return record


def store_rows(auroc: float) -> list[dict]:
    """Two result rows (one OOD set and the mean) with every metric at ``auroc``."""
    from oebench.record.schema import METRIC_COLUMNS

    metrics = {m: auroc for m in METRIC_COLUMNS}
    return [
        {"detector": "msp", "ood_dataset": ood, "row_index": i, **metrics, "id_accuracy": 90.0}
        | {"n_id": 10, "n_ood": 5 if ood != "mean" else 0}
        for i, ood in enumerate(["noise", "mean"])
    ]


@pytest.fixture(scope="module")
def pood():
    """pytorch-ood's detectors, the parity tests' oracle (skipped where it is not installed)."""
    return pytest.importorskip("pytorch_ood.detector")
