"""The benchmark as a graph of tasks: one per cell of the matrix, each a small picklable value
that carries its keyed cell and the keys of the tasks whose checkpoints it starts from (an OE
fine-tune needs its baseline's weights), so that any executor can run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oebench.bench.matrix import Benchmark, Cell


@dataclass(frozen=True)
class Task:
    """One cell (seed x ID dataset x model x training): train or load, forward, score."""

    key: str
    seed: int
    id_index: int
    model_index: int
    training: str
    #: position in the matrix for one seed, for ordering rows
    index: int
    #: ``mnist-5k / small-cnn / oe / seed 0``
    label: str
    #: keys of the tasks whose trained weights this one starts from
    after: tuple[str, ...] = ()
    #: the cell, configured and keyed when the plan was made
    cell: Cell | None = field(default=None, compare=False)
    #: ``cell``: train or load, forward, score, record; ``train``: only the checkpoint that
    #: other cells start from (so they need not wait for this cell's scoring); ``ensemble``:
    #: a cell that combines the models of its members (``after``: their cells); ``forward``:
    #: one shard of the cell's forward passes (``shard``), cached for the cell to join
    kind: str = "cell"
    #: the cell key (for a ``train`` task, ``key`` is ``<cell key>/train``)
    cell_key: str = ""
    #: ``(i, n)``: the forward passes split into ``n`` shards by rows (``n = 1``: unsplit);
    #: a ``forward`` task computes shard ``i``, its cell joins all ``n``
    shard: tuple[int, int] = (0, 1)

    @property
    def config(self) -> dict[str, Any]:
        """The configuration the cell key hashes (stored with its results)."""
        return self.cell.config if self.cell is not None else {}

    @property
    def is_cell(self) -> bool:
        """A task whose result is a cell of rows (not only a checkpoint)."""
        return self.kind in ("cell", "ensemble")

    @property
    def priority(self) -> int:
        """Run trainings others wait for first, then cells that waited, then the rest."""
        if self.kind in ("train", "forward"):
            return 2
        return 1 if self.after and self.after != (f"{self.key}/train",) else 0  # it trains


@dataclass
class TaskResult:
    """What one task sends back to the driver: rows, score arrays, messages and provenance."""

    key: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: ``(detector, dataset, scores)``; dataset is ``"id"`` for the ID test set
    scores: list[tuple[str, str, Any]] = field(default_factory=list)
    #: one message per detector that raised (its rows are missing)
    failures: list[str] = field(default_factory=list)
    #: why the cell produced no rows ("" when it did)
    failed: str = ""
    #: lines the worker logged (warnings), shown by the driver
    logs: list[str] = field(default_factory=list)
    #: device, versions, host, process and wall time of the work
    provenance: dict[str, Any] = field(default_factory=dict)
    #: a user error (bad setting or data) that stops the whole run
    error: str = ""


@dataclass
class Plan:
    """The tasks of a benchmark, in an order where every task comes after those it needs."""

    tasks: list[Task]

    def __len__(self) -> int:
        return len(self.tasks)

    def keys(self) -> list[str]:
        """The cells' keys in run order (the order of rows in reports)."""
        return [t.key for t in self.tasks if t.is_cell]

    def cells(self) -> int:
        return sum(t.is_cell for t in self.tasks)


def make_plan(bench: Benchmark, cells: list[Cell], shards: int = 1) -> Plan:
    """The keyed ``cells`` of ``bench`` as tasks. A training ``from`` another waits for a
    ``train`` task that makes the checkpoint it starts from, not for that cell's forward
    passes and scores. ``shards > 1``: each cell's model is made by a ``train`` task and its
    forward passes split into that many ``forward`` tasks (rows), which the cell joins."""
    by_identity = {
        (c.seed, c.id_ref.key, c.model_ref.key, c.training.name): c for c in cells if not c.members
    }
    parents = {}
    for cell in cells:
        identity = (cell.seed, cell.id_ref.key, cell.model_ref.key, cell.training.init)
        if identity in by_identity:
            parents[cell.key] = by_identity[identity]
    needed = {p.key for p in parents.values()}
    tasks: list[Task] = []
    for cell in cells:
        common = {
            "seed": cell.seed,
            "id_index": bench.id_datasets.index(cell.id_ref),
            "model_index": bench.models.index(cell.model_ref),
            "training": cell.training.name,
            "index": cell.index,
            "label": cell.label,
            "cell": cell,
            "cell_key": cell.key,
        }
        if cell.members:  # an ensemble: after its member cells (their outputs are cached)
            tasks.append(Task(key=cell.key, kind="ensemble", after=cell.members, **common))
            continue
        parent = parents.get(cell.key)
        after = (f"{parent.key}/train",) if parent is not None else ()
        if cell.key in needed or shards > 1:
            tasks.append(Task(key=f"{cell.key}/train", kind="train", after=after, **common))
            after = (f"{cell.key}/train",)
        if shards > 1:
            parts = [
                Task(key=f"{cell.key}/forward-{i + 1}of{shards}", kind="forward", after=after,
                     shard=(i, shards), **common | {"label": f"{cell.label} / forward {i + 1} "
                                                             f"of {shards}"})
                for i in range(shards)
            ]  # fmt: skip
            tasks += parts
            after = tuple(t.key for t in parts)
        tasks.append(Task(key=cell.key, after=after, shard=(0, shards), **common))
    return Plan(_dependencies_first(tasks))


def _dependencies_first(tasks: list[Task]) -> list[Task]:
    """Run order, moving a task after the tasks it needs (stable otherwise)."""
    done: set[str] = set()
    ordered: list[Task] = []
    pending = list(tasks)
    while pending:
        ready = next((t for t in pending if all(d in done for d in t.after)), pending[0])
        ordered.append(ready)  # (pending[0]: a cycle, which a benchmark file cannot express)
        done.add(ready.key)
        pending.remove(ready)
    return ordered
