"""Run a suite through a graph: tasks in parallel, each committed to the run store as it finishes.

``agentloop run`` calls :func:`run_suite`. One backend serves every task; at most
``concurrency`` tasks run at once. A task that raises is stored with its error and counts
as wrong; ``resume=True`` skips every stored task that did not error and retries the rest.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rich.console import Console

from agentloop import tracing
from agentloop._plugins import reference_label
from agentloop.backends.registry import BackendOptions, resolve_backend
from agentloop.errors import AgentloopError, MissingExtraError
from agentloop.evals._progress import Bar, progress_bar
from agentloop.evals.report import RunReport
from agentloop.evals.run_spec import BUDGET_KEYS, RESULT_KEYS, STORED_DEFAULTS, RunSpec, RunSummary
from agentloop.evals.run_store import RunStore, TaskOutcome
from agentloop.evals.suites import Suite, SuiteItem, get_suite
from agentloop.graphs import jsonable
from agentloop.graphs.budget import LoopUsage
from agentloop.graphs.library import GRAPHS, graph_hash, graph_spec
from agentloop.graphs.run import run_task
from agentloop.types import Backend

if TYPE_CHECKING:
    from agentloop.evals import _ray
    from agentloop.memory import ConceptMemory

# RunSpec, RunSummary and the key tuples live in run_spec (the report reads them too);
# they are re-exported here, where runs are started.
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


def default_run_dir(spec: RunSpec, root: str | Path = "runs") -> Path:
    """``runs/<suite>-<graph>-<timestamp>``, with a suffix if that exists already."""
    suite, graph = reference_label(spec.suite), reference_label(spec.graph)
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
    suite = get_suite(spec.suite)
    graph = graph_spec(spec.graph)  # an unknown or unfit graph fails here, before any model loads
    # A resume refuses a user graph whose nodes or edges changed since the run began.
    hashed = None if spec.graph in GRAPHS else graph_hash(graph)
    directory = Path(run_dir) if run_dir is not None else default_run_dir(spec)
    ray_pool = _ray_executor() if spec.executor == "ray" else None
    # With Ray, the workers resolve the backend (a model loads there, not here); a started Ray
    # is shut down at the end, one that was running is left as it was.
    started_ray = ray_pool is not None and ray_pool.connect(spec.ray_address)
    own_backend = backend is None
    if backend is None and ray_pool is None:
        options = BackendOptions(base_url=spec.base_url, concurrency=spec.concurrency)
        backend = resolve_backend(spec.backend, options=options)
    if (
        backend is not None
        and ray_pool is None
        and tracing.configure_from_env()
        and not isinstance(backend, tracing.TracingBackend)
    ):
        backend = tracing.TracingBackend(backend)  # on with --otel, or when an OTLP endpoint is set
    store: RunStore | None = None
    memory: ConceptMemory | None = None
    pool: _ray.RayPool | None = None
    memory_counts: dict[str, int] | None = None
    run_id: int | None = None
    interrupted = False
    try:
        if ray_pool is not None:
            ray_pool.check_shared_stores(spec, directory, store_url)
        items = suite.items(spec, backend)
        if spec.memory is not None and backend is not None and ray_pool is None:
            # Before the run store: a memory URL that does not open leaves no run dir behind.
            memory = _open_memory(spec, backend)
        store = RunStore.for_run_dir(directory, store=store_url)
        if ray_pool is not None:
            # Before the run opens: a worker that cannot set up (a backend id, an API key, a
            # missing extra on the cluster) leaves no run behind, and the same command can rerun.
            pool = ray_pool.RayPool(spec, store=store, backend=None if own_backend else backend)
            await pool.start()
        run_id = store.open_run(
            suite=spec.suite,
            graph=spec.graph,
            backend=spec.backend,
            # The suite's flags go with the config, so a report reads a user suite's run without it.
            config={
                **spec.to_dict(),
                "graph_hash": hashed,
                "scores_reward": suite.scores_reward,
                "upper_bound": suite.upper_bound(spec.verifier or suite.default_verifier),
            },
            planned=len(items),
            resume=resume,
            compare=(*spec.result_keys(), "graph_hash"),
            defaults=STORED_DEFAULTS,
            where=str(directory),
        )
        done = store.finished_task_ids(run_id)
        todo = [item for item in items if item.task_id not in done]
        if pool is not None:
            pool.bind(run_id, _memory_run_id(directory, store.load().created) if spec.memory else None)
        if memory is not None:
            # The memory's run id comes from the run (the same on resume).
            memory.run_id = _memory_run_id(directory, store.load().created)
            if resume:
                await memory.resume()
        if on_start is not None:
            on_start(directory, len(items), len(items) - len(todo))
        # With Ray the driver has no backend (None): the workers run the tasks.
        session = _Session(spec, suite, backend, store, run_id, abort_after, on_task, memory)  # type: ignore[arg-type]
        session.run_dir = directory
        title = f"[bold]{reference_label(spec.suite)}[/] {reference_label(spec.graph)}"
        run_attributes = {
            "agentloop.suite": reference_label(spec.suite),
            "agentloop.graph": reference_label(spec.graph),
            "agentloop.backend": spec.backend,
            "agentloop.run_dir": str(directory),
            "agentloop.tasks": len(todo),
        }
        with (
            tracing.span(f"agentloop.run {reference_label(spec.suite)}", run_attributes),
            progress_bar(
                progress,
                title,
                scores_reward=suite.scores_reward,
                total=len(items),
                done=len(items) - len(todo),
            ) as bar,
        ):
            session.bar = bar
            await session.run(todo, pool)
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        raise
    finally:
        try:
            if pool is not None:
                memory_counts = await pool.close(flush=not interrupted)
            if memory is not None:
                # A batch waiting for writes came from finished tasks: flush it even when the run
                # failed, but not on Ctrl-C (abstraction calls the model and takes a while).
                await memory.aclose(flush=not interrupted)
                if store is not None and run_id is not None:
                    _store_unclaimed(store, run_id, memory)
        finally:
            if store is not None:
                store.close()
            if own_backend and backend is not None:
                await backend.aclose()
            tracing.flush()
            if started_ray:
                import ray

                ray.shutdown()

    report = RunReport.load(directory, store=store_url)
    summary = report.summary(skipped=len(items) - len(todo))
    if memory is not None:
        summary = replace(summary, memory=memory.counters.to_dict())
    elif spec.memory is not None and ray_pool is not None:
        summary = replace(summary, memory=memory_counts or {"retrieved": 0, "written": 0})
    return summary


def _ray_executor() -> ModuleType:
    """The Ray executor's module, or one line that says how to install Ray."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise MissingExtraError("ray", "ray") from None
    from agentloop.evals import _ray

    return _ray


