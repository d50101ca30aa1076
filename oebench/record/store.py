"""The results store: finished cells, their result rows and per-sample scores, in SQLite.

One file (``$OEBENCH_STORE``, else ``$XDG_DATA_HOME/oebench/results.sqlite``, else
``~/.local/share/oebench/results.sqlite``) in WAL mode, so concurrent runs can share it. Each
finished cell is written in one transaction with its rows and scores: a run killed at any
moment leaves every cell either complete or absent.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

from oebench.errors import UserError
from oebench.record.schema import EXTRA_CELL_COLUMNS, EXTRA_ROW_COLUMNS

STORE_ENV = "OEBENCH_STORE"
SCHEMA_VERSION = 2
APPLICATION_ID = 0x6F656221  # "oe" + "b!": marks a file as an oebench results store
BUSY_SECONDS = 60.0
METRIC_COLUMNS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_id", "detection_error")
ROW_COLUMNS = (
    "detector",
    "ood_dataset",
    "row_index",
    *METRIC_COLUMNS,
    *(f"{m}_std" for m in METRIC_COLUMNS),
    "id_accuracy",
    "n_id",
    "n_ood",
    *EXTRA_ROW_COLUMNS,
)
CELL_COLUMNS = (
    "key",
    "benchmark",
    "benchmark_path",
    "benchmark_digest",
    "seed",
    "id_dataset",
    "model",
    "training",
    "objective",
    "outlier_source",
    "protocol",
    "cell_index",
    "config",
    "oebench_version",
    "plugins",
    "torch_version",
    "device",
    "train_seconds",
    "score_seconds",
    "trained",
    "created_at",
    *EXTRA_CELL_COLUMNS,
)
SCHEMA = f"""
CREATE TABLE benchmarks (
    digest TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE cells (
    key TEXT PRIMARY KEY,
    benchmark TEXT NOT NULL,
    benchmark_path TEXT NOT NULL,
    benchmark_digest TEXT NOT NULL REFERENCES benchmarks(digest),
    seed INTEGER NOT NULL,
    id_dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    training TEXT NOT NULL,
    objective TEXT NOT NULL,
    outlier_source TEXT NOT NULL,
    protocol TEXT NOT NULL,
    cell_index INTEGER NOT NULL,
    config TEXT NOT NULL,
    oebench_version TEXT NOT NULL,
    plugins TEXT NOT NULL,
    torch_version TEXT NOT NULL,
    device TEXT NOT NULL,
    train_seconds REAL NOT NULL,
    score_seconds REAL NOT NULL,
    trained INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    recall REAL,
    fpr_rule TEXT
);
CREATE INDEX cells_by_benchmark ON cells (benchmark, seed);
CREATE TABLE results (
    cell TEXT NOT NULL REFERENCES cells(key) ON DELETE CASCADE,
    detector TEXT NOT NULL,
    ood_dataset TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    {", ".join(f"{m} REAL" for m in METRIC_COLUMNS)},
    {", ".join(f"{m}_std REAL" for m in METRIC_COLUMNS)},
    id_accuracy REAL,
    n_id INTEGER NOT NULL,
    n_ood INTEGER NOT NULL,
    {", ".join(f"{c} REAL" for c in EXTRA_ROW_COLUMNS)},
    PRIMARY KEY (cell, detector, ood_dataset)
);
CREATE TABLE scores (
    cell TEXT NOT NULL REFERENCES cells(key) ON DELETE CASCADE,
    detector TEXT NOT NULL,
    dataset TEXT NOT NULL,
    is_ood INTEGER NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (cell, detector, is_ood, dataset)
);
"""


class StoreError(UserError):
    """The results store is missing, corrupt, locked or from another schema version."""


class ScoreArray(NamedTuple):
    """Per-sample scores of one detector on one test set of a cell."""

    detector: str
    dataset: str
    is_ood: bool
    scores: np.ndarray


def default_store_path() -> Path:
    """``$OEBENCH_STORE``, else ``results.sqlite`` in the platform's user data folder
    (``~/.local/share/oebench`` on Linux, honouring ``$XDG_DATA_HOME``)."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("oebench", appauthor=False)) / "results.sqlite"


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
        self.path = Path(path).expanduser() if path else default_store_path()
        self._conn: sqlite3.Connection | None = None
        #: (cell, detector, dataset) of score arrays found damaged (reported once each)
        self._damage: set[tuple[str, str, str]] = set()
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
                f"(choose another with --store or ${STORE_ENV})"
            )
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            self._create_schema(conn)
        elif app != APPLICATION_ID:
            raise StoreError(f"{self.path} is an SQLite file but not an oebench results store")
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"results store {self.path} has schema version {version}, newer than this "
                f"oebench reads ({SCHEMA_VERSION}): upgrade oebench or use another --store"
            )
        elif version == 1 and writable:
            self._migrate_from_1(conn)
        elif version < SCHEMA_VERSION:
            raise StoreError(
                f"results store {self.path} has the old schema version {version} (this oebench "
                f"reads {SCHEMA_VERSION}): move it away or use another --store"
            )

    def _migrate_from_1(self, conn: sqlite3.Connection) -> None:
        """Schema 1 -> 2: add the metric-setting, context and calibration columns (NULL for
        cells stored before; their numbers are unchanged)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 1:
                conn.execute("ALTER TABLE cells ADD COLUMN recall REAL")
                conn.execute("ALTER TABLE cells ADD COLUMN fpr_rule TEXT")
                for column in EXTRA_ROW_COLUMNS:
                    conn.execute(f"ALTER TABLE results ADD COLUMN {column} REAL")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # nobody beat us to it
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

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
        conn = self._connection
        with sigint_deferred():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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

        A cell already stored is left alone (returns False) unless ``replace``. Stored cells
        this one supersedes (``stale_cells``: the same cell computed with other code or data)
        are deleted in the same transaction, so no query ever sees both.
        """
        key = record["key"]
        with self._guard(), self._transaction() as conn:
            if conn.execute("SELECT 1 FROM cells WHERE key = ?", (key,)).fetchone():
                if not replace:
                    return False
                _delete_cell(conn, key)
            for stale in _stale_cells(conn, _json_object(record["config"]), key):
                _delete_cell(conn, stale)
            conn.execute(
                "INSERT OR IGNORE INTO benchmarks (digest, name, text) VALUES (?, ?, ?)",
                (record["benchmark_digest"], record["benchmark"], record["benchmark_text"]),
            )
            conn.execute(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(CELL_COLUMNS))})",
                [record.get(c) if c in EXTRA_CELL_COLUMNS else record[c] for c in CELL_COLUMNS],
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
        return True

    # -- reading -----------------------------------------------------------------------------
    def stale_cells(self, config: dict[str, Any]) -> dict[str, list[str]]:
        """Stored cells that a cell with ``config`` would supersede, oldest first: the same
        benchmark, seed, ID dataset, model, training and settings, computed with other code or
        data; key -> what changed (``["detector 'energy' code", ...]``)."""
        with self._guard():
            return _stale_cells(self._connection, config)

    def has(self, key: str) -> bool:
        with self._guard():
            query = "SELECT 1 FROM cells WHERE key = ?"
            return self._connection.execute(query, (key,)).fetchone() is not None

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
        for row in found:
            row["trained"] = bool(row["trained"])
            for m in METRIC_COLUMNS:
                if row[f"{m}_std"] is None:
                    del row[f"{m}_std"]
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
        """Per-sample scores of the given cells, by cell key (ID set first, then OOD sets).

        A damaged array is reported on stderr (once) naming its cell, and every array of that
        cell and detector is left out, so no caller computes anything from a partial set.
        """
        found: dict[str, list[ScoreArray]] = {}
        with self._guard():
            for key in dict.fromkeys(keys):
                cursor = self._connection.execute(
                    "SELECT detector, dataset, is_ood, n, data FROM scores WHERE cell = ? "
                    "ORDER BY rowid",
                    (key,),
                )
                arrays, bad = [], set()
                for det, ds, is_ood, n, data in cursor:
                    try:
                        arrays.append(ScoreArray(det, ds, bool(is_ood), decode_scores(data, n)))
                    except (zlib.error, ValueError, sqlite3.DatabaseError) as exc:
                        bad.add(det)
                        self._report_damage(key, det, ds, exc)
                found[key] = [a for a in arrays if a.detector not in bad]
        return found

    def damaged(self, keys: Iterable[str]) -> set[tuple[str, str]]:
        """(cell, detector) pairs among ``keys`` whose stored scores cannot be decoded."""
        wanted = set(keys)
        self.scores(wanted)
        return {(cell, det) for cell, det, _ in self._damage if cell in wanted}

    def _report_damage(self, key: str, detector: str, dataset: str, exc: Exception) -> None:
        if (key, detector, dataset) in self._damage:
            return
        self._damage.add((key, detector, dataset))
        record = self.cell(key) or {}
        where = " / ".join(
            str(record.get(c, "?")) for c in ("benchmark", "id_dataset", "model", "training")
        )
        print(
            f"oebench: warning: the stored scores of detector {detector!r} on {dataset!r} in "
            f"cell {key} ({where} / seed {record.get('seed', '?')}) are damaged "
            f"({type(exc).__name__}: {exc}); that detector's scores of the cell are left out "
            "(`oebench run --rerun` recomputes them)",
            file=sys.stderr,
        )


