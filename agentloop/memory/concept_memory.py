"""``ConceptMemory``: the graphs' :class:`~agentloop.graphs.LessonSource` on top of a memory store.

Before a task (``retrieve``): search the task's namespace lexically, optionally rerank
the shortlist by embeddings or let the LLM choose from it, record every concept shown,
and return the concepts as lesson lines. After it (``remember``): close those uses
with the task's outcome and, if the best candidate passed the verifier (``write="passed"``;
``"best"`` and ``"all"`` take unverified answers too), abstract the trajectory into
concepts and merge them into the store, now (``update="task"``), on
:meth:`ConceptMemory.flush` (``"batch"``), or never (``"off"``).

The backend that abstracts and selects need not be the one that solves: pass another
(``owns_backend=True`` makes :meth:`ConceptMemory.aclose` close it).

>>> memory = ConceptMemory.open("sqlite:///memory.sqlite", namespace="spider", backend=backend)
>>> result = await run_task(task, backend, "iad", memory=memory)
>>> await memory.aclose()          # flushes a batch, closes the store
>>> memory.counters.to_dict()      # {"retrieved": ..., "written": ...}
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from agentloop.memory._types import AddResult, ConceptDraft, Evidence, Provenance, SearchHit, check_namespace
from agentloop.memory.abstraction import (
    ABSTRACTION_STYLES,
    AbstractionStyle,
    Trajectory,
    abstract,
    extract_json,
    instance_problem,
    trim_loops,
)
from agentloop.memory.retrieval import Embedder, MiniLMEmbedder, rerank
from agentloop.memory.store import MemoryStore, SQLMemoryStore
from agentloop.prompts import render_prompt
from agentloop.types import Backend, ChatRequest, Message, Usage

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult
    from agentloop.graphs.task import Task

__all__ = [
    "SELECT_MODES",
    "UPDATE_MODES",
    "WRITE_MODES",
    "ConceptMemory",
    "MemoryCounters",
    "SelectMode",
    "UpdateMode",
    "WriteMode",
    "default_query",
    "merge_counts",
]

log = logging.getLogger(__name__)

UpdateMode = Literal["task", "batch", "off"]
SelectMode = Literal["lexical", "embed", "llm"]
# passed: lessons only from a best candidate the (gold-free) verifier passed; best: from the
# best candidate whatever its verdict; all: from every task with an answer, the last
# candidate standing in when none was judged best.
WriteMode = Literal["passed", "best", "all"]
UPDATE_MODES: tuple[str, ...] = get_args(UpdateMode)
WRITE_MODES: tuple[str, ...] = get_args(WriteMode)
SELECT_MODES: tuple[str, ...] = get_args(SelectMode)


def default_query(task: Task) -> str:
    """What to search memory with: the task's ``memory_query`` (a string, or a method
    returning one), else its ``question`` string, else the text of its first prompt's
    user messages.

    Prompts that carry long context (a database schema) make poor queries; such tasks
    should have a ``question`` or a ``memory_query``.
    """
    for name in ("memory_query", "question"):
        q = getattr(task, name, None)
        if callable(q):
            q = q()
        if isinstance(q, str) and q.strip():
            return q
    return "\n".join(m.content for m in task.build_messages() if m.role == "user")


@dataclass(slots=True)
class MemoryCounters:
    """What a :class:`ConceptMemory` did in this session.

    ``retrieved``: concepts shown to tasks (summed over tasks). ``written``: drafts
    stored, ``inserted`` as new concepts plus ``merged`` into existing ones.
    ``abstractions``: abstraction calls attempted; each is ``accepted`` (gave drafts),
    ``declined`` (the model said there is no lesson) or rejected (``abstraction_errors``:
    unreadable, or the call failed), the first rejection's reason in ``first_rejection``.
    ``unverified_skipped``: tasks not written because their answer did not pass
    (``write="passed"``). ``usage``: tokens spent on abstraction and LLM selection.
    """

    retrieved: int = 0
    written: int = 0
    inserted: int = 0
    merged: int = 0
    abstractions: int = 0
    accepted: int = 0
    declined: int = 0
    abstraction_errors: int = 0
    first_rejection: str | None = None
    unverified_skipped: int = 0
    usage: Usage = field(default_factory=Usage)

    def reject(self, reason: str) -> None:
        self.abstraction_errors += 1
        if self.first_rejection is None:
            self.first_rejection = reason[:300]

    def to_dict(self) -> dict[str, Any]:
        """The run summary's ``"memory"`` entry."""
        return {
            "retrieved": self.retrieved,
            "written": self.written,
            "abstractions_attempted": self.abstractions,
            "abstractions_accepted": self.accepted,
            "abstractions_declined": self.declined,
            "abstractions_rejected": self.abstraction_errors,
            "first_rejection": self.first_rejection,
            "unverified_skipped": self.unverified_skipped,
        }


