"""The suites ``agentloop run SUITE`` knows: how each loads its tasks and scores a final answer.

A suite turns a :class:`RunSpec` into :class:`SuiteItem` s (a graph task plus what the
report groups by) and scores each run's final answer against the reference, apart from
whatever verifier steered the run. The built-ins are in :data:`SUITES`; a user's suite is
given as ``module:attr`` or ``file.py:attr``, or registered by a package under the
``agentloop.suites`` entry-point group (docs/custom.md). The :class:`Suite` API itself is
defined in ``_suite_base`` (so suites in their own modules need not import this registry)
and re-exported here.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
from agentloop.evals._suite_base import PROMPT_FORMATS, Score, Suite, SuiteItem, content_hash
from agentloop.evals.spider_data import DatasetError, Text2SQLExample, load_text2sql
from agentloop.evals.spider_exec import score_one
from agentloop.evals.webshop_suite import WebShopSuite
from agentloop.graphs.result import LoopResult
from agentloop.types import Backend

if TYPE_CHECKING:
    from agentloop.evals.run_spec import RunSpec

__all__ = [
    "PROMPT_FORMATS",
    "SUITES",
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


class Text2SQLSuite(Suite):
    """Spider-style Text2SQL: execution accuracy of the final SQL, with official semantics."""

    name = "text2sql"
    default_limit = 10
    # The blank line after a closing fence starts an explanation that nobody reads: on a small
    # model it is most of the tokens. An opening fence is never followed by a blank line.
    stop = ("```\n\n",)

    def items(self, spec: RunSpec, backend: Backend | None = None) -> list[SuiteItem]:
        from agentloop.evals.text2sql_task import Text2SQLTask
        from agentloop.evals.text2sql_verifiers import make_verifier

        examples = load_text2sql(spec.data)
        end = None if spec.limit is None else spec.offset + spec.limit
        chosen = examples[spec.offset : end]
        if not chosen:
            raise DatasetError(
                f"--offset {spec.offset} --limit {spec.limit} selects no examples from a dataset of "
                f"{len(examples)}"
            )
        _check_unique_ids(chosen)
        verifier = make_verifier(spec.verifier or self.default_verifier, backend=backend)
        prompt_format = self.prompt_format(spec)
        constrain = self.constrain_mode(spec, backend) == "schema"
        source = spec.data or "packaged:spider-dev"
        return [
            SuiteItem(
                task=Text2SQLTask(ex, verifier, prompt_format=prompt_format, constrain=constrain),  # type: ignore[arg-type]
                index=ex.index,
                question=ex.question,
                db_id=ex.db_id,
                difficulty=ex.difficulty,
                source=source,
                # The database, the question and the gold query define a Text2SQL task.
                content_hash=content_hash(["text2sql", ex.db_id, ex.question, ex.gold_sql]),
            )
            for ex in chosen
        ]

    @staticmethod
    def constrain_mode(spec: RunSpec, backend: Backend | None = None) -> Literal["schema", "none"]:
        """``--constrain`` resolved. ``auto`` is ``schema`` for in-process backends that honour
        grammars (transformers, vllm:MODEL, the test doubles) and ``none`` for servers and
        hosted APIs: whether a server takes a Lark grammar is known only from its answer
        (``transformers serve`` refuses it, vLLM's default engine takes simple grammars only).

        ``schema`` on a backend without grammar support raises before any task runs.
        """
        backend_id = backend.id if backend is not None else spec.backend
        able = backend is None or "grammar" in backend.constraint_kinds
        if spec.constrain == "auto":
            served = backend_id.split(":", 1)[0] in ("openai", "anthropic")
            return "schema" if able and not served else "none"
        if spec.constrain == "schema" and not able:
            from agentloop.backends import UnsupportedCapabilityError

            raise UnsupportedCapabilityError(
                f"--constrain schema needs a backend that honours grammar constraints, and {backend_id} "
                "does not; use --constrain none (or auto)"
            )
        return "schema" if spec.constrain == "schema" else "none"

    async def score(self, item: SuiteItem, result: LoopResult) -> Score:
        example: Text2SQLExample = item.task.example  # type: ignore[attr-defined]
        sql = result.answer
        if not isinstance(sql, str) or not sql.strip():
            return Score(False, "no SQL answer")
        scored = await asyncio.to_thread(score_one, example, sql)
        return Score(scored.correct, scored.error)

    def upper_bound(self, verifier: str) -> bool:
        from agentloop.evals.text2sql_verifiers import VERIFIERS

        cls = VERIFIERS.get(verifier)
        return cls is not None and cls.upper_bound


def _check_unique_ids(examples: list[Text2SQLExample]) -> None:
    counts = Counter(ex.id for ex in examples)
    dupes = [i for i, n in counts.items() if n > 1]
    if dupes:
        shown = ", ".join(dupes[:5]) + (", ..." if len(dupes) > 5 else "")
        raise DatasetError(
            f"example ids must be unique within a run (the run store keys results by them): {shown}"
        )


SUITES: dict[str, type[Suite]] = {s.name: s for s in (Text2SQLSuite, WebShopSuite)}


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
        if getattr(obj, "__abstractmethods__", None):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            raise SuiteLoadError(f"suite '{ref}' ({obj.__name__}) does not implement {missing}")
        suite: type[Suite] | Suite = obj
    elif isinstance(obj, Suite):
        suite = obj
    else:
        raise SuiteLoadError(
            f"suite '{ref}' is a {type(obj).__name__}, not a Suite subclass or instance "
            "(from agentloop.evals.suites import Suite)"
        )
    if not isinstance(getattr(suite, "name", None), str):
        raise SuiteLoadError(f"suite '{ref}' sets no name (a class attribute: name = 'my-suite')")
    return suite
