"""What the commands share: the command group that reports user mistakes and Ctrl-C, the
``--store`` option and the stdout console."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from oebench.cli.interrupts import report_interrupt
from oebench.errors import UnknownNameError, UserError

STORE_OPTION = click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    help="Results store file (default: $OEBENCH_STORE, else "
    "the platform user data folder: ~/.local/share/oebench/results.sqlite on Linux).",
)


class Group(click.Group):
    """Turns user mistakes into one line on stderr and exit status 2, without a traceback,
    and Ctrl-C into what it left behind and exit status 130 (not click's "Aborted!")."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as exc:
            ctx.exit(report_interrupt(exc))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            if args and args[0] not in self.commands and not args[0].startswith("-"):
                raise click.UsageError(
                    str(UnknownNameError("command", args[0], self.commands)), ctx
                ) from None
            raise


def output_console() -> Any:
    """A rich console for stdout that is wide enough for leaderboards when piped."""
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if piped else None)
