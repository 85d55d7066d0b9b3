"""Bring a memory database's schema to the current revision with Alembic, safely under concurrency."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import Connection, Engine

from agentloop._migrate import Migrations
from agentloop.memory._types import MemoryStoreError

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _unknown_revision(current: str) -> MemoryStoreError:
    return MemoryStoreError(
        f"this memory database is at schema revision {current!r}, which this version of "
        "agentloop does not know: it was written by a newer agentloop. Upgrade agentloop "
        "(or point --memory at another database)."
    )


# The revisions are in the default version table, alembic_version.
_MEMORY = Migrations(MIGRATIONS, lock_key=0x6167_6D65_6D00, unknown_revision=_unknown_revision)


def alembic_config() -> Config:
    return _MEMORY.config()


def head_revision() -> str:
    return _MEMORY.head()


def current_revision(conn: Connection) -> str | None:
    return _MEMORY.current(conn)


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade ``engine``'s database to ``revision`` and return the revision it is at.

    Safe when several processes open one new database at once: see ``Migrations.upgrade``.
    """
    return _MEMORY.upgrade(engine, revision)
