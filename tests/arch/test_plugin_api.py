"""The public plugin API: plugins import oebench.api and nothing else of oebench."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import oebench.api

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
PLUGIN_FILES = sorted(PLUGINS.rglob("*.py"))


def oebench_imports(source: str) -> list[str]:
    """Every oebench module a Python source imports, anywhere in it (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "oebench":  # `from oebench import api` names a module
                found += [f"oebench.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [m for m in found if m == "oebench" or m.startswith("oebench.")]


def test_the_check_sees_every_kind_of_import():
    source = (
        "import oebench\nimport oebench.api as oebench\n"
        "from oebench.contracts.data import ImageSource\n"
        "from oebench import errors\nimport oebench_plugins.images\n"
        "def f():\n    from oebench.contracts.model import Classifier\n"
    )
    assert oebench_imports(source) == [
        "oebench",
        "oebench.api",
        "oebench.contracts.data",
        "oebench.errors",
        "oebench.contracts.model",
    ]


def test_there_are_plugin_files_to_check():
    names = {p.name for p in PLUGIN_FILES}
    assert {"logit_detectors.py", "oebench_example_detector.py", "test_logit_margin.py"} <= names


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(PLUGINS)))
def test_plugins_import_only_the_public_api(path):
    public = ("oebench.api", "oebench.testing")  # the plugin API and, for tests, the kit
    other = [m for m in oebench_imports(path.read_text()) if m not in public]
    assert not other, f"{path.name} imports {other}: import them from oebench.api"


@pytest.mark.parametrize("name", oebench.api.__all__)
def test_every_public_name_resolves(name):
    assert getattr(oebench.api, name) is not None


def test_public_names_are_listed_once_and_unknown_ones_fail():
    assert len(oebench.api.__all__) == len(set(oebench.api.__all__))
    assert set(oebench.api.__all__) <= set(dir(oebench.api))
    with pytest.raises(AttributeError, match="no attribute 'Detectr'"):
        oebench.api.Detectr  # noqa: B018


def test_importing_the_api_does_not_import_torch():
    code = "import sys, oebench.api; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
