"""Run a suite through a graph: tasks in parallel, each committed to the run store as it finishes.

``agentloop run`` calls :func:`run_suite`. It resolves the suite, the graph and the backend
once, here, then hands the tasks to an executor (:class:`~agentloop.runs.executor.LocalExecutor`,
or the Ray one for ``--executor ray``), at most ``concurrency`` at a time. A task that raises is
stored with its error and counts as wrong; ``resume=True`` skips every stored task that did
not error and retries the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from agentloop import tracing
from agentloop._plugins import reference_label
from agentloop.backends.registry import BackendOptions, resolve_backend
from agentloop.errors import AgentloopError, MissingExtraError
from agentloop.graphs.library import GRAPHS, GraphSpec, graph_hash, graph_spec
from agentloop.records.config import budget_spend
from agentloop.records.report import RunReport
from agentloop.records.store import RunNotFoundError, RunStore, TaskOutcome
from agentloop.runs.executor import Executor, LocalExecutor
from agentloop.runs.ledger import Ledger
from agentloop.runs.progress import Bar, progress_bar
from agentloop.runs.spec import BUDGET_KEYS, RESULT_KEYS, STORED_DEFAULTS, RunSpec, RunSummary
from agentloop.runs.tasks import memory_id
from agentloop.suites import Suite, SuiteError, SuiteItem, get_suite
from agentloop.types import Backend

# RunSpec, RunSummary and the key tuples live in spec and records.config (the report reads them
# too); they are re-exported here, where runs are started.
__all__ = [
    "BUDGET_KEYS",
    "RESULT_KEYS",
    "STORED_DEFAULTS",
    "RunAbortedError",
    "RunSpec",
    "RunSummary",
    "default_run_dir",
    "memory_run_id",
    "run_suite",
    "run_suite_sync",
]


class RunAbortedError(AgentloopError):
    """Every task so far failed (a dead server, a wrong model name); the run stopped early."""


def default_run_dir(spec: RunSpec, root: str | Path = "runs", *, suite_name: str | None = None) -> Path:
    """``runs/<suite>-<graph>-<timestamp>``, with a suffix if that exists already.

    ``suite_name``: the suite's own name (a user suite's ``name``, not its file path).
    """
    suite, graph = suite_name or reference_label(spec.suite), reference_label(spec.graph)
    base = Path(root) / f"{suite}-{graph}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


async def run_suite(
    spec: RunSpec,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    backend: Backend | None = None,
    progress: bool | Console = False,
    abort_after: int = 3,
    on_task: Callable[[TaskOutcome], None] | None = None,
    on_start: Callable[[Path, int, int], None] | None = None,
    store_url: str | None = None,
) -> RunSummary:
    """Run every task ``spec`` selects and store each one as it finishes; return the whole run's summary.

    ``backend`` overrides ``spec.backend`` (which then only labels the run); a backend
    built here is closed at the end. ``progress`` shows a rich bar on stderr (or on the
    given console) while it is a terminal. If the first ``abort_after`` tasks of this
    session all fail, the run stops with :class:`RunAbortedError`; what finished is kept.
    ``on_start(run_dir, tasks, done)`` is called once the run is open, before any task runs;
    ``on_task(outcome)`` after each task is stored. ``store_url`` (a SQLAlchemy URL) puts the
    run in that database under the run dir's name, and the run dir records where (never the
    password); default: ``run.sqlite`` in the run dir.

    ``spec.executor == "ray"`` runs the tasks on a pool of Ray actors (docs/scale.md), each with
    its own backend, store and memory connections; a ``backend`` given here must pickle (each
    worker gets a copy). The bar, the callbacks and the summary are the same as with ``local``.
    """
    if resume and run_dir is None:
        raise AgentloopError("--resume needs --run-dir: the run directory of the run to finish")
    # Resolved once, here: the suite, the graph (an unknown or unfit one fails before any model
    # loads) and, for the local executor, the backend.
    suite = get_suite(spec.suite)
    spec = spec.for_suite(suite)
    _check_memory_verifier(spec, suite)
    graph = graph_spec(spec.graph)
    directory = Path(run_dir) if run_dir is not None else default_run_dir(spec, suite_name=suite.name)
    ray = _ray_module() if spec.executor == "ray" else None
    # With Ray, the workers resolve the backend (a model loads there, not here); a started Ray
    # is shut down at the end, one that was running is left as it was.
    started_ray = ray is not None and ray.connect(spec.ray_address)
    own_backend = backend is None
    if backend is None and ray is None:
        options = BackendOptions(base_url=spec.base_url, concurrency=spec.concurrency)
        backend = resolve_backend(spec.backend, options=options)
    if backend is not None and ray is None and tracing.configure_from_env():
        if not isinstance(backend, tracing.TracingBackend):
            backend = tracing.TracingBackend(backend)  # on with --otel, or when an OTLP endpoint is set
    executor: Executor
    if ray is not None:
        executor = ray.RayExecutor(
            spec, run_dir=directory, store_url=store_url, backend=None if own_backend else backend
        )
    else:
        assert backend is not None
        executor = LocalExecutor(spec, suite, graph, backend)
    store: RunStore | None = None
    memory_counts: dict[str, Any] | None = None
    interrupted = False
    try:
        await executor.prepare()
        items = _suite_items(suite, spec, backend)
        store = RunStore.for_run_dir(directory, store=store_url)
        await executor.start(store)
        if resume and spec.budget_total is not None:
            _check_planned(store, len(items), directory)
        run_id = _open_run(store, spec, suite, graph, items, resume=resume, where=directory)
        done = store.finished_task_ids(run_id)
        todo = [item for item in items if item.task_id not in done]
        ledger = _ledger(store, spec, graph, items) if spec.budget_total is not None else None
        await executor.bind(
            run_id, memory_id(directory, store.load().created) if spec.memory else None, resume=resume
        )
        if on_start is not None:
            on_start(directory, len(items), len(items) - len(todo))
        session = _Session(spec, executor, abort_after, on_task, directory, ledger)
        label = suite.name
        run_attributes = {
            "agentloop.suite": label,
            "agentloop.graph": reference_label(spec.graph),
            "agentloop.backend": spec.backend,
            "agentloop.run_dir": str(directory),
            "agentloop.tasks": len(todo),
        }
        with (
            tracing.span(f"agentloop.run {label}", run_attributes),
            progress_bar(
                progress,
                f"[bold]{label}[/] {reference_label(spec.graph)}",
                scores_reward=suite.scores_reward,
                total=len(items),
                done=len(items) - len(todo),
            ) as bar,
        ):
            session.bar = bar
            if ledger is not None:
                await session.run_shared(items, todo, store.run_wall(run_id))
            else:
                await session.run(todo, store.run_wall(run_id))
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        raise
    finally:
        try:
            memory_counts = await executor.close(flush=not interrupted)
        finally:
            if store is not None:
                store.close()
            if own_backend and backend is not None:
                await backend.aclose()
            tracing.flush()
            if started_ray:
                import ray as ray_api

                ray_api.shutdown()

    report = RunReport.load(directory, store=store_url)
    summary = report.summary(skipped=len(items) - len(todo))
    if spec.memory is not None:
        summary = replace(summary, memory=memory_counts or {"retrieved": 0, "written": 0})
    if ledger is not None and summary.budget is not None:
        summary = replace(summary, budget=_with_allowances(summary.budget, ledger, items))
    return summary


def _check_planned(store: RunStore, planned: int, where: Path) -> None:
    """A run-level budget is shared over the tasks planned at the start: a resume keeps them."""
    try:
        stored = store.load().planned
    except RunNotFoundError:
        return
    if stored != planned:
        raise AgentloopError(
            f"{where} holds a run with --budget-total over {stored} tasks, and this resume selects "
            f"{planned}: resume it with its own --limit (or none), or choose a new --run-dir"
        )


def _ledger(store: RunStore, spec: RunSpec, graph: GraphSpec, items: list[SuiteItem]) -> Ledger:
    """The run's budget ledger, with the tasks stored so far (a resume picks up where it stopped)."""
    assert spec.budget_total is not None
    cap: int | None
    if spec.budget_unit == "candidates":
        cap = graph.adjust(spec.loop_config()).n  # the most one task samples
        if spec.max_candidates is not None:
            cap = min(cap, spec.max_candidates)
    else:
        cap = spec.max_tokens_total
    ledger = Ledger(spec.budget_total, len(items), window=spec.budget_window, cap=cap)
    position = {item.task_id: i for i, item in enumerate(items)}
    for t in store.load().tasks:
        if t.task_id in position:
            # A task stored with an error (retried now) or retried after one holds its allowance.
            releases = t.error is None and t.attempt == 1
            ledger.finish(position[t.task_id], budget_spend(t, spec.budget_unit), releases=releases)
    return ledger


