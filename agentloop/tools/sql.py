"""Run one untrusted, model-written SQL query against a SQLite file, read-only and time-bounded.

Defences, each enough on its own for the threat it names, layered on purpose:

- the file is opened with a ``mode=ro`` URI and ``PRAGMA query_only=ON`` (no writes to it);
- an authorizer allows only reads, SELECTs, functions and recursive CTEs, plus a few schema
  PRAGMAs that cannot change anything (so no ATTACH, no ``VACUUM INTO``, no PRAGMA writes);
- extension loading is off and ``load_extension()`` is refused;
- exactly one statement, starting with SELECT, WITH, VALUES, EXPLAIN or PRAGMA;
- a deadline checked by a progress handler, a row cap and a cap on the size of any one value.

Every call opens its own connection, so calls can run concurrently in threads.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

from agentloop import tracing

__all__ = [
    "GuardedConnection",
    "SQLErrorKind",
    "SQLResult",
    "SQLValue",
    "format_value",
    "readonly_connection",
    "run_sql",
    "run_sql_sync",
    "split_sql_statements",
]

SQLValue = int | float | str | bytes | None
SQLErrorKind = Literal["empty", "multiple_statements", "not_allowed", "timeout", "too_large", "sql_error"]

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ROWS = 200
# Largest string or blob SQLite may build (randomblob(1e9) would otherwise take a gigabyte).
MAX_VALUE_BYTES = 10_000_000
# VM instructions between deadline checks: a check costs about a microsecond, and 1,000 simple
# instructions take a few microseconds, so the overhead stays small while the stop is prompt.
_PROGRESS_EVERY = 1_000
_ALLOWED_LEADING_KEYWORDS = frozenset({"select", "with", "values", "explain", "pragma"})
# PRAGMAs that only describe the schema. Everything else (including every PRAGMA with "=") is denied.
_SCHEMA_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in (
        "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER CREATE_TEMP_VIEW "
        "CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE DROP_TEMP_INDEX DROP_TEMP_TABLE "
        "DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER DROP_VIEW INSERT PRAGMA READ SELECT TRANSACTION "
        "UPDATE ATTACH DETACH ALTER_TABLE REINDEX ANALYZE CREATE_VTABLE DROP_VTABLE FUNCTION SAVEPOINT "
        "RECURSIVE"
    ).split()
    if hasattr(sqlite3, f"SQLITE_{name}")
}


@dataclass(frozen=True, slots=True)
class SQLResult:
    """The outcome of one query: rows on success, else an error message written for a model to read."""

    columns: tuple[str, ...] = ()
    rows: tuple[tuple[SQLValue, ...], ...] = ()
    truncated: bool = False  # more rows existed than max_rows; only the first max_rows are kept
    elapsed_s: float = 0.0
    error: str | None = None
    error_kind: SQLErrorKind | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_text(self, max_rows: int = 20, max_cell_chars: int = 80) -> str:
        """Render for a prompt: the error, or a header line and up to ``max_rows`` tab-separated rows."""
        if self.error is not None:
            return f"ERROR: {self.error}"
        lines = ["\t".join(self.columns)]
        lines += ["\t".join(format_value(v, max_cell_chars) for v in row) for row in self.rows[:max_rows]]
        shown = min(len(self.rows), max_rows)
        if self.truncated or shown < len(self.rows):
            more = "more than " if self.truncated else ""
            lines.append(f"... ({shown} of {more}{len(self.rows)} rows shown)")
        elif not self.rows:
            lines.append("(no rows)")
        return "\n".join(lines)


def format_value(value: SQLValue, max_chars: int = 80) -> str:
    """One cell as short, single-line text."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value).replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


async def run_sql(
    db_path: str | PathLike[str],
    sql: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> SQLResult:
    """Run one read-only query in a worker thread; see ``run_sql_sync``.

    Cancelling the caller does not stop the thread early; the query still ends by ``timeout_s``.
    """
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "sql",
        "db.system.name": "sqlite",
    }
    if tracing.capture_content():  # the query is model-written text: recorded only on opt-in
        attributes["db.query.text"] = sql
    with tracing.span("execute_tool sql", attributes) as s:
        result = await asyncio.to_thread(run_sql_sync, db_path, sql, timeout_s=timeout_s, max_rows=max_rows)
        tracing.set_attributes(s, {"agentloop.sql.rows": len(result.rows), "error.type": result.error_kind})
        return result


