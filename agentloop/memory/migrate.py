"""Bring a memory database's schema to the current revision with Alembic, safely under concurrency."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, text

from agentloop.memory._types import MemoryStoreError

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates.
_PG_MIGRATION_LOCK = 0x6167_6D65_6D00


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade ``engine``'s database to ``revision`` and return the revision it is at.

    Processes that open one new database at once each get here; the migration runs in
    one transaction under a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory
    lock), so the first one migrates and the others find the work done.
    """
    script = ScriptDirectory.from_config(alembic_config())
    target = script.get_current_head() if revision == "head" else revision
    with engine.connect() as conn:
        current = current_revision(conn)
    if current == target:
        return current
    _check_known(script, current)
    with engine.execution_options(agentloop_write=True).connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        if current_revision(conn) != target:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return current_revision(conn)


def _check_known(script: ScriptDirectory, current: str | None) -> None:
    if current is None:
        return
    try:
        script.get_revision(current)
    except CommandError:
        raise MemoryStoreError(
            f"this memory database is at schema revision {current!r}, which this version of "
            "agentloop does not know: it was written by a newer agentloop. Upgrade agentloop "
            "(or point --memory at another database)."
        ) from None
