"""Every first-party plugin module, the example plugin and a scaffolded plugin import without
torch, torchvision, pandas, matplotlib, ... (``oebench --help`` imports every plugin module;
issue 22, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from oebench.testing import check_import_is_light

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
EXAMPLE = PLUGINS / "oebench-example-detector"
FIRST_PARTY = sorted(
    f"oebench_plugins.{p.stem}" for p in (PLUGINS / "oebench_plugins").glob("*.py")
)


@pytest.mark.parametrize("module", FIRST_PARTY)
def test_first_party_plugin_modules_import_no_heavy_library(module):
    check_import_is_light(module)


def test_the_example_plugin_imports_no_heavy_library(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    check_import_is_light("oebench_example_detector")


def test_a_scaffolded_plugin_imports_no_heavy_library(tmp_path, monkeypatch):
    from oebench.cli import cli

    result = CliRunner().invoke(cli, ["new-plugin", "oebench-light-probe", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "oebench-light-probe"
    monkeypatch.syspath_prepend(str(folder))
    check_import_is_light("oebench_light_probe")
    assert (
        'check_import_is_light("oebench_light_probe")'
        in (folder / "tests" / "test_oebench_light_probe.py").read_text()
    )
