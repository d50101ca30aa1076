"""``--executor local --workers N``: N cells at once on this machine's one device, each task
in one of N spawned worker processes (own random generators, own CUDA context and allocator).

Before any work the memory the N cells need is estimated (``oebench.execute.memory``) and an
N that cannot fit is one line. On CUDA each process may use 1/N of the device's memory
(``torch.cuda.set_per_process_memory_fraction``); on the CPU each gets 1/N of the cores.
A task runs as on a cluster's worker (``oebench.execute.executors.run_job``): results, keys
and the shared cache are the same, so the CSV is byte-identical to ``--workers 1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from oebench.bench.plan import Task, TaskResult
from oebench.errors import UserError
from oebench.execute.drive import Executor, LocalExecutor, Worker


def _start_process(workers: int, device: str, trainings: list[tuple[str, dict]]) -> None:
    """A worker process's set-up: its share of the cores and of the device, before torch."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops us
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = threads
    from oebench.core.platforms import prepare_process

    prepare_process(trainings)
    import torch

    torch.set_num_threads(int(threads))
    if device.startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(1 / workers, torch.device(device))


class SharedDeviceExecutor(LocalExecutor):
    """Tasks on ``workers`` local processes sharing one device (``workers`` 1: in-process)."""

    def __init__(self, workers: int, memory_limit: int | None = None):
        self.workers = workers
        self.memory_limit = memory_limit
        if workers > 1:  # the driver says the workers' log lines, as for a cluster's
            self.name = "local-processes"

    def running(self, tasks: list[Task], done: set[str]) -> list[Task]:
        if self.workers == 1:
            return super().running(tasks, done)
        return Executor.running(self, tasks, done)[: self.workers]

    def run(self, worker: Worker, tasks: list[Task]) -> Iterator[TaskResult]:
        if not tasks:
            return
        at_once = min(self.workers, len(tasks))
        self.check_memory(worker, tasks, at_once)
        if at_once == 1:
            self.name = "local"  # in this process: its log lines are said as they happen
            yield from super().run(worker, tasks)
            return
        yield from self._pooled(worker, tasks, at_once)

    def check_memory(self, worker: Worker, tasks: list[Task], at_once: int) -> None:
        worker.check_memory(tasks, at_once, self.memory_limit)  # type: ignore[attr-defined]

    def _pooled(self, worker: Worker, tasks: list[Task], at_once: int) -> Iterator[TaskResult]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from oebench.execute.executors import _by_priority, _job, _tagged, run_job

        device = str(worker.device)  # type: ignore[attr-defined]
        trainings = [(t.name, t.params) for t in worker.bench.trainings]
        pool = ProcessPoolExecutor(
            at_once, multiprocessing.get_context("spawn"), _start_process,
            (at_once, device, trainings),
        )  # fmt: skip
        waiting, running, done = _by_priority(tasks), {}, set()
        planned = {t.key for t in tasks}  # what a task waits for outside them is done already
        try:
            while waiting or running:
                ready = [t for t in waiting if all(a in done or a not in planned for a in t.after)]
                for task in ready[: at_once - len(running)]:  # highest priority first
                    waiting.remove(task)
                    running[pool.submit(run_job, _job(worker, task))] = task
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = running.pop(future)
                    done.add(task.key)
                    yield _tagged(_result(future), self.name)
        except BaseException:  # Ctrl-C, a failed task or a lost worker: stop every process
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _result(future: Any) -> TaskResult:
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise UserError(
            f"a worker process died ({exc}); the cells finished so far are stored"
        ) from None
