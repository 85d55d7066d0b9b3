"""What differs between SQLite and PostgreSQL in the memory store: connection setup, locks, retries, search."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Engine, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from agentloop.memory.models import FTS_TABLE, TSV_COLUMN

__all__ = ["Dialect", "dialect_for"]

# SQLite waits this long for the write lock before an attempt fails (then it is retried).
SQLITE_BUSY_MS = 30_000


class Dialect:
    name = ""

    def configure(self, engine: Engine) -> None:
        """Per-connection setup."""

    def lock(self, session: Session, namespaces: Collection[str] | None) -> None:
        """Serialise writers: per namespace, or everything when ``namespaces`` is ``None``."""

    def transient(self, exc: DBAPIError) -> bool:
        """Whether retrying the whole transaction may succeed."""
        return False

    def upsert_add(self, table: Table, keys: list[str], columns: list[str]) -> Any:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE SET col = col + excluded.col``."""
        raise NotImplementedError

    def candidates(
        self,
        session: Session,
        weights: Mapping[str, float],
        capped: Collection[str],
        namespace: str | None,
        cap: int,
        limit: int,
    ) -> list[int]:
        """Phase 1 of the lexical search: the ``limit`` ids with the most IDF weight among ``weights``' terms.

        Terms in ``capped`` have more postings than the budget; only their newest
        ``cap`` postings count.
        """
        raise NotImplementedError

    def rebuild_index(self, session: Session) -> None:
        """Rebuild the full-text index from ``concepts``."""


def _upsert(insert: Any, table: Table, keys: list[str], columns: list[str]) -> Any:
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={c: table.c[c] + getattr(stmt.excluded, c) for c in columns}
    )


class SQLiteDialect(Dialect):
    """WAL, a busy timeout, ``BEGIN IMMEDIATE`` for writes; FTS5 for search."""

    name = "sqlite"

    def configure(self, engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
            # Take over BEGIN from pysqlite so that writes can say BEGIN IMMEDIATE: a
            # deferred transaction that reads and then writes can fail with "database is
            # locked" at once, without waiting on the busy timeout.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            write = conn.get_execution_options().get("agentloop_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def transient(self, exc: DBAPIError) -> bool:
        return isinstance(exc, OperationalError) and any(
            s in str(exc.orig).lower() for s in ("locked", "busy")
        )

    def upsert_add(self, table: Table, keys: list[str], columns: list[str]) -> Any:
        return _upsert(sqlite.insert, table, keys, columns)

    def candidates(
        self,
        session: Session,
        weights: Mapping[str, float],
        capped: Collection[str],
        namespace: str | None,
        cap: int,
        limit: int,
    ) -> list[int]:
        prefix = ""
        if namespace is not None:
            # The FTS column narrows to concepts whose namespace has these tokens; the
            # caller still checks the exact namespace.
            tokens = re.findall(r"[a-z0-9]+", namespace.lower())
            prefix = "namespace : (" + " AND ".join(f'"{t}"' for t in tokens) + ") AND "
        branches = []
        params: dict[str, Any] = {"cap": cap, "limit": limit}
        for i, (term, weight) in enumerate(weights.items()):
            params[f"q{i}"] = f'{prefix}search_text : "{term}"'
            params[f"w{i}"] = weight
            sql = f"SELECT rowid AS id, :w{i} AS w FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q{i}"
            if term in capped:
                sql = f"SELECT * FROM ({sql} ORDER BY rowid DESC LIMIT :cap)"
            branches.append(sql)
        sql = (
            f"SELECT id, sum(w) AS s FROM ({' UNION ALL '.join(branches)}) "
            "GROUP BY id ORDER BY s DESC, id DESC LIMIT :limit"
        )
        return [row[0] for row in session.execute(text(sql), params)]

    def rebuild_index(self, session: Session) -> None:
        session.execute(text(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')"))


def _pg_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_PG_GLOBAL = _pg_key("agentloop.memory:all")
# serialization_failure, deadlock_detected, unique_violation (a racing insert: the retry
# finds the other row and merges into it).
_PG_TRANSIENT = {"40001", "40P01", "23505"}


class PostgresDialect(Dialect):
    """Transaction-scoped advisory locks; a GIN-indexed tsvector for search."""

    name = "postgresql"

    def lock(self, session: Session, namespaces: Collection[str] | None) -> None:
        if namespaces is None:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_GLOBAL})
            return
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _PG_GLOBAL})
        # Sorted, so two writers that touch the same namespaces cannot deadlock.
        for key in sorted({_pg_key(f"agentloop.memory:ns:{ns}") for ns in namespaces}):
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def transient(self, exc: DBAPIError) -> bool:
        code = getattr(exc.orig, "sqlstate", None)
        return code in _PG_TRANSIENT or (isinstance(exc, IntegrityError) and code == "23505")

    def upsert_add(self, table: Table, keys: list[str], columns: list[str]) -> Any:
        return _upsert(postgresql.insert, table, keys, columns)

    def candidates(
        self,
        session: Session,
        weights: Mapping[str, float],
        capped: Collection[str],
        namespace: str | None,
        cap: int,
        limit: int,
    ) -> list[int]:
        # One bitmap scan over the OR of the terms, each matching row weighed once: cheaper
        # than a scan per term, since every posting costs a heap visit here.
        params: dict[str, Any] = {"cap": cap, "limit": limit, "ns": namespace}
        score = []
        for i, (term, weight) in enumerate(weights.items()):
            params[f"t{i}"] = term
            params[f"w{i}"] = weight
            score.append(f"CASE WHEN {TSV_COLUMN} @@ q{i} THEN CAST(:w{i} AS double precision) ELSE 0 END")
        queries = ", ".join(f"plainto_tsquery('simple', :t{i}) AS q{i}" for i in range(len(weights)))
        any_term = " || ".join(f"q{i}" for i in range(len(weights)))
        ns_filter = " AND namespace = :ns" if namespace is not None else ""
        matches = f"SELECT id, {TSV_COLUMN} FROM concepts, q WHERE {TSV_COLUMN} @@ ({any_term}){ns_filter}"
        if capped:
            # Only the rarest term can be over budget, and then it is the only term.
            matches += " ORDER BY id DESC LIMIT :cap"
        sql = (
            f"WITH q AS (SELECT {queries}), m AS ({matches}) "
            f"SELECT id, {' + '.join(score)} AS s FROM m, q ORDER BY s DESC, id DESC LIMIT :limit"
        )
        # The planner's row estimates for tsvector matches are loose and often pick a
        # parallel plan; starting workers costs ~10 ms, more than the whole query.
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        return [row[0] for row in session.execute(text(sql), params)]


def dialect_for(name: str) -> Dialect:
    if name == "sqlite":
        return SQLiteDialect()
    if name == "postgresql":
        return PostgresDialect()
    raise ValueError(name)
