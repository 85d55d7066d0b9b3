"""The run store's database plumbing: store URLs, engines, passwords kept off disk, transient errors.

``run_store`` builds on this; nothing here knows about runs or tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from agentloop.errors import AgentloopError, MissingExtraError

__all__ = [
    "STORE_ENV",
    "RunNotFoundError",
    "RunStoreError",
    "RunStoreUnavailableError",
    "create_store_engine",
    "db_reason",
    "is_transient",
    "read_marker",
    "resolve_store_url",
    "safe_url",
    "same_database",
    "task_lock",
    "url_without_password",
    "with_password",
    "write_marker",
]

# The environment variable that gives a run store URL (with its password) to every command.
STORE_ENV = "AGENTLOOP_STORE_URL"


class RunNotFoundError(AgentloopError, FileNotFoundError):
    """There is no run where one was expected."""


class RunStoreError(AgentloopError):
    """The run store cannot be opened or used; the message names the store (never its password)."""


class RunStoreUnavailableError(RunStoreError):
    """The database stopped answering and did not come back within the store's retry limit."""


def resolve_store_url(url: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL for ``url``: a URL, or a plain file path (SQLite). A SQLite path is made absolute
    (so the run dir's record of it works from any directory); ``postgresql://`` gets the psycopg 3 driver.
    """
    s = os.fspath(url).strip()
    if not s:
        raise RunStoreError("an empty run store URL: write it as postgresql://USER@HOST/DB or sqlite:///PATH")
    if "://" not in s:
        return f"sqlite:///{Path(s).expanduser().resolve()}"
    scheme, rest = s.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        s = f"postgresql+psycopg://{rest}"
    try:
        parsed = make_url(s)
    except ArgumentError:
        raise RunStoreError(
            f"{_mask_raw(s)!r} is not a database URL: write it as postgresql://USER@HOST/DB or sqlite:///PATH"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise RunStoreError(
            f"the run store runs on PostgreSQL or SQLite, not {backend!r}: write postgresql://USER@HOST/DB "
            "or sqlite:///PATH"
        )
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser().resolve()  # type: ignore[arg-type]
        s = parsed.set(database=str(path)).render_as_string(hide_password=False)
    return s


def safe_url(url: str) -> str:
    """``url`` for messages and logs: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _mask_raw(url)


def url_without_password(url: str) -> str:
    """``url`` with no password at all (nor a ``password=`` query parameter): what a run dir records."""
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k.lower() != "password"}
    # URL.set() takes None as "unchanged": _replace (URL is a named tuple) drops the password.
    return parsed.set(query=query)._replace(password=None).render_as_string(hide_password=False)


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same database (passwords aside; a missing user matches any)."""
    try:
        ua, ub = make_url(a), make_url(b)
    except ArgumentError:
        return False
    if ua.username and ub.username and ua.username != ub.username:
        return False
    return _where(ua) == _where(ub)


def _where(u: URL) -> tuple[Any, ...]:
    port = u.port or (5432 if u.get_backend_name() == "postgresql" else None)
    # ``options`` may set the schema (-csearch_path=...): another schema is another store.
    return (u.get_backend_name(), (u.host or "").lower(), port, u.database, u.query.get("options"))


def _mask_raw(s: str) -> str:
    """Mask ``user:password@`` in a string that may not parse as a URL."""
    head, sep, rest = s.partition("://")
    if not sep or "@" not in rest:
        return s
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{head}://{user}:***@{host}" if ":" in creds else s


def create_store_engine(url: str, *, create: bool) -> Engine:
    """An engine for the run store at ``url``; a SQLite file must exist unless ``create``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RunStoreError(
            f"{_mask_raw(url)!r} is not a database URL: write it as postgresql://USER@HOST/DB or sqlite:///PATH"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            # One shared connection, or every connection would see its own empty database.
            engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            path = Path(database)
            if not create and not path.is_file():
                raise RunNotFoundError(
                    f"no run store at {path}: the file does not exist; check the path in the store URL"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        # pre_ping: a connection the server dropped (a restart) is replaced at checkout.
        return create_engine(url, pool_pre_ping=True)
    except NoSuchModuleError:
        raise RunStoreError(
            f"SQLAlchemy has no dialect for {safe_url(url)}; the run store runs on postgresql:// or sqlite://"
        ) from None
    except ImportError as exc:
        raise MissingExtraError(exc.name or "psycopg", "postgres") from None


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Take over BEGIN from pysqlite, so that a write can begin with BEGIN IMMEDIATE (below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: a reader (agentloop report) never blocks the writer. synchronous=NORMAL keeps every
    # commit safe from a killed process (not from power loss), at a fraction of FULL's cost.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A write takes the write lock up front: a deferred transaction that reads and then writes
    # fails at once with "database is locked" when another process writes, busy timeout or not.
    write = conn.get_execution_options().get("agentloop_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# serialization_failure, deadlock_detected, unique_violation (two writers raced to insert one
# task: the retry finds the other's row), admin_shutdown, crash_shutdown, cannot_connect_now.
_PG_TRANSIENT = {"40001", "40P01", "23505", "57P01", "57P02", "57P03"}


def is_transient(exc: DBAPIError) -> bool:
    """Whether retrying the whole transaction may succeed: a lost connection, a restart, a lock."""
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None)
    if code is not None and (code in _PG_TRANSIENT or code.startswith("08")):
        return True
    if isinstance(exc.orig, sqlite3.Error):
        return isinstance(exc, OperationalError) and any(
            s in str(exc.orig).lower() for s in ("locked", "busy")
        )
    # Any other OperationalError from a server: it went away (refused, closed, reset) mid-run.
    return isinstance(exc, OperationalError)


def db_reason(exc: BaseException) -> str:
    """The driver's message of a database error, on one line."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split()) or type(orig).__name__


# --- a run dir's record of its store ------------------------------------------------------


def read_marker(marker: Path) -> tuple[str, str]:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        return str(data["url"]), str(data["run"])
    except (ValueError, KeyError, TypeError):
        raise RunStoreError(
            f"{marker} is not a run store record (JSON with 'url' and 'run'); restore it, or report the run "
            "with --store URL and its name"
        ) from None


def write_marker(marker: Path, url: str, name: str) -> None:
    """Record where a run dir's run is: never the password (it comes from --store or the environment)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"url": url_without_password(url), "run": name}, indent=2) + "\n"
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(marker)


def with_password(recorded: str, given: str | None) -> str:
    """``recorded`` with the password of ``given`` or of :data:`STORE_ENV`, whichever names the same database."""
    if make_url(recorded).password is not None:
        return recorded
    env = os.environ.get(STORE_ENV)
    try:
        env_url = resolve_store_url(env) if env else None
    except RunStoreError:
        env_url = None  # only a source of passwords here; a command that uses it as a store says why
    for candidate in (given, env_url):
        if candidate is None or not same_database(candidate, recorded):
            continue
        password = make_url(candidate).password
        if password is not None:
            return make_url(recorded).set(password=password).render_as_string(hide_password=False)
    return recorded


def task_lock(run_id: int, task_id: str) -> int:
    digest = hashlib.sha256(f"agentloop.runs:{run_id}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
