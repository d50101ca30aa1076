"""``oebench run``: a benchmark's matrix with the results store, its table and its CSV."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from oebench.cli.common import STORE_OPTION, output_console
from oebench.cli.interrupts import RunInterrupted, note_run
from oebench.cli.results import against_options, bench_published, show_against, strict_exit
from oebench.core import settings
from oebench.errors import UnknownNameError

if TYPE_CHECKING:
    from oebench.bench.matrix import Benchmark
    from oebench.session import Session


@dataclasses.dataclass(frozen=True)
class RunStorage:
    """Where a run keeps its results: the store, whether to recompute, a scores folder."""

    store: str | None = None
    rerun: bool = False
    scores_dir: str | None = None
    #: a stored cell whose code or data changed: "recompute" it, or "warn" and serve it
    on_change: str = "recompute"


@click.command()
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
    type=float,  # checked with the benchmark's settings, as a file's `recall` is
    help="OOD recall level of the FPR column, in (0, 1) (default: the benchmark's recall, "
    "else 0.95).",
)
@click.option(
    "--set",
    "settings_given",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one value of the benchmark (repeatable), e.g. --set trainings.baseline.epochs=1 "
    "--set training.max_train=512 --set ood_datasets.gaussian.n=1000; the changed benchmark "
    "is stored under its own digest (keys: see oebench.bench.overrides).",
)
@click.option("--detail", help="Detector for the per-OOD-set table (default: the best).")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    help="Where dataset files are (overrides $OEBENCH_DATA_ROOT).",
)
@click.option("--download", is_flag=True, help="Allow downloading missing dataset files.")
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Print the tasks the run would run (stored or not, what each waits for, the "
    "estimated peak memory of a training step) and exit without running them.",
)
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
    help="Worker processes of a local Dask/Ray cluster (default: one per core), or with the "
    "local executor: cells at once on the one device [env: OEBENCH_WORKERS].",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 4096),
    default=None,
    help="Split each cell's forward passes by rows into this many tasks, which Dask/Ray "
    "spread over their workers (the numbers are the same; needs the cache) "
    "[or `shards` in the benchmark's [executor]].",
)
@click.option(
    "--memory",
    "--memory-limit",
    "memory_limit",
    metavar="SIZE",
    help="The memory (e.g. 12GiB) the run may use, instead of what the device has free: each "
    "cell's estimated peak (training step, scoring), times --workers cells at once, is "
    "checked against it before any work, and a run that cannot fit is refused in one line.",
)
@click.option(
    "--address",
    default=lambda: settings.raw("address"),
    help="A running cluster to use instead of a local one: tcp://host:8786 (Dask) or "
    "host:6379 / auto (Ray) [env: OEBENCH_ADDRESS].",
)
@against_options
def run(
    benchmark: str,
    csv_path: str | None,
    device: str,
    seeds: tuple[int, ...],
    detector_patterns: str | None,
    oe_scratch: bool,
    fpr_rule: str | None,
    recall: float | None,
    settings_given: tuple[str, ...],
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
    shards: int | None,
    memory_limit: str | None,
    against: str | None,
    strict: bool,
    plan_only: bool = False,
) -> None:
    """Run BENCHMARK (a registered name or a .toml path; default: quickstart).

    Finished cells (seed x ID dataset x model x training) go to the results store at once;
    cells already there are not run again, and their stored results join the table.
    """
    bench = None
    try:  # a Ctrl-C anywhere in the command (its first imports included) is reported alike
        from oebench.bench.overrides import Overrides, parse_settings
        from oebench.core.files import check_output_file, check_output_folder
        from oebench.session import prepare

        check_output_file(csv_path, force)  # before the run, not after hours of it
        check_output_folder(scores_dir, "*.parquet", force)
        click.get_current_context().with_resource(
            settings.override(data_root=data_root, download=download)
        )
        overrides = Overrides(seeds, detector_patterns, oe_scratch, fpr_rule, recall,
                              parse_settings(settings_given))  # fmt: skip
        bench, chosen = prepare(benchmark, overrides, executor, workers, address, shards)
        if memory_limit:
            from oebench.execute.memory import parse_size

            chosen = dataclasses.replace(chosen, memory_limit=parse_size(memory_limit))
        if plan_only:
            show_plan(bench, store_path, device, chosen, not no_cache)
            return
        note_run(store_path, bench)  # what a Ctrl-C the watchdog carries out counts
        if detail and detail not in [d.key for d in bench.detectors]:
            raise UnknownNameError("detector", detail, [d.key for d in bench.detectors])
        storage = RunStorage(store_path, rerun, scores_dir, on_change)
        published = bench_published(against, strict, bench)  # --against: checked up front
        execute(bench, device, csv_path, detail, not no_cache, storage, chosen, published, strict)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:  # outside the matrix (e.g. in the first second): same report
        raise RunInterrupted(store_path, bench) from None


def show_plan(
    bench: Benchmark, store_path: str | None, device: str, chosen: Any, use_cache: bool = True
) -> None:
    """``--plan``: the task table, then the memory the chosen cells at once would need."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from oebench.execute.memory import fmt_size
    from oebench.session import plan_rows

    shards = getattr(chosen, "shards", 1)
    rows = plan_rows(bench, store_path, device, shards, use_cache)
    t = Table(title=escape(f"{bench.name}: {len(rows)} tasks, in run order"), title_style="bold")
    sizes = ("training peak", "scoring peak", "on disk", "est. time")
    for name in ("#", "task", "kind", "waits for", "stored", "epochs", *sizes):
        t.add_column(name, justify="right" if name in ("#", "epochs", *sizes) else "left")
    size = lambda n: fmt_size(n) if n is not None else "-"  # noqa: E731
    for i, r in enumerate(rows, 1):
        t.add_row(str(i), escape(r["label"]), r["kind"], escape(", ".join(r["after"]) or "-"),
                  "yes" if r["stored"] else "", str(r["epochs"] or "-"), size(r["peak_bytes"]),
                  size(r["scoring_bytes"]), size(r["disk_bytes"]),
                  _duration(r["seconds"]))  # fmt: skip
    cells = [r for r in rows if r["kind"] in ("cell", "ensemble")]
    todo = sum(not r["stored"] for r in cells)
    peaks = [max(r["peak_bytes"] or 0, r["scoring_bytes"] or 0) for r in rows]
    total = sum(r["seconds"] or 0 for r in rows)
    workers = getattr(chosen, "workers", None) or 1
    t.caption = (
        f"{todo} of {len(cells)} cells to run ({len(cells) - todo} stored). Estimated peaks: "
        "a training step from one test step (weights, gradients, momentum, saved activations); "
        "scoring from the outputs held in memory, the forward batch and the largest "
        "detector's fit and score (outputs of 64 MiB or more stay on disk, memory-mapped, "
        f"with the cache on): at most {fmt_size(max(peaks, default=0))} per cell"
        + (f", x{workers} cells at once" if workers > 1 else "")
        + ", besides the process itself. Time: rough, from a probe forward pass timed here "
        f"(a training step counted as 3 forward passes): about {_duration(total)} in all. "
        "Nothing was run."
    )
    Console().print(t)


