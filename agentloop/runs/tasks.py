"""One task of a run, whichever executor runs it: the graph, the suite's score, the outcome to store.

Both executors (:mod:`agentloop.runs.local`, :mod:`agentloop.runs.ray_executor`) build a
:class:`TaskRunner` and share the memory helpers here; neither imports the other.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentloop import tracing
from agentloop._plugins import reference_label
from agentloop.graphs import Candidate, LoopResult, jsonable
from agentloop.graphs.budget import Budget, LoopUsage
from agentloop.graphs.library import GraphSpec
from agentloop.graphs.run import run_task
from agentloop.records.config import VERIFIER_ERROR
from agentloop.records.store import CandidateRecord, CandidateScore, RunStore, TaskOutcome
from agentloop.runs.spec import RunSpec
from agentloop.suites import Score, Suite, SuiteItem
from agentloop.types import Backend

if TYPE_CHECKING:
    from agentloop.memory import ConceptMemory

__all__ = [
    "VERIFIER_ERROR",
    "TaskRunner",
    "failed_outcome",
    "memory_id",
    "open_memory",
    "store_unclaimed",
    "task_outcome",
    "verifier_error",
]


class TaskRunner:
    """Runs one suite item through the graph with the run's backend and memory, and scores it."""

    def __init__(
        self,
        spec: RunSpec,
        suite: Suite,
        graph: GraphSpec,
        backend: Backend,
        memory: ConceptMemory | None = None,
    ):
        self.spec = spec
        self.suite = suite
        self.graph = graph
        self.backend = backend
        self.memory = memory
        self.config = spec.loop_config().replace(stop=suite.stop)

    async def run_one(self, item: SuiteItem, *, budget: Budget | None = None) -> TaskOutcome:
        """``item``'s outcome; a task that raises is an outcome with its error, never an exception.

        ``budget``: the task's caps (default: the spec's own, :meth:`RunSpec.budget`).
        """
        started, t0 = time.time(), time.perf_counter()

        def outcome(**fields: Any) -> TaskOutcome:
            return task_outcome(
                item, started=started, finished=time.time(), wall_s=time.perf_counter() - t0, **fields
            )

        label = reference_label(self.spec.graph)
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": label,
            "agentloop.task.id": item.task_id,
            "agentloop.task.index": item.index,
        }
        try:
            # With memory, the graph's remember node writes (update="task") before this returns,
            # so every task the store records has its concepts in memory already.
            with tracing.span(f"invoke_agent {label}", attributes) as span:
                result = await run_task(
                    item.task,
                    self.backend,
                    self.graph,
                    config=self.config,
                    budget=budget if budget is not None else self.spec.budget(),
                    memory=self.memory,
                )
                score = await self.suite.score(item, result)
                candidate_scores = await self._score_candidates(item, result, score)
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
        error = result.error if result.stop_reason == "backend_error" else None
        raised = verifier_error(result.candidates)
        if error is None and raised is not None:
            # Not a wrong answer: the verifier never judged one. Stored as the task's error, so
            # the summary counts it apart, the first tasks' abort rule sees it, and --resume retries.
            error = f"{VERIFIER_ERROR}: the verifier raised on every candidate ({raised})"
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
            error=error,
            eval_error=score.error,
            candidates=result.candidates,
            best_position=best,
            memory_usage=self._memory_usage(item),
            stop_detail=result.stop_detail,
            lessons=result.lessons if self.memory is not None else None,
            lessons_written=self.memory.take_written(item.task_id) if self.memory is not None else None,
            prompts=result.prompts,
            candidate_scores=candidate_scores,
        )

    async def _score_candidates(
        self, item: SuiteItem, result: LoopResult, final: Score
    ) -> list[CandidateScore | None]:
        """Every candidate's official score (and vote key, when the graph voted), for curves over k.

        The final answer reuses ``final``; the others are scored concurrently, bounded by the
        config's concurrency. A candidate that fails to score stores NULL, never sinks the task.
        """
        voted = result.votes is not None
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(c: Candidate) -> CandidateScore | None:
            async with gate:
                try:
                    s = final if c is result.best else await self.suite.score_candidate(item, result, c)
                    key = await _vote_key(item, c) if voted else None
                except Exception:
                    return None
            return CandidateScore(correct=s.correct, reward=s.reward, key=key)

        return list(await asyncio.gather(*(one(c) for c in result.candidates)))

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


async def _vote_key(item: SuiteItem, c: Candidate) -> str | None:
    """The key self-consistency voted ``c`` under, as a label (None: it abstained)."""
    if c.parse_error:
        return None
    try:
        key = item.task.answer_key(c)
        if inspect.isawaitable(key):
            key = await key
        hash(key)
    except Exception:
        return None
    if key is None:
        return None
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 200 else text[:197] + "..."


def verifier_error(candidates: Sequence[CandidateRecord]) -> str | None:
    """The first verifier exception if the verifier raised on every candidate it judged, else None.

    Candidates that did not parse never reach the verifier and do not count either way.
    """
    judged = [c for c in candidates if c.verdict is not None and not c.parse_error]
    if judged and all(c.verdict.details.get("raised") for c in judged):
        return str(judged[0].verdict.details.get("error"))
    return None


def task_outcome(
    item: SuiteItem, *, started: float, finished: float, wall_s: float, **fields: Any
) -> TaskOutcome:
    """``item``'s outcome: the fields that say which task it is come from the item."""
    return TaskOutcome(
        task_id=item.task_id,
        index=item.index,
        question=item.question,
        difficulty=item.difficulty,
        extra=dict(item.extra),
        source=item.source,
        content_hash=item.content_hash,
        started=started,
        finished=finished,
        wall_s=wall_s,
        **fields,
    )


def failed_outcome(item: SuiteItem, started: float, error: str) -> TaskOutcome:
    """A task that did not run to an outcome of its own (its worker died): wrong, with ``error``."""
    now = time.time()
    return task_outcome(item, started=started, finished=now, wall_s=now - started, correct=False, error=error)


def open_memory(spec: RunSpec, backend: Backend) -> ConceptMemory:
    """One memory for the whole run; its run id is set once the run store is open.

    With ``spec.memory_backend``, that backend (resolved here, owned and closed by the
    memory) writes and selects lessons; otherwise the run's ``backend`` does.
    """
    from agentloop.backends import resolve_backend
    from agentloop.memory import ConceptMemory, SQLMemoryStore

    assert spec.memory is not None and spec.memory_namespace is not None
    store = SQLMemoryStore(spec.memory)
    try:
        # After the store: a memory URL that does not open loads no second model.
        writer = resolve_backend(spec.memory_backend) if spec.memory_backend is not None else backend
        return ConceptMemory(
            store,
            namespace=spec.memory_namespace,
            backend=writer,
            owns_store=True,
            owns_backend=writer is not backend,
            update=spec.memory_update,  # type: ignore[arg-type]  # checked in RunSpec
            select=spec.memory_select,  # type: ignore[arg-type]
            k=spec.memory_k,
            abstraction=spec.memory_abstraction(),
            write=spec.memory_write,  # type: ignore[arg-type]
            verifier=spec.verifier,
        )
    except BaseException:
        store.close()
        raise


def store_unclaimed(store: RunStore, run_id: int, memory: ConceptMemory) -> None:
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


def memory_id(directory: str | Path, created: float) -> str:
    """The run id under which a run's concept memory records uses and writes (the same on resume)."""
    return f"{Path(directory).resolve().name[:60]}-{created:.6f}"
