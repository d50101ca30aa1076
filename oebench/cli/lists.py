"""``oebench list ...`` and ``oebench show``: the installed plugins and their components."""

from __future__ import annotations

import fnmatch
import json

import click

from oebench.cli.common import Group, output_console

LIST_KINDS = {
    "datasets": "dataset",
    "models": "model",
    "detectors": "detector",
    "outliers": "outlier source",
    "objectives": "objective",
    "benchmarks": "benchmark",
}


@click.group(name="list", cls=Group)
def list_() -> None:
    """List plugins and the components they register."""


@list_.command(name="plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_plugins(as_json: bool) -> None:
    """Installed plugins: name, version, hooks, what each registered, and errors."""
    from oebench.registry.plugins import KINDS, get_plugin_manager

    pm = get_plugin_manager()
    for kind in KINDS:  # collecting components reports plugins whose hooks fail
        pm.components(kind)
    infos = [info.as_dict() for info in pm.infos.values()]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="oebench plugins")
    for col in ("plugin", "distribution", "version", "hooks", "registers / error"):
        table.add_column(col)
    for info in infos:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in info["components"].items())
        if info.get("commands"):
            what += f"{'; ' if what else ''}commands: {', '.join(info['commands'])}"
        status = f"[red]BROKEN: {info['error']}[/]" if info["error"] else what
        table.add_row(
            info["name"],
            info["distribution"] or "-",
            info["version"] or "-",
            "\n".join(info["hooks"]),
            status,
        )
    Console().print(table)


def _list_command(plural: str, kind: str) -> click.Command:
    @click.argument("pattern", default="*")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
    def command(pattern: str, as_json: bool) -> None:
        from oebench.registry.plugins import get_plugin_manager

        comps = get_plugin_manager().components(kind)
        if not any(ch in pattern for ch in "*?["):  # a plain word matches as a substring
            pattern = f"*{pattern}*"
        rows = [
            {"name": c.name, "plugin": c.plugin, "description": c.description}
            for name, c in sorted(comps.items())
            if fnmatch.fnmatchcase(name, pattern)
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{kind}s")
        for col in ("name", "plugin", "description"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], r["plugin"], r["description"])
        Console().print(table)

    command.__doc__ = (
        f"Registered {kind}s (optionally matching PATTERN: a wildcard, or a substring)."
    )
    return click.command(name=plural)(command)


for _plural, _kind in LIST_KINDS.items():
    list_.add_command(_list_command(_plural, _kind))


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(name: str, as_json: bool) -> None:
    """A component's plugin, description, citation, options (types, defaults) and an example
    line for a benchmark file. NAME: any dataset, model, detector, outlier source, objective
    or benchmark."""
    from oebench.registry.describe import describe_all, render

    found = describe_all(name)
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in found], indent=2, default=repr))
        return
    console = output_console()
    for desc in found:
        render(console, desc)
