"""What every ``agentloop`` command group shares: one-line errors, JSON output and the backend options."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer
from rich.console import Console
from rich.markup import escape

from agentloop.errors import AgentloopError

__all__ = [
    "DEBUG_ENV",
    "BackendOpt",
    "BaseUrlOpt",
    "above_zero",
    "err",
    "error_line",
    "friendly_errors",
    "print_json",
]

err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DEBUG_ENV = "AGENTLOOP_DEBUG"
_DEBUG_HINT = f"rerun with {DEBUG_ENV}=1 to see the traceback"
# String options that name a database; Path-typed parameters are named in file errors anyway.
_WHERE_STRINGS = ("db", "memory")

BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="Backend id: transformers[:PATH], llamacpp[:PATH.gguf|NAME], openai:MODEL, anthropic:MODEL, vllm:MODEL.",
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="Server URL, e.g. http://127.0.0.1:8000/v1 (default: OPENAI_BASE_URL for openai:)."
    ),
]


def above_zero(value: float | None) -> float | None:
    """A Typer callback for options that must be strictly positive (ranges here are closed)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not allowed: it must be greater than 0")
    return value


def friendly_errors(fn: F) -> F:
    """Turn an error a user can cause into one line on stderr and exit code 2, never a traceback.

    Our own errors (:class:`AgentloopError`) print their message. The error families bad input
    produces (a bad value, a missing or unreadable file, malformed JSON, a database or server
    that cannot be reached) print one line that says what failed. Anything else is likely a bug:
    one line with its type, exit code 1, and a hint to set ``AGENTLOOP_DEBUG=1``, which lets
    every exception through with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise  # Typer's own usage errors and exits keep their usual form
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
                raise
            message, expected = describe_error(exc, _where(fn, kwargs))
            err.print(error_line(message), highlight=False, soft_wrap=True)
            raise typer.Exit(2 if expected else 1) from None

    return wrapper  # type: ignore[return-value]


def error_line(message: str) -> str:
    """``error: MESSAGE`` as rich markup, folded onto one line."""
    return f"[bold red]error:[/] {escape(' '.join(message.split()))}"


def describe_error(exc: BaseException, where: str = "") -> tuple[str, bool]:
    """The one-line message for ``exc`` and whether it is an expected error (not a bug).

    ``where`` (`` (check --db URL)``) is added to messages about files and databases.
    """
    if isinstance(exc, AgentloopError):
        return str(exc), True
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}){where}", True
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{where}", True
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"cannot connect: {exc}{where}", True
    if isinstance(exc, FileExistsError) and exc.filename:
        return f"{exc.filename} already exists, where a new directory or file was to go{where}", True
    if isinstance(exc, NotADirectoryError) and exc.filename:
        return f"{exc.filename}: a part of this path is a file, not a directory{where}", True
    if isinstance(exc, OSError):
        what = exc.strerror or type(exc).__name__
        name = f": {exc.filename}" if exc.filename else ""
        return f"{what}{name}; check the path and its permissions{where if not name else ''}", True
    db = _database_error(exc, where)
    if db is not None:
        return db, True
    net = _network_error(exc)
    if net is not None:
        return net, True
    if type(exc) is ValueError and _raised_by_agentloop(exc):
        return str(exc), True  # our own validation: the message names the bad value
    detail = str(exc) or "(no message)"
    return f"unexpected {type(exc).__name__}: {detail} ({_DEBUG_HINT})", False


def _no_password(value: str) -> str:
    """A database URL with its password shown as ``***``; anything else as it is."""
    if "://" not in value:
        return value
    from sqlalchemy.engine import make_url

    try:
        return make_url(value).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: hide what follows the scheme
        return value.split("://", 1)[0] + "://***"


def _where(fn: Callable[..., Any], options: Mapping[str, Any]) -> str:
    """`` (check --db URL, RUN_DIR x)``: the paths and database URLs the command was given."""
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - only a hint; an unresolvable annotation must not hide the error
        hints = {}
    given = []
    for name, value in options.items():
        values = value if isinstance(value, list | tuple) else [value]
        named = [v for v in values if isinstance(v, Path) or (name in _WHERE_STRINGS and isinstance(v, str))]
        meta = getattr(hints.get(name), "__metadata__", ())
        is_argument = any(isinstance(m, typer.models.ArgumentInfo) for m in meta)
        label = name.upper() if is_argument else f"--{name.replace('_', '-')}"
        given += [f"{label} {_no_password(v) if isinstance(v, str) else v}" for v in named]
    return f" (check {', '.join(given)})" if given else ""


def _database_error(exc: BaseException, where: str) -> str | None:
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        return f"database error: {exc}{where}"
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None or not isinstance(exc, sa_exc.DBAPIError):
        return None
    reason = " ".join(str(exc.orig or exc).split()) or type(exc.orig).__name__
    if isinstance(exc, sa_exc.OperationalError) and "connect" in reason.lower():
        return f"cannot connect to the database: {reason}{where}"
    return f"database error: {reason}{where}"


def _network_error(exc: BaseException) -> str | None:
    families: list[type[BaseException]] = []
    httpx = sys.modules.get("httpx")
    if httpx is not None:
        families.append(httpx.TransportError)
    openai = sys.modules.get("openai")
    if openai is not None:
        families.append(openai.APIConnectionError)
    anthropic = sys.modules.get("anthropic")
    if anthropic is not None:
        families.append(anthropic.APIConnectionError)
    if not families or not isinstance(exc, tuple(families)):
        return None
    return f"cannot reach the server: {exc}; is it running? Check --base-url"


def _raised_by_agentloop(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is agentloop's code (a ``raise ValueError``)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    package = Path(__file__).resolve().parents[1]  # agentloop/, not agentloop/cli/
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(package)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
