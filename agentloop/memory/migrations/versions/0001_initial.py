"""Concepts, their uses, term statistics and the full-text index.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Revisions are frozen history: they spell out their DDL instead of importing
``agentloop.memory.models``, whose later changes must not rewrite old migrations.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)

SQLITE_FTS = [
    # External content: the index stores terms only and reads rows from `concepts`.
    # The `ascii` tokenizer splits exactly where the analyser joined terms with spaces
    # (terms hold no ASCII punctuation), so an indexed term is one FTS5 token.
    """CREATE VIRTUAL TABLE concepts_fts USING fts5(
        namespace, search_text,
        content='concepts', content_rowid='id', tokenize='ascii', detail='column')""",
    """CREATE TRIGGER concepts_fts_ai AFTER INSERT ON concepts BEGIN
        INSERT INTO concepts_fts(rowid, namespace, search_text)
        VALUES (new.id, new.namespace, new.search_text);
    END""",
    """CREATE TRIGGER concepts_fts_ad AFTER DELETE ON concepts BEGIN
        INSERT INTO concepts_fts(concepts_fts, rowid, namespace, search_text)
        VALUES ('delete', old.id, old.namespace, old.search_text);
    END""",
    """CREATE TRIGGER concepts_fts_au AFTER UPDATE OF namespace, search_text ON concepts BEGIN
        INSERT INTO concepts_fts(concepts_fts, rowid, namespace, search_text)
        VALUES ('delete', old.id, old.namespace, old.search_text);
        INSERT INTO concepts_fts(rowid, namespace, search_text)
        VALUES (new.id, new.namespace, new.search_text);
    END""",
]

POSTGRES_FTS = [
    # 'simple': no stemming or stopwords here; the analyser has done both already.
    """ALTER TABLE concepts ADD COLUMN search_tsv tsvector
        GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_text)) STORED""",
    "CREATE INDEX ix_concepts_search_tsv ON concepts USING gin (search_tsv)",
]


def upgrade() -> None:
    op.create_table(
        "concepts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("namespace", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("title_key", sa.String(255), nullable=False),
        sa.Column("situation", sa.Text(), nullable=False),
        sa.Column("cues", JSONType, nullable=False),
        sa.Column("suggestion", sa.Text(), nullable=False),
        sa.Column("parameters", JSONType, nullable=False),
        sa.Column("provenance", JSONType, nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("search_len", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_model", sa.String(100), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("usage_count", sa.Integer(), nullable=False),
        sa.Column("success_count", sa.Integer(), nullable=False),
        sa.Column("support_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_concepts"),
        sa.UniqueConstraint("uid", name="uq_concepts_uid"),
        sa.UniqueConstraint("namespace", "title_key", name="uq_concepts_namespace_title_key"),
    )
    op.create_index("ix_concepts_namespace_updated_at", "concepts", ["namespace", "updated_at"])
    op.create_table(
        "concept_uses",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("concept_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(500), nullable=False),
        sa.Column("run_id", sa.String(100), nullable=False),
        sa.Column("shown_at", TS, nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_concept_uses"),
        sa.ForeignKeyConstraint(
            ["concept_id"],
            ["concepts.id"],
            name="fk_concept_uses_concept_id_concepts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_concept_uses_concept_id", "concept_uses", ["concept_id"])
    op.create_index("ix_concept_uses_task_id_run_id", "concept_uses", ["task_id", "run_id"])
    op.create_table(
        "term_stats",
        sa.Column("namespace", sa.String(200), nullable=False),
        sa.Column("term", sa.String(64), nullable=False),
        sa.Column("df", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "term", name="pk_term_stats"),
    )
    op.create_index("ix_term_stats_term", "term_stats", ["term"])
    op.create_table(
        "namespace_stats",
        sa.Column("namespace", sa.String(200), nullable=False),
        sa.Column("concepts", sa.Integer(), nullable=False),
        sa.Column("terms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", name="pk_namespace_stats"),
    )
    dialect = op.get_bind().dialect.name
    for ddl in SQLITE_FTS if dialect == "sqlite" else POSTGRES_FTS if dialect == "postgresql" else []:
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("concepts_fts_au", "concepts_fts_ad", "concepts_fts_ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS concepts_fts")
    op.drop_table("namespace_stats")
    op.drop_table("term_stats")
    op.drop_table("concept_uses")
    op.drop_table("concepts")
