"""Alembic environment for the run store.

The store passes an open connection (already in a transaction and holding the
migration lock) as ``config.attributes["connection"]``. Without one, for ``alembic``
run by hand with ``-x url=...``, it connects itself.

The run store keeps its revision in its own table, ``VERSION_TABLE``: one PostgreSQL
database may hold runs and concept memory, and the memory store's revisions are in
``alembic_version``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from agentloop.evals._run_schema import Base
from agentloop.evals.run_migrate import VERSION_TABLE


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the database as: alembic -x url=sqlite:///path/to/run.sqlite upgrade head")
    with create_engine(url).connect() as conn, conn.begin():
        _migrate(conn)


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
