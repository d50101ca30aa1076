"""The checksum of a stored cell: what its cell record, its result rows and its score arrays
hash to, computed when the cell is saved (from what the store then holds) and compared
whenever they are read, so a changed byte, a missing row or a missing array is never served.

Stored in ``cells.checksum`` (schema 3) as ``1:<rows>:<rows sha256>:<arrays>``: the number of
rows and a sha256 over the record and every row, then a JSON object giving each detector's
number of score arrays and their sha256 (so a damaged array costs only its detector's
scores). Columns are hashed by name, NULL ones left out, so a column that a later schema adds
(NULL in older cells) leaves their checksums valid. Cells stored before schema 3 have none
(NULL): they cannot be verified.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from oebench.record.schema import CELL_COLUMNS, ROW_COLUMNS

VERSION = "1"
#: one stored score array as the checksum sees it: detector, dataset, is_ood, n, blob
Array = tuple[str, str, int, int, bytes]


class Checksum(NamedTuple):
    rows: int
    rows_digest: str
    #: detector -> (its number of score arrays, their sha256)
    arrays: dict[str, tuple[int, str]]

    def text(self) -> str:
        arrays = json.dumps(self.arrays, sort_keys=True, separators=(",", ":"))
        return f"{VERSION}:{self.rows}:{self.rows_digest}:{arrays}"


def parse(text: Any) -> Checksum | None:
    """A stored checksum's parts; None when it is not one this oebench wrote."""
    parts = text.split(":", 3) if isinstance(text, str) else []
    if len(parts) != 4 or parts[0] != VERSION or not parts[1].isdigit():
        return None
    try:
        arrays = json.loads(parts[3])
        found = {str(d): (int(n), str(h)) for d, (n, h) in arrays.items()}
    except (ValueError, TypeError, AttributeError):
        return None
    return Checksum(int(parts[1]), parts[2], found)


def _named(columns: Sequence[str], values: Sequence[Any]) -> str:
    """``{column: value}`` of the non-NULL values, as canonical JSON."""
    named = {c: v for c, v in zip(columns, values, strict=True) if v is not None}
    return json.dumps(named, sort_keys=True, default=repr)


def rows_digest(cell: Sequence[Any], rows: Iterable[Sequence[Any]]) -> tuple[int, str]:
    """(count, sha256) of a cell's record (``CELL_COLUMNS`` values) and its result rows
    (``ROW_COLUMNS`` values each, in any order)."""
    lines = sorted(_named(ROW_COLUMNS, row) for row in rows)
    h = hashlib.sha256(_named(CELL_COLUMNS, cell).encode())
    h.update(f"|{len(lines)}".encode())
    for line in lines:
        h.update(b"\n" + line.encode())
    return len(lines), h.hexdigest()


def arrays_digests(arrays: Iterable[Array]) -> dict[str, tuple[int, str]]:
    """detector -> (count, sha256) of a cell's stored score arrays (in any order)."""
    entries: dict[str, list[str]] = {}
    for det, ds, is_ood, n, blob in arrays:
        entry = json.dumps([det, ds, is_ood, n, _sha256(blob)], default=repr)
        entries.setdefault(str(det), []).append(entry)
    found = {}
    for det, lines in entries.items():
        h = hashlib.sha256(f"{len(lines)}".encode())
        for line in sorted(lines):
            h.update(b"\n" + line.encode())
        found[det] = (len(lines), h.hexdigest())
    return found


def _sha256(blob: Any) -> str:
    """sha256 of a stored blob (of its repr when damage made it another type)."""
    data = blob if isinstance(blob, bytes) else repr(blob).encode()
    return hashlib.sha256(data).hexdigest()


CELL_QUERY = f"SELECT key, checksum, {', '.join(CELL_COLUMNS)} FROM cells"
ROWS_QUERY = f"SELECT {', '.join(ROW_COLUMNS)} FROM results WHERE cell = ?"
ARRAYS_QUERY = "SELECT detector, dataset, is_ood, n, data FROM scores WHERE cell = ?"


def compute(conn: sqlite3.Connection, key: str) -> str:
    """The checksum of cell ``key`` as the store holds it now (inside the saving transaction)."""
    cell = conn.execute(f"{CELL_QUERY} WHERE key = ?", (key,)).fetchone()[2:]
    n_rows, rows = rows_digest(cell, conn.execute(ROWS_QUERY, (key,)))
    return Checksum(n_rows, rows, arrays_digests(conn.execute(ARRAYS_QUERY, (key,)))).text()


def rows_problem(stored: Any, cell: Sequence[Any], rows: list[Sequence[Any]]) -> str | None:
    """Why a cell's record and rows as read do not match its stored checksum (None: they do)."""
    expected = parse(stored)
    if expected is None:
        return "its stored checksum is unreadable"
    n, digest = rows_digest(cell, rows)
    if n < expected.rows:
        return f"{expected.rows - n} of its {expected.rows} result rows are missing"
    if n != expected.rows or digest != expected.rows_digest:
        return "a stored value differs from what was saved"
    return None


def arrays_problems(stored: Any, arrays: list[Array]) -> dict[str, str]:
    """detector -> why its score arrays as read do not match the stored checksum (every
    detector of ``arrays`` when the checksum itself is unreadable)."""
    expected = parse(stored)
    found = arrays_digests(arrays)
    if expected is None:
        return dict.fromkeys(found, "its stored checksum is unreadable")
    problems = {}
    for det in {*expected.arrays, *found}:
        (want, digest), (n, got) = expected.arrays.get(det, (0, "")), found.get(det, (0, ""))
        if n < want:
            problems[det] = f"{want - n} of its {want} score arrays are missing"
        elif n != want or got != digest:
            problems[det] = "a stored score array differs from what was saved"
    return problems


def cell_problem(conn: sqlite3.Connection, key: str, arrays: bool = True) -> str | None:
    """Why stored cell ``key`` cannot be trusted (None: it verifies, or has no checksum)."""
    found = conn.execute(f"{CELL_QUERY} WHERE key = ?", (key,)).fetchone()
    if found is None or found[1] is None:
        return None
    problem = rows_problem(found[1], found[2:], conn.execute(ROWS_QUERY, (key,)).fetchall())
    if problem is None and arrays:
        bad = arrays_problems(found[1], conn.execute(ARRAYS_QUERY, (key,)).fetchall())
        problem = "; ".join(f"detector {d!r}: {why}" for d, why in sorted(bad.items())) or None
    return problem


def label(conn: sqlite3.Connection, key: str) -> str:
    """``benchmark / ID dataset / model / training / seed N`` of a stored cell (``?`` where
    unknown), read without decoding anything that could itself be damaged."""
    found = (
        conn.execute(
            "SELECT benchmark, id_dataset, model, training, seed FROM cells WHERE key = ?", (key,)
        ).fetchone()
        or ("?",) * 5
    )
    return " / ".join(str(v) for v in found[:4]) + f" / seed {found[4]}"
