"""The memory store's tables as SQLAlchemy 2.0 typed ORM classes, and the names of its search index.

Tables:

- ``concepts``: one abstract lesson (situation, cues, suggestion, typed parameters)
  with its provenance and counters. ``search_text`` holds the analysed terms of the
  title, situation, cues and suggestion (:func:`agentloop.memory.retrieval.analyze`).
- ``concept_uses``: which concept was shown to which task in which run, and how that
  task ended.
- ``abstraction_stats``: per namespace, how many abstractions were attempted, accepted,
  declined and rejected, and the first rejection's reason (``agentloop memory stats``).
- ``term_stats`` and ``namespace_stats``: per-namespace document frequencies and sizes,
  kept in step with ``concepts`` by the store, so a search reads a term's IDF with one
  primary-key lookup instead of counting postings.

The full-text index differs per database and is created by the migrations, not by
this metadata (it has no ORM form):

- SQLite: ``concepts_fts``, an FTS5 external-content table over
  ``concepts(namespace, search_text)`` kept in sync by three triggers.
- PostgreSQL: ``concepts.search_tsv``, a stored generated ``tsvector`` column
  (``to_tsvector('simple', search_text)``) with a GIN index.

Schema changes go through a new Alembic revision under ``migrations/versions``; a test
checks that the migrated schema matches this metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "FTS_TABLE",
    "TSV_COLUMN",
    "AbstractionStat",
    "Base",
    "Concept",
    "ConceptUse",
    "NamespaceStat",
    "TermStat",
    "UTCDateTime",
]

FTS_TABLE = "concepts_fts"
TSV_COLUMN = "search_tsv"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite keeps no offset, so it stores UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Concept(Base):
    __tablename__ = "concepts"
    __table_args__ = (
        UniqueConstraint("namespace", "title_key"),
        Index("ix_concepts_namespace_updated_at", "namespace", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Stable across databases: export/import matches concepts by it.
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    namespace: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    # The normalised title: a second concept with the same key merges into the first.
    title_key: Mapped[str] = mapped_column(String(255))
    situation: Mapped[str] = mapped_column(Text)
    cues: Mapped[list[str]] = mapped_column(JSONType)
    suggestion: Mapped[str] = mapped_column(Text)
    parameters: Mapped[list[dict[str, str]]] = mapped_column(JSONType)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONType)
    search_text: Mapped[str] = mapped_column(Text)
    search_len: Mapped[int] = mapped_column(Integer)
    # float32 vectors; deferred so that ordinary loads leave them out.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    embedding_model: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    success_count: Mapped[int] = mapped_column(Integer, default=0)
    # How many drafts this concept stands for: 1 when written, +1 per merge.
    support_count: Mapped[int] = mapped_column(Integer, default=1)


class ConceptUse(Base):
    __tablename__ = "concept_uses"
    __table_args__ = (Index("ix_concept_uses_task_id_run_id", "task_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    concept_id: Mapped[int] = mapped_column(ForeignKey("concepts.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(500))
    run_id: Mapped[str] = mapped_column(String(100))
    shown_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # "passed" or "failed" once the task has ended; NULL until then.
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)

    concept: Mapped[Concept] = relationship(lazy="raise")


class TermStat(Base):
    __tablename__ = "term_stats"
    # A search over all namespaces sums a term's df across them.
    __table_args__ = (Index("ix_term_stats_term", "term"),)

    namespace: Mapped[str] = mapped_column(String(200), primary_key=True)
    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    df: Mapped[int] = mapped_column(Integer)


class AbstractionStat(Base):
    __tablename__ = "abstraction_stats"

    namespace: Mapped[str] = mapped_column(String(200), primary_key=True)
    attempted: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[int] = mapped_column(Integer)
    declined: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    first_rejection: Mapped[str | None] = mapped_column(Text, nullable=True)


class NamespaceStat(Base):
    __tablename__ = "namespace_stats"

    namespace: Mapped[str] = mapped_column(String(200), primary_key=True)
    concepts: Mapped[int] = mapped_column(Integer)
    # Sum of the concepts' search_len: BM25's average document length is terms / concepts.
    terms: Mapped[int] = mapped_column(Integer)
