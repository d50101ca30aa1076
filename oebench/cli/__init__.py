"""The ``oebench`` command line. Heavy libraries are imported inside commands."""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from oebench.core import settings
from oebench.errors import UnknownNameError, UserError
from oebench.metrics import LOWER_IS_BETTER, METRICS

STORE_OPTION = click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    help="Results store file (default: $OEBENCH_STORE, else "
    "the platform user data folder: ~/.local/share/oebench/results.sqlite on Linux).",
)
FORMATS = ("table", "csv", "markdown", "latex", "json")
#: --option, keyword of oebench.report.results filters, what it selects
FILTER_OPTIONS = (
    ("--benchmark", "benchmark", "benchmark name"),
    ("--id-dataset", "id_dataset", "ID dataset"),
    ("--model", "model", "model"),
    ("--training", "training", "training (e.g. baseline, oe)"),
    ("--detector", "detector", "detector"),
    ("--seed", "seed", "seed"),
)

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
        except KeyboardInterrupt:  # not click's "Aborted!" and exit 1
            click.secho("Interrupted.", fg="yellow", err=True)
            ctx.exit(130)

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
@click.option(
    "--debug",
    "-v",
    "--verbose",
    is_flag=True,
    help="Print the full traceback of a failing plugin component (like $OEBENCH_DEBUG=1).",
)
def cli(debug: bool) -> None:
    """Benchmark OOD detectors with and without Outlier Exposure."""
    click.get_current_context().with_resource(settings.override(debug=debug))


@cli.group(name="list", cls=Group)
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


@cli.command()
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


def select_detectors(patterns: str) -> list[str]:
    """Registered detector names matching comma-separated wildcards, in order."""
    from oebench.registry.lookup import list_detectors

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
    type=click.IntRange(0, 2**63 - 1),
    multiple=True,
    help="Seed(s) to run instead of the benchmark's (repeatable; 0 to 2**63-1).",
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
@click.option(
    "--fpr-rule",
    type=click.Choice(["nearest", "first"]),
    help="FPR threshold: ROC point nearest the recall level (OE paper) or the first reaching "
    "it (OpenOOD, pytorch-ood); default: the benchmark's fpr_rule, else nearest.",
)
@click.option(
    "--recall",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="OOD recall level of the FPR column (default: the benchmark's recall, else 0.95).",
)
@click.option("--detail", help="Detector for the per-OOD-set table (default: the best).")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    help="Where dataset files are (overrides $OEBENCH_DATA_ROOT).",
)
@click.option("--download", is_flag=True, help="Allow downloading missing dataset files.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write cached models/outputs.")
@STORE_OPTION
@click.option(
    "--rerun",
    is_flag=True,
    help="Recompute cells already in the store and replace their results "
    "(cached models are reused unless --no-cache).",
)
@click.option(
    "--on-change",
    type=click.Choice(["recompute", "warn"]),
    default="recompute",
    show_default=True,
    help="A stored cell whose code or data files changed since it was computed: compute it "
    "again (the new result replaces it), or serve the stored result with a warning.",
)
@click.option(
    "--save-scores",
    "scores_dir",
    type=click.Path(file_okay=False),
    help="Write per-sample scores to DIR: one Parquet file per cell.",
)
@click.option(
    "--force", is_flag=True, help="Replace symbolic links where output files go (never followed)."
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask", "ray"]),
    default=lambda: settings.raw("executor"),
    help="Where cells run: this process (default), a Dask or a Ray cluster "
    "[env: OEBENCH_EXECUTOR; or `executor` in the benchmark file].",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=lambda: settings.raw("workers"),
    help="Worker processes of a local Dask/Ray cluster (default: one per core) "
    "[env: OEBENCH_WORKERS].",
)
@click.option(
    "--address",
    default=lambda: settings.raw("address"),
    help="A running cluster to use instead of a local one: tcp://host:8786 (Dask) or "
    "host:6379 / auto (Ray) [env: OEBENCH_ADDRESS].",
)
def run(
    benchmark: str,
    csv_path: str | None,
    device: str,
    seeds: tuple[int, ...],
    detector_patterns: str | None,
    oe_scratch: bool,
    fpr_rule: str | None,
    recall: float | None,
    detail: str | None,
    data_root: str | None,
    download: bool,
    no_cache: bool,
    store_path: str | None,
    rerun: bool,
    on_change: str,
    scores_dir: str | None,
    force: bool,
    executor: str | None,
    workers: int | None,
    address: str | None,
) -> None:
    """Run BENCHMARK (a registered name or a .toml path; default: quickstart).

    Finished cells (seed x ID dataset x model x training) go to the results store at once;
    cells already there are not run again, and their stored results join the table.
    """
    from oebench.bench.matrix import Ref
    from oebench.bench.parse import load_benchmark
    from oebench.core.files import check_output_file, check_output_folder

    check_output_file(csv_path, force)  # before the run, not after hours of it
    check_output_folder(scores_dir, "*.parquet", force)
    click.get_current_context().with_resource(
        settings.override(data_root=data_root, download=download)
    )
    bench = None
    try:
        bench = load_benchmark(benchmark)
        if seeds:
            bench.seeds = list(dict.fromkeys(seeds))
        if detector_patterns:
            bench.detectors = [Ref(n) for n in select_detectors(detector_patterns)]
        if oe_scratch:
            bench = bench.oe_from_scratch()
        bench.fpr_rule = fpr_rule or bench.fpr_rule
        bench.recall = recall or bench.recall
        if detail and detail not in [d.key for d in bench.detectors]:
            raise UnknownNameError("detector", detail, [d.key for d in bench.detectors])
        _run(
            bench,
            device,
            csv_path,
            detail,
            not no_cache,
            RunStorage(store_path, rerun, scores_dir, on_change),
            executor_settings(bench, executor, workers, address),
        )
    except KeyboardInterrupt:  # outside the matrix (e.g. in the first second): same report
        _report_interrupt(store_path, bench)
        sys.exit(130)


