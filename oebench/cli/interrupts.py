"""Ctrl-C: the watcher that notes it, and the one place that says what it left behind.

Python takes a Ctrl-C in the main thread, between two steps of Python code: a plugin stuck in
C code (a long NumPy or BLAS call, a native library's loop) would hold it for as long as that
call runs. So the watcher also has a watchdog thread, woken by every SIGINT (through
``signal.set_wakeup_fd``): when the main thread, inside a plugin's code, makes no step of
Python for ``GRACE_S`` seconds after a Ctrl-C, the watchdog says what the run left behind and
ends the process with status 130. The results store is as consistent as after a kill: each
cell is one SQLite transaction, and output files are renamed into place whole. A Ctrl-C that
oebench itself holds (``sigint_deferred``, while a cell is committed) is left to it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

#: the exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130
#: how long the main thread may leave a Ctrl-C untaken in a plugin's code before the watchdog
#: ends the process
GRACE_S = 2.0
#: the watchdog thread's name
WATCHDOG = "oebench-ctrl-c"


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
    click.secho(_left_behind(exc), fg="yellow", err=True)
    return INTERRUPTED


def _left_behind(exc: BaseException) -> str:
    """The interrupt message of ``exc``: counts for a run, else one word."""
    if not isinstance(exc, RunInterrupted):
        return "Interrupted."
    from oebench.core import settings

    kept, total = exc.counts()
    return interrupt_message(kept, total, exc.store or settings.store_path())


def interrupt_from_args(args: list[str]) -> KeyboardInterrupt:
    """The interrupt of a command line that Ctrl-C stopped before its command started."""
    words = [a for a in args if not a.startswith("-")]
    if words[:1] != ["run"]:
        return KeyboardInterrupt()
    store = args[args.index("--store") + 1] if "--store" in args[:-1] else None
    return RunInterrupted(store)


def watch_interrupts() -> Callable[[], bool]:
    """Note every Ctrl-C (raising KeyboardInterrupt as Python does), and start the watchdog
    for Ctrl-C that the main thread cannot take; returns whether one came."""
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        if _watchdog.stopping.is_set():  # the watchdog is ending the process: wait for it
            threading.Event().wait()
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, handler)
        _watchdog.start(handler)
    return lambda: bool(seen)


def note_run(store: str | Path | None, bench: Any) -> None:
    """The run in progress: what the watchdog's message counts, should it end the process."""
    _watchdog.run = RunInterrupted(store, bench)


class _Watchdog:
    """The thread that ends the process when a Ctrl-C stays untaken in a plugin's C code."""

    def __init__(self) -> None:
        self.handler: Callable[..., Any] | None = None
        self.run: RunInterrupted | None = None
        self.stopping = threading.Event()

    def start(self, handler: Callable[..., Any]) -> None:
        """Have every signal write its number to a pipe that a daemon thread reads (unless
        someone else set a wakeup file already, or this is not the main thread)."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            previous: int | None = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            previous = None
        if previous != -1:
            if previous is not None:
                signal.set_wakeup_fd(previous)  # someone else's: theirs it stays
            os.close(read)
            os.close(write)
            return
        self.handler = handler
        os.register_at_fork(after_in_child=_forget_wakeup)
        threading.Thread(target=self._watch, args=(read,), name=WATCHDOG, daemon=True).start()

    def _watch(self, read: int) -> None:
        while True:
            try:
                got = os.read(read, 64)
            except OSError:
                return
            if not got:
                return
            if signal.SIGINT in got and self._stuck():
                self._stop()

    def _stuck(self) -> bool:
        """Whether the main thread, inside a plugin's code, makes no step of Python for
        ``GRACE_S`` while the Ctrl-C is ours to take (not held by ``sigint_deferred``)."""
        before = _main_position()
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if inspect.unwrap(signal.getsignal(signal.SIGINT)) is not self.handler:
                return False
            if _main_position() != before:
                return False
        return before is not None and _in_plugin(before[0])

    def _stop(self) -> None:
        """Say what the run left behind, and end the process with status 130."""
        self.stopping.set()
        exc = self.run or interrupt_from_args(sys.argv[1:])
        try:
            message = _left_behind(exc)
        except Exception:  # the counts are unknown: the word will do
            message = "Interrupted."
        why = (
            f"oebench: a plugin's code did not stop within {GRACE_S:g} s of Ctrl-C (it is "
            "running code that Python cannot interrupt); stopping here."
        )
        tty = os.isatty(2)
        text = f"{why}\n{click.style(message, fg='yellow') if tty else message}\n"
        os.write(2, (("\x1b[?25h\n" if tty else "") + text).encode(errors="replace"))
        os._exit(INTERRUPTED)


_watchdog = _Watchdog()


def _main_position() -> tuple[FrameType, int] | None:
    """The main thread's innermost Python frame and the step it is at."""
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    return None if frame is None else (frame, frame.f_lasti)


def _in_plugin(frame: FrameType | None) -> bool:
    """Whether a plugin's module is on the stack of ``frame``."""
    from oebench.registry.plugins import plugin_modules

    modules = plugin_modules()
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).split(".")[0] in modules:
            return True
        frame = frame.f_back
    return False


def _forget_wakeup() -> None:
    """In a forked child: no watchdog thread reads the pipe there, so no signal writes to it."""
    with contextlib.suppress(ValueError):  # forked from a thread other than the main one
        signal.set_wakeup_fd(-1)
    _watchdog.handler = None
