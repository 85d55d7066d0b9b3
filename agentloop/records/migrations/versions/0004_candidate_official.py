"""Each candidate's official score (correct, reward, vote key), so curves need no rescoring.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

Candidates stored before keep ``official`` NULL: a curve over such a run is refused with
one line (or rescored by a caller that has the suite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("candidates")}
    if "official" not in present:
        op.add_column("candidates", sa.Column("official", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("official")