def _report_interrupt(store_path: str | None, bench: Any) -> None:
    """The Ctrl-C message: how many of the benchmark's cells the store holds, committed."""
    from oebench.record.store import ResultStore

    path = store_path or settings.store_path()
    keys: list[str] | None = None
    kept = 0
    # an import that Ctrl-C cut short leaves its extension modules half set up: importing it
    # again (planning the cells imports torch) can crash the process instead of exiting 130
    cut_short = any(m.split(".")[0] not in sys.modules for m in list(sys.modules) if "." in m)
    try:
        if bench is not None and not cut_short:
            from oebench.execute.runner import Runner

            keys = [cell.key for cell in Runner(bench).cells()]
        with ResultStore(path, create=False) as store:
            kept = store.count(keys) if keys is not None else 0
    except Exception:  # no store yet, a benchmark that cannot be planned, or an import (of
        pass  # torch, say) that Ctrl-C cut short: the message below still goes out
    total = len(keys) if keys is not None else "?"
    click.secho(
        f"Interrupted: {kept} of {total} cells are kept in the results store {path}; "
        "run the same command again to resume.",
        fg="yellow",
        err=True,
    )


@cli.command("sweep")
@click.argument("benchmark")
@click.option(
    "--set",
    "setting",
    required=True,
    help="PATH=V1,V2,...: the setting to sweep, e.g. trainings.oe.objective.lam=0,0.5,1 "
    "or detectors.energy.temperature=1,10 (see oebench.execute.sweep).",
)
@click.option("--metric", default="auroc", show_default=True, help="Validation metric to optimise.")
@click.option("--detector", help="Detector whose score decides (default: swept one, else first).")
@click.option(
    "--holdout",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Fraction of the ID training split held out for validation.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the test results.")
@STORE_OPTION
def sweep_command(
    benchmark: str,
    setting: str,
    metric: str,
    detector: str | None,
    holdout: float,
    device: str,
    csv_path: str | None,
    store_path: str | None,
) -> None:
    """Choose a setting on validation sets only (held-out ID images and OOD sets made from
    them), then run BENCHMARK's test matrix with the chosen value (recorded in the store)."""
    from oebench.bench.parse import load_benchmark
    from oebench.execute.sweep import parse_values, sweep

    path, sep, values = setting.partition("=")
    if not sep:
        raise UserError(f"--set {setting!r}: expected PATH=V1,V2,...")
    result = sweep(
        load_benchmark(benchmark), path.strip(), parse_values(values), metric, detector, holdout,
        device=device,
    )  # fmt: skip
    console = output_console()
    for value, score in result.scores.items():
        console.print(f"validation {metric} ({result.detector}) with {path} = {value}: {score:.2f}")
    console.print(f"chosen: {path} = {result.best}; running the test matrix with it")
    _run(result.chosen, device, csv_path, None, True, RunStorage(store_path))


def output_console() -> Any:
    """A rich console for stdout that is wide enough for leaderboards when piped."""
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if piped else None)


