"""Alembic environment for the memory store (the body is ``agentloop._migrate.run_env``)."""

from __future__ import annotations

from agentloop._migrate import run_env
from agentloop.memory.models import Base


def _include(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # The full-text index is dialect-specific DDL with no ORM form (see models.py).
    return not (name or "").startswith(("concepts_fts", "search_tsv", "ix_concepts_search_tsv"))


run_env(Base.metadata, example_file="memory.sqlite", include_object=_include)
