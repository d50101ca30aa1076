"""The root ``oebench`` command, its entry point and its exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from oebench.cli.cache import cache
from oebench.cli.common import Group
from oebench.cli.interrupts import (
    WATCHDOG,
    interrupt_from_args,
    report_interrupt,
    watch_interrupts,
)
from oebench.cli.lists import init, list_, show
from oebench.cli.plugin import new_plugin
from oebench.cli.report import report
from oebench.cli.results import leaderboard, plot
from oebench.cli.run import run
from oebench.cli.store import store
from oebench.cli.sweep import sweep_command
from oebench.core import settings


@click.group(cls=Group)
@click.version_option(package_name="oebench")
@click.option(
    "--debug",
    "-v",
    "--verbose",
    is_flag=True,
    help="Print the full traceback of a failing plugin component (like $OEBENCH_DEBUG=1).",
)
def cli(debug: bool) -> None:
    """Benchmark OOD detectors with and without Outlier Exposure."""
    click.get_current_context().with_resource(settings.override(debug=debug))


for _command in (
    list_,
    show,
    init,
    run,
    sweep_command,
    leaderboard,
    plot,
    report,
    new_plugin,
    cache,
    store,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point: add plugin commands, then run the CLI."""
    from oebench.registry.plugins import get_plugin_manager

    interrupted: Callable[[], bool] = lambda: False  # noqa: E731
    try:
        interrupted = watch_interrupts()
        get_plugin_manager().add_commands(cli)
        cli.main(prog_name="oebench")
    except SystemExit as exc:
        _exit(exc.code)
    except BaseException as exc:
        # Ctrl-C while plugins load or a module is imported: as if it came a moment later.
        # (An extension module can turn the KeyboardInterrupt into an error of its own, as
        # pydantic does while it builds a schema; the signal was seen all the same.)
        if not isinstance(exc, KeyboardInterrupt) and not interrupted():
            raise
        _exit(report_interrupt(interrupt_from_args(sys.argv[1:])))
    _exit(0)


def _exit(code: int | str | None) -> None:
    """Exit with ``code``; once torch is loaded, skip the interpreter's module teardown.

    Tearing down torch's modules takes about 0.6 s on a 2-core machine, after all the work is
    done. atexit handlers still run and the streams are flushed; with other threads still
    alive (the Ctrl-C watchdog aside), the normal exit joins them instead.
    """
    if "torch" not in sys.modules or _other_threads():
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more can be said
        pass
    os._exit(code or 0)


def _other_threads() -> bool:
    """Whether threads other than the main one and the Ctrl-C watchdog are alive."""
    import threading

    main = threading.main_thread()
    return any(t is not main and t.name != WATCHDOG for t in threading.enumerate())