@dataclass(frozen=True)
class RunStorage:
    """Where a run keeps its results: the store, whether to recompute, a scores folder."""

    store: str | None = None
    rerun: bool = False
    scores_dir: str | None = None
    #: a stored cell whose code or data changed: "recompute" it, or "warn" and serve it
    on_change: str = "recompute"


def executor_settings(
    bench: Any, name: str | None, workers: int | None, address: str | None
) -> Any:
    """Command-line (or environment) settings over the benchmark file's ``executor``."""
    from oebench.execute.executors import ExecutorSettings

    own = dict(getattr(bench, "executor", None) or {})
    name = name or own.get("name", "local")
    if name == "local" and (workers or address):
        raise UserError("--workers and --address need --executor dask or ray")
    return ExecutorSettings(
        name=name,
        workers=workers or own.get("workers"),
        address=address or own.get("address"),
        gpus_per_task=float(own.get("gpus_per_task", 0.0)),
    )


def _run(
    bench: Any,
    device: str,
    csv_path: str | None,
    detail: str | None,
    use_cache: bool,
    storage: RunStorage = RunStorage(),
    executor: Any = None,
) -> None:
    import pandas as pd

    from oebench.execute.runner import Runner
    from oebench.report.groups import with_group_means
    from oebench.report.render import render
    from oebench.report.tables import results_frame
    from oebench.report.text import write_table

    runner = Runner(bench, device=device, use_cache=use_cache)
    rows, interrupted = _run_with_store(runner, storage, executor)
    if interrupted and not rows:
        sys.exit(130)
    if rows:
        df = results_frame(with_group_means(pd.DataFrame(rows), {bench.name: bench.ood_groups}))
        overwrote = bool(csv_path) and os.path.exists(csv_path)
        if csv_path:
            write_table(df, csv_path, "csv")
        console = output_console()
        render(console, df, detail)
        if csv_path:
            again = " (overwrote the previous file)" if overwrote else ""
            console.print(f"Wrote {len(df)} rows to {csv_path}{again}")
    if interrupted:
        sys.exit(130)
    _report_failures(runner)


def _report_failures(runner: Any) -> None:
    """Failed detectors and cells, one line each on stderr, then exit 1; nothing if none."""
    for message in runner.failures + runner.failed_cells:
        click.secho(f"Error: {message}", fg="red", err=True)
    if runner.failures:
        click.secho(
            "Results of the other detectors are kept; fix the detector and rerun with --rerun.",
            err=True,
        )
    if runner.failed_cells:
        click.secho(
            "The other cells are stored; fix the plugin and run the same command again.",
            err=True,
        )
    if runner.failures or runner.failed_cells:
        sys.exit(1)


