"""The distributed executors: a plan's tasks on a Dask cluster (``dask``) or a Ray cluster
(``ray``); the in-process one (``local``) and the driver loop are in ``oebench.execute.drive``.
Each yields TaskResults as tasks finish; the driver records them.

A worker rebuilds the runner from the (pickled) benchmark once per process, rebuilds each
cell from its task and checks that it computes the same cell key as the driver, so a worker
with other code or data refuses to run rather than storing numbers under the wrong key.
Workers share the on-disk cache; a file lock per checkpoint makes one of them train it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oebench.bench.plan import Task, TaskResult
from oebench.errors import UserError
from oebench.execute.drive import Executor, LocalExecutor, Worker

EXECUTORS = ("local", "dask", "ray")
#: retries of a task whose worker died (a killed or pre-empted process)
RETRIES = 3


@dataclass(frozen=True)
class ExecutorSettings:
    """Which executor, how many local workers, and the address of an existing cluster."""

    name: str = "local"
    workers: int | None = None
    address: str | None = None
    #: GPUs each task reserves on Ray (one GPU per training task on a GPU cluster)
    gpus_per_task: float = 0.0
    #: bytes the local executor's ``workers`` may use together (None: what is free now)
    memory_limit: int | None = None
    #: each cell's forward passes split by rows into this many tasks (``forward``), which
    #: the executor spreads over its workers like any other; the numbers are the same
    shards: int = 1


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for one task: small and picklable."""

    bench: Any
    task: Task
    device: str
    use_cache: bool
    cache_root: str | None
    #: the driver's paths and switches (``--data-root``, ``--download``, ...), by name
    settings: tuple[tuple[str, str], ...] = ()


def run_job(job: Job, *after: Any) -> TaskResult:
    """Run one task in a worker process (``after``: results of the tasks it waits for)."""
    from oebench.core.settings import override

    try:
        with override(**dict(job.settings)):
            return _worker_runner(job).execute_task(job.task)
    except UserError as exc:
        return TaskResult(job.task.key, error=str(exc))
    except Exception as exc:  # oebench's own bug on the worker: say where, stop the run
        from oebench.core.failures import describe_exception

        return TaskResult(job.task.key, error=f"worker failed on {job.task.label}: "
                          f"{describe_exception(exc, where=True)}")  # fmt: skip


_RUNNERS: dict[tuple, Any] = {}


def _worker_runner(job: Job) -> Any:
    """One runner per benchmark and settings in a worker, so its data stay loaded."""
    import hashlib
    import pickle

    from oebench.execute.runner import Runner

    bench = hashlib.sha256(pickle.dumps(job.bench)).hexdigest()  # the value, overrides included
    key = (bench, job.device, job.use_cache, job.cache_root)
    if key not in _RUNNERS:
        _RUNNERS.clear()
        root = Path(job.cache_root) if job.cache_root else None
        _RUNNERS[key] = Runner(job.bench, job.device, use_cache=job.use_cache, cache_root=root)
    return _RUNNERS[key]


class DaskExecutor(Executor):
    """Tasks on Dask distributed: a LocalCluster of ``workers`` processes, or ``address``."""

    name = "dask"

    def __init__(self, settings: ExecutorSettings):
        self.settings = settings

    def run(self, worker: Worker, tasks: list[Task]) -> Iterator[TaskResult]:
        dask, distributed = _require("dask", "distributed")
        config = {"distributed.scheduler.allowed-failures": RETRIES}
        with dask.config.set(config), self._client(dask, distributed) as client:
            futures: dict[str, Any] = {}
            for task in _by_priority(tasks):
                after = [futures[k] for k in task.after if k in futures]
                futures[task.key] = client.submit(
                    run_job, _job(worker, task), *after, key=f"oebench-{task.key}",
                    priority=task.priority, pure=False,
                )  # fmt: skip
            try:
                for future in distributed.as_completed(list(futures.values()), loop=client.loop):
                    yield _tagged(_result(future.result), self.name)
            except BaseException:  # Ctrl-C or an error: nothing keeps running on the cluster
                client.cancel(list(futures.values()), force=True)
                raise

    def _client(self, dask: Any, distributed: Any) -> Any:
        """A client of the cluster at ``address``, else of a new local cluster."""
        if self.settings.address:
            try:
                return distributed.Client(self.settings.address, set_as_default=False, timeout=30)
            except (OSError, TimeoutError) as exc:
                raise UserError(
                    f"cannot reach the Dask scheduler at {self.settings.address}: {exc}"
                ) from None
        workers = self.settings.workers or os.cpu_count() or 1
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        # Dask's default pre-spawn environment sets MALLOC_TRIM_THRESHOLD_, which makes torch
        # runs ~1.9x slower here; keep only the thread limits (one share of the cores each).
        limits = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        environ = dict.fromkeys(limits, threads)
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=50,  # logging.CRITICAL: no heartbeat tracebacks when Ctrl-C closes it
        )
        return _ClusterClient(distributed.Client(cluster, set_as_default=False), cluster)