def _store_unclaimed(store: RunStore, run_id: int, memory: ConceptMemory) -> None:
    """Memory spend that no task took (a batch flush after its tasks were stored) goes on the run."""
    # Lessons written after their tasks were stored go on those tasks' rows.
    store.add_lessons_written(run_id, memory.take_all_written())
    u = memory.unclaimed_usage
    if u.llm_calls or u.prompt_tokens or u.completion_tokens:
        store.add_memory_usage(
            run_id,
            {
                "llm_calls": u.llm_calls,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
            },
        )


def memory_run_id(run_dir: str | Path) -> str:
    """The run id under which a run's concept memory records uses and writes (the same on resume)."""
    with RunStore.for_run_dir(run_dir, create=False) as store:
        return _memory_run_id(Path(run_dir), store.load().created)


def _memory_run_id(directory: Path, created: float) -> str:
    return f"{directory.resolve().name[:60]}-{created:.6f}"


def _open_memory(spec: RunSpec, backend: Backend) -> ConceptMemory:
    """One memory for the whole run; its run id is set once the run store is open."""
    from agentloop.memory import ConceptMemory

    assert spec.memory is not None and spec.memory_namespace is not None
    return ConceptMemory.open(
        spec.memory,
        namespace=spec.memory_namespace,
        backend=backend,
        update=spec.memory_update,  # type: ignore[arg-type]  # checked in RunSpec
        select=spec.memory_select,  # type: ignore[arg-type]
        k=spec.memory_k,
        abstraction=spec.memory_abstraction(),
    )


def _task_outcome(
    item: SuiteItem, *, started: float, finished: float, wall_s: float, **fields: Any
) -> TaskOutcome:
    """``item``'s outcome: the fields that say which task it is come from the item."""
    return TaskOutcome(
        task_id=item.task_id,
        index=item.index,
        question=item.question,
        db_id=item.db_id,
        difficulty=item.difficulty,
        source=item.source,
        content_hash=item.content_hash,
        started=started,
        finished=finished,
        wall_s=wall_s,
        **fields,
    )


def run_suite_sync(spec: RunSpec, **kwargs: Any) -> RunSummary:
    """Blocking wrapper around :func:`run_suite`."""
    return asyncio.run(run_suite(spec, **kwargs))


