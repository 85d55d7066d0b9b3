"""Bring a run store's schema to the current revision with Alembic, safely under concurrency.

A store written before the run store had migrations (a ``run.sqlite`` from an older
agentloop) has the tables and no version table: it is stamped at ``0001``, the first
release's schema, and upgraded from there.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect

from agentloop._migrate import Migrations
from agentloop.errors import AgentloopError

__all__ = [
    "LEGACY_REVISION",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Not alembic_version: a database may hold concept memory too, whose revisions are there.
VERSION_TABLE = "agentloop_run_store_version"
# The revision whose schema a store made before migrations has at least.
LEGACY_REVISION = "0001"


def _legacy_revision(conn: Connection) -> str | None:
    return LEGACY_REVISION if inspect(conn).has_table("runs") else None  # see the module docstring


def _unknown_revision(current: str) -> AgentloopError:
    return AgentloopError(
        f"this run store is at schema revision {current!r}, which this version of agentloop does "
        "not know: it was written by a newer agentloop. Upgrade agentloop (or use another --store)."
    )


_RUN_STORE = Migrations(
    MIGRATIONS,
    lock_key=0x6167_7275_6E00,
    unknown_revision=_unknown_revision,
    version_table=VERSION_TABLE,
    legacy_revision=_legacy_revision,
)


def alembic_config() -> Config:
    return _RUN_STORE.config()


def head_revision() -> str:
    return _RUN_STORE.head()


def current_revision(conn: Connection) -> str | None:
    return _RUN_STORE.current(conn)


def has_store(conn: Connection) -> bool:
    """Whether the database holds a run store (migrated or from before migrations)."""
    return current_revision(conn) is not None or inspect(conn).has_table("runs")


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade ``engine``'s database to ``revision`` and return the revision it is at.

    Safe when several processes open one new database at once: see ``Migrations.upgrade``.
    """
    return _RUN_STORE.upgrade(engine, revision)
