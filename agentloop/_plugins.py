"""User code by reference: ``pkg.module:attr``, ``path/to/file.py:attr`` and entry-point plugins.

Graphs, suites and backends resolve names the same way: a built-in name first, then an
import reference, then an installed plugin's entry point. Entry points are listed without
loading them, and one is loaded only when its name is asked for, so a broken plugin breaks
only itself.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from agentloop.errors import AgentloopError, close_match

__all__ = [
    "BACKEND_GROUP",
    "GRAPH_GROUP",
    "SUITE_GROUP",
    "PluginError",
    "is_reference",
    "load_plugin",
    "load_reference",
    "normalize_reference",
    "plugin_names",
    "reference_label",
]

GRAPH_GROUP = "agentloop.graphs"
SUITE_GROUP = "agentloop.suites"
BACKEND_GROUP = "agentloop.backends"

_MODULE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_ATTR = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


class PluginError(AgentloopError, ValueError):
    """A graph, suite or backend given by reference or entry point could not be loaded or does not fit."""


def is_reference(name: str) -> bool:
    """Whether ``name`` is ``module:attr`` or ``file.py:attr`` rather than a registered name."""
    target, sep, attr = name.rpartition(":")
    if not sep or not _ATTR.fullmatch(attr):
        return False
    return target.endswith(".py") or bool(_MODULE.fullmatch(target))


def normalize_reference(name: str) -> str:
    """A file reference with its path made absolute (a resume from elsewhere compares equal); else ``name``."""
    target, _, attr = name.rpartition(":")
    if is_reference(name) and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return name


def reference_label(name: str) -> str:
    """A short, path-free label for a run directory or a progress bar: the attribute of a reference."""
    return name.rpartition(":")[2] if is_reference(name) else name


def load_reference(ref: str, what: str) -> Any:
    """Import ``module:attr`` or ``file.py:attr`` and return the attribute (one-line errors)."""
    target, _, attr = ref.rpartition(":")
    try:
        module = _import_file(target) if target.endswith(".py") else importlib.import_module(target)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"cannot import {what} '{ref}': {type(exc).__name__}: {exc}") from exc
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            public = [n for n in dir(module) if not n.startswith("_")]
            close = close_match(part, public)
            hint = f"; did you mean '{close}'?" if close else ""
            raise PluginError(f"{what} '{ref}': {target} has no attribute '{attr}'{hint}")
        value = getattr(value, part)
    return value


def _import_file(path: str) -> Any:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise PluginError(f"no such file: {path}")
    # A stable, unique module name per file, so dataclasses and pickling find the module.
    name = f"agentloop_user_{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _entry_points(group: str) -> dict[str, EntryPoint]:
    # Listing reads only the installed distributions' metadata: no plugin code runs.
    return {ep.name: ep for ep in entry_points(group=group)}


def plugin_names(group: str) -> list[str]:
    """The names installed packages register under ``group`` (nothing is imported)."""
    return sorted(_entry_points(group))


def load_plugin(group: str, name: str, what: str) -> Any | None:
    """The object the entry point ``name`` of ``group`` points at; None when no plugin has that name."""
    ep = _entry_points(group).get(name)
    if ep is None:
        return None
    try:
        return ep.load()
    except Exception as exc:
        dist = f" (from {ep.dist.name})" if ep.dist is not None else ""
        raise PluginError(
            f"the {what} plugin '{name}'{dist} failed to load ({ep.value}): {type(exc).__name__}: {exc}"
        ) from exc
