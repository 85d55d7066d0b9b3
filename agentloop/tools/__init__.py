"""Tools an agent can call: read-only SQL against SQLite, schema text for prompts, and a sandbox for model code."""

from agentloop.tools.sandbox import Sandbox, SandboxLimits, SandboxResult
from agentloop.tools.sql import SQLErrorKind, SQLResult, SQLValue, run_sql, run_sql_sync, split_sql_statements
from agentloop.tools.sql_schema import render_schema

__all__ = [
    "SQLErrorKind",
    "SQLResult",
    "SQLValue",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "render_schema",
    "run_sql",
    "run_sql_sync",
    "split_sql_statements",
]
