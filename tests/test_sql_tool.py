"""The sandboxed SQL tool: read-only enforcement, one statement, time limit, row cap, schema text."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from agentloop.tools import SQLResult, render_schema, run_sql, run_sql_sync, split_sql_statements
from agentloop.tools.sql import readonly_connection


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id), total REAL);
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 50;
        CREATE INDEX customer_city ON customer(city);
        """
    )
    conn.executemany(
        "INSERT INTO customer VALUES (?, ?, ?)",
        [(i, f"name{i}", "Oslo" if i % 2 else "Rome") for i in range(100)],
    )
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i % 100, float(i)) for i in range(300)])
    conn.commit()
    conn.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_select_returns_typed_result(db: Path) -> None:
    result = run_sql_sync(db, "SELECT id, name FROM customer WHERE id < 3 ORDER BY id;")
    assert result.ok and result.error is None and result.error_kind is None
    assert result.columns == ("id", "name")
    assert result.rows == ((0, "name0"), (1, "name1"), (2, "name2"))
    assert result.truncated is False
    assert result.elapsed_s >= 0
    assert "name1" in result.to_text()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT T1.nme FROM customer AS T1", "no such column: T1.nme"),
        ("SELECT * FROM custmer", "no such table: custmer"),
        ("SELECT * FORM customer", 'near "FORM": syntax error'),
        (
            "SELECT id FROM customer JOIN orders ON customer.id = orders.customer_id",
            "ambiguous column name: id",
        ),
    ],
)
def test_sql_errors_read_like_sqlite(db: Path, sql: str, expected: str) -> None:
    result = run_sql_sync(db, sql)
    assert not result.ok and result.error_kind == "sql_error"
    assert result.error == expected
    assert result.to_text() == f"ERROR: {expected}"


REFUSED = [
    "INSERT INTO customer VALUES (1000, 'x', 'y')",
    "REPLACE INTO customer VALUES (1, 'x', 'y')",
    "UPDATE customer SET name = 'x'",
    "DELETE FROM customer",
    "DROP TABLE customer",
    "DROP VIEW big_orders",
    "CREATE TABLE t (x)",
    "CREATE TEMP TABLE t (x)",
    "CREATE INDEX i ON customer(name)",
    "CREATE TRIGGER tr AFTER INSERT ON customer BEGIN SELECT 1; END",
    "ALTER TABLE customer ADD COLUMN age INT",
    "ATTACH DATABASE '{tmp}/other.sqlite' AS other",
    "DETACH DATABASE main",
    "VACUUM",
    "VACUUM INTO '{tmp}/copy.sqlite'",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "SELECT load_extension('/tmp/evil')",
    "BEGIN",
    "SAVEPOINT s",
    "REINDEX",
    "ANALYZE",
    "WITH x AS (SELECT 1) INSERT INTO customer SELECT 1000, 'x', 'y' FROM x",
    "WITH x AS (SELECT 1) DELETE FROM customer",
    "EXPLAIN DELETE FROM customer",
    "SELECT * FROM pragma_table_info('customer')",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_writes_and_escapes_are_refused(db: Path, sql: str) -> None:
    tmp = db.parent
    before, files_before = digest(db), set(tmp.iterdir())
    result = run_sql_sync(db, sql.format(tmp=tmp))
    # A trigger body holds a ';', so the one-statement check may be the one that refuses it.
    assert result.error_kind in ("not_allowed", "multiple_statements"), result
    assert digest(db) == before
    assert set(tmp.iterdir()) == files_before  # no ATTACH/VACUUM INTO target, no journal left behind


@pytest.mark.parametrize("sql", [s for s in REFUSED if not s.startswith("SELECT load_extension")])
def test_authorizer_refuses_without_the_keyword_filter(db: Path, sql: str) -> None:
    # The leading-keyword check comes first in run_sql; this checks the layer below it on its own.
    tmp = db.parent
    before = digest(db)
    with readonly_connection(db) as guard:
        with pytest.raises(sqlite3.DatabaseError):
            guard.connection.execute(sql.format(tmp=tmp)).fetchall()
        assert guard.denied is not None
    assert digest(db) == before
    assert not (tmp / "copy.sqlite").exists() and not (tmp / "other.sqlite").exists()


def test_extension_loading_is_disabled(db: Path) -> None:
    with readonly_connection(db) as guard:
        with pytest.raises(sqlite3.DatabaseError):
            guard.connection.execute("SELECT load_extension('/tmp/evil')")
        assert guard.denied == "the function load_extension()"
        # The Python-level loader exists only when Python was built with extension support.
        if hasattr(guard.connection, "load_extension"):
            with pytest.raises(sqlite3.OperationalError):
                guard.connection.load_extension("/tmp/evil")


def test_schema_pragmas_and_views_are_readable(db: Path) -> None:
    info = run_sql_sync(db, "PRAGMA table_info(customer)")
    assert info.ok and [row[1] for row in info.rows] == ["id", "name", "city"]
    view = run_sql_sync(db, "SELECT count(*) FROM big_orders")
    assert view.rows == ((249,),)
    cte = run_sql_sync(
        db, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) SELECT sum(x) FROM n"
    )
    assert cte.rows == ((15,),)