def merge_counts(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Two :meth:`MemoryCounters.to_dict` results as one (Ray workers each keep their own):
    counts add up, the first rejection found is kept."""
    out = dict(a or {})
    for key, value in b.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = out.get(key, 0) + value
        elif out.get(key) is None:
            out[key] = value
    return out


def _run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


class ConceptMemory:
    """Lessons in before a task, concepts out after it; see the module docstring.

    ``k``: most lessons shown per task. ``shortlist``: lexical hits that ``embed`` and
    ``llm`` selection choose from. ``backend`` writes the abstractions (needed unless
    ``update="off"``) and makes ``llm`` selections; ``abstraction="completion"`` suits
    small models that cannot write the JSON (see :func:`abstract`); ``constrain=False``
    sends abstraction requests without the lesson-format constraint. ``check_lessons``
    (the default) cuts a draft where the model started to loop (:func:`trim_loops`) and drops
    drafts that are instances rather than concepts (they copy the answer, restate the
    question or name its values: :func:`instance_problem`); an abstraction whose every draft
    is dropped counts as rejected, with the first reason. ``write``: which answers become
    lessons (see :data:`WriteMode`). ``verifier``: the verifier's name, kept in each
    lesson's provenance. ``batch_size`` flushes a batch early once that many
    trajectories wait. ``owns_store`` / ``owns_backend``: :meth:`aclose` closes them.
    """

    def __init__(
        self,
        store: MemoryStore,
        *,
        namespace: str,
        backend: Backend | None = None,
        update: UpdateMode = "task",
        select: SelectMode = "lexical",
        k: int = 3,
        shortlist: int = 20,
        run_id: str | None = None,
        embedder: Embedder | None = None,
        query: Callable[[Task], str] = default_query,
        max_concepts: int = 3,
        batch_size: int | None = None,
        concurrency: int = 4,
        owns_store: bool = False,
        abstraction: AbstractionStyle = "json",
        write: WriteMode = "passed",
        verifier: str | None = None,
        constrain: bool = True,
        owns_backend: bool = False,
        check_lessons: bool = True,
    ):
        if update not in UPDATE_MODES:
            raise ValueError(f"memory update mode must be one of {', '.join(UPDATE_MODES)}, got {update!r}")
        if select not in SELECT_MODES:
            raise ValueError(f"memory select mode must be one of {', '.join(SELECT_MODES)}, got {select!r}")
        if write not in WRITE_MODES:
            raise ValueError(f"memory write mode must be one of {', '.join(WRITE_MODES)}, got {write!r}")
        if abstraction not in ABSTRACTION_STYLES:
            raise ValueError(
                f"memory abstraction must be one of {', '.join(ABSTRACTION_STYLES)}, got {abstraction!r}"
            )
        if backend is None and (update != "off" or select == "llm"):
            raise ValueError(
                f"ConceptMemory(update={update!r}, select={select!r}) needs a backend to write "
                "abstractions or select lessons; pass backend=..., or update='off' with lexical/embed selection"
            )
        if k < 1 or shortlist < 1 or max_concepts < 0 or concurrency < 1:
            raise ValueError("k, shortlist and concurrency must be >= 1 and max_concepts >= 0")
        self.store = store
        self.namespace = check_namespace(namespace)
        self.backend = backend
        self.update = update
        self.select = select
        self.k = k
        self.shortlist = max(shortlist, k)
        self.run_id = run_id or _run_id()
        self.embedder = embedder if embedder is not None or select != "embed" else MiniLMEmbedder()
        self.query = query
        self.max_concepts = max_concepts
        self.abstraction = abstraction
        self.write = write
        self.verifier = verifier
        self.constrain = constrain
        self.check_lessons = check_lessons
        self.batch_size = batch_size
        self.counters = MemoryCounters()
        # Tokens spent for each task (LLM selection, abstraction) until the runner takes them.
        self._task_usage: dict[str, Usage] = {}
        self._task_written: dict[str, list[str]] = {}  # lessons written, per task, not yet taken
        self._pending: list[Trajectory] = []
        self._shown: set[str] = set()
        # Tasks whose trajectory this run has already written (or queued): never twice.
        self._written: set[str] = set()
        self.concurrency = concurrency
        self._owns_store = owns_store
        self._owns_backend = owns_backend

    @classmethod
    def open(
        cls, url: str | os.PathLike[str] | None = None, *, namespace: str, **kwargs: Any
    ) -> ConceptMemory:
        """A memory on its own :class:`SQLMemoryStore` at ``url`` (``None``: the default SQLite file).

        Keyword arguments are :class:`ConceptMemory`'s; :meth:`aclose` closes the store.
        """
        return cls(SQLMemoryStore(url), namespace=namespace, owns_store=True, **kwargs)

    def __repr__(self) -> str:
        return (
            f"<ConceptMemory {self.namespace!r} update={self.update} select={self.select} "
            f"k={self.k} write={self.write} store={self.store!r}>"
        )

    # --- LessonSource ------------------------------------------------------------------------

    async def retrieve(self, task: Task) -> list[str]:
        """Lesson lines for ``task`` (at most ``k``); every concept returned is recorded as shown."""
        query = self.query(task)
        if not query.strip():
            return []
        want = self.k if self.select == "lexical" else self.shortlist
        hits = await asyncio.to_thread(self.store.search, query, namespace=self.namespace, k=want)
        if hits and self.select == "embed":
            assert self.embedder is not None
            hits = await asyncio.to_thread(rerank, self.store, hits, query, self.embedder, self.k)
        elif hits and self.select == "llm":
            hits = await self._llm_select(query, hits, task.id)
        hits = hits[: self.k]
        if hits:
            await asyncio.to_thread(
                self.store.record_uses,
                [(h.concept.id, h.score) for h in hits],
                task_id=task.id,
                run_id=self.run_id,
            )
            self._shown.add(task.id)
        self.counters.retrieved += len(hits)
        return [h.concept.render() for h in hits]

    async def remember(self, task: Task, result: LoopResult) -> None:
        """Close the task's uses with its outcome; abstract and write (per ``write`` and ``update``)."""
        if task.id in self._shown:
            self._shown.discard(task.id)
            await asyncio.to_thread(
                self.store.record_outcome, task_id=task.id, run_id=self.run_id, passed=result.passed
            )
        if self.update == "off" or self.max_concepts == 0:
            return
        if self.write == "passed" and not result.passed:
            self.counters.unverified_skipped += 1
            return
        if self.write == "best" and result.best is None:
            return
        if task.id in self._written:
            log.info("memory: task %r already wrote in run %s; not writing again", task.id, self.run_id)
            return
        self._written.add(task.id)
        try:
            trajectory = Trajectory.from_result(self.query(task), result, require_pass=self.write == "passed")
        except ValueError:  # write="all" and not one candidate with text
            return
        if self.update == "task":
            await self._write([trajectory])
            return
        self._pending.append(trajectory)
        if self.batch_size is not None and len(self._pending) >= self.batch_size:
            await self.flush()

    # --- batches and lifetime ------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Trajectories waiting for :meth:`flush` (``update="batch"``)."""
        return len(self._pending)

    async def flush(self) -> int:
        """Abstract and write the waiting trajectories; returns how many drafts were stored."""
        batch, self._pending = self._pending, []
        return await self._write(batch) if batch else 0

    async def resume(self) -> int:
        """Take up run ``run_id`` again: tasks it already wrote concepts for are not written
        again. Returns how many such tasks the store holds.
        """
        done = await asyncio.to_thread(self.store.writes_by_run, self.run_id, namespace=self.namespace)
        self._written.update(done)
        return len(done)

    async def aclose(self, *, flush: bool = True) -> None:
        """Flush a waiting batch (unless ``flush=False``), then close the store and the backend
        this memory owns."""
        try:
            if flush:
                await self.flush()
        finally:
            try:
                if self._owns_store:
                    self.store.close()
            finally:
                if self._owns_backend and self.backend is not None:
                    await self.backend.aclose()

    async def __aenter__(self) -> ConceptMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def take_usage(self, task_id: str) -> Usage:
        """What memory has spent for ``task_id`` since the last call (and forget it).

        The runner charges this to the task, so that runs with and without memory are
        compared at their true cost. Abstractions of a ``batch`` flush happen after their
        tasks were stored; :attr:`unclaimed_usage` holds what no task took.
        """
        return self._task_usage.pop(task_id, Usage())

    def take_written(self, task_id: str) -> list[str]:
        """The lessons (rendered) written from ``task_id`` since the last call, and forget them."""
        return self._task_written.pop(task_id, [])

    def take_all_written(self) -> dict[str, list[str]]:
        """Every lesson written and not yet taken, by task id (a batch flush after its tasks were stored)."""
        out, self._task_written = self._task_written, {}
        return out

    @property
    def unclaimed_usage(self) -> Usage:
        """Spend not yet taken by :meth:`take_usage` (batch abstractions, mostly)."""
        total = Usage()
        for u in self._task_usage.values():
            total = total + u
        return total

    # --- internals -----------------------------------------------------------------------------

    def _charge(self, task_id: str, usage: Usage) -> None:
        self.counters.usage = self.counters.usage + usage
        self._task_usage[task_id] = self._task_usage.get(task_id, Usage()) + usage

    async def _write(self, trajectories: Sequence[Trajectory]) -> int:
        # Made per call: a semaphore binds to the event loop that first waits on it.
        sem = asyncio.Semaphore(self.concurrency)
        results = await asyncio.gather(*(self._abstract(t, sem) for t in trajectories))
        written = 0
        for trajectory, drafts in zip(trajectories, results, strict=True):
            if not drafts:
                continue
            added: list[AddResult] = await asyncio.to_thread(
                self.store.add_many,
                drafts,
                namespace=self.namespace,
                provenance=self._provenance(trajectory),
            )
            self._task_written.setdefault(trajectory.task_id, []).extend(a.concept.render() for a in added)
            for a in added:
                if a.action == "merged":
                    self.counters.merged += 1
                    log.info("memory: merged a draft into concept %d (%s)", a.concept.id, a.reason)
                else:
                    self.counters.inserted += 1
            written += len(added)
        self.counters.written += written
        return written

    def _provenance(self, trajectory: Trajectory) -> Provenance:
        evidence = Evidence(
            task_id=trajectory.task_id,
            run_id=self.run_id,
            candidate=trajectory.candidate,
            score=min(max(trajectory.score, 0.0), 1.0),
            passed=trajectory.passed,
            verifier=self.verifier or "",
        )
        return Provenance((trajectory.task_id,), (self.run_id,), evidence=(evidence,))

    async def _abstract(self, trajectory: Trajectory, sem: asyncio.Semaphore) -> list[ConceptDraft]:
        assert self.backend is not None
        async with sem:
            self.counters.abstractions += 1
            try:
                out = await abstract(
                    self.backend,
                    trajectory,
                    max_concepts=self.max_concepts,
                    style=self.abstraction,
                    constrain=self.constrain,
                )
            except Exception as exc:  # a failed abstraction must not fail the task it follows
                log.warning("memory: abstraction for task %r failed: %s", trajectory.task_id, exc)
                await self._count("rejected", f"task {trajectory.task_id!r}: {type(exc).__name__}: {exc}")
                return []
        self._charge(trajectory.task_id, out.usage)
        if out.error is not None:
            await self._count("rejected", f"task {trajectory.task_id!r}: {out.error}")
            return []
        drafts, problems = out.drafts, []
        if self.check_lessons:
            trimmed = [trim_loops(d) for d in out.drafts]
            checked = [(d, instance_problem(d, trajectory)) for d in trimmed]
            drafts = [d for d, problem in checked if problem is None]
            problems = [f"lesson {d.title[:60]!r} {problem}" for d, problem in checked if problem is not None]
        if problems and not drafts:
            await self._count("rejected", f"task {trajectory.task_id!r}: not a concept: {problems[0]}")
        else:
            await self._count("accepted" if drafts else "declined")
        return drafts

    async def _count(self, outcome: str, reason: str | None = None) -> None:
        """Count one abstraction here and in the store (``agentloop memory stats`` reads it there)."""
        if outcome == "rejected":
            self.counters.reject(reason or "")
        elif outcome == "accepted":
            self.counters.accepted += 1
        else:
            self.counters.declined += 1
        try:
            await asyncio.to_thread(self.store.record_abstraction, self.namespace, outcome, reason)
        except Exception as exc:  # a count that does not store must not fail the task
            log.warning("memory: could not store the abstraction count: %s", exc)

    async def _llm_select(self, query: str, hits: list[SearchHit], task_id: str) -> list[SearchHit]:
        """Let the backend choose from the shortlist (ArcMemo); the lexical order if its reply is unreadable."""
        assert self.backend is not None
        prompt = render_prompt(
            "memory_select",
            k=str(self.k),
            question=query.strip()[:3000],
            lessons="\n".join(f"{i}. {h.concept.render()}" for i, h in enumerate(hits, 1)),
        )
        request = ChatRequest(messages=(Message("user", prompt),), n=1, temperature=0.0, max_tokens=64)
        try:
            response = await self.backend.generate(request)
        except Exception as exc:
            log.warning("memory: LLM selection failed, using the lexical order: %s", exc)
            return hits[: self.k]
        self._charge(task_id, response.usage)
        chosen = parse_selection(response.texts[0] if response.completions else "", len(hits), self.k)
        if chosen is None:
            log.warning("memory: unreadable LLM selection, using the lexical order")
            return hits[: self.k]
        return [hits[i] for i in chosen]


def parse_selection(text: str, n: int, k: int) -> list[int] | None:
    """0-based indices of the chosen lessons (numbered from 1 in the prompt), at most ``k``;
    ``None`` when the reply holds no list.
    """
    data = extract_json(text)
    if isinstance(data, dict):
        data = next((data[key] for key in ("selected", "lessons", "chosen") if key in data), None)
    if not isinstance(data, list):
        return None
    out: list[int] = []
    for v in data:
        try:
            i = int(v) - 1
        except (TypeError, ValueError):
            continue
        if 0 <= i < n and i not in out:
            out.append(i)
    return out[:k]