def _with_allowances(budget: dict[str, Any], ledger: Ledger, items: list[SuiteItem]) -> dict[str, Any]:
    """The report's budget with each task's allowance from the ledger, and the run's window."""
    allowances = dict(zip((item.task_id for item in items), ledger.allowances(), strict=True))
    tasks = [{**t, "allowance": allowances.get(t["task_id"])} for t in budget["tasks"]]
    return {**budget, "window": ledger.window, "tasks": tasks}


def _suite_items(suite: Suite, spec: RunSpec, backend: Backend | None) -> list[SuiteItem]:
    """The suite's tasks; bad input it reports with a ``ValueError`` becomes one line (a SuiteError)."""
    try:
        return suite.items(spec, backend)
    except AgentloopError:
        raise
    except ValueError as exc:
        raise SuiteError(f"suite {suite.name!r}: {exc}") from exc


def _open_run(
    store: RunStore,
    spec: RunSpec,
    suite: Suite,
    graph: GraphSpec,
    items: list[SuiteItem],
    *,
    resume: bool,
    where: Path,
) -> int:
    """Open (or, with ``resume``, reopen) the run; its config records what the report needs of the suite and graph."""
    # A resume refuses a user graph whose nodes or edges changed since the run began.
    hashed = None if spec.graph in GRAPHS else graph_hash(graph)
    effective = graph.adjust(spec.loop_config())
    verifier = spec.verifier or suite.default_verifier
    return store.open_run(
        suite=spec.suite,
        graph=spec.graph,
        backend=spec.backend,
        # What the report and the viewer need of the suite and the graph goes with the config, so a
        # run reads back without either (a plugin suite or a user graph that is gone).
        config={
            **spec.to_dict(),
            "graph_hash": hashed,
            "scores_reward": suite.scores_reward,
            "upper_bound": suite.upper_bound(verifier),
            "suite_name": suite.name,
            "difficulties": list(suite.difficulties),
            **suite.metric_info(),
            "effective_n": effective.n_for(0),
            "effective_rounds": effective.rounds,
            "effective_n_schedule": list(effective.n_schedule),
        },
        planned=len(items),
        resume=resume,
        compare=(*spec.result_keys(), "graph_hash"),
        defaults=STORED_DEFAULTS,
        where=str(where),
    )


