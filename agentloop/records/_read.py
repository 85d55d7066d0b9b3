"""Reading runs back from the run store: stored tasks, whole runs, trajectories and prompts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentloop.records._db import RunNotFoundError
from agentloop.records._schema import CandidateRow, PromptRow, RunRow, TaskResultRow
from agentloop.types import Message, Role

__all__ = ["DEFAULT_RUN_NAME", "ReadMixin", "RunInfo", "StoredRun", "StoredTask", "needs_score"]

# The name of the one run in a run dir's own run.sqlite.
DEFAULT_RUN_NAME = "default"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredTask:
    """One task's row as read back (the trajectory is left out; see :meth:`RunStore.trajectory`)."""

    task_id: str
    index: int
    db_id: str | None
    difficulty: str | None
    question: str
    answer: str | None
    correct: bool
    passed: bool
    score: float
    candidates: int
    llm_calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    rounds: int
    stop_reason: str | None
    wall_s: float
    error: str | None
    eval_error: str | None
    attempt: int
    started: float
    finished: float
    reward: float | None = None
    source: str | None = None
    content_hash: str | None = None
    memory_llm_calls: int | None = None
    memory_prompt_tokens: int | None = None
    memory_completion_tokens: int | None = None
    stop_detail: str | None = None
    # The suite's own fields of the task (SuiteItem.extra). Rows stored before the column
    # existed carry Spider's database in ``db_id``; it is read back as ``extra["db_id"]``.
    extra: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.extra is None:
            object.__setattr__(self, "extra", {"db_id": self.db_id} if self.db_id else {})

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def value(self) -> float:
        """The task's number for means and paired comparisons: its reward, else 1.0 when correct."""
        return self.reward if self.reward is not None else float(self.correct)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StoredRun:
    name: str
    suite: str
    graph: str
    backend: str
    config: dict[str, Any]
    planned: int
    created: float
    updated: float
    wall_s: float
    sessions: int
    tasks: list[StoredTask]
    memory_usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of a store, as :meth:`RunStore.runs` lists them."""

    name: str
    suite: str
    graph: str
    backend: str
    planned: int
    tasks: int
    created: float
    updated: float


# StoredTask's fields in order, as task_results columns (StoredTask(*row) builds one).
_STORED_COLUMNS = tuple(getattr(TaskResultRow, f.name) for f in fields(StoredTask))


class ReadMixin:
    """The run store's reads; every one is a transaction, retried like the writes."""

    run_name: str
    safe_url: str

    def _call(self, fn: Callable[[Session], T], *, write: bool = False) -> T:
        raise NotImplementedError

    def _name(self, name: str | None) -> str:
        return self.run_name if name is None else name

    def load(self, name: str | None = None) -> StoredRun:
        """The run ``name`` (default: this store's run) with its task rows in task order."""
        name = self._name(name)

        def read(s: Session) -> StoredRun:
            run = s.scalar(select(RunRow).where(RunRow.name == name))
            if run is None:
                raise RunNotFoundError(f"no run named {name!r} in {self.safe_url}")
            # Only StoredTask's columns, as plain rows: a third of the ORM's time on a large run
            # (tracebacks and trajectories stay in the database).
            rows = s.execute(
                select(*_STORED_COLUMNS).where(TaskResultRow.run_id == run.id).order_by(TaskResultRow.index)
            ).all()
            return StoredRun(
                name=run.name,
                suite=run.suite,
                graph=run.graph,
                backend=run.backend,
                config=dict(run.config),
                planned=run.planned,
                created=run.created,
                updated=run.updated,
                wall_s=run.wall_s,
                sessions=run.sessions,
                tasks=[StoredTask(*r) for r in rows],
                memory_usage=dict(run.memory_usage) if run.memory_usage else None,
            )

        return self._call(read)

    def runs(self) -> list[RunInfo]:
        """Every run in the store, newest first."""
        counts = (
            select(TaskResultRow.run_id, func.count().label("n")).group_by(TaskResultRow.run_id).subquery()
        )
        query = (
            select(
                RunRow.name,
                RunRow.suite,
                RunRow.graph,
                RunRow.backend,
                RunRow.planned,
                func.coalesce(counts.c.n, 0),
                RunRow.created,
                RunRow.updated,
            )
            .outerjoin(counts, counts.c.run_id == RunRow.id)
            .order_by(RunRow.created.desc())
        )
        return self._call(lambda s: [RunInfo(*row) for row in s.execute(query)])

    def version(self, name: str | None = None) -> tuple[Any, ...]:
        """Changes whenever a task of the run is stored (or replaced) or the run's totals change."""
        name = self._name(name)
        query = (
            select(
                func.count(TaskResultRow.id),
                func.max(TaskResultRow.id),
                RunRow.updated,
                RunRow.wall_s,
                RunRow.sessions,
            )
            .select_from(RunRow)
            .outerjoin(TaskResultRow, TaskResultRow.run_id == RunRow.id)
            .where(RunRow.name == name)
            .group_by(RunRow.id)
        )
        return self._call(lambda s: tuple(s.execute(query).first() or ()))

    def prompts(self, task_id: str, name: str | None = None) -> dict[str, list[Message]]:
        """One task's prompts by prompt hash (empty for stores written before prompts were kept)."""
        query = (
            select(PromptRow.prompt_hash, PromptRow.messages)
            .join(TaskResultRow)
            .join(RunRow)
            .where(RunRow.name == self._name(name), TaskResultRow.task_id == task_id)
            .order_by(PromptRow.id)
        )
        rows = self._call(lambda s: s.execute(query).all())
        return {h: [Message(cast(Role, role), str(content)) for role, content in msgs] for h, msgs in rows}

    def trajectory(self, task_id: str, name: str | None = None) -> list[dict[str, Any]]:
        """One task's candidates in order, as dicts."""
        query = (
            select(CandidateRow)
            .join(TaskResultRow)
            .join(RunRow)
            .where(RunRow.name == self._name(name), TaskResultRow.task_id == task_id)
            .order_by(CandidateRow.position)
        )
        keys = [c.key for c in CandidateRow.__table__.columns if c.key not in ("id", "task_result_id")]
        return self._call(lambda s: [{k: getattr(row, k) for k in keys} for row in s.scalars(query)])

    def candidate_table(self, name: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every task's candidates in order, by task id: what curves over k read (no texts)."""
        query = (
            select(
                TaskResultRow.task_id,
                CandidateRow.position,
                CandidateRow.score,
                CandidateRow.passed,
                CandidateRow.verdict,
                CandidateRow.parse_error,
                CandidateRow.official,
            )
            .join(TaskResultRow, CandidateRow.task_result_id == TaskResultRow.id)
            .join(RunRow)
            .where(RunRow.name == self._name(name))
            .order_by(TaskResultRow.index, CandidateRow.position)
        )
        keys = ("position", "score", "passed", "verdict", "parse_error", "official")
        out: dict[str, list[dict[str, Any]]] = {}
        for row in self._call(lambda s: s.execute(query).all()):
            out.setdefault(row[0], []).append(dict(zip(keys, row[1:], strict=True)))
        return out

    def unscored_candidates(
        self, name: str | None = None, *, keys: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        """Every candidate of each task that has one without an official score, by task id, in order.

        What rescoring a run stored before revision 0004 reads (``official`` is NULL on the
        candidates to score; the task's others come too, since a suite scores one among them;
        ``id`` is the row's, for :meth:`RunStore.fill_official`). With ``keys``, a candidate
        that parsed but has no vote key (a ``best_of_n`` run never voted) also needs one.
        """
        query = (
            select(CandidateRow, TaskResultRow.task_id)
            .join(TaskResultRow, CandidateRow.task_result_id == TaskResultRow.id)
            .join(RunRow)
            .where(RunRow.name == self._name(name))
            .order_by(TaskResultRow.index, CandidateRow.position)
        )
        columns = [c.key for c in CandidateRow.__table__.columns if c.key != "task_result_id"]

        def read(s: Session) -> dict[str, list[dict[str, Any]]]:
            out: dict[str, list[dict[str, Any]]] = {}
            for row, task_id in s.execute(query):
                out.setdefault(task_id, []).append({k: getattr(row, k) for k in columns})
            return out

        table = self._call(read)
        return {t: cands for t, cands in table.items() if any(needs_score(c, keys=keys) for c in cands)}

    def task_extra(self, task_id: str, name: str | None = None) -> tuple[Any, Any, Any] | None:
        """One task's lessons shown, lessons written and traceback (what its page shows beyond the row)."""
        query = (
            select(TaskResultRow.lessons, TaskResultRow.lessons_written, TaskResultRow.error_detail)
            .join(RunRow)
            .where(RunRow.name == self._name(name), TaskResultRow.task_id == task_id)
        )
        row = self._call(lambda s: s.execute(query).first())
        return None if row is None else (row[0], row[1], row[2])


def needs_score(candidate: Mapping[str, Any], *, keys: bool = False) -> bool:
    """Whether a stored candidate row lacks its official score (or, with ``keys``, a vote key it could have)."""
    official = candidate.get("official")
    if official is None:
        return True
    return keys and candidate.get("parse_error") is None and official.get("key") is None
