"""Alembic revisions of the memory store, oldest first (see ``0001_initial.py``)."""
