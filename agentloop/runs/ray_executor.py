"""``--executor ray``: a run's tasks on a pool of Ray actors; the driver hands out task ids.

Each actor (:class:`TaskWorker`) sets itself up once: it resolves its backend (an in-process
model, or a client for one of the run's endpoints), builds the suite's tasks, and opens its
own connections to the run store and the concept memory. It then runs the tasks the driver
sends, stores each one itself and hands the outcome back for the progress bar and summary.

A worker process that dies (SIGKILL, OOM, a lost node) is restarted by Ray, which reruns
the tasks it held on the new process, :data:`WORKER_RETRIES` times at most; the store's
writes are idempotent on (run, task), so a task whose first run did commit is not counted
twice. :class:`RayExecutor` is the driver's side, behind the same :class:`Executor` interface as
the local one; only :mod:`agentloop.runs.runner` imports this module, and only for
``--executor ray``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from agentloop import tracing
from agentloop.backends.registry import BackendOptions, resolve_backend
from agentloop.errors import AgentloopError
from agentloop.graphs.budget import Budget
from agentloop.graphs.library import graph_spec
from agentloop.records.store import (
    STORE_FILE,
    RunStore,
    TaskOutcome,
    open_store,
    read_marker,
    resolve_store_url,
)
from agentloop.runs.executor import Executor
from agentloop.runs.spec import RunSpec
from agentloop.runs.tasks import TaskRunner, failed_outcome, open_memory, store_unclaimed
from agentloop.suites import SuiteItem, get_suite
from agentloop.types import Backend

if TYPE_CHECKING:
    from agentloop.memory import ConceptMemory

__all__ = ["WORKER_RETRIES", "RayExecutor", "TaskWorker", "check_shared_stores", "connect"]

# Reruns of a task whose worker process died under it; one more death stores the task as failed
# (a task that kills every process it runs on must not loop forever), and --resume retries it.
WORKER_RETRIES = 3
# How long connecting to --ray-address may take before it counts as unreachable (ray.init
# itself retries an address that does not answer for minutes).
PROBE_TIMEOUT_S = 10.0
# How long the workers get to flush memory and close their connections at the end of a run.
CLOSE_TIMEOUT_S = 120.0
# A worker's run id before the driver has opened the run.
_UNBOUND = -1


# --- the cluster ----------------------------------------------------------------------------


def connect(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), else start one here.

    Returns whether this call started Ray (the caller then shuts it down). A Ray already
    initialised in this process (a script's own ``ray.init``) is used as it is.
    """
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target is not None and target not in ("auto", "local"):
        _probe(target)
    try:
        if target is None:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:  # Ray's errors are long and varied; the CLI wants one line
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise AgentloopError(f"cannot connect to the Ray cluster at {target}: {first.strip()}") from None
    return True


def _probe(address: str) -> None:
    """Fail within seconds, with one line, when nothing listens at ``address`` (HOST:PORT)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    hint = (
        "start one with `ray start --head` and pass the address it prints (HOST:6379), or leave out "
        "--ray-address to start Ray on this machine"
    )
    if not host or not port.isdigit():
        raise AgentloopError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379); {hint}")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AgentloopError(f"cannot reach a Ray cluster at {address} ({reason}); {hint}") from None


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_shared_stores(spec: RunSpec, run_dir: Path, store_url: str | None) -> None:
    """On a cluster of several nodes, refuse SQLite run stores and memories: other nodes cannot reach the file.

    Checked before the run store opens, so a refused run leaves no run dir behind.
    """
    nodes = alive_nodes()
    if nodes < 2:
        return
    marker = run_dir / STORE_FILE
    if store_url is not None:
        url = resolve_store_url(store_url)
    else:
        url = read_marker(marker)[0] if marker.is_file() else "sqlite"  # run.sqlite in the run dir
    if url.startswith("sqlite"):
        raise AgentloopError(
            f"the run store is a SQLite file, which the other nodes of this {nodes}-node Ray cluster "
            "cannot reach: pass --store postgresql://USER:PASS@HOST/DB"
        )
    if spec.memory is not None and spec.memory.startswith("sqlite"):
        raise AgentloopError(
            f"--memory is a SQLite file, which the other nodes of this {nodes}-node Ray cluster "
            "cannot reach: pass --memory postgresql://USER:PASS@HOST/DB"
        )


# --- one worker -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """What a worker needs to set itself up; it crosses to the worker's process by pickle."""

    spec: RunSpec
    store_url: str  # with its password: the worker connects with it
    run_name: str
    endpoint: str | None  # this worker's server, one of the run's endpoints
    backend: Backend | None  # a backend object given to run_suite: each worker gets a copy


