"""The ``text2sql`` suite for ``agentloop run``: Spider-style questions, scored by execution accuracy."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Literal

from agentloop.errors import DatasetError
from agentloop.suites._base import Score, Suite, SuiteItem, SuiteOptions, content_hash
from agentloop.suites.text2sql.data import Text2SQLExample, load_text2sql
from agentloop.suites.text2sql.execution import score_one
from agentloop.suites.text2sql.hardness import DIFFICULTIES

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult
    from agentloop.types import Backend

__all__ = ["Text2SQLSuite"]


class Text2SQLSuite(Suite):
    """Spider-style Text2SQL: execution accuracy of the final SQL, with official semantics."""

    name = "text2sql"
    difficulties = DIFFICULTIES
    verifiers = {
        "exec": "gold-free: the SQL runs, returns rows, and fits the question's shape",
        "judge": "an LLM reads the question, the SQL and its result",
        "oracle": "the gold query's result (an upper bound, not a fair verifier)",
    }
    upper_bounds = ("oracle",)
    metric = "execution_accuracy"
    metric_label = "execution accuracy"
    default_limit = 10
    # The blank line after a closing fence starts an explanation that nobody reads: on a small
    # model it is most of the tokens. An opening fence is never followed by a blank line.
    stop = ("```\n\n",)

    def items(self, spec: SuiteOptions, backend: Backend | None = None) -> list[SuiteItem]:
        from agentloop.suites.text2sql.task import Text2SQLTask
        from agentloop.suites.text2sql.verifiers import make_verifier

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
                difficulty=ex.difficulty,
                source=source,
                # The database, the question and the gold query define a Text2SQL task.
                content_hash=content_hash(["text2sql", ex.db_id, ex.question, ex.gold_sql]),
                extra={"db_id": ex.db_id},
            )
            for ex in chosen
        ]

    @staticmethod
    def constrain_mode(spec: SuiteOptions, backend: Backend | None = None) -> Literal["schema", "none"]:
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


def _check_unique_ids(examples: list[Text2SQLExample]) -> None:
    counts = Counter(ex.id for ex in examples)
    dupes = [i for i, n in counts.items() if n > 1]
    if dupes:
        shown = ", ".join(dupes[:5]) + (", ..." if len(dupes) > 5 else "")
        raise DatasetError(
            f"example ids must be unique within a run (the run store keys results by them): {shown}"
        )
