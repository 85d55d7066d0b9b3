"""Verifiers for Text2SQL candidates: ``exec`` (gold-free), ``judge`` (an LLM reads the result), ``oracle`` (gold).

At inference time there is no gold query, so ``exec`` is the default: the query must parse,
run, return rows and stay within the schema, and a database error becomes the feedback.
``judge`` adds an LLM's yes/no on whether the rows answer the question. ``oracle`` compares
with the gold result through the official-semantics evaluator; it is the IAD paper's
"optimal verifier", for upper-bound analysis only, and reports label it so.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import sqlglot
from sqlglot import exp

from agentloop.errors import AgentloopError, did_you_mean
from agentloop.graphs.task import Candidate, Verdict
from agentloop.prompts import render_prompt
from agentloop.suites.text2sql.data import Text2SQLExample
from agentloop.suites.text2sql.execution import score_one
from agentloop.tools.sql import SQLResult, readonly_connection
from agentloop.types import Backend, ChatRequest, Message

if TYPE_CHECKING:
    from agentloop.suites.text2sql.task import Text2SQLTask

__all__ = [
    "VERIFIERS",
    "ExecVerifier",
    "JudgeVerifier",
    "OracleVerifier",
    "SchemaInfo",
    "Text2SQLVerifier",
    "UnknownVerifierError",
    "VerifierName",
    "make_verifier",
    "schema_info",
    "unknown_identifiers",
]

VerifierName = Literal["exec", "judge", "oracle"]

# Scores of the exec checks. Ordered so that refinement prefers a query that runs but is
# off (empty, outside the schema) to one that fails outright.
SCORE_ERROR = 0.0
SCORE_UNKNOWN_NAMES = 0.3
SCORE_NO_ROWS = 0.5
SCORE_PASSED = 1.0
# Judge: "no" still beats a failing exec check (the query runs and returns rows); an
# answer that is neither yes nor no sits between "no" and "yes".
SCORE_JUDGE_NO = 0.7
SCORE_JUDGE_UNCLEAR = 0.85
# Oracle: a wrong result still ranks above a query that does not run.
SCORE_ORACLE_WRONG = 0.2
PREVIEW_ROWS = 5


class UnknownVerifierError(AgentloopError, ValueError):
    def __init__(self, name: str):
        super().__init__(did_you_mean("verifier", name, VERIFIERS))


class Text2SQLVerifier(abc.ABC):
    """Judges one parsed candidate of a :class:`Text2SQLTask`."""

    name: ClassVar[str]
    #: True when the verifier reads the gold answer: its runs are upper bounds, not results.
    upper_bound: ClassVar[bool] = False

    def check(self, example: Text2SQLExample) -> None:  # noqa: B027 - optional hook
        """Raise if this verifier cannot judge ``example`` (the oracle needs gold SQL)."""

    @abc.abstractmethod
    async def verify(self, task: Text2SQLTask, candidate: Candidate) -> Verdict:
        """The verdict on ``candidate.answer`` (the extracted SQL)."""


class ExecVerifier(Text2SQLVerifier):
    """Gold-free: the query runs, returns at least one non-NULL row and names only schema objects."""

    name = "exec"

    async def verify(self, task: Text2SQLTask, candidate: Candidate) -> Verdict:
        sql = candidate.answer
        if not isinstance(sql, str) or not sql.strip():
            return Verdict.failed("no SQL query found in the answer", check="no_sql")
        result = await task.execute(sql)
        if not result.ok:
            return Verdict(
                SCORE_ERROR,
                feedback=f"The query failed: {result.error}",
                details={"check": "error", "error_kind": result.error_kind, "error": result.error},
            )
        names = unknown_identifiers(sql, schema_info(str(task.example.db_path)))
        details: dict[str, Any] = {"rows": len(result.rows), "truncated": result.truncated}
        if names is not None and names.unknown:
            listed = ", ".join(names.unknown)
            return Verdict(
                SCORE_UNKNOWN_NAMES,
                feedback=(
                    f"The query ran but uses names that are not in the schema: {listed}. In SQLite a "
                    "double-quoted name that is not a column is read as a string; use the schema's "
                    "table and column names, and single quotes for strings."
                ),
                details={**details, "check": "unknown_names", "unknown": list(names.unknown)},
            )
        if not result.rows:
            return Verdict(
                SCORE_NO_ROWS,
                feedback=(
                    "The query ran but returned no rows. Check the filter values against the sample "
                    "rows (spelling, case, type) and the join conditions."
                ),
                details={**details, "check": "no_rows"},
            )
        if all(value is None for row in result.rows for value in row):
            return Verdict(
                SCORE_NO_ROWS,
                feedback=(
                    f"The query ran but returned only NULL values:\n{_preview(result)}\nCheck the filters "
                    "and the join conditions."
                ),
                details={**details, "check": "only_nulls"},
            )
        if names is not None and not names.reads_table:
            return Verdict(
                SCORE_NO_ROWS,
                feedback="The query reads no table of the database; answer from the data, not from constants.",
                details={**details, "check": "no_table"},
            )
        return Verdict(
            SCORE_PASSED,
            passed=True,
            feedback=f"The query ran and returned {_rows(result)}:\n{_preview(result)}",
            details={**details, "check": "passed"},
        )


class JudgeVerifier(Text2SQLVerifier):
    """``exec`` first; if it passes, the model is asked whether the rows answer the question.

    Inside a graph run the question goes through ``LoopContext.ask``, so its tokens and call
    count in the run's budget and usage (not as candidates). Outside a graph it uses
    ``backend``. When the budget has no room left, the ``exec`` verdict stands.
    """

    name = "judge"

    def __init__(self, backend: Backend | None = None, *, max_tokens: int = 8, rows_shown: int = 10):
        self.backend = backend
        self.max_tokens = max_tokens
        self.rows_shown = rows_shown
        self._exec = ExecVerifier()

    async def verify(self, task: Text2SQLTask, candidate: Candidate) -> Verdict:
        verdict = await self._exec.verify(task, candidate)
        if not verdict.passed:
            return verdict
        sql = str(candidate.answer)
        result = await task.execute(sql)
        prompt = render_prompt(
            "text2sql_judge",
            question=task.question,
            sql=sql,
            rows=_rows(result),
            result=result.to_text(max_rows=self.rows_shown),
        )
        reply = await self._ask([Message("user", prompt)])
        details = dict(verdict.details)
        if reply is None:
            return Verdict(
                verdict.score, verdict.passed, verdict.feedback, {**details, "judge": "skipped (no budget)"}
            )
        answer = _yes_no(reply)
        details |= {"judge": answer, "judge_reply": reply.strip()[:200]}
        if answer == "yes":
            return Verdict(SCORE_PASSED, True, verdict.feedback, {**details, "check": "judge_yes"})
        if answer == "no":
            feedback = (
                f"The query ran and returned {_rows(result)}:\n{_preview(result)}\nA reviewer judged that "
                "this does not answer the question; check the selected columns, filters, joins and grouping."
            )
            return Verdict(SCORE_JUDGE_NO, False, feedback, {**details, "check": "judge_no"})
        feedback = f"{verdict.feedback}\nA reviewer could not tell whether this answers the question."
        return Verdict(SCORE_JUDGE_UNCLEAR, False, feedback, {**details, "check": "judge_unclear"})

    async def _ask(self, messages: Sequence[Message]) -> str | None:
        from langgraph.runtime import get_runtime

        from agentloop.graphs.context import LoopContext

        try:
            ctx = get_runtime(LoopContext).context
        except RuntimeError:  # not inside a graph run
            ctx = None
        if isinstance(ctx, LoopContext):
            return await ctx.ask(messages, max_tokens=self.max_tokens, temperature=0.0)
        if self.backend is None:
            raise RuntimeError("the judge verifier needs a backend when it runs outside a graph")
        request = ChatRequest(messages=tuple(messages), n=1, temperature=0.0, max_tokens=self.max_tokens)
        response = await self.backend.generate(request)
        return response.completions[0].text if response.completions else None


class OracleVerifier(Text2SQLVerifier):
    """Compares the result with the gold query's (official semantics). Upper-bound analysis only."""

    name = "oracle"
    upper_bound = True

    def check(self, example: Text2SQLExample) -> None:
        if not example.gold_sql:
            raise AgentloopError(
                f"the oracle verifier needs gold SQL, and example {example.id} has none; "
                "use --verifier exec or judge"
            )

    async def verify(self, task: Text2SQLTask, candidate: Candidate) -> Verdict:
        sql = candidate.answer
        if not isinstance(sql, str) or not sql.strip():
            return Verdict.failed("no SQL query found in the answer", check="no_sql")
        scored = await asyncio.to_thread(score_one, task.example, sql)
        if scored.correct:
            return Verdict(
                SCORE_PASSED, True, "The result matches the reference result.", {"check": "oracle_match"}
            )
        result = await task.execute(sql)
        if not result.ok:
            return Verdict(
                SCORE_ERROR,
                feedback=f"The query failed: {result.error}",
                details={"check": "error", "error_kind": result.error_kind, "error": result.error},
            )
        return Verdict(
            SCORE_ORACLE_WRONG,
            feedback=(
                f"The query ran and returned {_rows(result)}:\n{_preview(result)}\n"
                "This does not match the reference result."
            ),
            details={"check": "oracle_mismatch", "eval_error": scored.error},
        )


