"""The kit for plugin authors: oebench.testing, `oebench new-plugin`, typed hooks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO

from oebench.cli import cli
from oebench.hookspecs import hookimpl
from oebench.registry.lookup import list_detectors
from oebench.testing import (
    check_dataset,
    check_detector,
    check_model,
    check_objective,
    check_outlier_source,
    registered,
)


class Short:
    """A detector plugin that breaks the contract: half the scores it should return."""

    @staticmethod
    @hookimpl
    def register_detectors(register):
        class Half:
            needs = frozenset({"logits"})

            def config(self):
                return {}

            def score(self, outputs):
                return np.zeros(len(outputs) // 2)

        register("half-ux", Half)


def test_registered_plugins_are_gone_after_the_block_even_on_error():
    with registered(Short(), "short-ux"):
        assert list_detectors("half-ux") == ["half-ux"]
    assert list_detectors("half-ux") == []
    with pytest.raises(RuntimeError), registered(Short(), "short-ux"):
        raise RuntimeError("inside")
    assert list_detectors("half-ux") == []


def test_fixture_registers_for_one_test(oebench_plugin):
    oebench_plugin(Short(), "short-ux")
    assert list_detectors("half-ux") == ["half-ux"]


def test_fixture_unregistered_after_the_previous_test():
    assert list_detectors("half-ux") == []


def test_contract_check_names_the_broken_detector(oebench_plugin):
    oebench_plugin(Short(), "short-ux")
    with pytest.raises(AssertionError, match="detector 'half-ux' returned 32 scores for 64"):
        check_detector("half-ux")


def test_builtin_components_pass_the_contract_checks():
    assert check_detector("energy").shape == (64,)
    check_detector("knn", k=3)  # fit on fake training outputs
    check_model("small-cnn", classes=3, shape=(1, 28, 28), width=4)
    check_objective("oe")
    check_dataset("gaussian", n=20)
    check_outlier_source("photo-crops", n=10)


def _pytest(folder: Path) -> subprocess.CompletedProcess:
    """Run a plugin package's own tests as its author would, in its folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_example_plugin_tests_use_the_kit_and_pass():
    folder = REPO / "plugins" / "oebench-example-detector"
    assert "oebench.testing" in (folder / "tests" / "conftest.py").read_text()
    result = _pytest(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_new_plugin_writes_a_package_whose_tests_pass(tmp_path):
    result = CliRunner().invoke(cli, ["new-plugin", "oebench-ux-demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "oebench-ux-demo"
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"pyproject.toml", "oebench_ux_demo.py", "tests/test_oebench_ux_demo.py"} <= names
    assert 'ux-demo = "oebench_ux_demo"' in (folder / "pyproject.toml").read_text()
    run = _pytest(folder)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "7 passed" in run.stdout  # detector, dataset, outliers, model, objective, command,
    # and the import check: no torch at the module's top (oebench --help imports it)
    again = CliRunner().invoke(cli, ["new-plugin", "oebench-ux-demo", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "exists already" in again.stderr


def test_new_plugin_rejects_a_bad_name(tmp_path):
    result = CliRunner().invoke(cli, ["new-plugin", "My Plugin", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "lower-case letters" in result.stderr


def test_cache_folder_comes_from_platformdirs(monkeypatch, tmp_path):
    from oebench.core.settings import cache_dir

    monkeypatch.delenv("OEBENCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # what platformdirs reads on Linux
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "oebench"
    monkeypatch.setenv("OEBENCH_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
