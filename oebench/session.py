"""One run of a benchmark with a results store: what ``oebench run`` and ``oebench.run`` do.

Cells already in the store are served from it, new ones are stored as they finish, and a
Ctrl-C stops the run with every finished cell kept. ``run_session`` leaves the printing to
its caller (the CLI); ``run`` is the Python API's ``oebench.run``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oebench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from oebench.bench.matrix import Benchmark
    from oebench.bench.overrides import Overrides
    from oebench.core.progress import Progress
    from oebench.execute.executors import ExecutorSettings


@dataclass(frozen=True)
class Session:
    """What one run did."""

    #: result rows of every cell done (served from the store or new), in plan order
    rows: list[dict[str, Any]]
    #: the keys of the benchmark's cells, in plan order
    keys: list[str]
    #: one message per detector that raised (its rows are missing)
    failures: list[str]
    #: one message per cell that produced no result (not stored)
    failed_cells: list[str]
    #: cells served from the store, and cells computed (and stored) by this run
    reused: int
    new: int
    #: whether a Ctrl-C stopped the run
    interrupted: bool
    store: Path
    #: how many of ``keys`` the store holds, committed
    kept: int


def run(
    benchmark: str | os.PathLike[str] | Benchmark,
    *,
    device: str = "auto",
    store: str | Path | None = None,
    rerun: bool = False,
    use_cache: bool = True,
    cache_root: str | Path | None = None,
    executor: str | ExecutorSettings | None = None,
    progress: Progress | None = None,
    overrides: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run ``benchmark`` (a registered name, a TOML path or a Benchmark) as ``oebench run``
    does; returns the rows ``oebench run --csv`` writes (group means included).
    ``overrides``: values to change, as ``oebench run --set KEY=VALUE`` changes them
    (``{"training.epochs": 1, "ood_datasets.gaussian.n": 1000}``).

    Cells in ``store`` (default: ``$OEBENCH_STORE``, else the user data folder) are served
    from it unless ``rerun``; new cells are stored as they finish. ``executor``: "local",
    "dask", "ray" or ExecutorSettings (default: the benchmark file's, else "local").
    Messages of failed detectors and cells are in ``df.attrs["failures"]``. A Ctrl-C raises
    KeyboardInterrupt once the finished cells are stored.
    """
    from oebench.bench.overrides import Overrides
    from oebench.execute.executors import ExecutorSettings

    named = os.fspath(benchmark) if isinstance(benchmark, (str, os.PathLike)) else benchmark
    changes = Overrides(settings=tuple((overrides or {}).items()))
    if isinstance(executor, ExecutorSettings):
        bench, _ = prepare(named, changes)
    else:
        bench, executor = prepare(named, changes, executor=executor)
    done = run_session(
        bench,
        device=device,
        store=store,
        rerun=rerun,
        use_cache=use_cache,
        cache_root=cache_root,
        executor=executor,
        progress=progress,
    )
    if done.interrupted:
        raise KeyboardInterrupt(
            f"{done.kept} of {len(done.keys)} cells are kept in the results store {done.store}"
        )
    from oebench.report.groups import results_table

    df = results_table(bench, done.rows)
    df.attrs["failures"] = done.failures + done.failed_cells
    return df


def run_session(
    bench: Benchmark,
    *,
    device: str = "auto",
    store: str | Path | None = None,
    rerun: bool = False,
    scores_dir: str | Path | None = None,
    on_change: str = "recompute",
    use_cache: bool = True,
    cache_root: str | Path | None = None,
    executor: ExecutorSettings | None = None,
    progress: Progress | None = None,
) -> Session:
    """Run ``bench`` on ``executor``, skipping cells in ``store`` (unless ``rerun``) and storing
    new ones as they finish; a Ctrl-C while cells run is caught (cluster work is cancelled).

    ``progress`` gets the bars and log lines, including one line per code or data change
    that made stored cells stale (``on_change``: recompute them, or "warn" and serve them).
    """
    from oebench.execute.drive import drive
    from oebench.execute.executors import ExecutorSettings, make_executor
    from oebench.execute.runner import Runner
    from oebench.record.recorder import Recorder
    from oebench.record.store import ResultStore

    check_places(device)  # before any work: a mistake here is one line, not a late failure
    from oebench.core.platforms import prepare_process

    prepare_process((t.name, t.params) for t in bench.trainings)  # before torch: kernel pins
    root = Path(cache_root) if cache_root is not None else None
    executor = executor or ExecutorSettings()
    runner = Runner(bench, device=device, progress=progress, use_cache=use_cache, cache_root=root,
                    shards=executor.shards, memory_limit=executor.memory_limit)  # fmt: skip
    runner.runs_here = executor.address is None  # a cluster started here, or no cluster
    run_on = make_executor(executor)
    with ResultStore(store) as results:
        recorder = Recorder(results, bench, rerun, scores_dir, on_change)
        interrupted = False
        try:
            say = functools.partial(_log_changes, recorder, runner.progress.log)
            order = drive(runner, run_on, recorder.skip, recorder.record, say)
        except KeyboardInterrupt:
            interrupted = True
            order = [cell.key for cell in runner.cells()]
        rows = recorder.rows(order)
        return Session(
            rows=rows,
            keys=order,
            failures=list(runner.failures),
            failed_cells=list(runner.failed_cells),
            reused=recorder.reused,
            new=recorder.new,
            interrupted=interrupted,
            store=results.path,
            kept=results.count(order),
        )


def _log_changes(recorder: Any, log: Callable[[str], None]) -> None:
    """One line per code or data change that made stored cells stale (before any work)."""
    warn = recorder.changes.on_change == "warn"
    for line in recorder.changes.lines():
        log(f"{'Warning' if warn else 'Note'}: {line}")


