"""Damage in a results store: cells and score arrays that fail their checksum
(``oebench.record.checksums``) or cannot be decoded, each said once in one line on stderr;
the rows of a read that may be served; and ``oebench store check``'s walk over every cell."""

from __future__ import annotations

import sqlite3
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from oebench.record import checksums
from oebench.record.schema import ROW_COLUMNS


class DamageReport:
    """What a store found damaged while it was open: each said once, on stderr."""

    def __init__(self, path: Path):
        self.path = path
        #: (cell, detector, dataset or "*") of score arrays left out
        self.arrays: set[tuple[str, str, str]] = set()
        #: cells not served
        self.cells: set[str] = set()
        self.noted_unverifiable = False

    def cell(self, conn: sqlite3.Connection, key: str, problem: str) -> None:
        """A cell whose record or rows fail their checksum: not served."""
        if key not in self.cells:
            self.cells.add(key)
            _say(
                f"warning: stored cell {key} ({checksums.label(conn, key)}) is damaged "
                f"({problem}); it is not served (`oebench run` computes it again)"
            )

    def array(
        self, conn: sqlite3.Connection, key: str, detector: str, dataset: str, problem: str
    ) -> None:
        """Score arrays of one detector of a cell that are damaged: that detector's are left
        out (``dataset``: the one that failed, or ``*`` for the detector's checksum)."""
        if (key, detector, dataset) in self.arrays:
            return
        self.arrays.add((key, detector, dataset))
        on = "" if dataset == "*" else f" on {dataset!r}"
        _say(
            f"warning: the stored scores of detector {detector!r}{on} in cell {key} "
            f"({checksums.label(conn, key)}) are damaged ({problem}); that detector's scores "
            "of the cell are left out (`oebench run --rerun` recomputes them)"
        )

    def unverifiable(self) -> None:
        """Cells stored before checksums were read: served as they are, said once."""
        if not self.noted_unverifiable:
            self.noted_unverifiable = True
            _say(
                f"note: results store {self.path} holds cells stored before cells had "
                "checksums (oebench schema 2 or older); they are served unverified "
                "(`oebench run --rerun` stores them again with one)"
            )


def _say(text: str) -> None:
    print(f"oebench: {text}", file=sys.stderr)


def unserved(
    conn: sqlite3.Connection,
    keys: Sequence[str] | None,
    found: list[dict[str, Any]],
    report: DamageReport,
) -> set[str]:
    """The cells of ``found`` (result rows joined with their cell, of cells ``keys`` or all)
    whose record and rows fail their checksum; each reported once."""
    by_cell: dict[str, list[tuple]] = {}
    for row in found:
        by_cell.setdefault(row["cell"], []).append(tuple(row[c] for c in ROW_COLUMNS))
    query = checksums.CELL_QUERY
    if keys is not None:
        query += f" WHERE key IN ({', '.join('?' * len(keys))})"
    bad = set()
    for key, stored, *cell in conn.execute(query, list(keys or ())).fetchall():
        if stored is None:
            report.unverifiable()
            continue
        problem = checksums.rows_problem(stored, cell, by_cell.get(key, []))
        if problem is not None:
            bad.add(key)
            report.cell(conn, key, problem)
    return bad


def bad_arrays(
    conn: sqlite3.Connection, key: str, arrays: list[checksums.Array], report: DamageReport
) -> set[str]:
    """The detectors of cell ``key`` whose stored ``arrays`` fail the cell's checksum (and
    those its rows name that have no arrays left); each reported once."""
    stored = conn.execute("SELECT checksum FROM cells WHERE key = ?", (key,)).fetchone()
    if stored is None or stored[0] is None:
        return set()
    problems = checksums.arrays_problems(stored[0], arrays)
    for det, problem in sorted(problems.items()):
        report.array(conn, key, det, "*", problem)
    return set(problems)


class CellCheck(NamedTuple):
    """One stored cell as ``oebench store check`` found it."""

    key: str
    label: str
    #: None when it verifies (or has no checksum to verify)
    problem: str | None
    verifiable: bool


def check_store(
    conn: sqlite3.Connection, path: Path, verifiable: bool, decode: Callable[[bytes, int], Any]
) -> Iterator[CellCheck]:
    """Every stored cell, verified against its checksum, and every score array decoded."""
    from oebench.record.store import StoreError

    if not verifiable:
        raise StoreError(
            f"results store {path} is read-only and from before cells had checksums "
            "(schema 2): nothing to verify; open a writable copy to upgrade it"
        )
    problems = conn.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        found = "; ".join(str(p[0]) for p in problems[:3])
        raise StoreError(f"results store {path} is damaged as an SQLite file: {found}")
    for key, stored in conn.execute("SELECT key, checksum FROM cells ORDER BY rowid").fetchall():
        found = [checksums.cell_problem(conn, key)] if stored is not None else []
        for det, ds, _, n, blob in conn.execute(checksums.ARRAYS_QUERY, (key,)):
            try:
                decode(blob, n)
            except (zlib.error, ValueError, TypeError, sqlite3.DatabaseError) as exc:
                found.append(f"detector {det!r} on {ds!r}: {type(exc).__name__}: {exc}")
        problem = "; ".join(p for p in dict.fromkeys(found) if p) or None
        yield CellCheck(key, checksums.label(conn, key), problem, stored is not None)