def _run_with_store(
    runner: Any, storage: RunStorage, settings: Any = None
) -> tuple[list[dict], bool]:
    """Run the matrix on the executor, skipping cells in the store and storing new ones as
    they finish; Ctrl-C stops cleanly (cluster work is cancelled).

    Returns the rows of every cell done (stored or new) and whether the run was interrupted.
    """
    from rich.console import Console

    from oebench.core.progress import RichProgress
    from oebench.execute.drive import drive
    from oebench.execute.executors import ExecutorSettings, make_executor
    from oebench.record.recorder import Recorder
    from oebench.record.store import ResultStore

    executor = make_executor(settings or ExecutorSettings())
    with ResultStore(storage.store) as store:
        recorder = Recorder(
            store, runner.bench, storage.rerun, storage.scores_dir, storage.on_change
        )
        order: list[str] | None = None
        try:
            with RichProgress(Console(stderr=True)) as progress:
                runner.progress = progress
                say = functools.partial(_report_changes, recorder, progress.log)
                order = drive(runner, executor, recorder.skip, recorder.record, say)
        except KeyboardInterrupt:
            keys = [cell.key for cell in runner.cells()]
            click.secho(
                f"Interrupted: {store.count(keys)} of {len(keys)} cells are kept in the results "
                f"store {store.path}; run the same command again to resume.",
                fg="yellow",
                err=True,
            )
            return recorder.rows(keys), True
        if recorder.reused:
            click.echo(
                f"{recorder.reused} of {recorder.reused + recorder.new} cells came from the "
                f"results store {store.path} (--rerun recomputes them).",
                err=True,
            )
        return recorder.rows(order), False


def _report_changes(recorder: Any, log: Callable[[str], None]) -> None:
    """One line per code or data change that made stored cells stale (before any work)."""
    warn = recorder.changes.on_change == "warn"
    for line in recorder.changes.lines():
        log(f"{'Warning' if warn else 'Note'}: {line}")


def filter_options(command: Any) -> Any:
    """Add the results-store filters: repeatable, comma-separated, wildcards allowed."""
    for flag, name, what in reversed(FILTER_OPTIONS):
        command = click.option(
            flag,
            name,
            multiple=True,
            metavar="PATTERN",
            help=f"Only this {what} (repeatable; wildcards and commas allowed).",
        )(command)
    return command


def _filters(values: dict[str, Any]) -> dict[str, Any]:
    return {name: values[name] for _, name, _ in FILTER_OPTIONS if values.get(name)}


def _note_versions(df: Any) -> None:
    """Say when one benchmark name has results from several versions of its file."""
    versions = df.groupby("benchmark").benchmark_digest.nunique()
    for name, count in versions[versions > 1].items():
        click.echo(
            f"Note: benchmark {name!r} has results from {count} versions of its file; "
            "the newest result per cell and detector is shown.",
            err=True,
        )