VERIFIERS: dict[str, type[Text2SQLVerifier]] = {
    v.name: v for v in (ExecVerifier, JudgeVerifier, OracleVerifier)
}


def make_verifier(name: str, *, backend: Backend | None = None) -> Text2SQLVerifier:
    """The verifier registered as ``name``; ``backend`` is what ``judge`` asks outside a graph."""
    try:
        cls = VERIFIERS[name]
    except KeyError:
        raise UnknownVerifierError(name) from None
    return JudgeVerifier(backend) if cls is JudgeVerifier else cls()


# --- schema checks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """Lower-cased table (and view) names and column names of one database."""

    tables: frozenset[str]
    columns: frozenset[str]


@functools.lru_cache(maxsize=64)
def schema_info(db_path: str) -> SchemaInfo:
    """The tables and columns of the SQLite database at ``db_path`` (cached per path)."""
    with readonly_connection(db_path) as guard:
        conn = guard.connection
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' "
                "ESCAPE '\\'"
            )
        ]
        columns: set[str] = set()
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            columns.update(str(row[1]).lower() for row in conn.execute(f"PRAGMA table_info({quoted})"))
    return SchemaInfo(frozenset(n.lower() for n in names), frozenset(columns))


@dataclass(frozen=True, slots=True)
class NameCheck:
    unknown: tuple[str, ...]  # tables or columns the schema does not have
    reads_table: bool  # whether the query reads any table of the schema


