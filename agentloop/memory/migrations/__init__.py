"""Alembic migrations of the memory store; the store runs them to head when it opens."""
