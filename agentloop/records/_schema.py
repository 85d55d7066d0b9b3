"""The run store's tables: runs, task results and their candidates (SQLAlchemy ORM)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "CandidateRow", "PromptRow", "RunRow", "TaskResultRow"]


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    suite: Mapped[str] = mapped_column(String(100))
    graph: Mapped[str] = mapped_column(String(100))
    backend: Mapped[str] = mapped_column(String(500))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    planned: Mapped[int] = mapped_column(Integer)  # tasks the run is meant to finish
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)
    # Wall time of every session of the run, summed (kept current as each task commits).
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    sessions: Mapped[int] = mapped_column(Integer, default=1)
    # Memory spend no task claimed (abstractions of a batch flush after its tasks were stored):
    # {"llm_calls", "prompt_tokens", "completion_tokens"}, summed over sessions.
    memory_usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    tasks: Mapped[list[TaskResultRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class TaskResultRow(Base):
    __tablename__ = "task_results"
    __table_args__ = (UniqueConstraint("run_id", "task_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(200))
    index: Mapped[int] = mapped_column(Integer)
    db_id: Mapped[str | None] = mapped_column(String(200))  # before 0003; now in extra
    difficulty: Mapped[str | None] = mapped_column(String(20))
    question: Mapped[str] = mapped_column(Text)
    # Which data the task came from and a hash of its content: `report --compare` pairs tasks
    # only when their content hashes match. NULL in stores written before they existed.
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    answer: Mapped[str | None] = mapped_column(Text)  # the final answer (for Text2SQL, the SQL)
    correct: Mapped[bool] = mapped_column(Boolean)
    # The final answer's reward in [0, 1] for suites scored by reward (WebShop); NULL otherwise.
    # Added after the first release: _add_missing_columns gives older run stores the column.
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The suite's own fields of the task (SuiteItem.extra: Spider's db_id); revision 0003.
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    passed: Mapped[bool] = mapped_column(Boolean)  # did the run's verifier pass the final answer
    score: Mapped[float] = mapped_column(Float)  # the verifier's score of the final answer
    candidates: Mapped[int] = mapped_column(Integer, default=0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    failed_calls: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    # The part of the tokens and calls above that concept memory spent (selection, abstraction).
    memory_llm_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory_prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory_completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    stop_reason: Mapped[str | None] = mapped_column(String(40))
    stop_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The lessons concept memory showed the task, and those written from it (rendered lines).
    lessons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    lessons_written: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    wall_s: Mapped[float] = mapped_column(Float)
    # Why the task failed to run (an exception, a backend error); such tasks are retried on resume.
    error: Mapped[str | None] = mapped_column(Text)
    error_detail: Mapped[str | None] = mapped_column(Text)
    # Why the final answer scored wrong when that was an error (the SQL failed, say).
    eval_error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    started: Mapped[float] = mapped_column(Float)
    finished: Mapped[float] = mapped_column(Float)

    run: Mapped[RunRow] = relationship(back_populates="tasks")
    trajectory: Mapped[list[CandidateRow]] = relationship(
        back_populates="task",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="CandidateRow.position",
    )
    prompts: Mapped[list[PromptRow]] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True
    )


class CandidateRow(Base):
    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_result_id: Mapped[int] = mapped_column(ForeignKey("task_results.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the trajectory
    round: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    call: Mapped[int] = mapped_column(Integer)
    prompt_hash: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    parse_error: Mapped[str | None] = mapped_column(Text)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    score: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    best: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Float)
    verify_s: Mapped[float] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(20))
    # The suite's official score of this candidate as if it were the final answer:
    # {"correct": bool, "reward": float | None, "key": str | None} (key: its self-consistency
    # vote key, when the graph voted). Revision 0004; NULL for candidates stored before.
    official: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    task: Mapped[TaskResultRow] = relationship(back_populates="trajectory")


class PromptRow(Base):
    """One distinct prompt a task's candidates were sampled from (``CandidateRow.prompt_hash``).

    Added after the first release: ``create_all`` gives older run stores the table, empty.
    """

    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_result_id: Mapped[int] = mapped_column(ForeignKey("task_results.id", ondelete="CASCADE"), index=True)
    prompt_hash: Mapped[str] = mapped_column(String(64))
    messages: Mapped[list[list[str]]] = mapped_column(JSON)  # [[role, content], ...]

    task: Mapped[TaskResultRow] = relationship(back_populates="prompts")