def unknown_identifiers(sql: str, schema: SchemaInfo) -> NameCheck | None:
    """Tables and columns in ``sql`` that ``schema`` lacks; ``None`` unless sqlglot parses it as a query.

    Names the query defines itself (CTEs, table and column aliases) are known. A
    double-quoted name compared with something (``country = "France"``) is SQLite's
    string fallback, which Spider's own gold queries rely on, so it is not reported.
    """
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.SqlglotError, RecursionError):
        return None
    if not isinstance(tree, exp.Query):
        return None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    defined = set(ctes)
    for cte in tree.find_all(exp.CTE):
        alias = cte.args.get("alias")
        if isinstance(alias, exp.TableAlias):
            defined.update(c.name.lower() for c in alias.columns)
    defined.update(a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias)
    defined.update(t.alias.lower() for t in tree.find_all(exp.Table) if t.alias)
    defined.update(s.alias.lower() for s in tree.find_all(exp.Subquery) if s.alias)
    unknown: list[str] = []
    reads_table = False
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if name in schema.tables:
            reads_table = True
        elif name and name not in ctes and table.name not in unknown:
            unknown.append(table.name)
    for column in tree.find_all(exp.Column):
        if isinstance(column.this, exp.Star):
            continue
        name = column.name.lower()
        if not name or name in schema.columns or name in defined or column.name in unknown:
            continue
        if _string_fallback(column, sql):
            continue
        unknown.append(column.name)
    return NameCheck(tuple(unknown), reads_table)


def _string_fallback(column: exp.Column, sql: str) -> bool:
    if column.table or not column.this.args.get("quoted"):
        return False
    if f'"{column.name}"' not in sql:  # `x` and [x] are always identifiers; only "x" falls back
        return False
    return isinstance(column.parent, exp.Predicate) or isinstance(column.parent, exp.Tuple)


# --- helpers -------------------------------------------------------------------------------


def _rows(result: SQLResult) -> str:
    n = len(result.rows)
    more = "more than " if result.truncated else ""
    return f"{more}{n} row{'' if n == 1 else 's'}"


def _preview(result: SQLResult) -> str:
    return result.to_text(max_rows=PREVIEW_ROWS, max_cell_chars=40)


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def _yes_no(reply: str) -> Literal["yes", "no", "unclear"]:
    m = _YES_NO.search(reply)
    if m is None:
        return "unclear"
    return "yes" if m.group(1).lower() == "yes" else "no"