@ray.remote(max_restarts=-1, max_task_retries=WORKER_RETRIES)
class TaskWorker:
    """One actor of the pool: runs tasks by id and stores each one as it finishes."""

    def __init__(self, job: WorkerJob):
        self.job = job
        self.session: _WorkerSession | None = None
        self.items: dict[str, SuiteItem] = {}
        self.lock = asyncio.Lock()

    async def ready(self) -> dict[str, Any]:
        """Set up (once; again after a restart) and say where this worker runs."""
        with _portable_errors():
            session = await self._setup()
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "backend": session.runner.backend.id,
        }

    async def run(
        self, task_id: str, run: tuple[int, str | None], wall_origin: float, budget: Budget | None = None
    ) -> TaskOutcome:
        """Run the task ``task_id``, store it, and return its outcome.

        ``run`` is the run's id in the store and its memory run id (the driver opens the run
        after the workers are set up, so that a worker that cannot set up leaves no run behind);
        ``wall_origin`` is the driver's clock at which the run's wall time would have been 0.
        """
        with _portable_errors():
            session = await self._setup()
            if session.run_id != run[0]:
                await self._bind(session, *run)
            item = self.items.get(task_id)
            if item is None:
                raise AgentloopError(
                    f"task {task_id!r} is not among the suite's tasks on worker {os.getpid()}: the "
                    "suite must build the same tasks on every node (the same data, code and version)"
                )
            outcome = await session.runner.run_one(item, budget=budget)
            # On the event loop, as the local runner does: a thread hop per task cost more CPU than
            # it saved, and while the store retries a restarting database, no other task could
            # store either.
            session.store.record(session.run_id, outcome, run_wall_s=time.time() - wall_origin)
            return outcome

    async def close(self, flush: bool) -> dict[str, Any] | None:
        """Flush and close memory (returns its counts), the store and the backend."""
        session, self.session = self.session, None
        if session is None:
            return None
        memory = session.runner.memory
        with _portable_errors():
            try:
                if memory is not None:
                    await memory.aclose(flush=flush)
                    if session.run_id != _UNBOUND:
                        store_unclaimed(session.store, session.run_id, memory)
                    return memory.counters.to_dict()
                return None
            finally:
                session.store.close()
                await session.runner.backend.aclose()

    async def _setup(self) -> _WorkerSession:
        async with self.lock:
            if self.session is None:
                self.session = await self._open()
            return self.session

    async def _bind(self, session: _WorkerSession, run_id: int, memory_id: str | None) -> None:
        async with self.lock:
            if session.run_id == run_id:
                return
            memory = session.runner.memory
            if memory is not None:
                assert memory_id is not None
                memory.run_id = memory_id
                # Always, not only on --resume: a task rerun after its worker died must not write
                # its concepts twice, whichever worker wrote them first.
                await memory.resume()
            session.run_id = run_id  # last: a task that sees it bound finds memory resumed

    async def _open(self) -> _WorkerSession:
        # A worker is another process: it resolves the suite, graph and backend the driver
        # resolved (the same names, on the same code), once per process.
        job, spec = self.job, self.job.spec
        backend = job.backend
        if backend is None:
            options = BackendOptions(base_url=job.endpoint, concurrency=spec.concurrency)
            backend = resolve_backend(spec.backend, options=options)
        if tracing.configure_from_env() and not isinstance(backend, tracing.TracingBackend):
            backend = tracing.TracingBackend(backend)
        suite = get_suite(spec.suite)
        self.items = {item.task_id: item for item in suite.items(spec, backend)}
        memory: ConceptMemory | None = open_memory(spec, backend) if spec.memory is not None else None
        store = open_store(job.store_url, run_name=job.run_name)
        runner = TaskRunner(spec, suite, graph_spec(spec.graph), backend, memory)
        return _WorkerSession(runner, store)


@dataclass(slots=True)
class _WorkerSession:
    """What a worker holds once set up: its task runner, its store connection, the run it serves."""

    runner: TaskRunner
    store: RunStore
    run_id: int = _UNBOUND


# --- the pool, on the driver ------------------------------------------------------------------


