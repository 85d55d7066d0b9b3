"""The run store: each task's result and trajectory, committed through SQLAlchemy as the task finishes.

A run directory holds one run in ``RUN_DIR/run.sqlite`` (WAL), or, with ``--store URL``, a
``RUN_DIR/store.json`` that names the database (without its password) and the run's name
there: one database (PostgreSQL, or a shared SQLite file) holds many runs, told apart by
name. Every finished task is one transaction (its result row and all its candidates), so
a process killed at any moment loses only tasks that had not finished, and a resumed run
skips every stored task that did not error.

Writes are idempotent on (run, task): recording a task again replaces its row (the same
outcome again leaves it as it is), and on PostgreSQL writers of one task take turns, so
several processes may record at once and no task is counted twice. A write or read that
fails because the database went away (a restart) is retried with backoff for ``retry_s``
seconds, then fails with one line. Worker processes open the store with :func:`open_store`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import case, delete, func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from agentloop.errors import AgentloopError
from agentloop.records import migrate as run_migrate
from agentloop.records._db import (
    STORE_ENV,
    RunNotFoundError,
    RunStoreError,
    RunStoreUnavailableError,
    create_store_engine,
    db_reason,
    is_transient,
    read_marker,
    resolve_store_url,
    safe_url,
    same_database,
    task_lock,
    with_password,
    write_marker,
)
from agentloop.records._outcome import CandidateRecord, CandidateScore, TaskOutcome
from agentloop.records._read import DEFAULT_RUN_NAME, ReadMixin, RunInfo, StoredRun, StoredTask, needs_score
from agentloop.records._schema import CandidateRow, PromptRow, RunRow, TaskResultRow

__all__ = [
    "DEFAULT_RETRY_S",
    "DEFAULT_RUN_NAME",
    "RUN_DB",
    "STORE_ENV",
    "STORE_FILE",
    "CandidateRow",
    "ConfigMismatchError",
    "PromptRow",
    "RunExistsError",
    "RunInfo",
    "RunNotFoundError",
    "RunRow",
    "RunStore",
    "RunStoreError",
    "RunStoreUnavailableError",
    "StoredRun",
    "StoredTask",
    "TaskOutcome",
    "TaskResultRow",
    "CandidateRecord",
    "CandidateScore",
    "open_store",
    "read_marker",
    "resolve_store_url",
    "safe_url",
    "needs_score",
]

RUN_DB = "run.sqlite"
# In a run dir whose run is in a store elsewhere (--store URL): {"url": ..., "run": NAME}.
STORE_FILE = "store.json"
# How long a store keeps retrying a database that stopped answering before it gives up.
DEFAULT_RETRY_S = 60.0

log = logging.getLogger(__name__)
T = TypeVar("T")


class RunExistsError(AgentloopError):
    """The run directory already holds a run and ``resume`` was not asked for."""


class ConfigMismatchError(AgentloopError):
    """A resumed run was started with other settings; the message names the keys."""


# --- the store -----------------------------------------------------------------------------


class RunStore(ReadMixin):
    """Runs, task results and trajectories behind a SQLAlchemy engine.

    Calls are short and synchronous; the runner makes them from its event loop, one
    transaction per finished task. ``url`` is a SQLAlchemy URL or a SQLite file path (a
    PostgreSQL URL without a password takes it from :data:`STORE_ENV` when that names the same
    database, else from the driver's own sources: ``PGPASSWORD``, ``~/.pgpass``);
    ``run_name`` is the run that :meth:`load` and friends read when given no name.
    With ``create=False`` a store that does not exist raises :class:`RunNotFoundError`.
    An older store is upgraded to the current schema when it opens.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        create: bool = True,
        run_name: str = DEFAULT_RUN_NAME,
        retry_s: float = DEFAULT_RETRY_S,
    ):
        # A URL without a password takes the one AGENTLOOP_STORE_URL gives for the same database.
        self.url = with_password(resolve_store_url(url), None)
        self.safe_url = safe_url(self.url)
        self.run_name = run_name
        self.retry_s = retry_s
        self.engine: Engine = create_store_engine(self.url, create=create)
        # A run dir's record of where its run is, written once the run opens (see open_run).
        self._pending_marker: Path | None = None
        try:
            if not create:
                with self.engine.connect() as conn:
                    if not run_migrate.has_store(conn):
                        raise RunNotFoundError(f"no run store in {self.safe_url}: it holds no runs table")
            self.revision = run_migrate.upgrade(self.engine)
        except DBAPIError as exc:
            self.engine.dispose()
            # One line for the CLI: a server that is down, a wrong password, a file that is not a database.
            hint = (
                "check the path"
                if self.engine.dialect.name == "sqlite"
                else f"check the URL, that the server is running, and the password (give it in --store or {STORE_ENV})"
            )
            raise RunStoreError(
                f"cannot open the run store {self.safe_url}: {db_reason(exc)}; {hint}"
            ) from None
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(agentloop_write=True), expire_on_commit=False
        )

    @classmethod
    def for_run_dir(
        cls,
        run_dir: str | Path,
        *,
        create: bool = True,
        store: str | None = None,
        retry_s: float = DEFAULT_RETRY_S,
    ) -> RunStore:
        """The store of the run in ``run_dir``: its ``run.sqlite``, or the database its ``store.json`` names.

        ``store`` (a URL) puts a new run in that database, or gives the password of the one
        ``store.json`` names; without a password there, it comes from :data:`STORE_ENV` when that
        names the same database, else from the driver's own sources (``PGPASSWORD``, ``~/.pgpass``).
        ``create=False`` requires the run to exist already; reading, a ``store`` that is not the
        run's own is only passed over (``agentloop report`` reads runs of several stores at once).
        """
        directory = Path(run_dir)
        marker = directory / STORE_FILE
        path = directory / RUN_DB
        given = resolve_store_url(store) if store is not None else None
        if marker.is_file():
            recorded, name = read_marker(marker)
            if create and given is not None and not same_database(given, recorded):
                raise RunStoreError(
                    f"{directory} keeps its run in {safe_url(recorded)}, not in {safe_url(given)}; drop "
                    "--store to use the recorded store, or choose a new --run-dir"
                )
            return cls(with_password(recorded, given), create=create, run_name=name, retry_s=retry_s)
        if create and given is not None and path.is_file():
            raise RunStoreError(
                f"{directory} holds a run in its own {RUN_DB}; drop --store to use it, or choose a new "
                f"--run-dir for a run in {safe_url(given)}"
            )
        if not create or given is None:
            if not create and not path.is_file():
                raise RunNotFoundError(f"no run found in {run_dir} (expected {path} or {marker.name})")
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls(f"sqlite:///{path}", create=create, retry_s=retry_s)
        # A new run in the database at ``store`` (or one whose run dir is gone): named by the dir.
        out = cls(given, create=create, run_name=directory.resolve().name, retry_s=retry_s)
        out._pending_marker = marker
        return out

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RunStore {self.safe_url!r} run={self.run_name!r}>"

    def __getstate__(self) -> dict[str, Any]:
        # A store crosses to another process (a Ray worker) as its URL: engines do not travel.
        return {"url": self.url, "run_name": self.run_name, "retry_s": self.retry_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], run_name=state["run_name"], retry_s=state["retry_s"])  # type: ignore[misc]

    # -- transactions, retried -------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Session]:
        with (self._write_sessions if write else self._sessions).begin() as session:
            yield session

    def _call(self, fn: Callable[[Session], T], *, write: bool = False) -> T:
        """Run ``fn`` in one transaction; retry the whole of it while the database is away.

        Retries back off from 50 ms to 2 s for ``retry_s`` seconds after the first failure,
        then raise :class:`RunStoreUnavailableError`. Every write is safe to repeat.
        """
        delay, deadline = 0.05, None
        while True:
            try:
                with self._transaction(write=write) as s:
                    return fn(s)
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_s
                    log.warning(
                        "run store %s: %s; retrying for up to %g s",
                        self.safe_url,
                        db_reason(exc),
                        self.retry_s,
                    )
                if now >= deadline:
                    raise RunStoreUnavailableError(
                        f"the run store {self.safe_url} did not answer for {self.retry_s:g} s "
                        f"({db_reason(exc)}); every task stored before is kept: once the database is "
                        "back, finish the run with --resume"
                    ) from None
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, 2.0)

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
        name: str | None = None,
        compare: Sequence[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        where: str = "this store",
    ) -> int:
        """Create the run ``name`` (default: this store's run), or reopen it for ``resume``; returns its id.

        Reopening checks that ``config`` (only the ``compare`` keys, default all) matches
        what the run was started with, and raises :class:`ConfigMismatchError` naming the
        keys that differ; a key the stored config lacks (a setting added since) counts as
        its value in ``defaults``. Without ``resume``, an existing run raises :class:`RunExistsError`.
        """
        name = self._name(name)
        now = time.time()
        if self._pending_marker is not None:
            where = f"the run store {self.safe_url}, under the name {name!r},"

        def write(s: Session) -> int:
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

        run_id = self._call(write, write=True)
        if self._pending_marker is not None:
            write_marker(self._pending_marker, self.url, name)
            self._pending_marker = None
        return run_id

    def run_id(self, name: str | None = None) -> int:
        name = self._name(name)
        row_id = self._call(lambda s: s.scalar(select(RunRow.id).where(RunRow.name == name)))
        if row_id is None:
            raise RunNotFoundError(f"no run named {name!r} in {self.safe_url}")
        return row_id

    def finished_task_ids(self, run_id: int) -> set[str]:
        """Tasks stored without an error: a resumed run skips these."""
        query = select(TaskResultRow.task_id).where(
            TaskResultRow.run_id == run_id, TaskResultRow.error.is_(None)
        )
        return self._call(lambda s: set(s.scalars(query)))

    # -- tasks -----------------------------------------------------------------------------

    def record(self, run_id: int, outcome: TaskOutcome, *, run_wall_s: float | None = None) -> None:
        """Store one task's result and trajectory in one transaction, replacing an earlier attempt.

        The same outcome recorded again (a retry whose first commit did go through) leaves the
        row as it is. ``run_wall_s`` raises the run's total wall time in the same transaction.
        Safe to call from several processes at once.
        """

        def write(s: Session) -> None:
            if s.get_bind().dialect.name == "postgresql":
                # Writers of one task take turns; others go on (SQLite: BEGIN IMMEDIATE did it).
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": task_lock(run_id, outcome.task_id)})
            mine = (TaskResultRow.run_id == run_id, TaskResultRow.task_id == outcome.task_id)
            previous = s.execute(
                select(TaskResultRow.attempt, TaskResultRow.started, TaskResultRow.finished).where(*mine)
            ).first()
            if previous is not None and (previous.started, previous.finished) == (
                outcome.started,
                outcome.finished,
            ):
                return  # this very outcome is stored already
            if previous is not None:
                # Candidates go by ON DELETE CASCADE (PostgreSQL) or the explicit delete (SQLite
                # without foreign keys would keep them).
                ids = select(TaskResultRow.id).where(*mine)
                s.execute(delete(CandidateRow).where(CandidateRow.task_result_id.in_(ids)))
                s.execute(delete(PromptRow).where(PromptRow.task_result_id.in_(ids)))
                s.execute(delete(TaskResultRow).where(*mine))
            s.add(_task_row(run_id, outcome, attempt=(previous.attempt if previous else 0) + 1))
            values: dict[str, Any] = {"updated": outcome.finished}
            if run_wall_s is not None:
                # The larger: writers in several processes may finish out of order.
                values["wall_s"] = case((RunRow.wall_s < run_wall_s, run_wall_s), else_=RunRow.wall_s)
            s.execute(update(RunRow).where(RunRow.id == run_id).values(**values))

        self._call(write, write=True)

    def add_memory_usage(self, run_id: int, usage: Mapping[str, int]) -> None:
        """Add memory spend that no task claimed (batch abstractions) to the run's own total."""

        def write(s: Session) -> None:
            run = s.get(RunRow, run_id, with_for_update=s.get_bind().dialect.name == "postgresql")
            if run is not None:
                old = dict(run.memory_usage or {})
                run.memory_usage = {k: int(old.get(k, 0)) + int(v) for k, v in usage.items()}

        self._call(write, write=True)

    def add_lessons_written(self, run_id: int, written: Mapping[str, Sequence[str]]) -> None:
        """Add lessons memory wrote after their tasks were stored (a batch flush), by task id."""
        if not written:
            return

        def write(s: Session) -> None:
            query = select(TaskResultRow).where(
                TaskResultRow.run_id == run_id, TaskResultRow.task_id.in_(list(written))
            )
            for row in s.scalars(query):
                row.lessons_written = [*(row.lessons_written or []), *written[row.task_id]]

        self._call(write, write=True)

    def fill_official(self, scores: Mapping[int, CandidateScore]) -> int:
        """Store official scores computed since (rescoring), by candidate row id; returns how many.

        Only candidates still without one are written, so that filling twice, or from two
        processes at once, leaves the first scores in place; a task stored again meanwhile has
        new row ids, and keeps its own. A candidate that has a score but no vote key gets the
        key it is given (a ``best_of_n`` run's votes, computed later); its score stays. One
        transaction.
        """
        ids = sorted(scores)
        if not ids:
            return 0

        def write(s: Session) -> int:
            written = 0
            for i in range(0, len(ids), 500):  # SQLite's limit on bound parameters
                for row in s.scalars(select(CandidateRow).where(CandidateRow.id.in_(ids[i : i + 500]))):
                    new = scores[row.id]
                    if row.official is None:  # JSON null or SQL NULL: none yet
                        row.official = new.to_dict()
                        written += 1
                    elif new.key is not None and row.official.get("key") is None:
                        row.official = {**row.official, "key": new.key}
                        written += 1
            return written

        return self._call(write, write=True)

    def set_run_wall(self, run_id: int, wall_s: float) -> None:
        self._call(
            lambda s: s.execute(update(RunRow).where(RunRow.id == run_id).values(wall_s=wall_s)), write=True
        )

    def run_wall(self, run_id: int) -> float:
        return self._call(lambda s: s.scalar(select(RunRow.wall_s).where(RunRow.id == run_id))) or 0.0


