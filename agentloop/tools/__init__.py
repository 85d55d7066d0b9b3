"""Tools an agent can call: read-only SQL against SQLite, and schema text for prompts."""

from agentloop.tools.sql import SQLErrorKind, SQLResult, SQLValue, run_sql, run_sql_sync, split_sql_statements
from agentloop.tools.sql_schema import render_schema

__all__ = [
    "SQLErrorKind",
    "SQLResult",
    "SQLValue",
    "render_schema",
    "run_sql",
    "run_sql_sync",
    "split_sql_statements",
]
