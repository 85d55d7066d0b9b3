"""Alembic upgrades shared by the memory store and the run store, safe under concurrency.

Each store has its own script directory, version table and lock key (one PostgreSQL
database may hold both); this module knows neither store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, MetaData, create_engine, text

__all__ = ["Migrations", "run_env"]


@dataclass(frozen=True)
class Migrations:
    """One store's migrations: where its scripts are and how its upgrades are kept apart."""

    location: Path
    # Any constant works; it only has to be the same in every process that migrates.
    lock_key: int
    # The error for a database at a revision these scripts do not know (a newer agentloop's).
    unknown_revision: Callable[[str], Exception]
    version_table: str = "alembic_version"
    # For a database with no version table: the revision whose schema it already has
    # (made before the store had migrations), or None for an empty one.
    legacy_revision: Callable[[Connection], str | None] | None = None

    def config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.location))
        return cfg

    def head(self) -> str:
        head = ScriptDirectory.from_config(self.config()).get_current_head()
        assert head is not None
        return head

    def current(self, conn: Connection) -> str | None:
        opts = {"version_table": self.version_table}
        return MigrationContext.configure(conn, opts=opts).get_current_revision()

    def upgrade(self, engine: Engine, revision: str = "head") -> str | None:
        """Upgrade ``engine``'s database to ``revision`` and return the revision it is at.

        Processes that open one new database at once each get here; the migration runs in
        one transaction under a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory
        lock), so the first one migrates and the others find the work done.
        """
        script = ScriptDirectory.from_config(self.config())
        target = script.get_current_head() if revision == "head" else revision
        with engine.connect() as conn:
            current = self.current(conn)
        if current == target:
            return current
        self._check_known(script, current)
        with engine.execution_options(agentloop_write=True).connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.lock_key})
            if self.current(conn) != target:
                cfg = self.config()
                cfg.attributes["connection"] = conn
                if self.legacy_revision is not None and self.current(conn) is None:
                    legacy = self.legacy_revision(conn)
                    if legacy is not None:
                        command.stamp(cfg, legacy)
                command.upgrade(cfg, revision)
            return self.current(conn)

    def _check_known(self, script: ScriptDirectory, current: str | None) -> None:
        if current is None:
            return
        try:
            script.get_revision(current)
        except CommandError:
            raise self.unknown_revision(current) from None


def run_env(
    target_metadata: MetaData,
    *,
    example_file: str,
    version_table: str = "alembic_version",
    include_object: Callable[..., bool] | None = None,
) -> None:
    """The body of a store's Alembic ``env.py``.

    The store passes an open connection (already in a transaction and holding the
    migration lock) as ``config.attributes["connection"]``. Without one, for ``alembic``
    run by hand with ``-x url=...``, it connects itself; ``example_file`` names the
    SQLite file in the hint when no URL is given.
    """
    config = context.config

    def migrate(connection: Any) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=version_table,
            render_as_batch=connection.dialect.name == "sqlite",
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = config.attributes.get("connection")
    if connection is not None:
        migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(
            f"pass the database as: alembic -x url=sqlite:///path/to/{example_file} upgrade head"
        )
    with create_engine(url).connect() as conn, conn.begin():
        migrate(conn)
