"""Exceptions that the CLI turns into one-line messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input: reported in one line, exit status 2."""


class UnknownNameError(UserError, KeyError):
    """A name that no plugin registered."""

    def __init__(self, kind: str, name: str, available: Iterable[str]):
        self.kind, self.name, self.available = kind, name, sorted(available)
        super().__init__(unknown_name_message(kind, name, self.available))

    def __str__(self) -> str:
        return self.args[0]


class DataNotFoundError(UserError):
    """Dataset files are missing; the message says which files go where."""


class PluginError(Exception):
    """A plugin failed to load or to register its components."""


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    """``Unknown detector 'enrgy'. Did you mean: energy? Available: ...``."""
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    msg = f"Unknown {kind} {name!r}."
    if close:
        msg += f" Did you mean: {', '.join(close)}?"
    shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
    return msg + f" Available: {shown or '(none)'}"


class PluginFailed(UserError):
    """A plugin raised while oebench called it; the message names the plugin."""