def kept_cells(bench: Benchmark | None, store: str | Path | None) -> tuple[int, int | None]:
    """How many of ``bench``'s cells ``store`` holds, and how many it has (None when it cannot
    be planned); safe to call after a Ctrl-C cut a run short anywhere."""
    from oebench.core import settings
    from oebench.record.store import ResultStore

    keys: list[str] | None = None
    kept = 0
    # an import that Ctrl-C cut short leaves its extension modules half set up: importing it
    # again (planning the cells imports torch) can crash the process instead of exiting
    cut_short = any(m.split(".")[0] not in sys.modules for m in list(sys.modules) if "." in m)
    try:
        if bench is not None and not cut_short:
            from oebench.execute.runner import Runner

            keys = [cell.key for cell in Runner(bench).cells()]
        with ResultStore(store or settings.store_path(), create=False) as results:
            kept = results.count(keys) if keys is not None else 0
    except Exception:  # no store yet, a benchmark that cannot be planned, or an import (of
        pass  # torch, say) that Ctrl-C cut short: the counts are unknown then
    return kept, len(keys) if keys is not None else None


def prepare(
    benchmark: str | Benchmark,
    overrides: Overrides | None = None,
    executor: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    shards: int | None = None,
) -> tuple[Benchmark, ExecutorSettings]:
    """The benchmark to run (a name, a path or a value, with ``overrides``) and where."""
    from oebench.bench.matrix import Benchmark
    from oebench.bench.overrides import overridden
    from oebench.bench.parse import load_benchmark

    bench = benchmark if isinstance(benchmark, Benchmark) else load_benchmark(str(benchmark))
    bench = overridden(bench, overrides) if overrides is not None else bench
    check_data_root()
    return bench, executor_settings(bench, executor, workers, address, shards)


def check_data_root(root: Path | None = None, what: str = "the data root") -> None:
    """The data root (``--data-root``, ``$OEBENCH_DATA_ROOT``) must be a folder, or not exist
    yet below a folder: a file (``/dev/null``) is a UserError."""
    from oebench.core import settings

    root = root if root is not None else settings.data_root()
    for path in (root, *root.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                inside = "" if path == root else f" ({path} is not a folder)"
                raise UserError(
                    f"{what} {root} must be a folder{inside}; give a folder of dataset files, "
                    "or one that does not exist yet"
                )
            return


def check_places(device: str) -> None:
    """Where a run reads and computes: the data root, and the device (``--device cuda``
    without a GPU fails here, before any data is read)."""
    check_data_root()
    if device not in ("auto", "cpu"):
        from oebench.execute.context import resolve_device

        resolve_device(device)


def executor_settings(
    bench: Benchmark,
    name: str | None,
    workers: int | None,
    address: str | None,
    shards: int | None = None,
) -> ExecutorSettings:
    """Command-line (or environment) settings over the benchmark file's ``executor``."""
    from oebench.execute.executors import ExecutorSettings

    own = dict(getattr(bench, "executor", None) or {})
    name = name or own.get("name", "local")
    if name == "local" and address:
        raise UserError("--address needs --executor dask or ray")
    return ExecutorSettings(
        name=name,
        workers=workers or own.get("workers"),
        address=address or own.get("address"),
        gpus_per_task=float(own.get("gpus_per_task", 0.0)),
        shards=int(shards or own.get("shards", 1)),
    )


def plan_rows(
    bench: Benchmark,
    store: str | Path | None,
    device: str = "auto",
    shards: int = 1,
    use_cache: bool = True,
) -> list[dict]:
    """The tasks ``oebench run`` would run, in order, before any work: per task its kind,
    label, the tasks it waits for, whether its cell is stored already, and the estimated
    peak memory of its training step and of its scoring, and the bytes of outputs it keeps
    on disk (``oebench.execute.memory``; None for an ensemble)."""
    from oebench.core import settings
    from oebench.execute.memory import scoring_peaks, task_seconds, training_peaks
    from oebench.execute.runner import Runner
    from oebench.record.store import ResultStore

    runner = Runner(bench, device=device, shards=shards, use_cache=use_cache)
    runner.prepare()
    plan = runner.plan()
    labels = {t.key: t.label for t in plan.tasks}
    trained = list({t.cell_key: t.cell for t in plan.tasks
                    if t.cell is not None and t.kind != "ensemble"}.values())  # fmt: skip
    peaks = training_peaks(runner.sources, trained)
    batch = runner.context.eval_batch()
    scoring = scoring_peaks(runner.sources, bench, trained, batch, use_cache, runner.device)
    apart = {t.cell_key for t in plan.tasks if t.kind == "train"}
    stored: set[str] = set()
    path = Path(store or settings.store_path())
    if path.exists():  # no store yet: nothing is stored
        with ResultStore(path, create=False) as results:
            stored = {t.key for t in plan.tasks if t.is_cell and results.has(t.key)}
    rows = []
    for task in plan.tasks:
        cell = task.cell
        own = cell is not None and task.kind != "ensemble"
        peak = peaks.get(cell.key) if own and task.kind != "forward" else None
        score = scoring.get(cell.key) if own and task.kind != "train" else None
        rows.append({
            "kind": task.kind, "label": task.label, "after": [labels[a] for a in task.after],
            "stored": task.key in stored, "epochs": cell.training.params.get("epochs")
            if own and task.kind != "forward" else None, "peak_bytes": peak,
            "scoring_bytes": None if score is None
            else score.batch if task.kind == "forward" else score.total,
            "disk_bytes": score.on_disk if score is not None and task.kind != "forward" else None,
            "seconds": task_seconds(task, scoring.get(cell.key), task.cell_key in apart)
            if own and task.key not in stored else None,
        })  # fmt: skip
    return rows