def open_store(
    target: str | os.PathLike[str],
    *,
    create: bool = False,
    store: str | None = None,
    run_name: str | None = None,
    retry_s: float = DEFAULT_RETRY_S,
) -> RunStore:
    """Open a run store: ``target`` is a database URL, a run dir, or a run's name in a database.

    A run dir opens as :meth:`RunStore.for_run_dir` does (``store`` gives a new run's database
    or the recorded database's password). Without ``create``, a ``target`` that is not a
    directory names a run in the database at ``store`` (default: :data:`STORE_ENV`).

    For worker processes: each opens its own store from the driver's URL (with its password)
    and calls :meth:`RunStore.record` with the run id the driver got from :meth:`RunStore.open_run`.
    ``run_name`` picks the run that a URL store reads by default.
    """
    s = os.fspath(target)
    if "://" in s:
        return RunStore(s, create=create, run_name=run_name or DEFAULT_RUN_NAME, retry_s=retry_s)
    database = store or os.environ.get(STORE_ENV)
    if create or database is None or Path(s).is_dir():
        out = RunStore.for_run_dir(s, create=create, store=store, retry_s=retry_s)
    else:
        out = RunStore(database, create=False, retry_s=retry_s)
        out.run_name = s
        try:
            out.run_id(s)  # fail here, naming the run and where it was looked for
        except RunNotFoundError:
            out.close()
            raise RunNotFoundError(
                f"no run dir {s} here, and no run named {s!r} in {out.safe_url}; check the name "
                "(agentloop report --store URL lists the runs there)"
            ) from None
    if run_name is not None:
        out.run_name = run_name
    return out


