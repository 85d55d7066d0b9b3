"""Alembic environment for the memory store.

The store passes an open connection (already in a transaction and holding the
migration lock) as ``config.attributes["connection"]``. Without one, for ``alembic``
run by hand with ``-x url=...``, it connects itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from agentloop.memory.models import Base


def _include(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # The full-text index is dialect-specific DDL with no ORM form (see models.py).
    return not (name or "").startswith(("concepts_fts", "search_tsv", "ix_concepts_search_tsv"))


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the database as: alembic -x url=sqlite:///path/to/memory.sqlite upgrade head")
    with create_engine(url).connect() as conn, conn.begin():
        _migrate(conn)


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=_include,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
