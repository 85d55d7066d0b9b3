"""Alembic environment for the run store (the body is ``agentloop._migrate.run_env``).

The run store keeps its revision in its own table, ``VERSION_TABLE``: one PostgreSQL
database may hold runs and concept memory, and the memory store's revisions are in
``alembic_version``.
"""

from __future__ import annotations

from agentloop._migrate import run_env
from agentloop.records._schema import Base
from agentloop.records.migrate import VERSION_TABLE

run_env(Base.metadata, example_file="run.sqlite", version_table=VERSION_TABLE)
