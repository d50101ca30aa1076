"""Stored cells whose code or data changed since: which ones a new cell supersedes
(``stale_cells``), and what ``oebench run`` does about them (``ChangeCheck``)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Protocol

from oebench.errors import UserError
from oebench.keys.fingerprints import cell_identity, describe_changes


class StaleCells(Protocol):
    """What ``ChangeCheck`` needs of a store (``ResultStore`` is one)."""

    def stale_cells(self, config: dict[str, Any]) -> dict[str, list[str]]: ...


def stale_cells(
    conn: sqlite3.Connection, config: dict[str, Any], key: str = ""
) -> dict[str, list[str]]:
    """``ResultStore.stale_cells`` on a connection (``key``: the new cell's own, skipped)."""
    names = config.get("names")
    if not isinstance(names, dict) or "fingerprints" not in config:
        return {}
    cursor = conn.execute(
        "SELECT key, config FROM cells WHERE benchmark = ? AND seed = ? AND id_dataset = ? "
        "AND model = ? AND training = ? AND key != ? ORDER BY rowid",
        (
            config.get("benchmark"),
            config.get("seed"),
            names.get("id_dataset"),
            names.get("model"),
            names.get("training"),
            key,
        ),
    )
    identity = cell_identity(config)
    found = {}
    for old_key, text in cursor.fetchall():
        old = json_object(text)
        if old and cell_identity(old) == identity:
            found[old_key] = describe_changes(old, config)
    return found


def json_object(text: Any) -> dict[str, Any]:
    """A JSON object's value; ``{}`` for anything else."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class ChangeCheck:
    """What ``oebench run`` does with stored cells whose code or data changed since: with
    ``on_change="recompute"`` (the default) the cell runs again and its result supersedes
    them; with ``"warn"`` the newest of them is served. ``lines()`` says so, one line per
    change: ``detector 'energy' code changed; recomputing 3 cells``."""

    MODES = ("recompute", "warn")

    def __init__(self, store: StaleCells, on_change: str = "recompute"):
        if on_change not in self.MODES:
            raise UserError(f"--on-change {on_change!r}: expected one of {', '.join(self.MODES)}")
        self.store = store
        self.on_change = on_change
        #: what changed -> how many cells it concerns
        self.changes: dict[str, int] = {}

    def served_instead(self, config: dict[str, Any]) -> str | None:
        """The key of the stored cell to serve instead of computing ``config``'s (``warn``
        with a changed cell stored), else None; every change found is counted."""
        stale = self.store.stale_cells(config)
        if not stale:
            return None
        newest = list(stale)[-1]
        what = _join(stale[newest])
        self.changes[what] = self.changes.get(what, 0) + 1
        return newest if self.on_change == "warn" else None

    def lines(self) -> list[str]:
        """One line per change found so far."""
        out = []
        for what, n in self.changes.items():
            cells = f"{n} cell{'s' if n != 1 else ''}"
            if self.on_change == "warn":
                out.append(
                    f"{what} changed since {cells} were stored; serving their stored results "
                    "(--on-change recompute recomputes them)"
                )
            else:
                out.append(f"{what} changed; recomputing {cells}")
        return out


def _join(changes: list[str], limit: int = 3) -> str:
    """``a, b and c`` (``a, b, c and 4 more``)."""
    shown = changes[:limit]
    if len(changes) > limit:
        text = f"{', '.join(shown)} and {len(changes) - limit} more"
    else:
        text = " and ".join([", ".join(shown[:-1]), shown[-1]]) if len(shown) > 1 else shown[0]
    return text
