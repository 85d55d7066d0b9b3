"""One task of a run, whichever executor runs it: the graph, the suite's score, the outcome to store.

Both executors (:mod:`agentloop.runs.local`, :mod:`agentloop.runs.ray_executor`) build a
:class:`TaskRunner` and share the memory helpers here; neither imports the other.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentloop import tracing
from agentloop._plugins import reference_label
from agentloop.graphs import jsonable
from agentloop.graphs.budget import LoopUsage
from agentloop.graphs.library import GraphSpec
from agentloop.graphs.run import run_task
from agentloop.records.store import RunStore, TaskOutcome
from agentloop.runs.spec import RunSpec
from agentloop.suites import Suite, SuiteItem
from agentloop.types import Backend

if TYPE_CHECKING:
    from agentloop.memory import ConceptMemory

__all__ = [
    "TaskRunner",
    "failed_outcome",
    "memory_id",
    "open_memory",
    "store_unclaimed",
    "task_outcome",
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

    async def run_one(self, item: SuiteItem) -> TaskOutcome:
        """``item``'s outcome; a task that raises is an outcome with its error, never an exception."""
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
