"""``oebench sweep``: choose a setting on validation sets, then run the test matrix with it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click

from oebench.cli.common import STORE_OPTION, output_console
from oebench.cli.run import RunStorage, execute
from oebench.errors import UserError

if TYPE_CHECKING:
    from oebench.bench.matrix import Benchmark


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """``nan`` passes click's range check (every comparison with it is false): refuse it."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number in the range 0<x<1.")
    return value


@click.command("sweep")
@click.argument("benchmark")
@click.option(
    "--set",
    "setting",
    required=True,
    help="PATH=V1,V2,...: the setting to sweep, e.g. trainings.oe.objective.lam=0,0.5,1 "
    "or detectors.energy.temperature=1,10 (see oebench.bench.sweep).",
)
@click.option("--metric", default="auroc", show_default=True, help="Validation metric to optimise.")
@click.option("--detector", help="Detector whose score decides (default: swept one, else first).")
@click.option(
    "--holdout",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    callback=_finite,
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
    from rich.console import Console

    from oebench.bench.parse import load_benchmark
    from oebench.bench.sweep import parse_values
    from oebench.core.progress import RichProgress
    from oebench.execute.sweep import sweep
    from oebench.session import check_places

    path, sep, values = setting.partition("=")
    if not sep:
        raise UserError(f"--set {setting!r}: expected PATH=V1,V2,...")
    check_places(device)
    with RichProgress(Console(stderr=True)) as progress:  # every value's run shows its bars
        with progress.activity(f"checking the benchmark and every value of {path.strip()}"):
            bench, swept = load_benchmark(benchmark), parse_values(values)
            check_values(bench, path.strip(), swept, holdout)
        result = sweep(
            bench, path.strip(), swept, metric, detector, holdout, device=device, progress=progress
        )
    console = output_console()
    for value, score in result.scores.items():
        console.print(f"validation {metric} ({result.detector}) with {path} = {value}: {score:.2f}")
    console.print(f"chosen: {path} = {result.best}; running the test matrix with it")
    execute(result.chosen, device, csv_path, None, True, RunStorage(store_path))


def check_values(bench: Benchmark, path: str, values: list[Any], holdout: float) -> None:
    """Every swept value, before the first training: the benchmark with it (and its validation
    version) must pass the checks a file's values pass."""
    from oebench.bench.sweep import validation_benchmark, with_value
    from oebench.bench.validation import component_problems, raise_problems, settings_problems
    from oebench.registry.options import toml_text

    for value in values:
        variant = with_value(bench, path, value)
        lines = settings_problems(variant) + component_problems(variant)
        if not lines:
            validation = validation_benchmark(variant, holdout)
            lines = component_problems(validation)
        raise_problems(lines, f"--set {path}={toml_text(value)}")