def test_huge_values_are_refused(db: Path) -> None:
    result = run_sql_sync(db, "SELECT length(randomblob(200000000))")
    assert result.error_kind == "too_large"


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        ("SELECT 1", 1),
        ("SELECT 1;", 1),
        ("SELECT 1;;  ;\n", 1),
        ("SELECT ';' AS semi", 1),
        ("SELECT 'it''s; fine'", 1),
        ('SELECT 1 AS "a;b"', 1),
        ("SELECT 1 AS [a;b]", 1),
        ("SELECT 1 AS `a;b`", 1),
        ("SELECT 1 -- trailing; comment", 1),
        ("SELECT 1; -- only a comment after", 1),
        ("/* leading ; comment */ SELECT 1", 1),
        ("SELECT 1; SELECT 2", 2),
        ("SELECT 'a;b'; DROP TABLE customer", 2),
        ("SELECT 1;\nDELETE FROM customer;", 2),
        ("", 0),
        ("  ;  -- nothing\n", 0),
    ],
)
def test_split_statements(sql: str, count: int) -> None:
    parts = split_sql_statements(sql)
    assert len(parts) == count
    for part in parts:
        # Each piece is one complete statement by SQLite's own reckoning.
        assert sqlite3.complete_statement(part + "\n;")


def test_multiple_statements_are_rejected(db: Path) -> None:
    before = digest(db)
    result = run_sql_sync(db, "SELECT 1; DELETE FROM customer")
    assert result.error_kind == "multiple_statements"
    assert "one SQL statement" in (result.error or "")
    assert digest(db) == before
    assert run_sql_sync(db, "SELECT ';' AS s;").rows == ((";",),)
    assert run_sql_sync(db, "  -- nothing here\n").error_kind == "empty"


@pytest.mark.parametrize(
    "sql",
    [
        "WITH RECURSIVE forever(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM forever) SELECT count(*) FROM forever",
        "SELECT count(*) FROM customer a, customer b, customer c, customer d, customer e, customer f",
    ],
    ids=["recursive_cte", "cartesian_6way"],
)
def test_runaway_queries_stop_at_the_time_limit(db: Path, sql: str) -> None:
    start = time.perf_counter()
    result = run_sql_sync(db, sql, timeout_s=1.0)
    wall = time.perf_counter() - start
    assert result.error_kind == "timeout", result
    assert "timed out after 1 s" in (result.error or "")
    assert 0.9 < wall < 3.0  # stopped near the limit, not left to run (a shared machine adds slack)


async def test_async_calls_run_concurrently(db: Path) -> None:
    slow = "SELECT count(*) FROM customer a, customer b, customer c, customer d, customer e"
    start = time.perf_counter()
    results = await asyncio.gather(*(run_sql(db, slow, timeout_s=1.0) for _ in range(4)))
    assert all(r.error_kind == "timeout" for r in results)
    assert time.perf_counter() - start < 3.5  # four 1 s queries overlapped: in a row they take 4 s or more
    quick = await asyncio.gather(
        *(run_sql(db, f"SELECT name FROM customer WHERE id = {i}") for i in range(20))
    )
    assert [r.rows for r in quick] == [((f"name{i}",),) for i in range(20)]


def test_row_cap_reports_truncation(db: Path) -> None:
    capped = run_sql_sync(db, "SELECT id FROM customer ORDER BY id", max_rows=10)
    assert capped.truncated and len(capped.rows) == 10 and capped.rows[-1] == (9,)
    assert "more than 10 rows" in capped.to_text(max_rows=10)
    exact = run_sql_sync(db, "SELECT id FROM customer", max_rows=100)
    assert not exact.truncated and len(exact.rows) == 100
    unlimited = run_sql_sync(db, "SELECT id FROM orders", max_rows=None)
    assert not unlimited.truncated and len(unlimited.rows) == 300


def test_missing_database_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.sqlite"):
        run_sql_sync(tmp_path / "nope.sqlite", "SELECT 1")
    assert not (tmp_path / "nope.sqlite").exists()  # mode=ro never creates the file


def test_result_text_for_empty_and_wide_values() -> None:
    assert SQLResult(columns=("a",)).to_text() == "a\n(no rows)"
    text = SQLResult(columns=("a", "b"), rows=(("x" * 200, None),)).to_text(max_cell_chars=10)
    assert text.splitlines()[1] == "xxxxxxxxx…\tNULL"


def test_render_schema_has_creates_and_samples(db: Path) -> None:
    text = render_schema(db, sample_rows=2)
    assert "CREATE TABLE customer" in text and "CREATE VIEW big_orders" in text
    assert "2 example rows from customer:\nid\tname\tcity\n0\tname0\tRome\n1\tname1\tOslo" in text
    assert text.index("CREATE TABLE orders") < text.index("CREATE VIEW big_orders")


def test_render_schema_stays_within_budget(db: Path) -> None:
    full = render_schema(db)
    small = render_schema(db, max_chars=400)
    assert len(small) <= 400 < len(full)
    # Sample rows go first, from the last table up; every CREATE statement is kept.
    assert all(f"CREATE {obj}" in small for obj in ("TABLE customer", "TABLE orders", "VIEW big_orders"))
    assert "example rows from orders" in full and "example rows from orders" not in small
    tiny = render_schema(db, max_chars=150)
    assert len(tiny) <= 150 and "not shown" in tiny
