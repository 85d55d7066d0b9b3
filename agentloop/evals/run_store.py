"""The run store: each task's result and trajectory, committed through SQLAlchemy as the task finishes.

A run directory holds one run in ``RUN_DIR/run.sqlite`` (WAL). Every finished task is one
transaction (its result row and all its candidates), so a process killed at any moment
loses only tasks that had not finished, and a resumed run skips every stored task that
did not error. Any SQLAlchemy URL works (PostgreSQL too); one database may hold many runs,
told apart by name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, delete, event, func, inspect, select
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from agentloop.backends._types import Message, Role
from agentloop.errors import AgentloopError
from agentloop.evals._run_schema import Base, CandidateRow, PromptRow, RunRow, TaskResultRow
from agentloop.graphs.budget import LoopUsage
from agentloop.graphs.task import Candidate

__all__ = [
    "DEFAULT_RUN_NAME",
    "RUN_DB",
    "CandidateRow",
    "ConfigMismatchError",
    "PromptRow",
    "RunExistsError",
    "RunNotFoundError",
    "RunRow",
    "RunStore",
    "StoredRun",
    "StoredTask",
    "TaskOutcome",
    "TaskResultRow",
]

RUN_DB = "run.sqlite"
DEFAULT_RUN_NAME = "default"


class RunNotFoundError(AgentloopError, FileNotFoundError):
    """There is no run where one was expected."""


class RunExistsError(AgentloopError):
    """The run directory already holds a run and ``resume`` was not asked for."""


class ConfigMismatchError(AgentloopError):
    """A resumed run was started with other settings; the message names the keys."""


# --- values in and out ---------------------------------------------------------------------


@dataclass(slots=True)
class TaskOutcome:
    """What the runner hands the store for one finished (or failed) task."""

    task_id: str
    index: int
    question: str
    correct: bool
    started: float
    finished: float
    wall_s: float
    db_id: str | None = None
    difficulty: str | None = None
    answer: str | None = None
    reward: float | None = None
    passed: bool = False
    score: float = 0.0
    usage: LoopUsage = field(default_factory=LoopUsage)
    rounds: int = 0
    stop_reason: str | None = None
    error: str | None = None
    error_detail: str | None = None
    eval_error: str | None = None
    candidates: Sequence[Candidate] = ()
    best_position: int | None = None
    source: str | None = None
    content_hash: str | None = None
    # What concept memory spent for this task; stored on its own and added to the totals.
    memory_usage: LoopUsage | None = None
    stop_detail: str | None = None
    # The lessons memory showed the task and those written from it, and every prompt its
    # candidates came from by prompt hash: what a viewer shows of each round.
    lessons: Sequence[str] | None = None
    lessons_written: Sequence[str] | None = None
    prompts: Mapping[str, Sequence[Message]] = field(default_factory=dict)


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


# --- the store -----------------------------------------------------------------------------


class RunStore:
    """Runs, task results and trajectories behind a SQLAlchemy engine.

    Calls are short and synchronous; the runner makes them from its event loop, one
    transaction per finished task.
    """

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if create:
            Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def for_run_dir(cls, run_dir: str | Path, *, create: bool = True) -> RunStore:
        """The store in ``run_dir/run.sqlite``; ``create=False`` requires it to exist already."""
        path = Path(run_dir) / RUN_DB
        if not create and not path.is_file():
            raise RunNotFoundError(f"no run found in {run_dir} (expected {path})")
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}", create=create)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- runs ------------------------------------------------------------------------------

    def open_run(
        self,
        *,
        suite: str,
        graph: str,
        backend: str,
        config: Mapping[str, Any],
        planned: int,
        resume: bool,
        name: str = DEFAULT_RUN_NAME,
        compare: Sequence[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        where: str = "this store",
    ) -> int:
        """Create the run ``name``, or reopen it for ``resume``; returns its id.

        Reopening checks that ``config`` (only the ``compare`` keys, default all) matches
        what the run was started with, and raises :class:`ConfigMismatchError` naming the
        keys that differ; a key the stored config lacks (a setting added since) counts as
        its value in ``defaults``. Without ``resume``, an existing run raises :class:`RunExistsError`.
        """
        now = time.time()
        with self._transaction() as s:
            row = s.scalar(select(RunRow).where(RunRow.name == name))
            if row is None:
                row = RunRow(
                    name=name,
                    suite=suite,
                    graph=graph,
                    backend=backend,
                    config=_plain(config),
                    planned=planned,
                    created=now,
                    updated=now,
                    wall_s=0.0,
                    sessions=1,
                )
                s.add(row)
                s.flush()
                return row.id
            done = s.scalar(select(func.count()).where(TaskResultRow.run_id == row.id)) or 0
            if not resume:
                raise RunExistsError(
                    f"{where} already holds a run ({done} of {row.planned} tasks stored); pass --resume "
                    "to finish it, or choose a new --run-dir"
                )
            keys = list(compare) if compare is not None else sorted(set(config) | set(row.config))
            stored = {**_plain(dict(defaults or {})), **row.config}
            differ = [k for k in keys if _plain(config.get(k)) != stored.get(k)]
            if differ:
                changes = ", ".join(f"{k}: {stored.get(k)!r} -> {_plain(config.get(k))!r}" for k in differ)
                raise ConfigMismatchError(
                    f"{where} holds a run with a different config ({changes}); rerun with the original "
                    "settings to resume it, or choose a new --run-dir"
                )
            row.sessions += 1
            row.updated = now
            row.planned = max(planned, done)
            row.config = {**stored, **_plain({k: v for k, v in config.items() if k not in keys})}
            return row.id

    def run_id(self, name: str = DEFAULT_RUN_NAME) -> int:
        with self._transaction() as s:
            row_id = s.scalar(select(RunRow.id).where(RunRow.name == name))
        if row_id is None:
            raise RunNotFoundError(f"no run named {name!r} in {self.url}")
        return row_id

    def finished_task_ids(self, run_id: int) -> set[str]:
        """Tasks stored without an error: a resumed run skips these."""
        with self._transaction() as s:
            rows = s.scalars(
                select(TaskResultRow.task_id).where(
                    TaskResultRow.run_id == run_id, TaskResultRow.error.is_(None)
                )
            )
            return set(rows)

    # -- tasks -----------------------------------------------------------------------------

    def record(self, run_id: int, outcome: TaskOutcome, *, run_wall_s: float | None = None) -> None:
        """Store one task's result and trajectory in one transaction, replacing an earlier attempt.

        ``run_wall_s`` updates the run's total wall time in the same transaction.
        """
        with self._transaction() as s:
            previous = s.scalar(
                select(TaskResultRow.attempt).where(
                    TaskResultRow.run_id == run_id, TaskResultRow.task_id == outcome.task_id
                )
            )
            if previous is not None:
                # Candidates go by ON DELETE CASCADE (PostgreSQL) or the explicit delete (SQLite
                # without foreign keys would keep them).
                ids = select(TaskResultRow.id).where(
                    TaskResultRow.run_id == run_id, TaskResultRow.task_id == outcome.task_id
                )
                s.execute(delete(CandidateRow).where(CandidateRow.task_result_id.in_(ids)))
                s.execute(delete(PromptRow).where(PromptRow.task_result_id.in_(ids)))
                s.execute(
                    delete(TaskResultRow).where(
                        TaskResultRow.run_id == run_id, TaskResultRow.task_id == outcome.task_id
                    )
                )
            u = outcome.usage
            mu = outcome.memory_usage
            if mu is not None:
                u = u + mu  # the task's true cost includes what memory spent for it
            row = TaskResultRow(
                run_id=run_id,
                task_id=outcome.task_id,
                index=outcome.index,
                db_id=outcome.db_id,
                difficulty=outcome.difficulty,
                question=outcome.question,
                source=outcome.source,
                content_hash=outcome.content_hash,
                answer=outcome.answer,
                correct=outcome.correct,
                reward=outcome.reward,
                passed=outcome.passed,
                score=outcome.score,
                candidates=u.candidates,
                llm_calls=u.llm_calls,
                failed_calls=u.failed_calls,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                cost_usd=u.cost_usd,
                memory_llm_calls=mu.llm_calls if mu is not None else None,
                memory_prompt_tokens=mu.prompt_tokens if mu is not None else None,
                memory_completion_tokens=mu.completion_tokens if mu is not None else None,
                rounds=outcome.rounds,
                stop_reason=outcome.stop_reason,
                stop_detail=outcome.stop_detail or None,
                lessons=list(outcome.lessons) if outcome.lessons is not None else None,
                lessons_written=list(outcome.lessons_written) if outcome.lessons_written else None,
                wall_s=outcome.wall_s,
                error=outcome.error,
                error_detail=outcome.error_detail,
                eval_error=outcome.eval_error,
                attempt=(previous or 0) + 1,
                started=outcome.started,
                finished=outcome.finished,
                trajectory=[
                    _candidate_row(i, c, best=i == outcome.best_position)
                    for i, c in enumerate(outcome.candidates)
                ],
                prompts=[
                    PromptRow(prompt_hash=h, messages=[[m.role, m.content] for m in msgs])
                    for h, msgs in outcome.prompts.items()
                ],
            )
            s.add(row)
            run = s.get(RunRow, run_id)
            if run is not None:
                run.updated = outcome.finished
                if run_wall_s is not None:
                    run.wall_s = run_wall_s

    def add_memory_usage(self, run_id: int, usage: Mapping[str, int]) -> None:
        """Add memory spend that no task claimed (batch abstractions) to the run's own total."""
        with self._transaction() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                old = dict(run.memory_usage or {})
                run.memory_usage = {k: int(old.get(k, 0)) + int(v) for k, v in usage.items()}

    def add_lessons_written(self, run_id: int, written: Mapping[str, Sequence[str]]) -> None:
        """Add lessons memory wrote after their tasks were stored (a batch flush), by task id."""
        if not written:
            return
        with self._transaction() as s:
            rows = s.scalars(
                select(TaskResultRow).where(
                    TaskResultRow.run_id == run_id, TaskResultRow.task_id.in_(list(written))
                )
            )
            for row in rows:
                row.lessons_written = [*(row.lessons_written or []), *written[row.task_id]]

    def set_run_wall(self, run_id: int, wall_s: float) -> None:
        with self._transaction() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                run.wall_s = wall_s

    def run_wall(self, run_id: int) -> float:
        with self._transaction() as s:
            return s.scalar(select(RunRow.wall_s).where(RunRow.id == run_id)) or 0.0

    # -- reading ---------------------------------------------------------------------------

    def load(self, name: str = DEFAULT_RUN_NAME) -> StoredRun:
        """The run ``name`` with its task rows in task order."""
        with self._transaction() as s:
            run = s.scalar(select(RunRow).where(RunRow.name == name))
            if run is None:
                raise RunNotFoundError(f"no run named {name!r} in {self.url}")
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

    def prompts(self, task_id: str, name: str = DEFAULT_RUN_NAME) -> dict[str, list[Message]]:
        """One task's prompts by prompt hash (empty for stores written before prompts were kept)."""
        with self._transaction() as s:
            rows = s.execute(
                select(PromptRow.prompt_hash, PromptRow.messages)
                .join(TaskResultRow)
                .join(RunRow)
                .where(RunRow.name == name, TaskResultRow.task_id == task_id)
                .order_by(PromptRow.id)
            ).all()
        return {h: [Message(cast(Role, role), str(content)) for role, content in msgs] for h, msgs in rows}

    def trajectory(self, task_id: str, name: str = DEFAULT_RUN_NAME) -> list[dict[str, Any]]:
        """One task's candidates in order, as dicts."""
        with self._transaction() as s:
            rows = s.scalars(
                select(CandidateRow)
                .join(TaskResultRow)
                .join(RunRow)
                .where(RunRow.name == name, TaskResultRow.task_id == task_id)
                .order_by(CandidateRow.position)
            ).all()
            return [
                {
                    c.key: getattr(row, c.key)
                    for c in CandidateRow.__table__.columns
                    if c.key not in ("id", "task_result_id")
                }
                for row in rows
            ]


