"""Per-namespace abstraction counts: attempted, accepted, declined, rejected, first rejection.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "abstraction_stats",
        sa.Column("namespace", sa.String(200), nullable=False),
        sa.Column("attempted", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("declined", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("first_rejection", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("namespace", name="pk_abstraction_stats"),
    )


def downgrade() -> None:
    op.drop_table("abstraction_stats")