# --- helpers -------------------------------------------------------------------------------


def _task_row(run_id: int, outcome: TaskOutcome, *, attempt: int) -> TaskResultRow:
    u = outcome.usage
    mu = outcome.memory_usage
    if mu is not None:
        u = u + mu  # the task's true cost includes what memory spent for it
    return TaskResultRow(
        run_id=run_id,
        task_id=outcome.task_id,
        index=outcome.index,
        difficulty=outcome.difficulty,
        extra=dict(outcome.extra) or None,
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
        attempt=attempt,
        started=outcome.started,
        finished=outcome.finished,
        trajectory=[
            _candidate_row(i, c, best=i == outcome.best_position, official=_official(outcome, i))
            for i, c in enumerate(outcome.candidates)
        ],
        prompts=[
            PromptRow(prompt_hash=h, messages=[[m.role, m.content] for m in msgs])
            for h, msgs in outcome.prompts.items()
        ],
    )


def _official(outcome: TaskOutcome, position: int) -> dict[str, Any] | None:
    scores = outcome.candidate_scores
    score = scores[position] if position < len(scores) else None
    return score.to_dict() if score is not None else None


def _candidate_row(
    position: int, c: CandidateRecord, *, best: bool, official: dict[str, Any] | None = None
) -> CandidateRow:
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
        official=official,
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON would store it (tuples become lists), so stored and new configs compare equal."""
    return json.loads(json.dumps(value, default=str))
