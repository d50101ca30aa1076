"""How a failure is told: one line (``Type: message``), the full traceback under ``--debug``."""

from __future__ import annotations

from oebench.core.settings import debug_enabled


def debug_traceback(exc: BaseException) -> str:
    """The full traceback of ``exc`` after a newline under ``--debug``, else ``""``."""
    if not debug_enabled():
        return ""
    import traceback

    return "\n" + "".join(traceback.format_exception(exc)).rstrip()


def describe_exception(exc: BaseException, where: bool = False) -> str:
    """``Type: message`` (``SystemExit: 3`` too), and with ``where`` the innermost frame."""
    text = f"{type(exc).__name__}: {exc}"
    if where and exc.__traceback__ is not None:
        import traceback

        frame = traceback.extract_tb(exc.__traceback__)[-1]
        text += f" (raised at {frame.filename}:{frame.lineno})"
    return text + debug_traceback(exc)
