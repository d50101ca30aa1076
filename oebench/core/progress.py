"""Progress of long work: the ``Progress`` protocol the engine reports to, and its rich bars
on stderr that the CLI passes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

#: environment switches that silence Hugging Face's own bars while ours are shown
QUIET_HF = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


class Progress:
    """A no-op progress sink; the CLI passes a rich-backed one."""

    def start(self, description: str, total: int) -> Callable[..., None]:
        """A bar; the callable is ``advance(steps=1, status="")`` (status: text beside it)."""
        return lambda advance=1, status="": None

    def log(self, message: str) -> None:
        pass


class RichProgress(Progress):
    """One bar per piece of long work; finished bars other than the first disappear."""

    def __init__(self, console: Any):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self._bar = Bars(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self._first: Any = None

    def __enter__(self) -> RichProgress:
        silence_hf_progress()
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.stop()

    def start(self, description: str, total: int) -> Callable[..., None]:
        task = self._bar.add_task(description, total=total, status="")
        if self._first is None:
            self._first = task

        def advance(steps: int = 1, status: str = "") -> None:
            found = [t for t in self._bar.tasks if t.id == task]
            if not found:  # finished and removed already
                return
            self._bar.update(task, advance=steps, **({"status": status} if status else {}))
            if steps and found[0].finished and task != self._first:
                self._bar.remove_task(task)

        return advance

    def log(self, message: str) -> None:
        self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)


def silence_hf_progress() -> None:
    """Hide ``datasets``' and ``huggingface_hub``'s own progress bars inside ours."""
    for key, value in QUIET_HF.items():
        os.environ.setdefault(key, value)
    if "datasets" in sys.modules:  # already imported: its switch was read at import
        sys.modules["datasets"].disable_progress_bars()