def _emit(text: str, output: str | None) -> None:
    if output:
        with open(output, "w", newline="") as fh:
            fh.write(text)
        click.echo(f"Wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@STORE_OPTION
@filter_options
@click.option(
    "--sort",
    type=click.Choice(METRICS),
    help="Order detectors by this metric, best first (default: auroc); shown first.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table, markdown, latex: the with/without-OE leaderboard; csv, json: the long "
    "result rows, exactly as `oebench run --csv` writes them.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file.")
@click.option(
    "--ci",
    is_flag=True,
    help="Add 95% bootstrap intervals over test samples (AUROC, FPR95), and paired ones for Δ.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for --ci.",
)
@click.option("--detail", help="Detector for the per-OOD-set table (table format).")
@click.option("--force", is_flag=True, help="Replace a symbolic link at --output (never followed).")
@click.option("--aupr-in", is_flag=True, help="Also show AUPR-In (ID as the positive class).")
def leaderboard(
    store_path: str | None,
    sort: str | None,
    fmt: str,
    output: str | None,
    ci: bool,
    resamples: int,
    detail: str | None,
    force: bool,
    aupr_in: bool,
    **filters: Any,
) -> None:
    """Leaderboards from the results store: without OE | with OE | delta per detector.

    Values are means over OOD sets, then mean ± std over seeds.
    """
    from oebench.core.files import check_output_file
    from oebench.record.store import ResultStore
    from oebench.report.results import stored_results
    from oebench.report.tables import SHOWN, results_frame
    from oebench.report.text import format_table

    if ci and fmt in ("csv", "json"):
        raise UserError(f"--ci needs a leaderboard format (table, markdown, latex), not {fmt}")
    if check_output_file(output, force):
        click.echo(f"Note: {output} exists and will be overwritten", err=True)
    metrics = (sort, *[m for m in SHOWN if m != sort]) if sort else SHOWN
    if aupr_in and "aupr_in" not in metrics:
        metrics = (*metrics, "aupr_in")
    with ResultStore(store_path, create=False) as store:
        df = stored_results(store, **_filters(filters))
        _note_versions(df)
        if detail and detail not in set(df.detector):
            raise UnknownNameError("detector", detail, set(df.detector))
        bands = _intervals(store, df, resamples) if ci else None
    if fmt in ("csv", "json"):
        long = results_frame(df)
        if sort:
            long = long.sort_values(sort, ascending=sort in LOWER_IS_BETTER, kind="mergesort")
        _emit(format_table(long, fmt), output)
    elif fmt == "table":
        _print_leaderboard(df, detail, metrics, bands, output)
    else:
        from oebench.report.tables import comparison
        from oebench.report.text import leaderboard_table, wide_text_table
        from oebench.report.wide import is_wide, wide_comparison

        if is_wide(df) and bands is None:  # 2+ variants against one baseline: one table
            text = wide_text_table(wide_comparison(df, metrics, sort=metrics[0]), metrics)
        else:
            table = comparison(df, metrics, intervals=bands, sort=metrics[0])
            text = leaderboard_table(table, metrics)
        _emit(format_table(text, fmt, numbers=False), output)


def _intervals(store: Any, df: Any, resamples: int) -> Any:
    """Bootstrap intervals for the leaderboard, with a progress bar."""
    from rich.console import Console

    from oebench.core.progress import RichProgress
    from oebench.report.results import intervals

    with RichProgress(Console(stderr=True)) as progress:
        advance = progress.start("bootstrap intervals", int((df.ood_dataset == "mean").sum()))
        return intervals(store, df, resamples, progress=advance)


def _print_leaderboard(
    df: Any, detail: str | None, metrics: tuple[str, ...], bands: Any, output: str | None
) -> None:
    """The rich leaderboard on stdout, or as plain text in ``output``."""
    from rich.console import Console

    from oebench.report.render import render

    if output is None:
        render(output_console(), df, detail, metrics, metrics[0], bands)
        return
    with open(output, "w") as fh:
        console = Console(file=fh, width=160, color_system=None)
        render(console, df, detail, metrics, metrics[0], bands)
    click.echo(f"Wrote {output}", err=True)


@cli.command()
@STORE_OPTION
@filter_options
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(file_okay=False),
    default="oebench-plots",
    show_default=True,
    help="Folder for the PNG files.",
)
@click.option(
    "--kind",
    type=click.Choice(["roc", "hist", "detectors", "all"]),
    default="all",
    show_default=True,
    help="ROC curves with and without OE, score histograms, detectors compared per OOD set, "
    "or all three.",
)
@click.option(
    "--force", is_flag=True, help="Replace symbolic links where figures go (never followed)."
)
def plot(store_path: str | None, out_dir: str, kind: str, force: bool, **filters: Any) -> None:
    """PNG figures from stored per-sample scores, per detector and seed: ROC curves with and
    without OE overlaid per OOD set, and ID-vs-OOD score histograms."""
    from rich.console import Console

    from oebench.core.files import check_output_folder, overwritten_note
    from oebench.core.progress import RichProgress
    from oebench.record.store import ResultStore
    from oebench.report.plots import KINDS, figure_count, plot_results
    from oebench.report.results import stored_results

    kinds = KINDS if kind == "all" else (kind,)
    existed = check_output_folder(out_dir, "*.png", force)
    with ResultStore(store_path, create=False) as store:
        df = stored_results(store, **_filters(filters))
        _note_versions(df)
        damaged = store.damaged(df.cell.unique())  # reported by name; the rest is plotted
        df = df[[(c, d) not in damaged for c, d in zip(df.cell, df.detector, strict=True)]]
        with RichProgress(Console(stderr=True)) as progress:
            advance = progress.start("figures", figure_count(df, kinds))
            written = plot_results(store, df, out_dir, kinds, advance)
    for path in written:
        click.echo(str(path))
    click.echo(f"Wrote {len(written)} figures to {out_dir}", err=True)
    note = overwritten_note(written, existed)
    if note:
        click.echo(note, err=True)


