"""``oebench leaderboard`` and ``oebench plot``: tables and figures from the results store."""

from __future__ import annotations

from typing import Any

import click

from oebench.cli.common import STORE_OPTION, output_console
from oebench.errors import UnknownNameError, UserError
from oebench.metrics import LOWER_IS_BETTER, METRICS

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
        from oebench.core.files import write_text_file

        write_text_file(output, text)  # whole, and never through a link planted meanwhile
        click.echo(f"Wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@click.command()
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
    import io

    from oebench.core.files import write_text_file

    text = io.StringIO()
    render(Console(file=text, width=160, color_system=None), df, detail, metrics, metrics[0], bands)
    write_text_file(output, text.getvalue())
    click.echo(f"Wrote {output}", err=True)


@click.command()
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
