"""The ``oebench`` command line. Heavy libraries are imported inside commands."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
from typing import Any

import click

from oebench.errors import UnknownNameError, UserError

LIST_KINDS = {
    "datasets": "dataset",
    "models": "model",
    "detectors": "detector",
    "outliers": "outlier source",
    "objectives": "objective",
    "benchmarks": "benchmark",
}


class Group(click.Group):
    """Turns user mistakes into one line on stderr and exit status 2, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            ctx.exit(2)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            if args and args[0] not in self.commands and not args[0].startswith("-"):
                raise click.UsageError(
                    str(UnknownNameError("command", args[0], self.commands)), ctx
                ) from None
            raise


@click.group(cls=Group)
@click.version_option(package_name="oebench")
def cli() -> None:
    """Benchmark OOD detectors with and without Outlier Exposure."""


@cli.group(name="list", cls=Group)
def list_() -> None:
    """List plugins and the components they register."""


@list_.command(name="plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_plugins(as_json: bool) -> None:
    """Installed plugins: name, version, hooks, what each registered, and errors."""
    from oebench.plugins import KINDS, get_plugin_manager

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
        from oebench.plugins import get_plugin_manager

        comps = get_plugin_manager().components(kind)
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

    command.__doc__ = f"Registered {kind}s (optionally matching a wildcard PATTERN)."
    return click.command(name=plural)(command)


for _plural, _kind in LIST_KINDS.items():
    list_.add_command(_list_command(_plural, _kind))


def select_detectors(patterns: str) -> list[str]:
    """Registered detector names matching comma-separated wildcards, in order."""
    from oebench.registry import list_detectors

    names: list[str] = []
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        found = list_detectors(pattern)
        if not found:
            raise UnknownNameError("detector", pattern, list_detectors())
        names += [n for n in found if n not in names]
    return names


@cli.command()
@click.argument("benchmark", default="quickstart")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    help="Write results in long format (one row per detector x OOD set, plus means).",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--seed",
    "seeds",
    type=int,
    multiple=True,
    help="Seed(s) to run instead of the benchmark's (repeatable).",
)
@click.option(
    "--detectors",
    "detector_patterns",
    help="Detectors to use instead of the benchmark's: comma-separated wildcards.",
)
@click.option(
    "--oe-scratch",
    is_flag=True,
    help="Train OE models from scratch instead of fine-tuning the baseline.",
)
@click.option("--detail", help="Detector for the per-OOD-set table (default: the best).")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    help="Where dataset files are (sets $OEBENCH_DATA_ROOT).",
)
@click.option("--download", is_flag=True, help="Allow downloading missing dataset files.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write cached models/outputs.")
def run(
    benchmark: str,
    csv_path: str | None,
    device: str,
    seeds: tuple[int, ...],
    detector_patterns: str | None,
    oe_scratch: bool,
    detail: str | None,
    data_root: str | None,
    download: bool,
    no_cache: bool,
) -> None:
    """Run BENCHMARK (a registered name or a .toml path; default: quickstart)."""
    from oebench.benchmark import Ref, load_benchmark

    if data_root:
        os.environ["OEBENCH_DATA_ROOT"] = data_root
    if download:
        os.environ["OEBENCH_DOWNLOAD"] = "1"
    bench = load_benchmark(benchmark)
    if seeds:
        bench.seeds = list(seeds)
    if detector_patterns:
        bench.detectors = [Ref(n) for n in select_detectors(detector_patterns)]
    if oe_scratch:
        bench.trainings = [_scratch(t, bench) for t in bench.trainings]
    if detail and detail not in [d.key for d in bench.detectors]:
        raise UnknownNameError("detector", detail, [d.key for d in bench.detectors])
    _run(bench, device, csv_path, detail, not no_cache)


def _scratch(training: Any, bench: Any) -> Any:
    """An OE training that starts from scratch with the benchmark's default settings."""
    from dataclasses import replace

    from oebench.benchmark import DEFAULT_TRAINING, parse_benchmark

    if training.init is None:
        return training
    defaults = dict(DEFAULT_TRAINING)
    defaults.update(
        parse_benchmark(bench.text, bench.source).trainings[0].params
    ) if bench.text else None
    params = dict(training.params)
    params.update(epochs=defaults["epochs"], lr=defaults["lr"])
    return replace(training, init=None, settings=tuple(sorted(params.items())))


def output_console() -> Any:
    """A rich console for stdout that is wide enough for leaderboards when piped."""
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if piped else None)


def _run(
    bench: Any, device: str, csv_path: str | None, detail: str | None, use_cache: bool
) -> None:
    from rich.console import Console

    from oebench.progress import RichProgress
    from oebench.report import render, results_frame, write_table
    from oebench.runner import Runner

    console = output_console()
    runner = Runner(bench, device=device, use_cache=use_cache)
    rows: list[dict] = []
    try:
        with RichProgress(Console(stderr=True)) as progress:
            runner.progress = progress
            runner.run(on_cell=lambda cell, cell_rows: rows.extend(cell_rows))
    except KeyboardInterrupt:
        click.secho(
            f"Interrupted: keeping {len(rows)} result rows computed so far.", fg="yellow", err=True
        )
        if not rows:
            sys.exit(130)
    df = results_frame(rows)
    if csv_path:
        write_table(df, csv_path, "csv")
    render(console, df, detail)
    if csv_path:
        console.print(f"Wrote {len(df)} rows to {csv_path}")


@cli.group(cls=Group)
def cache() -> None:
    """Inspect or clear cached checkpoints and forward-pass outputs."""


@cache.command(name="info")
def cache_info() -> None:
    """Where the cache is and how big it is."""
    from oebench.data import cache_dir

    root = cache_dir()
    for sub in ("models", "outputs"):
        files = list((root / sub).glob("*")) if (root / sub).exists() else []
        size = sum(f.stat().st_size for f in files) / 2**20
        click.echo(f"{root / sub}: {len(files)} files, {size:.1f} MiB")


@cache.command(name="clear")
@click.option("--outputs-only", is_flag=True, help="Keep trained checkpoints.")
def cache_clear(outputs_only: bool) -> None:
    """Delete cached forward-pass outputs (and checkpoints unless --outputs-only)."""
    import shutil

    from oebench.data import cache_dir

    for sub in ("outputs",) if outputs_only else ("outputs", "models"):
        path = cache_dir() / sub
        if path.exists():
            shutil.rmtree(path)
            click.echo(f"removed {path}")


def main() -> None:
    """Entry point: add plugin commands, then run the CLI."""
    from oebench.plugins import get_plugin_manager

    get_plugin_manager().add_commands(cli)
    cli.main(prog_name="oebench")


if __name__ == "__main__":  # pragma: no cover
    main()