# StoredTask's fields in order, as task_results columns (StoredTask(*row) builds one).
_STORED_COLUMNS = tuple(getattr(TaskResultRow, f.name) for f in fields(StoredTask))


def _add_missing_columns(engine: Engine) -> None:
    """Add the nullable columns that newer versions define to tables an older version created.

    ``create_all`` makes missing tables but never alters existing ones, so a run dir written
    before a column existed would fail every read. Only nullable columns are ever added.
    """
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in present]
        if not missing:
            continue
        with engine.begin() as conn:
            for column in missing:
                if not column.nullable:
                    raise AgentloopError(
                        f"{engine.url}: table {table.name} lacks the required column {column.name}"
                    )
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sql_text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: a reader (agentloop report) never blocks the writer. synchronous=NORMAL keeps every
    # commit safe from a killed process (not from power loss), at a fraction of FULL's cost.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _candidate_row(position: int, c: Candidate, *, best: bool) -> CandidateRow:
    answer = c.answer if c.answer is None or isinstance(c.answer, str) else json.dumps(c.to_dict()["answer"])
    return CandidateRow(
        position=position,
        round=c.round,
        index=c.index,
        call=c.call,
        prompt_hash=c.prompt_hash,
        text=c.text,
        answer=answer,
        parse_error=c.parse_error,
        verdict=c.verdict.to_dict() if c.verdict is not None else None,
        score=c.score,
        passed=c.passed,
        best=best,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        latency_s=c.latency_s,
        verify_s=c.verify_s,
        finish_reason=c.finish_reason,
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON would store it (tuples become lists), so stored and new configs compare equal."""
    return json.loads(json.dumps(value, default=str))
