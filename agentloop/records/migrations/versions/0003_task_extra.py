"""A task's suite-owned fields as one JSON column (``extra``), instead of Spider's ``db_id`` on every suite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Rows stored before keep their ``db_id``; the store reads it back as ``extra["db_id"]``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("task_results")}
    if "extra" not in present:
        op.add_column("task_results", sa.Column("extra", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_results") as batch:
        batch.drop_column("extra")
