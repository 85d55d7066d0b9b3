"""Bring a run store's schema to the current revision with Alembic, safely under concurrency.

A store written before the run store had migrations (a ``run.sqlite`` from an older
agentloop) has the tables and no version table: it is stamped at ``0001``, the first
release's schema, and upgraded from there.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from agentloop.errors import AgentloopError

__all__ = [
    "LEGACY_REVISION",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
]

MIGRATIONS = Path(__file__).resolve().parent / "run_migrations"
# Not alembic_version: a database may hold concept memory too, whose revisions are there.
VERSION_TABLE = "agentloop_run_store_version"
# The revision whose schema a store made before migrations has at least.
LEGACY_REVISION = "0001"
# Any constant works; it only has to be the same in every process that migrates.
_PG_MIGRATION_LOCK = 0x6167_7275_6E00


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def has_store(conn: Connection) -> bool:
    """Whether the database holds a run store (migrated or from before migrations)."""
    return current_revision(conn) is not None or inspect(conn).has_table("runs")


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
            if current_revision(conn) is None and inspect(conn).has_table("runs"):
                command.stamp(cfg, LEGACY_REVISION)  # made before migrations: see the module docstring
            command.upgrade(cfg, revision)
        return current_revision(conn)


def _check_known(script: ScriptDirectory, current: str | None) -> None:
    if current is None:
        return
    try:
        script.get_revision(current)
    except CommandError:
        raise AgentloopError(
            f"this run store is at schema revision {current!r}, which this version of agentloop does "
            "not know: it was written by a newer agentloop. Upgrade agentloop (or use another --store)."
        ) from None
