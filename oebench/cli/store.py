"""``oebench store``: the results store itself; ``check`` verifies every stored cell."""

from __future__ import annotations

import click

from oebench.cli.common import STORE_OPTION, Group


@click.group(cls=Group)
def store() -> None:
    """Inspect the results store."""


@store.command(name="check")
@STORE_OPTION
def store_check(store_path: str | None) -> None:
    """Verify every stored cell against its checksum (rows and per-sample scores): one line
    per damaged cell, then a summary; exit status 1 when any cell is damaged.

    A damaged cell is never served: `oebench run` computes it again.
    """
    from oebench.record.store import ResultStore

    checked = damaged = unverifiable = 0
    with ResultStore(store_path, create=False) as results:
        where = results.path
        for cell in results.check():
            checked += 1
            unverifiable += not cell.verifiable
            if cell.problem is not None:
                damaged += 1
                click.echo(f"damaged: cell {cell.key} ({cell.label}): {cell.problem}")
    old = f"; {unverifiable} stored before cells had checksums (not verifiable)"
    click.echo(
        f"{where}: {checked} cell{'s' if checked != 1 else ''} checked, {damaged} damaged"
        + (old if unverifiable else "")
        + ("; `oebench run` computes the damaged cells again" if damaged else "")
    )
    if damaged:
        click.get_current_context().exit(1)
