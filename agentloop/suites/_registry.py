"""The suites ``agentloop run SUITE`` knows: how each loads its tasks and scores a final answer.

A suite turns a run's options into :class:`SuiteItem` s (a graph task plus what the
report groups by) and scores each run's final answer against the reference, apart from
whatever verifier steered the run. The built-ins are in :data:`SUITES`; a user's suite is
given as ``module:attr`` or ``file.py:attr``, or registered by a package under the
``agentloop.suites`` entry-point group (docs/custom.md). The :class:`Suite` API itself is
defined in ``_base`` (so suites in their own modules need not import this registry).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from agentloop._plugins import (
    SUITE_GROUP,
    PluginError,
    is_reference,
    load_plugin,
    load_reference,
    normalize_reference,
    plugin_names,
)
from agentloop.errors import AgentloopError, did_you_mean
from agentloop.suites._base import PROMPT_FORMATS, Score, Suite, SuiteItem, content_hash
from agentloop.suites.humaneval.suite import HumanEvalSuite
from agentloop.suites.text2sql.suite import Text2SQLSuite
from agentloop.suites.webshop.suite import WebShopSuite

__all__ = [
    "PROMPT_FORMATS",
    "SUITES",
    "HumanEvalSuite",
    "Score",
    "Suite",
    "SuiteItem",
    "SuiteLoadError",
    "Text2SQLSuite",
    "UnknownSuiteError",
    "WebShopSuite",
    "content_hash",
    "get_suite",
    "plugin_suites",
]


class UnknownSuiteError(AgentloopError, ValueError):
    def __init__(self, name: str):
        note = " (or give your own as module:attr or path/to/file.py:attr)"
        super().__init__(did_you_mean("suite", name, [*SUITES, *plugin_suites()], note=note))


SUITES: dict[str, type[Suite]] = {s.name: s for s in (Text2SQLSuite, WebShopSuite, HumanEvalSuite)}


class SuiteLoadError(PluginError):
    """A suite given by reference or plugin does not import, or is not a :class:`Suite`."""


def plugin_suites() -> list[str]:
    """Suite names installed packages register under the ``agentloop.suites`` entry-point group."""
    return [name for name in plugin_names(SUITE_GROUP) if name not in SUITES]


def get_suite(name: str) -> Suite:
    """The suite ``name``: a built-in, ``module:attr`` or ``file.py:attr``, or a plugin's entry point.

    The attribute is a :class:`Suite` subclass (instantiated with no arguments) or an instance.
    """
    if name in SUITES:
        return SUITES[name]()
    if is_reference(name):
        ref = normalize_reference(name)
        target = ref.rpartition(":")[0]
        mtime = Path(target).stat().st_mtime_ns if target.endswith(".py") and Path(target).is_file() else 0
        found: type[Suite] | Suite | None = _reference_suite(ref, mtime)
    else:
        found = _plugin_suite(name)
    if found is None:
        raise UnknownSuiteError(name)
    return found() if isinstance(found, type) else found


@functools.cache
def _reference_suite(ref: str, mtime: int) -> type[Suite] | Suite:
    # Cached per file version: the runner, the progress bar and the report all ask for it.
    return _check_suite(load_reference(ref, "suite"), ref)


@functools.cache
def _plugin_suite(name: str) -> type[Suite] | Suite | None:
    obj = load_plugin(SUITE_GROUP, name, "suite")
    return None if obj is None else _check_suite(obj, name)


def _check_suite(obj: Any, ref: str) -> type[Suite] | Suite:
    if isinstance(obj, type) and issubclass(obj, Suite):
        missing = sorted(getattr(obj, "__abstractmethods__", ()))
        if obj.score is Suite.score and not obj.verifier_is_scorer:
            missing.append("score (or set verifier_is_scorer = True)")
        if missing:
            raise SuiteLoadError(f"suite '{ref}' ({obj.__name__}) does not implement {', '.join(missing)}")
        suite: type[Suite] | Suite = obj
    elif isinstance(obj, Suite):
        suite = obj
    else:
        raise SuiteLoadError(
            f"suite '{ref}' is a {type(obj).__name__}, not a Suite subclass or instance "
            "(from agentloop.suites import Suite)"
        )
    if not isinstance(getattr(suite, "name", None), str):
        raise SuiteLoadError(f"suite '{ref}' sets no name (a class attribute: name = 'my-suite')")
    return suite