def _duration(seconds: float | None) -> str:
    """``-``, ``40 s``, ``12 min``, ``3.5 h``: a rough duration."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def execute(
    bench: Benchmark,
    device: str,
    csv_path: str | None,
    detail: str | None,
    use_cache: bool,
    storage: RunStorage = RunStorage(),
    executor: Any = None,
    published: Any = None,
    strict: bool = False,
) -> None:
    """Run ``bench`` with bars on stderr, then show (and write) the results of the cells done;
    exit 1 when detectors or cells failed. A Ctrl-C raises RunInterrupted after the table."""
    from rich.console import Console

    from oebench.core.progress import RichProgress
    from oebench.session import run_session

    with RichProgress(Console(stderr=True)) as progress:
        done = run_session(
            bench,
            device=device,
            use_cache=use_cache,
            executor=executor,
            progress=progress,
            **dataclasses.asdict(storage),
        )
    if done.reused and not done.interrupted:
        click.echo(
            f"{done.reused} of {done.reused + done.new} cells came from the "
            f"results store {done.store} (--rerun recomputes them).",
            err=True,
        )
    compared = None
    if done.rows:
        _show(bench, done.rows, csv_path, detail)
        if published is not None:  # --against: measured vs published, after the table
            from oebench.report.groups import results_table

            compared = show_against(results_table(bench, done.rows), published, strict=False)
    if done.interrupted:
        raise RunInterrupted(done.store, kept=done.kept, total=len(done.keys))
    _report_failures(done)
    if compared is not None:
        strict_exit(compared, strict)


def _show(bench: Benchmark, rows: list[dict], csv_path: str | None, detail: str | None) -> None:
    """The results table on stdout, and the CSV file when asked for."""
    from oebench.report.groups import results_table
    from oebench.report.render import render
    from oebench.report.text import write_table

    df = results_table(bench, rows)
    overwrote = bool(csv_path) and os.path.exists(csv_path)
    if csv_path:
        write_table(df, csv_path, "csv")
    console = output_console()
    render(console, df, detail)
    from oebench.report.platforms import mixed_platforms

    for line in mixed_platforms(rows):  # e.g. stored cells from another machine
        click.secho(line, fg="yellow", err=True)
    if csv_path:
        again = " (overwrote the previous file)" if overwrote else ""
        console.print(f"Wrote {len(df)} rows to {csv_path}{again}")


def _report_failures(done: Session) -> None:
    """Failed detectors and cells, one line each on stderr, then exit 1; nothing if none."""
    for message in done.failures + done.failed_cells:
        click.secho(f"Error: {message}", fg="red", err=True)
    if done.failures:
        click.secho(
            "Results of the other detectors are kept; fix the detector and rerun with --rerun.",
            err=True,
        )
    if done.failed_cells:
        click.secho(
            "The other cells are stored; fix the plugin and run the same command again.",
            err=True,
        )
    if done.failures or done.failed_cells:
        sys.exit(1)
