"""Records a run: skips stored cells, stores finished ones. The only writer of the results
store during a run; it runs in the driver, whatever executor ran the cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oebench.bench.plan import Task, TaskResult
from oebench.core.signals import sigint_deferred
from oebench.record.cells import cell_record
from oebench.record.changes import ChangeCheck
from oebench.record.store import ResultStore, ScoreArray


class Recorder:
    """Skip cells already in ``store`` (unless ``rerun``); store each finished cell at once.

    A stored cell whose code or data changed since is computed again (``on_change=
    "recompute"``; the new cell supersedes it in the store) or served as it is (``"warn"``);
    ``changes.lines()`` names what changed.
    """

    def __init__(
        self,
        store: ResultStore,
        bench: Any,
        rerun: bool = False,
        scores_dir: str | Path | None = None,
        on_change: str = "recompute",
    ):
        self.store = store
        self.bench = bench
        self.rerun = rerun
        self.scores_dir = scores_dir
        self.changes = ChangeCheck(store, on_change)
        self.new = self.reused = 0
        self._rows: dict[str, list[dict[str, Any]]] = {}

    def skip(self, task: Task) -> bool:
        """True (and its stored rows kept for the run's table) when the cell is stored."""
        if self.rerun:
            return False
        key = task.key if self.store.has(task.key) else self.changes.served_instead(task.config)
        if key is None:
            return False
        rows = self.store.rows([key])
        if not rows:  # it failed its checksum since (reported): computed again
            return False
        self._rows[task.key] = rows
        self.reused += 1
        if self.scores_dir is not None:
            self._export(rows[0], self.store.scores([key])[key])
        return True

    def record(self, task: Task, result: TaskResult) -> None:
        """Store a finished cell (rows + scores, one transaction) and export its scores."""
        if not result.rows:
            return
        first = result.rows[0]
        shifted = {r.key for r in self.bench.csid_datasets}  # ID too: not OOD
        arrays = [
            ScoreArray(det, first["id_dataset"] if ds == "id" else ds, ds not in {"id", *shifted},
                       values)
            for det, ds, values in result.scores
        ]  # fmt: skip
        with sigint_deferred():  # Ctrl-C lands after the commit and the count, not between
            record = cell_record(self.bench, task, result)
            self.store.save_cell(record, result.rows, arrays, self.rerun)
            self._rows[task.key] = result.rows
            self.new += 1
        if self.scores_dir is not None:
            self._export(first, arrays)

    def _export(self, row: dict[str, Any], arrays: list[ScoreArray]) -> None:
        from oebench.record.scores import write_scores

        assert self.scores_dir is not None
        write_scores(self.scores_dir, row, arrays)

    def rows(self, order: list[str] | None = None) -> list[dict[str, Any]]:
        """This run's rows so far (stored and new cells), in plan order when ``order`` is given."""
        keys = [k for k in order if k in self._rows] if order else list(self._rows)
        return [row for key in keys for row in self._rows[key]]
