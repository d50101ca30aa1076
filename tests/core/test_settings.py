"""One place for paths and switches: oebench.core.settings reads every OEBENCH_* variable."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from oebench.cli import cli
from oebench.core import settings
from oebench.core.failures import debug_traceback

ROOT = Path(__file__).resolve().parents[2]


def environment_keys(source: str) -> list[str]:
    """The keys a module reads from ``os.environ`` / ``os.getenv``: a literal or a NAME_ENV."""
    keys = []
    for node in ast.walk(ast.parse(source)):
        key = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and node.args
            and ast.unparse(node.func)
            in (
                "os.environ.get",
                "os.getenv",
                "os.environ.setdefault",
            )
        ):
            key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            keys.append(key.value)
        elif isinstance(key, ast.Name) and key.id.endswith("_ENV"):
            keys.append(f"OEBENCH_{key.id}")
    return keys


def test_the_scan_finds_reads_of_either_form():
    source = (
        'X_ENV = "OEBENCH_X"\nos.environ.get(X_ENV)\nos.environ["OEBENCH_Y"]\nos.getenv("HOME")\n'
    )
    assert environment_keys(source) == ["OEBENCH_X_ENV", "OEBENCH_Y", "HOME"]


def test_settings_is_the_only_reader_of_oebench_variables():
    readers = set()
    for path in sorted((ROOT / "oebench").rglob("*.py")):
        keys = environment_keys(path.read_text())
        if path.name != "settings.py" and any(k.startswith("OEBENCH_") for k in keys):
            readers.add(path.relative_to(ROOT).as_posix())
    assert not readers, f"{sorted(readers)} read OEBENCH_* variables: use oebench.core.settings"


def test_the_readme_table_lists_every_variable():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(OEBENCH_[A-Z_]+)", table))
    assert listed == {env for env, _ in settings.VARIABLES.values()}


def test_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("OEBENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    assert settings.cache_dir() == tmp_path / "c"
    assert settings.data_root() == tmp_path / "c" / "data"
    assert settings.data_root("~/x") == Path.home() / "x"
    assert not settings.download_allowed()
    monkeypatch.setenv("OEBENCH_DATA_ROOT", "~/d")
    monkeypatch.setenv("OEBENCH_DOWNLOAD", "1")
    assert settings.data_root() == Path.home() / "d"
    assert settings.download_allowed()
    monkeypatch.setenv("OEBENCH_STORE", str(tmp_path / "s.sqlite"))
    assert settings.store_path() == tmp_path / "s.sqlite"


def test_the_store_defaults_to_the_user_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("OEBENCH_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # what platformdirs reads on Linux
    if sys.platform.startswith("linux"):
        assert settings.store_path() == tmp_path / "data" / "oebench" / "results.sqlite"
        monkeypatch.delenv("XDG_DATA_HOME")
        assert str(settings.store_path()).endswith(".local/share/oebench/results.sqlite")
    assert settings.store_path().name == "results.sqlite"


@pytest.mark.parametrize(("value", "on"), [(None, False), ("", False), ("0", False), ("1", True)])
def test_debug_switch(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv("OEBENCH_DEBUG", raising=False)
    else:
        monkeypatch.setenv("OEBENCH_DEBUG", value)
    assert settings.debug_enabled() is on


def test_plugin_lists(monkeypatch):
    monkeypatch.delenv("OEBENCH_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("OEBENCH_BLOCK_PLUGINS", " a, b ,,")
    assert settings.plugin_names("load_plugins") is None
    assert settings.plugin_names("block_plugins") == {"a", "b"}


def test_an_override_wins_inside_its_block_only(monkeypatch, tmp_path):
    monkeypatch.setenv("OEBENCH_DATA_ROOT", str(tmp_path / "env"))
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    with settings.override(data_root=tmp_path / "cli", download=True, debug=False):
        assert settings.data_root() == tmp_path / "cli"
        assert settings.download_allowed()
        assert settings.environ()["OEBENCH_DATA_ROOT"] == str(tmp_path / "cli")
        taken = settings.snapshot()
        assert taken["data_root"] == str(tmp_path / "cli") and taken["download"] == "1"
        with settings.override(data_root=None):  # None leaves it as it was
            assert settings.data_root() == tmp_path / "cli"
    assert settings.data_root() == tmp_path / "env"
    assert not settings.download_allowed()
    with settings.override(**taken):  # what a worker process does with the driver's snapshot
        assert settings.data_root() == tmp_path / "cli" and settings.download_allowed()
    with pytest.raises(TypeError, match="unknown settings: data_dir"):
        settings.override(data_dir="x").__enter__()


def test_cli_options_reach_settings_without_touching_the_environment(monkeypatch, tmp_path):
    """--debug and run's --data-root / --download hold for the command, and only for it."""
    seen = {}

    def fake_load(name):
        seen.update(
            root=settings.data_root(),
            download=settings.download_allowed(),
            debug=bool(debug_traceback(ValueError("x"))),
        )
        raise KeyboardInterrupt

    monkeypatch.setattr("oebench.bench.parse.load_benchmark", fake_load)
    monkeypatch.delenv("OEBENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("OEBENCH_DOWNLOAD", raising=False)
    monkeypatch.delenv("OEBENCH_DEBUG", raising=False)
    args = ["--debug", "run", "quickstart", "--data-root", str(tmp_path), "--download"]
    CliRunner().invoke(cli, args)
    assert seen == {"root": tmp_path, "download": True, "debug": True}
    assert "OEBENCH_DATA_ROOT" not in settings.environ()
    assert not settings.download_allowed() and not settings.debug_enabled()
