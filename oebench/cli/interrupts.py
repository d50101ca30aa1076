"""Ctrl-C: the watcher that notes it, and the one place that says what it left behind."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

#: the exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130


class RunInterrupted(KeyboardInterrupt):
    """A Ctrl-C during a run: its store, and its benchmark or the counts when known."""

    def __init__(
        self,
        store: str | Path | None,
        bench: Any = None,
        kept: int | None = None,
        total: int | None = None,
    ):
        super().__init__()
        self.store = store
        self.bench = bench
        self.kept = kept
        self.total = total

    def counts(self) -> tuple[int, int | None]:
        """Cells of the benchmark the store holds, and cells it has (None: unknown)."""
        if self.kept is not None:
            return self.kept, self.total
        from oebench.session import kept_cells

        return kept_cells(self.bench, self.store)


def interrupt_message(kept: int, total: int | None, store: str | Path) -> str:
    """What a stopped run kept, and how to resume it."""
    return (
        f"Interrupted: {kept} of {'?' if total is None else total} cells are kept in the "
        f"results store {store}; run the same command again to resume."
    )


def report_interrupt(exc: BaseException) -> int:
    """Say on stderr what a Ctrl-C left behind (counts for a run, else one word); returns
    the exit status."""
    if isinstance(exc, RunInterrupted):
        from oebench.core import settings

        kept, total = exc.counts()
        message = interrupt_message(kept, total, exc.store or settings.store_path())
    else:
        message = "Interrupted."
    click.secho(message, fg="yellow", err=True)
    return INTERRUPTED


def interrupt_from_args(args: list[str]) -> KeyboardInterrupt:
    """The interrupt of a command line that Ctrl-C stopped before its command started."""
    words = [a for a in args if not a.startswith("-")]
    if words[:1] != ["run"]:
        return KeyboardInterrupt()
    store = args[args.index("--store") + 1] if "--store" in args[:-1] else None
    return RunInterrupted(store)


def watch_interrupts() -> Callable[[], bool]:
    """Note every Ctrl-C (raising KeyboardInterrupt as Python does); returns whether one came."""
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, handler)
    return lambda: bool(seen)