class _ClusterClient:
    """A client that also closes the local cluster it was made for."""

    def __init__(self, client: Any, cluster: Any):
        self.client, self.cluster = client, cluster

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        self.cluster.close()


class RayExecutor(Executor):
    """Tasks on Ray: a local instance with ``workers`` CPUs, or the cluster at ``address``."""

    name = "ray"

    def __init__(self, settings: ExecutorSettings):
        self.settings = settings

    def run(self, worker: Worker, tasks: list[Task]) -> Iterator[TaskResult]:
        (ray,) = _require("ray")
        started = not ray.is_initialized()
        if started:
            self._init(ray)
        try:
            remote = ray.remote(
                num_cpus=1, num_gpus=self.settings.gpus_per_task, max_retries=RETRIES
            )(run_job)
            refs: dict[str, Any] = {}
            for task in _by_priority(tasks):
                after = [refs[k] for k in task.after if k in refs]
                refs[task.key] = remote.remote(_job(worker, task), *after)
            pending = list(refs.values())
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    yield _tagged(_result(ray.get, done[0]), self.name)
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()

    def _init(self, ray: Any) -> None:
        import logging

        logging.getLogger("ray").setLevel(logging.ERROR)  # Ray's start-up notices, not ours
        if self.settings.address:
            ray.init(address=self.settings.address, log_to_driver=False)
            return
        workers = self.settings.workers or os.cpu_count() or 1
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": threads}},
        )


def make_executor(settings: ExecutorSettings) -> Executor:
    """The executor ``settings.name`` names; a cluster address that does not answer is a
    UserError now, before any work (not after the client's 30 s timeout)."""
    if settings.name == "local" and (settings.workers or settings.memory_limit):
        from oebench.execute.shared_device import SharedDeviceExecutor

        return SharedDeviceExecutor(settings.workers or 1, settings.memory_limit)
    if settings.name == "local":
        return LocalExecutor()
    if settings.name in ("dask", "ray") and settings.address:
        check_address(settings.name, settings.address)
    if settings.name == "dask":
        return DaskExecutor(settings)
    if settings.name == "ray":
        return RayExecutor(settings)
    raise UserError(f"unknown executor {settings.name!r}; choose one of: {', '.join(EXECUTORS)}")


#: seconds a cluster's address has to accept a connection
CONNECT_TIMEOUT = 3.0
#: the port an address without one means (Dask's scheduler, Ray's GCS, Ray Client)
DEFAULT_PORTS = {"dask": 8786, "ray": 6379, "ray://": 10001}


def check_address(executor: str, address: str) -> None:
    """A quick TCP connect to ``address`` (``tcp://host:port``, ``host:port``, ``ray://...``);
    addresses that name no TCP host (Ray's ``auto``, Dask's ``inproc://``) are not tested."""
    import socket
    from urllib.parse import urlsplit

    scheme, _, rest = address.rpartition("://")
    untested = scheme not in ("", "tcp", "tls", "ray")
    if untested or (executor == "ray" and address in ("auto", "local")):
        return
    try:
        where = urlsplit(f"//{rest}")
        host = where.hostname
        port = where.port or DEFAULT_PORTS["ray://" if scheme == "ray" else executor]
    except ValueError as exc:  # a port that is not a number
        raise UserError(f"address {address!r}: not an address ({exc})") from None
    if not host:
        raise UserError(f"address {address!r}: not an address; e.g. tcp://host:8786")
    what = "Dask scheduler" if executor == "dask" else "Ray cluster"
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UserError(
            f"cannot reach the {what} at {address} ({host}:{port}: {reason}, "
            f"waited up to {CONNECT_TIMEOUT:g} s); is it running?"
        ) from None


def _by_priority(tasks: list[Task]) -> list[Task]:
    """Trainings that others wait for first (a task still comes after those it needs)."""
    return sorted(tasks, key=lambda task: -task.priority)


def _job(worker: Worker, task: Task) -> Job:
    from oebench.core.settings import snapshot

    switches = tuple(sorted(snapshot().items()))
    return Job(
        worker.bench, task, worker.device_name, worker.use_cache, worker.cache_root, switches
    )


def _result(get: Callable[..., TaskResult], *args: Any) -> TaskResult:
    """A task's result; a worker lost for good becomes a clear error."""
    try:
        return get(*args)
    except Exception as exc:  # KilledWorker (Dask), WorkerCrashedError (Ray): a lost worker
        raise UserError(
            f"a worker failed {RETRIES + 1} times on one cell ({type(exc).__name__}: {exc}); "
            "the cells finished so far are stored"
        ) from exc


def _tagged(result: TaskResult, executor: str) -> TaskResult:
    result.provenance["executor"] = executor
    return result


def _require(*modules: str) -> tuple[Any, ...]:
    """Import the executor's engine, or say which extra installs it."""
    import importlib

    try:
        return tuple(importlib.import_module(m) for m in modules)
    except ImportError:
        extra = "ray" if modules[0] == "ray" else "dask"
        raise UserError(
            f"the {extra} executor needs {extra}: pip install 'oebench[{extra}]'"
        ) from None
