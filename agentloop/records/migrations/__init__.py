"""Alembic migrations of the run store; the store runs them to head when it opens."""