class RayExecutor(Executor):
    """The driver's side: ``workers`` actors, each task to the least busy one.

    ``backend``: a backend object given to ``run_suite`` (each worker gets a pickled copy);
    ``None``: each worker resolves ``spec.backend`` itself, so no model loads on the driver.
    """

    def __init__(self, spec: RunSpec, *, run_dir: Path, store_url: str | None, backend: Backend | None):
        self.spec = spec
        self.run_dir = run_dir
        self.store_url = store_url
        self.backend = backend
        self.bound: tuple[int, str | None] = (_UNBOUND, None)
        self.store: RunStore | None = None
        self.actors: list[Any] = []
        self.load: list[int] = []
        self.workers: list[dict[str, Any]] = []

    async def prepare(self) -> None:
        check_shared_stores(self.spec, self.run_dir, self.store_url)

    async def start(self, store: RunStore) -> None:
        """Start the workers and wait until each is set up; a worker's setup error is raised here, as itself.

        Before the run opens: a worker that cannot set up (a backend id, an API key, a missing
        extra on the cluster) leaves no run behind, and the same command can rerun.
        """
        spec, backend = self.spec, self.backend
        self.store = store
        endpoints = spec.endpoints()
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        workers = spec.workers or min(spec.concurrency, max(int(cpus), len(endpoints), 1))
        if len(endpoints) > workers:
            raise AgentloopError(
                f"{len(endpoints)} --base-url endpoints but {workers} Ray workers: each worker talks to "
                f"one endpoint; pass --workers {len(endpoints)} or more"
            )
        # At most one CPU each, less when there are more workers than CPUs: placeable on any
        # cluster, and spread over its nodes. A worker mostly waits on its backend.
        self.cpus_each = max(0.0001, min(1.0, int(cpus / workers * 10_000) / 10_000))
        self.actors = [
            TaskWorker.options(num_cpus=self.cpus_each, scheduling_strategy="SPREAD").remote(  # type: ignore[attr-defined]
                WorkerJob(
                    spec=spec,
                    store_url=store.url,
                    run_name=store.run_name,
                    endpoint=endpoints[i % len(endpoints)] if endpoints else None,
                    backend=backend,
                )
            )
            for i in range(workers)
        ]
        self.load = [0] * workers
        try:
            self.workers = list(await asyncio.gather(*(a.ready.remote() for a in self.actors)))
        except RayTaskError as exc:
            raise _cause(exc) from None

    async def bind(self, run_id: int, memory_id: str | None, *, resume: bool) -> None:
        # The workers bind on their first task (and resume memory always: see TaskWorker._bind).
        self.bound = (run_id, memory_id)

    async def run(self, item: SuiteItem, wall_origin: float, *, budget: Budget | None = None) -> TaskOutcome:
        """Run ``item`` on the least busy worker, which stores it; a task whose worker kept dying is stored here."""
        assert self.bound[0] != _UNBOUND and self.store is not None, "bind() the executor to its run first"
        k = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[k] += 1
        started = time.time()
        try:
            outcome: TaskOutcome = await self.actors[k].run.remote(
                item.task_id, self.bound, wall_origin, budget
            )
            return outcome
        except RayTaskError as exc:  # the store gave up, or the suite differs on the worker
            raise _cause(exc) from None
        except RayActorError as exc:
            # The worker died under this task WORKER_RETRIES + 1 times: store it as failed, and the
            # run goes on; --resume retries it.
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            error = f"WorkerDied: the Ray worker running this task died {WORKER_RETRIES + 1} times ({reason})"
            failed = failed_outcome(item, started, error)
            self.store.record(self.bound[0], failed, run_wall_s=time.time() - wall_origin)
            return failed
        finally:
            self.load[k] -= 1

    async def close(self, *, flush: bool) -> dict[str, Any] | None:
        """Close every worker (flushing memory unless ``flush=False``), then end them; the summed memory counts."""
        from agentloop.memory import merge_counts

        totals: dict[str, Any] | None = None
        try:
            closing = asyncio.gather(*(a.close.remote(flush) for a in self.actors), return_exceptions=True)
            try:
                results = await asyncio.wait_for(closing, CLOSE_TIMEOUT_S)
            except TimeoutError:  # a worker stuck in its backend: end it anyway
                return totals
            for r in results:
                if isinstance(r, RayTaskError):
                    raise _cause(r) from None
                if isinstance(r, dict):
                    totals = merge_counts(totals, r)
        finally:
            for a in self.actors:
                ray.kill(a)
        return totals


@contextmanager
def _portable_errors() -> Iterator[None]:
    """Raise a worker's error as one the driver can unpickle.

    Errors whose ``__init__`` takes other arguments than their message (``UnknownBackendError``,
    ``MissingExtraError``, ...) do not unpickle, and Ray would hand the driver an
    ``UnserializableException`` instead: they cross as their message, an ``AgentloopError``
    when they were one (the CLI prints it as one line).
    """
    try:
        yield
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            if isinstance(exc, AgentloopError):
                raise AgentloopError(str(exc)) from None
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise


def _cause(exc: RayTaskError) -> BaseException:
    """The worker's own exception (one line for the CLI), not Ray's wrapper with its traceback."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