def run_sql_sync(
    db_path: str | PathLike[str],
    sql: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> SQLResult:
    """Run one read-only query and return its rows, or an error a model can act on.

    Problems with the query (syntax, unknown names, refused statements, the time limit) come back
    as ``SQLResult.error``; a missing database file raises ``FileNotFoundError``.
    """
    start = time.perf_counter()

    def failed(message: str, kind: SQLErrorKind) -> SQLResult:
        return SQLResult(elapsed_s=time.perf_counter() - start, error=message, error_kind=kind)

    statements = split_sql_statements(sql)
    if not statements:
        return failed("empty query: send exactly one SELECT statement", "empty")
    if len(statements) > 1:
        return failed(
            f"only one SQL statement may run per call, but this text has {len(statements)}; "
            "send a single SELECT (combine steps with WITH ... or subqueries)",
            "multiple_statements",
        )
    statement = statements[0]
    keyword = _leading_keyword(statement)
    if keyword not in _ALLOWED_LEADING_KEYWORDS:
        what = f"{keyword.upper()} statements are" if keyword else "this statement is"
        return failed(
            f"{what} not allowed: the database is read-only; send one query that starts with SELECT or WITH",
            "not_allowed",
        )

    with readonly_connection(db_path, timeout_s=timeout_s) as guard:
        try:
            cursor = guard.connection.execute(statement)
            columns = tuple(d[0] for d in cursor.description or ())
            if max_rows is None:
                rows = cursor.fetchall()
                truncated = False
            else:
                rows = cursor.fetchmany(max_rows + 1)
                truncated = len(rows) > max_rows
                rows = rows[:max_rows]
        except (sqlite3.Error, ValueError) as exc:  # ValueError: e.g. lone surrogates in the text
            message, kind = guard.explain(exc)
            return failed(message, kind)
    return SQLResult(
        columns=columns,
        rows=tuple(tuple(row) for row in rows),
        truncated=truncated,
        elapsed_s=time.perf_counter() - start,
    )


class GuardedConnection:
    """A read-only connection plus what its authorizer and deadline saw, to explain its errors."""

    def __init__(self, connection: sqlite3.Connection, deadline: float, timeout_s: float):
        self.connection = connection
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.timed_out = False
        self.denied: str | None = None

    def authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None
    ) -> int:
        if action in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() != "load_extension":
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _SCHEMA_PRAGMAS:
            return sqlite3.SQLITE_OK
        if self.denied is None:
            name = _ACTION_NAMES.get(action, f"action {action}")
            if action == sqlite3.SQLITE_FUNCTION:
                name = f"the function {arg2}()"
            elif action == sqlite3.SQLITE_PRAGMA:
                name = f"PRAGMA {arg1}"
            elif action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
                # SQLite asks for this when a query uses a pragma_*() table-valued function.
                name = "pragma_*() table functions (use PRAGMA table_info(name) or read sqlite_master)"
            self.denied = name
        return sqlite3.SQLITE_DENY

    def progress(self) -> int:
        if time.perf_counter() > self.deadline:
            self.timed_out = True
            return 1  # non-zero makes SQLite abort the statement with SQLITE_INTERRUPT
        return 0

    def explain(self, exc: Exception) -> tuple[str, SQLErrorKind]:
        """The error message and kind to report for an exception raised by this connection."""
        text = str(exc)
        if self.timed_out:
            return (
                f"query timed out after {self.timeout_s:g} s and was stopped; make it cheaper: give every "
                "JOIN an ON condition, filter early, and bound recursive CTEs",
                "timeout",
            )
        if self.denied is not None:
            if self.denied.startswith("PRAGMA"):
                hint = "only PRAGMA table_info/index_list/foreign_key_list(name) may be read"
            else:
                hint = "this database is read-only; send a single SELECT query"
            return f"not allowed: {self.denied} ({hint})", "not_allowed"
        if "too big" in text or "too large" in text:
            return f"{text}: a value would exceed {MAX_VALUE_BYTES} bytes", "too_large"
        return text, "sql_error"


@contextmanager
def readonly_connection(
    db_path: str | PathLike[str], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[GuardedConnection]:
    """Open ``db_path`` read-only with the authorizer, limits and a deadline ``timeout_s`` from now."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"SQLite database not found: {path}")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        # Bad UTF-8 in a text cell must not fail the query (the official Spider evaluator drops
        # such bytes; showing U+FFFD instead tells a model that something was there).
        connection.text_factory = _decode_text
        connection.execute("PRAGMA query_only = ON")
        if hasattr(connection, "enable_load_extension"):  # absent when Python is built without it
            connection.enable_load_extension(False)
        connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        guard = GuardedConnection(connection, time.perf_counter() + timeout_s, timeout_s)
        connection.set_authorizer(guard.authorize)
        connection.set_progress_handler(guard.progress, _PROGRESS_EVERY)
        yield guard
    finally:
        connection.close()


def _decode_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def split_sql_statements(sql: str) -> list[str]:
    """Split SQL text at top-level semicolons; drop pieces that hold only whitespace and comments.

    Quotes ('...', "...", `...`, [...]) and comments (``--``, ``/* */``) are honoured, so a ';'
    inside a string does not split. The trailing ';' of each statement is removed.
    """
    statements: list[str] = []
    start = 0
    has_code = False
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            i += 1
            while i < n:
                if sql[i] == close:
                    # A doubled quote is an escaped quote (not for [...], which has no escape).
                    if close != "]" and i + 1 < n and sql[i + 1] == close:
                        i += 2
                        continue
                    break
                i += 1
            has_code = True
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n - 1 if newline < 0 else newline
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n - 1 if end < 0 else end + 1
        elif ch == ";":
            if has_code:
                statements.append(sql[start:i].strip())
            start, has_code = i + 1, False
        elif not ch.isspace():
            has_code = True
        i += 1
    if has_code:
        statements.append(sql[start:].strip())
    return statements


_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]+")


def _leading_keyword(statement: str) -> str:
    start = _LEADING_NOISE.match(statement)
    word = _WORD.match(statement, start.end() if start else 0)
    return word.group(0).lower() if word else ""
