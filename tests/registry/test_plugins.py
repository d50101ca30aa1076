import json

import pytest
from conftest import run_cli

import oebench
from oebench.errors import UnknownNameError
from oebench.registry.plugins import PluginManager, get_plugin_manager


class _Detectors:
    """A throwaway plugin registering one detector."""

    def __init__(self, name):
        self.name = name

    @oebench.hookimpl
    def register_detectors(self, register):
        register(self.name, oebench.Detector, description="test")


def _register(plugin, name):
    return get_plugin_manager().register(plugin, name=name)


def test_builtins_are_plugins_loaded_through_entry_points():
    infos = get_plugin_manager().infos
    assert infos["logit-detectors"].dist == "oebench"
    assert infos["logit-detectors"].error is None
    assert "msp" in oebench.list_detectors()
    assert get_plugin_manager().components("detector")["msp"].plugin == "logit-detectors"


def test_lookup_api_with_wildcards_and_suggestions():
    assert oebench.list_detectors("*energy*") == ["energy"]
    assert oebench.create_detector("energy", temperature=2.0).temperature == 2.0
    with pytest.raises(UnknownNameError, match="Did you mean: energy"):
        oebench.create_detector("enrgy")
    with pytest.raises(oebench.errors.UserError, match="Options it accepts: temperature"):
        oebench.create_detector("energy", temp=2.0)


def test_throwaway_plugin_registers_and_unregisters():
    _register(_Detectors("my-detector"), "throwaway")
    try:
        assert "my-detector" in oebench.list_detectors()
        assert get_plugin_manager().components("detector")["my-detector"].plugin == "throwaway"
    finally:
        get_plugin_manager().unregister(name="throwaway")
    assert "my-detector" not in oebench.list_detectors()


def test_duplicate_name_is_an_error_naming_both_plugins(capsys):
    _register(_Detectors("msp"), "copycat")
    try:
        assert get_plugin_manager().components("detector")["msp"].plugin == "logit-detectors"
        error = get_plugin_manager().infos["copycat"].error
        assert "'logit-detectors'" in error and "'copycat'" in error and "'msp'" in error
    finally:
        get_plugin_manager().unregister(name="copycat")


def test_a_hook_that_raises_breaks_only_its_plugin():
    class Raises:
        @oebench.hookimpl
        def register_detectors(self, register):
            register("half-registered", oebench.Detector)
            raise RuntimeError("boom")

    _register(Raises(), "raiser")
    try:
        names = oebench.list_detectors()
        assert "msp" in names and "half-registered" not in names
        assert "RuntimeError: boom" in get_plugin_manager().infos["raiser"].error
    finally:
        get_plugin_manager().unregister(name="raiser")


def test_misspelled_hook_is_an_error():
    class Misspelled:
        @oebench.hookimpl
        def register_detector(self, register):
            pass

    pm = PluginManager()
    pm.register(Misspelled(), name="typo")
    error = pm.infos["typo"].error
    assert "unknown hook 'register_detector'" in error
    assert "did you mean 'register_detectors'" in error
    assert pm.get_plugin("typo") is None


BROKEN = "raise ImportError('needs a missing library')\n"
GOOD = (
    "import oebench\n\n@oebench.hookimpl\ndef register_datasets(register):\n"
    "    register('extra-set', object, description='x')\n"
)


def test_entry_point_that_fails_to_import_is_reported(fake_dist, monkeypatch):
    root = fake_dist(
        "oebench-broken",
        {"broken_mod": BROKEN, "good_mod": GOOD},
        {"broken": "broken_mod", "good": "good_mod"},
    )
    monkeypatch.syspath_prepend(str(root))
    pm = PluginManager()
    pm.load_entry_points()
    broken = pm.infos["broken"]
    assert broken.error.startswith("import failed: ImportError: needs a missing library")
    assert (broken.dist, broken.version) == ("oebench-broken", "1.2.3")
    assert "extra-set" in pm.components("dataset")
    assert "msp" in pm.components("detector")


def test_env_vars_select_and_block_plugins(fake_dist, monkeypatch):
    root = fake_dist("oebench-good", {"good_mod": GOOD}, {"good": "good_mod"})
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("OEBENCH_BLOCK_PLUGINS", "good,synthetic")
    pm = PluginManager()
    pm.load_entry_points()
    assert "good" not in pm.infos and "synthetic" not in pm.infos and "images" in pm.infos
    monkeypatch.delenv("OEBENCH_BLOCK_PLUGINS")
    monkeypatch.setenv("OEBENCH_LOAD_PLUGINS", "good")
    pm = PluginManager()
    pm.load_entry_points()
    assert list(pm.infos) == ["good"]


def test_list_plugins_json_shows_broken_plugin_without_crashing(fake_dist):
    root = fake_dist("oebench-broken", {"broken_mod": BROKEN}, {"broken": "broken_mod"})
    result = run_cli("list", "plugins", "--json", env={"PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    infos = {p["name"]: p for p in json.loads(result.stdout)}
    assert set(infos["broken"]) >= {"name", "version", "hooks", "error"}
    assert "ImportError" in infos["broken"]["error"]
    assert infos["logit-detectors"]["error"] is None
    assert "register_detectors" in infos["logit-detectors"]["hooks"]
    assert "plugin 'broken' (oebench-broken 1.2.3) is broken" in result.stderr


def test_list_components_json():
    result = run_cli("list", "detectors", "*e*", "--json")
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} >= {"energy", "entropy"}
    assert all(r["plugin"] for r in rows)
    assert run_cli("list", "objectives").returncode == 0


def test_plugin_can_add_a_command(fake_dist):
    source = (
        "import click, oebench\n\n@oebench.hookimpl\ndef register_commands(cli):\n"
        "    @cli.command()\n    def hello():\n        click.echo('hello from a plugin')\n"
    )
    root = fake_dist("oebench-cmd", {"cmd_mod": source}, {"cmd": "cmd_mod"})
    result = run_cli("hello", env={"PYTHONPATH": str(root)})
    assert result.stdout.strip() == "hello from a plugin"


def test_a_detector_that_raises_is_reported_and_the_others_still_run(fake_dist, tmp_path):
    from conftest import TINY

    source = (
        "import oebench\n\nclass Boom(oebench.Detector):\n"
        "    def score(self, outputs):\n        raise RuntimeError('kaboom')\n\n"
        "@oebench.hookimpl\ndef register_detectors(register):\n    register('boom', Boom)\n"
    )
    root = fake_dist("oebench-boom", {"boom_mod": source}, {"boomer": "boom_mod"})
    out = tmp_path / "r.csv"
    result = run_cli(
        "run",
        str(TINY),
        "--detectors",
        "msp,boom",
        "--csv",
        str(out),
        env={"PYTHONPATH": str(root)},
    )
    assert result.returncode == 1
    assert "detector 'boom' (plugin 'boomer') failed" in result.stderr
    assert "RuntimeError: kaboom" in result.stderr and "Traceback" not in result.stderr
    import csv

    rows = list(csv.DictReader(out.open()))
    assert {r["detector"] for r in rows} == {"msp"}
    assert {r["training"] for r in rows} == {"baseline", "oe"}


def test_every_hook_is_documented_for_plugin_authors():
    from conftest import REPO

    from oebench.registry.plugins import HOOK_NAMES

    guide = (REPO / "CONTRIBUTING.md").read_text()
    assert HOOK_NAMES, "no hooks found"
    for hook in HOOK_NAMES:
        assert f"`{hook}(" in guide, f"{hook} is not documented in CONTRIBUTING.md"