@cli.command(name="new-plugin")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Where to create the package folder.",
)
def new_plugin(name: str, parent: str) -> None:
    """Write a plugin package NAME (e.g. oebench-my-detector): pyproject.toml, one detector,
    dataset, model, outlier source, objective and command, and contract tests that pass."""
    from pathlib import Path

    from oebench.cli.scaffold import new_plugin as write

    folder = write(name, Path(parent))
    click.echo(f"Wrote {folder}. Next: pip install -e '{folder}[test]' && pytest {folder}")


@cli.group(cls=Group)
def cache() -> None:
    """Inspect or clear cached checkpoints and forward-pass outputs."""


@cache.command(name="info")
def cache_info() -> None:
    """Where the cache is and how big it is."""
    root = settings.cache_dir()
    for sub in ("models", "outputs"):
        files = list((root / sub).glob("*")) if (root / sub).exists() else []
        size = sum(f.stat().st_size for f in files) / 2**20
        click.echo(f"{root / sub}: {len(files)} files, {size:.1f} MiB")


@cache.command(name="clear")
@click.option("--outputs-only", is_flag=True, help="Keep trained checkpoints.")
def cache_clear(outputs_only: bool) -> None:
    """Delete cached forward-pass outputs (and checkpoints unless --outputs-only)."""
    import shutil

    for sub in ("outputs",) if outputs_only else ("outputs", "models"):
        path = settings.cache_dir() / sub
        if path.exists():
            shutil.rmtree(path)
            click.echo(f"removed {path}")


def main() -> None:
    """Entry point: add plugin commands, then run the CLI."""
    from oebench.registry.plugins import get_plugin_manager

    interrupted: Callable[[], bool] = lambda: False  # noqa: E731
    try:
        interrupted = _watch_interrupts()
        get_plugin_manager().add_commands(cli)
        cli.main(prog_name="oebench")
    except SystemExit as exc:
        _exit(exc.code)
    except BaseException as exc:
        # Ctrl-C while plugins load or a module is imported: as if it came a moment later.
        # (An extension module can turn the KeyboardInterrupt into an error of its own, as
        # pydantic does while it builds a schema; the signal was seen all the same.)
        if not isinstance(exc, KeyboardInterrupt) and not interrupted():
            raise
        args = sys.argv[1:]
        if args[:1] == ["run"]:
            store = args[args.index("--store") + 1] if "--store" in args[:-1] else None
            _report_interrupt(store, None)
        else:
            click.secho("Interrupted.", fg="yellow", err=True)
        _exit(130)
    _exit(0)


def _watch_interrupts() -> Callable[[], bool]:
    """Note every Ctrl-C (raising KeyboardInterrupt as Python does); returns whether one came."""
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, handler)
    return lambda: bool(seen)


def _exit(code: int | str | None) -> None:
    """Exit with ``code``; once torch is loaded, skip the interpreter's module teardown.

    Tearing down torch's modules takes about 0.6 s on a 2-core machine, after all the work is
    done. atexit handlers still run and the streams are flushed; with other threads still
    alive, the normal exit joins them instead.
    """
    import threading

    if "torch" not in sys.modules or threading.active_count() > 1:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more can be said
        pass
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
