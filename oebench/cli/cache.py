"""``oebench cache``: where cached checkpoints and forward-pass outputs are, and clearing them."""

from __future__ import annotations

import click

from oebench.cli.common import Group
from oebench.core import settings


@click.group(cls=Group)
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
