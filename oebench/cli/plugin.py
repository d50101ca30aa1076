"""``oebench new-plugin``: a plugin package to start from (written by ``scaffold``)."""

from __future__ import annotations

import click


@click.command(name="new-plugin")
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
