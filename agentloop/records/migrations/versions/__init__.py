"""Alembic revisions of the run store, oldest first (see ``0001_first_release.py``)."""
