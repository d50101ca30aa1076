"""`oebench show NAME` and `oebench list ... SUBSTRING`, as a user runs them."""

import json

import click
import tomllib
from click.testing import CliRunner

from oebench.cli import cli
from oebench.hookspecs import hookimpl
from oebench.registry.plugins import get_plugin_manager


def run(*args: str):
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})
    return result


def test_show_a_detector_gives_plugin_citation_options_and_example():
    result = run("show", "knn")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "knn (detector, plugin feature-detectors)" in out
    assert "Citation: Sun et al. 2022" in out
    assert "│ k      │ int  │ 50      │" in out
    assert 'Example: detectors = [{ name = "knn", k = 50 }]' in out


def test_show_example_line_is_valid_toml():
    (desc,) = json.loads(run("show", "knn", "--json").output)
    parsed = tomllib.loads(desc["example"])
    assert parsed == {"detectors": [{"name": "knn", "k": 50}]}


def test_show_lists_every_kind_of_a_name_with_typed_options():
    found = json.loads(run("show", "hf", "--json").output)
    assert [d["kind"] for d in found] == ["dataset", "outlier source"]
    options = {o["name"]: o for o in found[0]["options"]}
    assert {"data_files", "data_dir", "image_column", "label_column"} <= set(options)
    assert options["image_column"] == {
        "name": "image_column",
        "type": "str",
        "required": False,
        "default": "image",
    }
    assert options["labels"]["type"] == "list[str] | None"


def test_show_objective_example_goes_in_a_training():
    out = run("show", "oe").output
    assert 'objective = { name = "oe", lam = 0.5 }' in out and "Hendrycks" in out


def test_show_unknown_name_suggests():
    result = run("show", "enrgy")
    assert result.exit_code == 2
    assert "Unknown component 'enrgy'. Did you mean: energy" in result.stderr


def test_list_accepts_substrings_and_wildcards():
    names = [r["name"] for r in json.loads(run("list", "detectors", "maha", "--json").output)]
    assert "mahalanobis" in names and "relative-mahalanobis" in names
    assert all("maha" in n for n in names)
    exact = [r["name"] for r in json.loads(run("list", "detectors", "maha*", "--json").output)]
    assert exact and all(n.startswith("maha") for n in exact)


class CommandPlugin:
    """A plugin that adds one command."""

    @staticmethod
    @hookimpl
    def register_commands(cli):
        @cli.command(name="hello-ux")
        def hello() -> None:
            click.echo("hello")


def test_list_plugins_shows_commands_a_plugin_adds():
    pm = get_plugin_manager()
    plugin = CommandPlugin()
    pm.register(plugin, name="ux-commands")
    try:
        pm.add_commands(cli)
        infos = json.loads(run("list", "plugins", "--json").output)
        mine = next(i for i in infos if i["name"] == "ux-commands")
        assert mine["commands"] == ["hello-ux"]
        assert "commands: hello-ux" in run("list", "plugins").output
        assert run("hello-ux").output == "hello\n"
    finally:
        pm.unregister(plugin)
        cli.commands.pop("hello-ux", None)