def _delete_cell(conn: sqlite3.Connection, key: str) -> None:
    """Remove a cell with its rows and scores (inside the caller's transaction)."""
    for table, column in (("scores", "cell"), ("results", "cell"), ("cells", "key")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,))


def _stale_cells(
    conn: sqlite3.Connection, config: dict[str, Any], key: str = ""
) -> dict[str, list[str]]:
    """``ResultStore.stale_cells`` on a connection (``key``: the new cell's own, skipped)."""
    from oebench.keys.fingerprints import cell_identity, describe_changes

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
        old = _json_object(text)
        if old and cell_identity(old) == identity:
            found[old_key] = describe_changes(old, config)
    return found


def _json_object(text: Any) -> dict[str, Any]:
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

    def __init__(self, store: ResultStore, on_change: str = "recompute"):
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


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise it; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's handler raises KeyboardInterrupt
            else:
                raise KeyboardInterrupt


def cell_record(bench: Any, task: Any, result: Any) -> dict[str, Any]:
    """What the store keeps about a finished cell: configuration, and the provenance its
    worker sent back with the result (versions, device, host, timings)."""
    first = result.rows[0]
    prov = result.provenance
    source = Path(bench.source) if bench.source else None
    path = str(source.resolve()) if source is not None and source.exists() else bench.source
    worker = {k: prov[k] for k in ("host", "pid", "wall_seconds", "executor") if k in prov}
    return {
        "key": task.key,
        "benchmark": bench.name,
        "benchmark_path": path,
        "benchmark_digest": bench.digest,
        "benchmark_text": bench.text,
        "seed": task.seed,
        "id_dataset": first["id_dataset"],
        "model": first["model"],
        "training": first["training"],
        "objective": first["objective"],
        "outlier_source": first["outlier_source"],
        "protocol": first["protocol"],
        "cell_index": task.index,
        "config": json.dumps(task.config | {"worker": worker}, sort_keys=True, default=str),
        "oebench_version": prov["oebench_version"],
        "plugins": json.dumps(prov["plugins"], sort_keys=True),
        "torch_version": prov["torch_version"],
        "device": prov["device"],
        "train_seconds": first["train_seconds"],
        "score_seconds": first["score_seconds"],
        "trained": int(bool(first["trained"])),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "recall": first.get("recall"),
        "fpr_rule": first.get("fpr_rule"),
    }