def _check_memory_verifier(spec: RunSpec, suite: Suite) -> None:
    """Lessons are written from answers the verifier passed: never from a verifier that reads the gold."""
    verifier = spec.verifier or suite.default_verifier
    if spec.memory is not None and spec.memory_update != "off" and suite.upper_bound(verifier):
        raise AgentloopError(
            f"--memory writes lessons from answers the verifier passed, and {suite.name}'s {verifier!r} "
            "verifier checks them against the gold answers: use a gold-free verifier, or add "
            "--memory-update off to only read the memory"
        )


def _ray_module() -> Any:
    """The Ray executor's module, or one line that says how to install Ray."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise MissingExtraError("ray", "ray") from None
    from agentloop.runs import ray_executor

    return ray_executor


def memory_run_id(run_dir: str | Path) -> str:
    """The run id under which a run's concept memory records uses and writes (the same on resume)."""
    with RunStore.for_run_dir(run_dir, create=False) as store:
        return memory_id(Path(run_dir), store.load().created)


def run_suite_sync(spec: RunSpec, **kwargs: Any) -> RunSummary:
    """Blocking wrapper around :func:`run_suite`."""
    return asyncio.run(run_suite(spec, **kwargs))


class _Session:
    """One invocation's work on a run: the tasks left, ``concurrency`` at a time, the bar and the abort rule."""

    def __init__(
        self,
        spec: RunSpec,
        executor: Executor,
        abort_after: int,
        on_task: Callable[[TaskOutcome], None] | None,
        run_dir: Path,
        ledger: Ledger | None = None,
    ):
        self.spec = spec
        self.ledger = ledger
        self.executor = executor
        self.abort_after = abort_after
        self.on_task = on_task
        self.run_dir = run_dir
        self.bar: Bar | None = None
        self.succeeded = 0
        self.failed: list[str] = []

    async def run(self, items: list[SuiteItem], base_wall: float) -> None:
        """Run ``items`` on the executor, which stores each; ``base_wall``: the run's wall time so far."""
        if not items:
            return
        wall_origin = time.time() - base_wall  # the clock at which the run's wall time was 0
        gate = asyncio.Semaphore(self.spec.concurrency)

        async def gated(item: SuiteItem) -> TaskOutcome:
            async with gate:
                return await self.executor.run(item, wall_origin)

        tasks = [asyncio.create_task(gated(item)) for item in items]
        try:
            for next_done in asyncio.as_completed(tasks):
                self._finished(await next_done, len(items))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run_shared(self, items: list[SuiteItem], todo: list[SuiteItem], base_wall: float) -> None:
        """Run ``todo`` under the run-level budget: started in task order, each with its allowance.

        ``items`` are all the run's tasks (their positions are the ledger's). A task starts once a
        slot is free and the ledger has decided its allowance (see :mod:`agentloop.runs.ledger`).
        """
        ledger = self.ledger
        assert ledger is not None
        if not todo:
            return
        wall_origin = time.time() - base_wall
        position = {item.task_id: i for i, item in enumerate(items)}
        retried = {item.task_id for item in todo if ledger.is_finished(position[item.task_id])}
        slots = asyncio.Semaphore(self.spec.concurrency)
        changed = asyncio.Condition()
        results: asyncio.Queue[TaskOutcome | BaseException] = asyncio.Queue()
        workers: list[asyncio.Task[None]] = []

        async def one(i: int, item: SuiteItem, allowance: int) -> None:
            try:
                outcome = await self.executor.run(item, wall_origin, budget=self.spec.budget(allowance))
            except Exception as exc:  # the store gave up: the run stops, as without a budget
                results.put_nowait(exc)
                return
            finally:
                slots.release()
            releases = outcome.error is None and item.task_id not in retried
            ledger.finish(i, budget_spend(outcome.usage, self.spec.budget_unit), releases=releases)
            async with changed:
                changed.notify_all()
            results.put_nowait(outcome)

        async def launch() -> None:
            try:
                for item in todo:
                    i = position[item.task_id]
                    await slots.acquire()
                    async with changed:
                        await changed.wait_for(lambda i=i: ledger.ready(i))  # type: ignore[misc]
                    workers.append(asyncio.create_task(one(i, item, ledger.allowance(i))))
            except Exception as exc:
                results.put_nowait(exc)

        launcher = asyncio.create_task(launch())
        try:
            for _ in todo:
                got = await results.get()
                if isinstance(got, BaseException):
                    raise got
                self._finished(got, len(todo))
        finally:
            launcher.cancel()
            for t in workers:
                t.cancel()
            await asyncio.gather(launcher, *workers, return_exceptions=True)

    def _finished(self, outcome: TaskOutcome, total: int) -> None:
        if self.on_task is not None:
            self.on_task(outcome)
        if self.bar is not None:
            self.bar.advance(outcome)
        self._check_abort(outcome, total)

    def _check_abort(self, outcome: TaskOutcome, total: int) -> None:
        if outcome.error is None:
            self.succeeded += 1
            return
        self.failed.append(outcome.error)
        if self.succeeded == 0 and len(self.failed) >= min(self.abort_after, total):
            raise RunAbortedError(
                f"the first {len(self.failed)} task(s) all failed, so the run stopped; the first error: "
                f"{self.failed[0].rstrip('. ')}. Fix the cause and rerun the same command with "
                f"--resume --run-dir {self.run_dir}"
            )
