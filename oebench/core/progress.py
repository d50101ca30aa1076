"""Progress of long work: the ``Progress`` protocol the engine reports to, its rich bars on
stderr that the CLI passes, and ``track``, the helper plugins reach through ``oebench.api``.

Every piece of work that can take more than a second or two shows what it is doing and how
far it is: a bar (``start``) when its size is known, an activity line (``activity``: a
pulsing bar and the time it has taken) when it is not. The bars fit the terminal: at 80
columns the description is cut first (with an ellipsis), the counts and the ETA stay.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

#: environment switches that silence Hugging Face's own bars while ours are shown
QUIET_HF = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

T = TypeVar("T")


class Progress:
    """A no-op progress sink; the CLI passes a rich-backed one."""

    def start(self, description: str, total: int) -> Callable[..., None]:
        """A bar; the callable is ``advance(steps=1, status="")`` (status: text beside it)."""
        return lambda advance=1, status="": None

    def log(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def activity(self, description: str) -> Iterator[None]:
        """A step of unknown length (loading plugins, checking data files), shown while it
        lasts; the default reports it as a bar of one step, done when the step ends."""
        advance = self.start(description, 1)
        try:
            yield
        finally:
            advance(1)


#: the run's progress while the engine calls plugin code (``track`` reports to it)
_CURRENT: ContextVar[Progress | None] = ContextVar("oebench_progress", default=None)


def current() -> Progress:
    """Where ``track`` reports now: the running benchmark's progress, else a no-op."""
    return _CURRENT.get() or Progress()


@contextlib.contextmanager
def reporting_to(progress: Progress) -> Iterator[None]:
    """Make ``progress`` the one ``track`` reports to while the block runs."""
    token = _CURRENT.set(progress)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """``items`` one by one, with a bar on the running benchmark's progress that advances as
    each item is *done* (when the next one is asked for): ``for x in track(xs, "knn index")``.
    ``total`` defaults to ``len(items)`` (items without a length and no ``total``: an
    activity line instead of a bar); outside a run, nothing is shown."""
    if total is None and not hasattr(items, "__len__"):
        with current().activity(description):
            yield from items
        return
    size = len(items) if total is None else total  # type: ignore[arg-type]
    advance = current().start(description, size)
    for item in items:
        yield item
        advance(1)


def bar_layout(
    width: int, description: int, counts: int, status: int
) -> tuple[int, int, int, bool]:
    """(description, bar, status) widths of one bar line of ``width`` columns, and whether
    the elapsed time is shown, given the natural widths of the description, the
    ``done/total`` counts and the status text. The counts and the ETA always keep their
    width; below 100 columns the elapsed time goes, then the description gives way (down to
    half of what is left), then the status text. (Activities have lines of their own.)"""
    elapsed = width >= 100
    bar = 24 if width >= 120 else max(4, min(24, width // 10))
    clock = len("0:00:00")
    fixed = counts + clock * (1 + elapsed) + 4 + elapsed  # the gaps between the columns
    rest = max(0, width - bar - fixed)
    if description + status <= rest:
        return description, bar, status, elapsed
    shown = min(description, max(rest // 2, rest - status))
    return shown, bar, min(status, rest - shown), elapsed


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
        from rich.spinner import Spinner

        spinner, clock = Spinner("dots"), TimeElapsedColumn()

        class FittedBars(Bars):
            """rich's bars laid out by ``bar_layout`` to the console's width."""

            def get_renderables(self) -> Iterator[Any]:
                """The bars, then a line per activity (spinner, description, time)."""
                bars = [t for t in self.tasks if t.total is not None]
                activities = [t for t in self.tasks if t.total is None and t.visible]
                if bars:
                    yield self.make_tasks_table(bars)
                if activities:
                    yield self.activity_table(activities)

            def make_tasks_table(self, tasks: Iterable[Any]) -> Any:
                from rich.table import Column, Table

                shown = [t for t in tasks if t.visible]
                if not shown:
                    return Table.grid()
                desc = max(len(t.description) for t in shown)
                counts = max(len(_counts(t)) for t in shown)
                status = max(len(str(t.fields.get("status", ""))) for t in shown)
                d, b, s, elapsed = bar_layout(self.console.width, desc, counts, status)
                self.columns[1].bar_width = b
                keep = [0, 1, 2, 3, 4, 5] if elapsed else [0, 1, 2, 4, 5]
                widths = dict(zip(range(6), (d, b, counts, 7, 7, s), strict=True))
                table = Table.grid(
                    *(
                        Column(width=widths[i], no_wrap=True, overflow="ellipsis", justify=j)
                        for i, j in zip(keep, "llrrrl" if elapsed else "llrrl", strict=True)
                    ),
                    padding=(0, 1, 0, 0),
                )
                for t in shown:
                    cells = [c(t) for c in self.columns]
                    table.add_row(*(cells[i] for i in keep))
                return table

            def activity_table(self, tasks: list[Any]) -> Any:
                from rich.table import Column, Table

                width = max(1, self.console.width - 2 - 8)  # the spinner, the time, the gaps
                table = Table.grid(
                    Column(width=1, no_wrap=True),
                    Column(width=width, no_wrap=True, overflow="ellipsis"),
                    Column(width=7, no_wrap=True, justify="right"),
                    padding=(0, 1, 0, 0),
                )
                for t in tasks:
                    table.add_row(spinner.render(t.get_time()), t.description, clock(t))
                return table

        self._bar = FittedBars(
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

    @contextlib.contextmanager
    def activity(self, description: str) -> Iterator[None]:
        task = self._bar.add_task(description, total=None, status="")
        try:
            yield
        finally:
            self._bar.remove_task(task)

    def log(self, message: str) -> None:
        self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)


def _counts(task: Any) -> str:
    """``done/total`` as rich's MofNCompleteColumn shows it ("" for an activity)."""
    if task.total is None:
        return ""
    total = int(task.total)
    return f"{int(task.completed):{len(str(total))}d}/{total}"


def silence_hf_progress() -> None:
    """Hide ``datasets``' and ``huggingface_hub``'s own progress bars inside ours."""
    for key, value in QUIET_HF.items():
        os.environ.setdefault(key, value)
    if "datasets" in sys.modules:  # already imported: its switch was read at import
        sys.modules["datasets"].disable_progress_bars()