class _Session:
    """One invocation's work on a run: the tasks left, the store writes, the progress bar."""

    def __init__(
        self,
        spec: RunSpec,
        suite: Suite,
        backend: Backend,
        store: RunStore,
        run_id: int,
        abort_after: int,
        on_task: Callable[[TaskOutcome], None] | None,
        memory: ConceptMemory | None = None,
    ):
        self.spec = spec
        self.suite = suite
        self.backend = backend
        self.store = store
        self.run_id = run_id
        self.abort_after = abort_after
        self.on_task = on_task
        self.memory = memory
        self.config = spec.loop_config().replace(stop=suite.stop)
        self.bar: Bar | None = None
        self.run_dir: Path | None = None
        self.succeeded = 0
        self.failed: list[str] = []

    async def run(self, items: list[SuiteItem], pool: _ray.RayPool | None = None) -> None:
        """Run ``items``, ``concurrency`` at a time, here or on ``pool``'s workers (which store them)."""
        if not items:
            return
        base_wall = self.store.run_wall(self.run_id)
        start = time.perf_counter()
        wall_origin = time.time() - base_wall  # the workers' clock for the run's wall time
        gate = asyncio.Semaphore(self.spec.concurrency)

        async def gated(item: SuiteItem) -> tuple[TaskOutcome, bool]:
            async with gate:
                if pool is not None:
                    return await pool.run(item, wall_origin)
                return await self.run_one(item), False

        tasks = [asyncio.create_task(gated(item)) for item in items]
        try:
            for next_done in asyncio.as_completed(tasks):
                outcome, stored = await next_done
                if not stored:
                    # One transaction per task: result row, trajectory and the run's wall time.
                    self.store.record(
                        self.run_id, outcome, run_wall_s=base_wall + time.perf_counter() - start
                    )
                if self.on_task is not None:
                    self.on_task(outcome)
                if self.bar is not None:
                    self.bar.advance(outcome)
                self._check_abort(outcome, len(items))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run_one(self, item: SuiteItem) -> TaskOutcome:
        started, t0 = time.time(), time.perf_counter()

        def outcome(**fields: Any) -> TaskOutcome:
            return _task_outcome(
                item, started=started, finished=time.time(), wall_s=time.perf_counter() - t0, **fields
            )

        graph = reference_label(self.spec.graph)
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": graph,
            "agentloop.task.id": item.task_id,
            "agentloop.task.index": item.index,
        }
        try:
            # With memory, the graph's remember node writes (update="task") before this returns,
            # so every task the store records has its concepts in memory already.
            with tracing.span(f"invoke_agent {graph}", attributes) as span:
                result = await run_task(
                    item.task,
                    self.backend,
                    self.spec.graph,
                    config=self.config,
                    budget=self.spec.budget(),
                    memory=self.memory,
                )
                score = await self.suite.score(item, result)
                tracing.set_attributes(
                    span,
                    {
                        "agentloop.correct": score.correct,
                        "agentloop.reward": score.reward,
                        "agentloop.rounds": result.rounds,
                        "agentloop.stop_reason": result.stop_reason,
                        "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
                        "gen_ai.usage.output_tokens": result.usage.completion_tokens,
                    },
                )
        except Exception as exc:  # one broken task must not sink the run
            return outcome(
                correct=False,
                error=f"{type(exc).__name__}: {exc}",
                error_detail=traceback.format_exc(),
                memory_usage=self._memory_usage(item),
            )
        best = next((i for i, c in enumerate(result.candidates) if c is result.best), None)
        answer = result.answer
        return outcome(
            correct=score.correct,
            reward=score.reward,
            answer=answer if answer is None or isinstance(answer, str) else json.dumps(jsonable(answer)),
            passed=result.passed,
            score=result.score,
            usage=result.usage,
            rounds=result.rounds,
            stop_reason=result.stop_reason,
            # A backend error cut the run short: store what came back, and retry it on resume.
            error=result.error if result.stop_reason == "backend_error" else None,
            eval_error=score.error,
            candidates=result.candidates,
            best_position=best,
            memory_usage=self._memory_usage(item),
            stop_detail=result.stop_detail,
            lessons=result.lessons if self.memory is not None else None,
            lessons_written=self.memory.take_written(item.task_id) if self.memory is not None else None,
            prompts=result.prompts,
        )

    def _memory_usage(self, item: SuiteItem) -> LoopUsage | None:
        """What memory spent for this task (LLM selection, abstraction); None without memory."""
        if self.memory is None:
            return None
        u = self.memory.take_usage(item.task_id)
        return LoopUsage(
            llm_calls=u.llm_calls,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            cost_usd=u.cost_usd,
        )

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
