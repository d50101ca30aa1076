"""Progress bars for long work, on stderr, backed by rich."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oebench.runner import Progress


class RichProgress(Progress):
    def __init__(self, console: Any):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.stop()

    def start(self, description: str, total: int) -> Callable[[int], None]:
        task = self._bar.add_task(description, total=total)
        return lambda advance=1: self._bar.advance(task, advance)

    def log(self, message: str) -> None:
        self._bar.console.log(message)
