"""What runs stored after the first release: rewards, task sources, memory spend, lessons, prompts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Before migrations these came one by one (``create_all`` and a column patch on open), so
a store stamped at 0001 may have any of them already: only what is missing is added.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ADDED: dict[str, list[sa.Column]] = {  # type: ignore[type-arg]
    "runs": [sa.Column("memory_usage", sa.JSON(), nullable=True)],
    "task_results": [
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("memory_llm_calls", sa.Integer(), nullable=True),
        sa.Column("memory_prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("memory_completion_tokens", sa.Integer(), nullable=True),
        sa.Column("stop_detail", sa.Text(), nullable=True),
        sa.Column("lessons", sa.JSON(), nullable=True),
        sa.Column("lessons_written", sa.JSON(), nullable=True),
    ],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in ADDED.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:
                op.add_column(table, column)
    if not inspector.has_table("prompts"):
        op.create_table(
            "prompts",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column(
                "task_result_id",
                sa.Integer(),
                sa.ForeignKey("task_results.id", ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("prompt_hash", sa.String(64), nullable=False),
            sa.Column("messages", sa.JSON(), nullable=False),
        )
        op.create_index("ix_prompts_task_result_id", "prompts", ["task_result_id"])


def downgrade() -> None:
    op.drop_table("prompts")
    for table, columns in ADDED.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
