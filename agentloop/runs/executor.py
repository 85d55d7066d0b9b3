"""Where a run's tasks run: the one small interface both executors implement, and the local one.

The runner opens the run, then hands each task to an :class:`Executor`, which runs it and
stores it as it finishes. :class:`LocalExecutor` runs tasks in this process on the run's
backend; the Ray executor (:mod:`agentloop.runs.ray_executor`, ``--executor ray``) runs them
on a pool of actors, each with its own backend and store connections.
"""

from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING, Any

from agentloop.graphs.budget import Budget
from agentloop.graphs.library import GraphSpec
from agentloop.records.store import RunStore, TaskOutcome
from agentloop.runs.spec import RunSpec
from agentloop.runs.tasks import TaskRunner, open_memory, store_unclaimed
from agentloop.suites import Suite, SuiteItem
from agentloop.types import Backend

if TYPE_CHECKING:
    from agentloop.memory import ConceptMemory

__all__ = ["Executor", "LocalExecutor"]


class Executor(abc.ABC):
    """Runs a run's tasks and stores each one as it finishes.

    The runner calls, in order: :meth:`prepare` (before the run store opens: what fails here
    leaves no run behind), :meth:`start` (the store is open, the run is not), :meth:`bind`
    (the run is open), :meth:`run` for each task (any number at once), and :meth:`close`.
    """

    async def prepare(self) -> None:  # noqa: B027 (optional hook: most executors need none)
        """Check and open what must work before the run store opens."""

    async def start(self, store: RunStore) -> None:  # noqa: B027 (optional hook)
        """Set up with the run store open and the run not yet opened."""

    @abc.abstractmethod
    async def bind(self, run_id: int, memory_id: str | None, *, resume: bool) -> None:
        """The run the tasks go to, once it is open (``memory_id``: its concept memory's run id)."""

    @abc.abstractmethod
    async def run(self, item: SuiteItem, wall_origin: float, *, budget: Budget | None = None) -> TaskOutcome:
        """Run ``item`` and store it; ``wall_origin`` is the clock at which the run's wall time was 0.

        ``budget``: the task's caps when they are not the spec's (its share of ``--budget-total``).
        """

    @abc.abstractmethod
    async def close(self, *, flush: bool) -> dict[str, Any] | None:
        """Flush memory (unless ``flush=False``) and close; the run's memory counts, None without memory."""


class LocalExecutor(Executor):
    """Tasks in this process, on the run's backend; the runner bounds how many run at once."""

    def __init__(self, spec: RunSpec, suite: Suite, graph: GraphSpec, backend: Backend):
        self.spec = spec
        self.suite = suite
        self.graph = graph
        self.backend = backend
        self.store: RunStore | None = None
        self.run_id: int | None = None
        self.memory: ConceptMemory | None = None
        self.runner: TaskRunner | None = None

    async def prepare(self) -> None:
        if self.spec.memory is not None:
            # Before the run store: a memory URL that does not open leaves no run dir behind.
            self.memory = open_memory(self.spec, self.backend)

    async def start(self, store: RunStore) -> None:
        self.store = store
        self.runner = TaskRunner(self.spec, self.suite, self.graph, self.backend, self.memory)

    async def bind(self, run_id: int, memory_id: str | None, *, resume: bool) -> None:
        self.run_id = run_id
        if self.memory is not None:
            assert memory_id is not None
            self.memory.run_id = memory_id  # the same on resume
            if resume:
                await self.memory.resume()

    async def run(self, item: SuiteItem, wall_origin: float, *, budget: Budget | None = None) -> TaskOutcome:
        assert self.runner is not None and self.store is not None and self.run_id is not None
        outcome = await self.runner.run_one(item, budget=budget)
        # One transaction per task: result row, trajectory and the run's wall time.
        self.store.record(self.run_id, outcome, run_wall_s=time.time() - wall_origin)
        return outcome

    async def close(self, *, flush: bool) -> dict[str, Any] | None:
        if self.memory is None:
            return None
        # A batch waiting for writes came from finished tasks: flush it even when the run failed,
        # but not on Ctrl-C (abstraction calls the model and takes a while).
        await self.memory.aclose(flush=flush)
        if self.store is not None and self.run_id is not None:
            store_unclaimed(self.store, self.run_id, self.memory)
        return self.memory.counters.to_dict()
