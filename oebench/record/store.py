"""The results store: finished cells, their result rows and per-sample scores, in SQLite.

One file (``$OEBENCH_STORE``, else ``$XDG_DATA_HOME/oebench/results.sqlite``, else
``~/.local/share/oebench/results.sqlite``) in WAL mode, so concurrent runs can share it. Each
finished cell is written in one transaction with its rows and scores: a run killed at any
moment leaves every cell either complete or absent. Each cell carries a checksum over its
record, rows and score arrays (``oebench.record.checksums``), verified whenever they are read: a
cell that fails is reported in one line and not served (``oebench run`` computes it again).
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

from oebench.core import settings
from oebench.core.signals import sigint_deferred
from oebench.errors import UserError
from oebench.record import checksums
from oebench.record.changes import json_object, stale_cells
from oebench.record.damage import CellCheck, DamageReport, bad_arrays, check_store, unserved
from oebench.record.schema import CELL_COLUMNS, METRIC_COLUMNS, OPTIONAL, ROW_COLUMNS
from oebench.record.tables import (
    APPLICATION_ID,
    MIGRATIONS,
    OLDEST_READABLE,
    SCHEMA_VERSION,
    create_tables,
    immediate,
    migrate,
    read_as_current,
)

BUSY_SECONDS = 60.0


class StoreError(UserError):
    """The results store is missing, corrupt, locked or from another schema version."""


class ScoreArray(NamedTuple):
    """Per-sample scores of one detector on one test set of a cell."""

    detector: str
    dataset: str
    is_ood: bool
    scores: np.ndarray


def encode_scores(scores: np.ndarray) -> bytes:
    """Little-endian float64, zlib-compressed."""
    return zlib.compress(np.ascontiguousarray(scores, dtype="<f8").tobytes(), 6)


def decode_scores(blob: bytes, n: int) -> np.ndarray:
    """The array ``encode_scores`` made; an error when the blob is damaged or the wrong size."""
    arr = np.frombuffer(zlib.decompress(blob), dtype="<f8")
    if arr.size != n:
        raise sqlite3.DatabaseError(f"a score array holds {arr.size} values, expected {n}")
    return arr.astype(np.float64)


def _explain(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (
            f"results store {path} is corrupt or not an SQLite file ({text}); "
            "move it away (or pass another --store) and run again"
        )
    if "locked" in text or "busy" in text:
        return f"results store {path} stayed locked by another process for {BUSY_SECONDS:.0f} s"
    return f"results store {path}: {text}"


class ResultStore:
    """A results store file; ``create=False`` opens an existing store only (for reading)."""

    def __init__(self, path: str | Path | None = None, create: bool = True):
        self.path = Path(path).expanduser() if path else settings.store_path()
        self._conn: sqlite3.Connection | None = None
        #: cells and score arrays found damaged (reported once each)
        self.damage = DamageReport(self.path)
        #: whether the store has a checksum column (a read-only schema 2 store has none)
        self.checksums = True
        #: opened as an immutable snapshot: a read-only store without its -wal/-shm files
        self.immutable = False
        with self._guard():
            try:
                self._conn = self._connect(create)
            except sqlite3.OperationalError as exc:  # e.g. a read-only mount SQLite found
                text = str(exc)
                if create or self.immutable or not ("readonly" in text or "unable to open" in text):
                    raise
                self._conn = self._connect_immutable()

    # -- opening -----------------------------------------------------------------------------
    def _connect(self, create: bool) -> sqlite3.Connection:
        if not create and not self.path.is_file():
            raise StoreError(
                f"no results store at {self.path}: `oebench run` creates it "
                f"(choose another with --store or ${settings.STORE_ENV})"
            )
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file where a folder should be, no permission
                raise StoreError(
                    f"results store {self.path}: cannot make its folder {self.path.parent} "
                    f"({exc.strerror or exc}); pass another --store"
                ) from None
        elif not self._writable():
            return self._connect_immutable()
        uri = f"file:{quote(str(self.path.absolute()))}?mode={'rwc' if create else 'rw'}"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema(conn, create, writable=True)
            conn.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _writable(self) -> bool:
        """Whether SQLite can write the file and create its -wal/-shm files next to it."""
        folder = self.path.absolute().parent
        return os.access(self.path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)

    def _connect_immutable(self) -> sqlite3.Connection:
        """A read-only store opened as an immutable snapshot (for queries only)."""
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"results store {self.path} is read-only and its {wal.name} file holds results "
                "not yet merged into it; copy both files to a writable folder and use that --store"
            )
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            self._check_schema(conn, create=False)
        except BaseException:
            conn.close()
            raise
        self.immutable = True
        return conn

    def _check_schema(self, conn: sqlite3.Connection, create: bool, writable: bool = False) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version == 0 and app == 0 and tables == 0:
            if not create:
                raise StoreError(f"results store {self.path} is empty: it holds no results yet")
            create_tables(conn)
        elif app != APPLICATION_ID:
            raise StoreError(f"{self.path} is an SQLite file but not an oebench results store")
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"results store {self.path} has schema version {version}, newer than this "
                f"oebench reads ({SCHEMA_VERSION}): upgrade oebench or use another --store"
            )
        elif version in MIGRATIONS and writable:
            migrate(conn)
        elif OLDEST_READABLE <= version < SCHEMA_VERSION:  # read-only: read as it is
            self.checksums = version >= 3  # schema 2: from before checksums
            read_as_current(conn)
        elif version < SCHEMA_VERSION:
            raise StoreError(
                f"results store {self.path} has the old schema version {version} (this oebench "
                f"reads {SCHEMA_VERSION}): move it away or use another --store"
            )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite errors into one-line user errors."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(_explain(self.path, exc)) from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN .. COMMIT, with Ctrl-C held until the end: committed whole or rolled back."""
        with sigint_deferred(), immediate(self._connection) as conn:
            yield conn

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"results store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------
    def save_cell(
        self,
        record: dict[str, Any],
        rows: list[dict[str, Any]],
        scores: Iterable[ScoreArray] = (),
        replace: bool = False,
    ) -> bool:
        """Store a finished cell with its rows and scores in one transaction.

        A cell already stored is left alone (returns False) unless ``replace``, or unless it
        fails its checksum. Stored cells this one supersedes (``stale_cells``: the same cell
        computed with other code or data) are deleted in the same transaction, so no query
        ever sees both. The new cell's checksum is computed from what the store then holds.
        """
        key = record["key"]
        with self._guard(), self._transaction() as conn:
            if conn.execute("SELECT 1 FROM cells WHERE key = ?", (key,)).fetchone():
                if not replace and checksums.cell_problem(conn, key) is None:
                    return False
                _delete_cell(conn, key)
            for stale in stale_cells(conn, json_object(record["config"]), key):
                _delete_cell(conn, stale)
            conn.execute(
                "INSERT OR IGNORE INTO benchmarks (digest, name, text) VALUES (?, ?, ?)",
                (record["benchmark_digest"], record["benchmark"], record["benchmark_text"]),
            )
            conn.execute(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(CELL_COLUMNS))})",
                [record.get(c) if c in OPTIONAL else record[c] for c in CELL_COLUMNS],
            )
            conn.executemany(
                f"INSERT INTO results (cell, {', '.join(ROW_COLUMNS)}) "
                f"VALUES (?, {', '.join('?' * len(ROW_COLUMNS))})",
                [(key, *(row.get(c) for c in ROW_COLUMNS)) for row in rows],
            )
            conn.executemany(
                "INSERT INTO scores (cell, detector, dataset, is_ood, n, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        key,
                        s.detector,
                        s.dataset,
                        int(s.is_ood),
                        len(s.scores),
                        encode_scores(s.scores),
                    )
                    for s in scores
                ],
            )
            checksum = checksums.compute(conn, key)
            conn.execute("UPDATE cells SET checksum = ? WHERE key = ?", (checksum, key))
        return True

    # -- reading -----------------------------------------------------------------------------
    def stale_cells(self, config: dict[str, Any]) -> dict[str, list[str]]:
        """Stored cells that a cell with ``config`` would supersede, oldest first: the same
        benchmark, seed, ID dataset, model, training and settings, computed with other code or
        data; key -> what changed (``["detector 'energy' code", ...]``)."""
        with self._guard():
            return stale_cells(self._connection, config)

    def has(self, key: str) -> bool:
        """Whether cell ``key`` is stored and its record and rows match their checksum (a
        damaged cell is reported, and counts as absent)."""
        with self._guard():
            conn = self._connection
            if conn.execute("SELECT 1 FROM cells WHERE key = ?", (key,)).fetchone() is None:
                return False
            if not self.checksums:
                return True
            problem = checksums.cell_problem(conn, key, arrays=False)
            if problem is not None:
                self.damage.cell(conn, key, problem)
        return problem is None

    def count(self, keys: Iterable[str] | None = None) -> int:
        """How many cells are stored and committed (of ``keys``, when given)."""
        if self._conn is not None and self._conn.in_transaction:  # never count uncommitted
            with self._guard():
                self._conn.execute("ROLLBACK")
        if keys is not None:
            return sum(self.has(k) for k in keys)
        with self._guard():
            return self._connection.execute("SELECT count(*) FROM cells").fetchone()[0]

    def rows(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Result rows joined with their cell's labels, in storage order.

        Each row has the runner's keys (``*_std`` only when stored) plus ``stored_order``,
        ``benchmark_digest``, ``benchmark_path``, ``device``, versions and ``created_at``.
        """
        cell_cols = [c for c in CELL_COLUMNS if c not in ("key", "config", "plugins")]
        query = (
            f"SELECT c.rowid AS stored_order, c.key AS cell, "
            f"{', '.join('c.' + c for c in cell_cols)}, {', '.join('r.' + c for c in ROW_COLUMNS)} "
            "FROM results r JOIN cells c ON r.cell = c.key"
        )
        params: list[str] = []
        if keys is not None:
            params = list(keys)
            if not params:
                return []
            query += f" WHERE c.key IN ({', '.join('?' * len(params))})"
        query += " ORDER BY c.rowid, r.row_index"
        with self._guard():
            cursor = self._connection.execute(query, params)
            names = [d[0] for d in cursor.description]
            found = [dict(zip(names, values, strict=True)) for values in cursor]
            bad = self._unserved(params if keys is not None else None, found)
        if bad:
            found = [row for row in found if row["cell"] not in bad]
        for row in found:
            row["trained"] = bool(row["trained"])
            for m in METRIC_COLUMNS:
                if row[f"{m}_std"] is None:
                    del row[f"{m}_std"]
        return found

    def configs(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The decoded ``config`` of each stored cell among ``keys`` (``{}`` if unreadable)."""
        wanted, found = list(dict.fromkeys(keys)), {}
        with self._guard():
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                query = f"SELECT key, config FROM cells WHERE key IN ({', '.join('?' * len(part))})"
                found.update({k: json_object(t) for k, t in self._connection.execute(query, part)})
        return found

    def cell(self, key: str) -> dict[str, Any] | None:
        """A stored cell's record (``config`` and ``plugins`` decoded), or None."""
        with self._guard():
            cursor = self._connection.execute(
                "SELECT c.*, b.text AS benchmark_text FROM cells c "
                "JOIN benchmarks b ON b.digest = c.benchmark_digest WHERE c.key = ?",
                (key,),
            )
            values = cursor.fetchone()
            if values is None:
                return None
            record = dict(zip([d[0] for d in cursor.description], values, strict=True))
        record["config"] = json.loads(record["config"])
        record["plugins"] = json.loads(record["plugins"])
        record["trained"] = bool(record["trained"])
        return record

    def scores(self, keys: Iterable[str]) -> dict[str, list[ScoreArray]]:
        """Per-sample scores of the given cells, by cell key (ID set first, then the
        covariate-shifted ID sets of a full-spectrum benchmark, then OOD sets).

        A damaged array (one that fails the cell's checksum, or cannot be decoded) is reported
        on stderr (once) naming its cell, and every array of that cell and detector is left
        out, so no caller computes anything from a partial set.
        """
        found: dict[str, list[ScoreArray]] = {}
        with self._guard():
            conn = self._connection
            for key in dict.fromkeys(keys):
                stored = conn.execute(f"{checksums.ARRAYS_QUERY} ORDER BY rowid", (key,)).fetchall()
                bad = bad_arrays(conn, key, stored, self.damage) if self.checksums else set()
                arrays = []
                for det, ds, is_ood, n, data in stored:
                    if det in bad:
                        continue
                    try:
                        arrays.append(ScoreArray(det, ds, bool(is_ood), decode_scores(data, n)))
                    except (zlib.error, ValueError, TypeError, sqlite3.DatabaseError) as exc:
                        bad.add(det)
                        self.damage.array(conn, key, det, ds, f"{type(exc).__name__}: {exc}")
                found[key] = [a for a in arrays if a.detector not in bad]
        return found

    def damaged(self, keys: Iterable[str]) -> set[tuple[str, str]]:
        """(cell, detector) pairs among ``keys`` whose stored scores are damaged."""
        wanted = set(keys)
        self.scores(wanted)
        return {(cell, det) for cell, det, _ in self.damage.arrays if cell in wanted}

    def _unserved(self, keys: list[str] | None, found: list[dict[str, Any]]) -> set[str]:
        """The cells of rows ``found`` (of ``keys``, or of all) that fail their checksum."""
        if not self.checksums:
            self.damage.unverifiable()
            return set()
        return unserved(self._connection, keys, found, self.damage)

    def check(self) -> Iterator[CellCheck]:
        """Every stored cell verified against its checksum, its score arrays decoded (a store
        damaged as an SQLite file, or one without checksums, is a ``StoreError``)."""
        with self._guard():
            yield from check_store(self._connection, self.path, self.checksums, decode_scores)


def _delete_cell(conn: sqlite3.Connection, key: str) -> None:
    """Remove a cell with its rows and scores (inside the caller's transaction)."""
    for table, column in (("scores", "cell"), ("results", "cell"), ("cells", "key")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,))
