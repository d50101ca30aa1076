"""``oebench list ...`` and ``oebench show``: the installed plugins and their components."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

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

    console = Console()
    console.print(plugins_table(infos, console))


def plugins_table(infos: list[dict], console: Any) -> Any:
    """The plugins as a table that fits ``console``: one column per field when that fits
    without cutting a word, else one block per plugin (name, distribution, version and
    hooks on a line, what it registered below), wrapped, never cut (a name longer than the
    whole width folds)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    rows = []
    for info in infos:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in info["components"].items())
        if info.get("commands"):
            what += f"{'; ' if what else ''}commands: {', '.join(info['commands'])}"
        # plugin text is never markup: "pip install 'x[timm]'" keeps its brackets
        status = f"[red]BROKEN: {escape(info['error'])}[/]" if info["error"] else escape(what)
        rows.append((info, status))
    table = Table(title="oebench plugins")
    for col in ("plugin", "distribution", "version", "hooks", "registers / error"):
        table.add_column(col, overflow="fold")
    for info, status in rows:
        table.add_row(
            escape(info["name"]),
            escape(info["distribution"] or "-"),
            escape(info["version"] or "-"),
            escape("\n".join(info["hooks"])),
            status,
        )
    longest = [0] * 5
    for info, status in rows:
        fields = (info["name"], info["distribution"] or "-", info["version"] or "-",
                  " ".join(info["hooks"]), Text.from_markup(status).plain)  # fmt: skip
        longest = [
            max([n, *(len(w) for w in f.split())]) for n, f in zip(longest, fields, strict=True)
        ]
    if sum(longest) + 3 * len(longest) + 1 <= console.width:  # no word need be cut
        return table
    narrow = Table(title="oebench plugins", show_lines=True)  # one plugin per block
    narrow.add_column("plugin · distribution version · hooks\n  registers / error", overflow="fold")
    for info, status in rows:
        about = Text(info["name"], style="bold")
        about.append(f" · {info['distribution'] or '-'} {info['version'] or '-'}", style="dim")
        about.append(f" · {', '.join(info['hooks'])}")
        narrow.add_row(Group(about, Padding(Text.from_markup(status), (0, 0, 0, 2))))
    return narrow


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
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{kind}s")
        for col in ("name", "plugin", "description"):
            table.add_column(col)
        for r in rows:  # plugin text is never markup
            table.add_row(escape(r["name"]), escape(r["plugin"]), escape(r["description"]))
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
@click.option(
    "--toml", "as_toml", is_flag=True, help="Print a benchmark's file (to copy and edit)."
)
def show(name: str, as_json: bool, as_toml: bool) -> None:
    """A component's plugin, description, citation, options (types, defaults) and an example
    line for a benchmark file; a benchmark's file. NAME: any dataset, model, detector, outlier
    source, objective or benchmark."""
    from oebench.registry.describe import describe_all, render

    if as_toml:
        click.echo(benchmark_text(name)[1], nl=False)
        return
    found = describe_all(name)
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in found], indent=2, default=repr))
        return
    console = output_console()
    for desc in found:
        render(console, desc)


def benchmark_text(name: str) -> tuple[str, str]:
    """A registered benchmark's file (its path, or ``<plugin ...>`` for one a plugin builds)
    and its text; an UnknownNameError with suggestions for another name."""
    from pathlib import Path

    from oebench.bench.matrix import Benchmark
    from oebench.bench.parse import read_text
    from oebench.errors import UserError
    from oebench.registry.lookup import get_component
    from oebench.registry.plugins import KINDS, get_plugin_manager

    pm = get_plugin_manager()
    if name not in pm.components("benchmark"):
        kinds = [k for k in KINDS if name in pm.components(k)]
        if kinds:
            raise UserError(f"{name!r} is a {kinds[0]}, not a benchmark: `oebench show {name}`")
    comp = get_component("benchmark", name)
    target = comp.factory() if callable(comp.factory) else comp.factory
    if isinstance(target, Benchmark):
        return f"<built by plugin {comp.plugin!r}>", target.text
    return str(target), read_text(Path(target))


@click.command()
@click.argument("name")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def init(name: str, path: str | None, force: bool) -> None:
    """Write a copy of the registered benchmark NAME to PATH (default: NAME.toml here), to
    edit and run with `oebench run PATH`."""
    from pathlib import Path

    from oebench.core.files import check_output_file, write_text_file
    from oebench.errors import UserError

    _, text = benchmark_text(name)
    path = path or f"{name}.toml"
    if check_output_file(path, force) and not force:
        raise UserError(f"{path} exists; pass --force to overwrite it")
    write_text_file(path, text)
    click.echo(f"Wrote {path}: edit it, then `oebench run {Path(path)}`", err=True)
