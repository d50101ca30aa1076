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


def against_options(command: Any) -> Any:
    """``--against paper|FILE`` and ``--strict`` (``oebench run`` and ``leaderboard``)."""
    command = click.option(
        "--strict",
        is_flag=True,
        help="With --against: exit 1 when a number falls outside its tolerance or a published "
        "row matches no result (default: the comparison is a report, exit 0).",
    )(command)
    return click.option(
        "--against",
        metavar="paper|FILE",
        help="Compare with published numbers: 'paper' (the benchmark file's [published] "
        "table) or a CSV with the long CSV's columns (training, detector, ood_dataset, "
        "metrics; id_dataset, model, benchmark optional).",
    )(command)


def _note_versions(df: Any) -> None:
    """Say when one benchmark name has results from several versions of its file, and which
    groups they are shown as where their settings differ (``oebench.report.versions``)."""
    from oebench.report.versions import version_names

    groups = version_names(df)
    whole = df[df.benchmark == df.benchmark_name] if "benchmark_name" in df.columns else df
    versions = whole.groupby("benchmark").benchmark_digest.nunique()  # not split into groups
    for name in dict.fromkeys([*groups, *versions[versions > 1].index]):
        if name in groups:
            said = f"whose settings differ, shown apart: {', '.join(groups[name])}"
        else:
            said = f"of {versions[name]} versions of its file that agree (the newest is shown)"
        click.echo(f"Note: benchmark {name!r} has results {said}.", err=True)


def _note_platforms(df: Any) -> None:
    """Warn for each table whose cells come from different platforms (CPU family, GPU)."""
    from oebench.report.platforms import frame_mixed_platforms

    for line in frame_mixed_platforms(df):
        click.secho(line, fg="yellow", err=True)


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
@against_options
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
    against: str | None,
    strict: bool,
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
    check_against(against, strict)
    with ResultStore(store_path, create=False) as store:
        df = stored_results(store, **_filters(filters))
        _note_versions(df)
        _note_platforms(df)
        if detail and detail not in set(df.detector):
            raise UnknownNameError("detector", detail, set(df.detector))
        bands = _intervals(store, df, resamples) if ci else None
        published = stored_published(against, store, df)
    if published is not None and fmt != "table":  # the comparison, in that format
        table = comparison_of(df, published)
        _emit(format_table(table, fmt), output)
        strict_exit(table, strict)
        return
    if fmt in ("csv", "json"):
        long = results_frame(df)
        if sort:
            long = long.sort_values(sort, ascending=sort in LOWER_IS_BETTER, kind="mergesort")
        _emit(format_table(long, fmt), output)
    elif fmt == "table":
        table = None if published is None else comparison_of(df, published)
        _print_leaderboard(df, detail, metrics, bands, output, table)
        if table is not None:
            strict_exit(table, strict)
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


def check_against(against: str | None, strict: bool) -> None:
    """Refuse ``--strict`` alone, and a published CSV that cannot be read, before any work."""
    if strict and against is None:
        raise UserError("--strict needs --against paper|FILE")
    if against is not None and against != "paper":
        from oebench.report.against import read_published

        read_published(against)


def stored_published(against: str | None, store: Any, df: Any) -> Any:
    """The published table ``--against`` names for stored results (None without it)."""
    if against is None:
        return None
    from oebench.report.against import paper_numbers, read_published, stored_benchmarks

    if against == "paper":
        return paper_numbers(stored_benchmarks(store, df))
    return read_published(against)


def bench_published(against: str | None, strict: bool, bench: Any) -> Any:
    """The published table ``--against`` names for a benchmark about to run (None without
    it): a missing ``[published]`` table or a bad file is a UserError before any work."""
    check_against(against, strict)
    if against is None:
        return None
    from oebench.report.against import published_table

    return published_table(against, [bench])


def comparison_of(df: Any, published: Any) -> Any:
    from oebench.report.against import comparison

    return comparison(df, published)


def show_against(df: Any, published: Any, strict: bool) -> Any:
    """Measured vs published on stdout; with ``strict``, exit 1 when any falls outside.
    Returns the comparison."""
    from oebench.report.against import render_against

    table = comparison_of(df, published)
    console = output_console()
    console.print()
    render_against(console, table)
    strict_exit(table, strict)
    return table


def strict_exit(table: Any, strict: bool) -> None:
    """With ``--strict``: exit 1 (one line on stderr) when numbers fall outside or published
    rows match nothing."""
    from oebench.report.against import outside_count

    outside, unmatched = outside_count(table), len(table.attrs.get("unmatched", []))
    if strict and (outside or unmatched):
        click.secho(
            f"Error: --strict: {outside} number(s) outside their tolerance, {unmatched} "
            "published row(s) not measured",
            fg="red",
            err=True,
        )
        raise SystemExit(1)


def _intervals(store: Any, df: Any, resamples: int) -> Any:
    """Bootstrap intervals for the leaderboard, with a progress bar."""
    from rich.console import Console

    from oebench.core.progress import RichProgress
    from oebench.report.results import intervals

    with RichProgress(Console(stderr=True)) as progress:  # a bar over every resample
        return intervals(store, df, resamples, bars=progress)


def _print_leaderboard(
    df: Any,
    detail: str | None,
    metrics: tuple[str, ...],
    bands: Any,
    output: str | None,
    against: Any = None,
) -> None:
    """The rich leaderboard on stdout, or as plain text in ``output``; then the comparison
    with published numbers (``against``, from ``--against``) when there is one."""
    from rich.console import Console

    from oebench.report.against import render_against
    from oebench.report.render import render

    console = output_console() if output is None else None
    text = None
    if console is None:
        import io

        text = io.StringIO()
        console = Console(file=text, width=160, color_system=None)
    render(console, df, detail, metrics, metrics[0], bands)
    if against is not None:
        console.print()
        render_against(console, against)
    if text is None or output is None:
        return
    from oebench.core.files import write_text_file

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
