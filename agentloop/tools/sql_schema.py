"""Describe a SQLite database for a prompt: its CREATE statements and a few sample rows per table."""

from __future__ import annotations

import sqlite3
from os import PathLike

from agentloop.tools.sql import format_value, readonly_connection

__all__ = ["render_compact_schema", "render_schema"]


def render_schema(
    db_path: str | PathLike[str],
    *,
    sample_rows: int = 3,
    max_chars: int = 12_000,
    max_cell_chars: int = 40,
    timeout_s: float = 5.0,
) -> str:
    """Render every table and view as its CREATE statement, each table followed by sample rows.

    The text stays within ``max_chars``: sample rows are dropped first (from the last table up),
    then CREATE statements, each omission noted so the model knows the picture is partial.
    """
    with readonly_connection(db_path, timeout_s=timeout_s) as guard:
        conn = guard.connection
        objects = conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql IS NOT NULL "
            "ORDER BY type = 'view', rowid"
        ).fetchall()
        creates = [sql.strip().rstrip(";") + ";" for _, _, sql in objects]
        samples = [
            _sample_block(conn, name, sample_rows, max_cell_chars)
            if kind == "table" and sample_rows > 0
            else ""
            for kind, name, _ in objects
        ]

    def size() -> int:
        return sum(len(c) + 1 for c in creates) + sum(len(s) + 1 for s in samples)

    for i in reversed(range(len(samples))):
        if size() <= max_chars:
            break
        samples[i] = ""
    omitted = 0
    while creates and size() > max_chars - 60:  # leave room for the omission note
        creates.pop()
        samples.pop()
        omitted += 1
    parts = [c + ("\n" + s if s else "") for c, s in zip(creates, samples, strict=True)]
    if omitted:
        parts.append(f"/* {omitted} more tables or views not shown (schema too long) */")
    return "\n\n".join(parts)


def _sample_block(conn: sqlite3.Connection, table: str, limit: int, max_cell_chars: int) -> str:
    quoted = '"' + table.replace('"', '""') + '"'
    try:
        cursor = conn.execute(f"SELECT * FROM {quoted} LIMIT {int(limit)}")
        rows = cursor.fetchall()
    except sqlite3.Error:  # a broken table should not hide the rest of the schema
        return ""
    if not rows:
        return f"/* table {table} has no rows */"
    header = "\t".join(d[0] for d in cursor.description)
    body = "\n".join("\t".join(format_value(v, max_cell_chars) for v in row) for row in rows)
    return f"/*\n{len(rows)} example rows from {table}:\n{header}\n{body}\n*/"


def render_compact_schema(
    db_path: str | PathLike[str], *, max_chars: int = 4_000, timeout_s: float = 5.0
) -> tuple[str, str]:
    """The schema as one ``table(col, ...)`` line per table, and its foreign keys as ``a.x = b.y``.

    Small models follow this one-line shape far better than CREATE statements, and it costs
    a fraction of the tokens. Tables past ``max_chars`` are dropped, with a note.
    """
    with readonly_connection(db_path, timeout_s=timeout_s) as guard:
        conn = guard.connection
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type = 'view', rowid"
            )
        ]
        tables: list[str] = []
        keys: list[str] = []
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            columns = [_ident(row[1]) for row in conn.execute(f"PRAGMA table_info({quoted})")]
            tables.append(f"{_ident(name)}({', '.join(columns)})")
            for fk in conn.execute(f"PRAGMA foreign_key_list({quoted})"):
                # (id, seq, table, from, to, ...); "to" is NULL when it names the primary key.
                if fk[4] is not None:
                    keys.append(f"{_ident(name)}.{_ident(fk[3])} = {_ident(fk[2])}.{_ident(fk[4])}")
    shown: list[str] = []
    used = 0
    for t in tables:
        if used + len(t) > max_chars:
            shown.append(f"/* {len(tables) - len(shown)} more tables */")
            break
        shown.append(t)
        used += len(t) + 2
    return "\n".join(shown), "; ".join(dict.fromkeys(keys))


def _ident(name: str) -> str:
    """A name as SQL would need it: bare when it is a plain word, double-quoted otherwise."""
    if name.replace("_", "a").isalnum() and not name[:1].isdigit():
        return name
    return '"' + name.replace('"', '""') + '"'
