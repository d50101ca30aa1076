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
