"""``oebench report``: a self-contained HTML page of a benchmark's stored results."""

from __future__ import annotations

from typing import Any

import click

from oebench.cli.common import STORE_OPTION
from oebench.cli.results import _filters, _note_versions, filter_options
from oebench.metrics import METRICS


@click.command()
@STORE_OPTION
@filter_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="oebench-report.html",
    show_default=True,
    help="The HTML file to write (one file: styles, script and figures inline).",
)
@click.option(
    "--sort",
    type=click.Choice(METRICS),
    help="Order detectors by this metric, best first (default: auroc); shown first, and the "
    "heatmap's metric.",
)
@click.option("--aupr-in", is_flag=True, help="Also show AUPR-In (ID as the positive class).")
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
@click.option(
    "--figures/--no-figures",
    default=True,
    show_default=True,
    help="Draw the heatmaps, ROC curves and score histograms (most of the time and size).",
)
@click.option("--title", help="The page's title (default: oebench report · BENCHMARKS).")
@click.option("--force", is_flag=True, help="Replace a symbolic link at --output (never followed).")
def report(
    store_path: str | None,
    output: str,
    sort: str | None,
    aupr_in: bool,
    ci: bool,
    resamples: int,
    figures: bool,
    title: str | None,
    force: bool,
    **filters: Any,
) -> None:
    """Write an HTML report of stored results: leaderboards with and without OE (sortable),
    near/far OOD groups, per-OOD-set tables, heatmaps, ROC curves, score histograms and
    provenance. It opens offline and loads nothing from elsewhere."""
    import contextlib
    import dataclasses

    from rich.console import Console

    from oebench.core.files import check_output_file, write_text_file
    from oebench.core.progress import RichProgress
    from oebench.record.store import ResultStore
    from oebench.report.html import Options, figure_total, report_html
    from oebench.report.results import intervals, stored_groups, stored_results
    from oebench.report.tables import SHOWN

    if check_output_file(output, force):  # before any work
        click.echo(f"Note: {output} exists and will be overwritten", err=True)
    metrics = (sort, *[m for m in SHOWN if m != sort]) if sort else SHOWN
    if aupr_in and "aupr_in" not in metrics:
        metrics = (*metrics, "aupr_in")
    chosen = _filters(filters)
    given = tuple(f"--{k.replace('_', '-')} {','.join(map(str, v))}" for k, v in chosen.items())
    with ResultStore(store_path, create=False) as store:
        df = stored_results(store, **chosen)
        _note_versions(df)
        options = Options(
            metrics=metrics,
            figures=figures,
            title=title,
            selection=given,
            groups=stored_groups(store, df),
        )
        total = figure_total(df, options)
        bars = RichProgress(Console(stderr=True)) if ci or total else contextlib.nullcontext()
        with bars as progress:
            if ci:  # two bars over every resample: the intervals, then the paired Δ ones
                bands = intervals(store, df, resamples, bars=progress)
                options = dataclasses.replace(options, intervals=bands)
            advance = progress.start("figures", total) if total else None
            text = report_html(store, df, options, progress=advance)
    write_text_file(output, text)  # whole, and never through a link planted meanwhile
    click.echo(f"Wrote {output}", err=True)
