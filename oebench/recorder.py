"""Connects a run to the results store: skips stored cells, records finished ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oebench.runner import Cell, Runner
from oebench.store import ResultStore, ScoreArray, cell_record, sigint_deferred


class Recorder:
    """Skip cells already in ``store`` (unless ``rerun``); store each finished cell at once.

    Install with ``runner.run(skip=rec.skip, on_cell=rec.record)`` after ``rec.attach(runner)``.
    """

    def __init__(
        self,
        store: ResultStore,
        rerun: bool = False,
        scores_dir: str | Path | None = None,
    ):
        self.store = store
        self.rerun = rerun
        self.scores_dir = scores_dir
        self.runner: Runner | None = None
        self.new = self.reused = 0
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._pending: dict[str, list[ScoreArray]] = {}

    def attach(self, runner: Runner) -> None:
        """Collect ``runner``'s per-sample scores."""
        self.runner = runner
        runner.score_sink = self._collect

    def _collect(self, cell: Cell, detector: str, dataset: str, scores: np.ndarray) -> None:
        is_ood = dataset != "id"
        name = dataset if is_ood else cell.id_ref.key
        self._pending.setdefault(cell.key, []).append(ScoreArray(detector, name, is_ood, scores))

    def skip(self, cell: Cell) -> bool:
        """True (and its stored rows kept for the run's table) when the cell is stored."""
        if self.rerun or not self.store.has(cell.key):
            return False
        rows = self.store.rows([cell.key])
        self._rows[cell.key] = rows
        self.reused += 1
        if self.scores_dir is not None:
            self._export(rows[0], self.store.scores([cell.key])[cell.key])
        return True

    def record(self, cell: Cell, rows: list[dict[str, Any]]) -> None:
        """Store a finished cell (rows + scores, one transaction) and export its scores."""
        assert self.runner is not None, "call attach(runner) first"
        arrays = self._pending.pop(cell.key, [])
        with sigint_deferred():  # Ctrl-C lands after the commit and the count, not between
            self.store.save_cell(cell_record(self.runner, cell, rows), rows, arrays, self.rerun)
            self._rows[cell.key] = rows
            self.new += 1
        if self.scores_dir is not None:
            self._export(rows[0], arrays)

    def _export(self, row: dict[str, Any], arrays: list[ScoreArray]) -> None:
        from oebench.scores import write_scores

        assert self.scores_dir is not None
        write_scores(self.scores_dir, row, arrays)

    def rows(self) -> list[dict[str, Any]]:
        """This run's rows so far: stored cells' and new cells', in the order they came."""
        return [row for rows in self._rows.values() for row in rows]
