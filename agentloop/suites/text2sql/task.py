"""Text2SQL as a graph task: the schema prompt, SQL extraction from chatty replies, and the vote key.

One :class:`Text2SQLTask` per example. Its verifier (``exec``, ``judge`` or ``oracle``, see
:mod:`agentloop.suites.text2sql.verifiers`) decides the candidate scores the graphs act on;
the final execution accuracy against gold is computed apart from it, by the runner.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Literal

import sqlglot
from sqlglot import exp

from agentloop.graphs.task import Candidate, Feedback, Task, Verdict, render_lessons
from agentloop.prompts import render_prompt
from agentloop.suites.text2sql.data import Text2SQLExample
from agentloop.tools.sql import SQLResult, run_sql, split_sql_statements
from agentloop.tools.sql_schema import render_compact_schema, render_schema
from agentloop.types import Constraint, Message

if TYPE_CHECKING:
    from agentloop.suites.text2sql.verifiers import Text2SQLVerifier

__all__ = [
    "DEFAULT_SCHEMA_CHARS",
    "PROMPT_FORMATS",
    "PromptFormat",
    "SQLExtractionError",
    "Text2SQLTask",
    "extract_sql",
    "has_order_by",
    "result_key",
]

# About 2,000 tokens: room for most Spider schemas with sample rows, and small enough for a
# 135M model's prompt to stay quick on CPU. Longer schemas lose sample rows first.
DEFAULT_SCHEMA_CHARS = 6_000
PromptFormat = Literal["chat", "fewshot"]
#: ``chat``: system + user messages with CREATE statements and sample rows (instruction-tuned
#: models). ``fewshot``: a raw completion prompt with three solved examples, one-line
#: ``table(col, ...)`` schemas and the answer started with ``SELECT`` (small local models).
PROMPT_FORMATS: tuple[str, ...] = ("chat", "fewshot")  # as in agentloop.suites._registry
# The few-shot answer ends at its semicolon, or where the model starts a new example.
FEWSHOT_STOP = (";", "\n\n", "\nQuestion:", "\nTables:", "\n--")
# Expressions in one SELECT list under --constrain schema (Spider's gold has at most 6): a
# small model whose wanted column the mask refuses tends to list valid ones to the token limit.
MAX_SELECT_ITEMS = 6
# Rows a candidate's query may return while it is verified or voted on.
RESULT_ROWS = 200
QUERY_TIMEOUT_S = 10.0


class SQLExtractionError(ValueError):
    """A reply holds no SQL query; the message tells the model what to send instead."""


class Text2SQLTask(Task):
    """One Text2SQL example: prompt with the schema, parse the SQL, verify it with ``verifier``.

    Query results are cached per SQL text, so the verifier and the vote key run each
    distinct query once.
    """

    def __init__(
        self,
        example: Text2SQLExample,
        verifier: Text2SQLVerifier | str = "exec",
        *,
        prompt_format: PromptFormat = "chat",
        schema_chars: int = DEFAULT_SCHEMA_CHARS,
        sample_rows: int = 3,
        constrain: bool = False,
    ):
        from agentloop.suites.text2sql.verifiers import make_verifier

        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(
                f"unknown Text2SQL prompt format {prompt_format!r}; use one of: {', '.join(PROMPT_FORMATS)}"
            )
        self.example = example
        self.id = example.id
        self.verifier = make_verifier(verifier) if isinstance(verifier, str) else verifier
        self.verifier.check(example)
        self.prompt_format = prompt_format
        self.stop = FEWSHOT_STOP if prompt_format == "fewshot" else ()
        self.schema_chars = schema_chars
        self.sample_rows = sample_rows
        self.constrain = constrain
        self._results: dict[str, SQLResult] = {}
        self._constraint: Constraint | None = None

    @property
    def constraint(self) -> Constraint | None:
        """The grammar every candidate request carries (``constrain=True``), else ``None``.

        The database's schema grammar (:func:`agentloop.suites.text2sql.grammar.schema_grammar`):
        the whole raw query for the chat format; for the few-shot format the rest of it after
        the prompt's ``SELECT``, on one line (as the examples are written: a small model ends
        its answer with a blank line, which the grammar would otherwise make it continue as
        SQL), and at most :data:`MAX_SELECT_ITEMS` expressions per SELECT list. Either way the
        parsed answer is a sentence of the full grammar.
        """
        if self.constrain and self._constraint is None:
            from agentloop.suites.text2sql.grammar import schema_grammar

            fewshot = self.prompt_format == "fewshot"
            grammar = schema_grammar(
                self.example.db_path, after_select=fewshot, newlines=not fewshot, max_items=MAX_SELECT_ITEMS
            )
            self._constraint = Constraint.grammar(grammar)
        return self._constraint

    @property
    def question(self) -> str:
        return self.example.question

    @property
    def schema(self) -> str:
        return _schema_text(str(self.example.db_path), self.sample_rows, self.schema_chars)

    def build_messages(self, lessons: Sequence[str] = ()) -> list[Message]:
        if self.prompt_format == "fewshot":
            return [Message("user", self._fewshot(lessons))]
        section = render_lessons(lessons)
        user = render_prompt(
            "text2sql_user",
            lessons=f"{section}\n\n" if section else "",
            schema=self.schema,
            question=self.question,
        )
        return [Message("system", render_prompt("text2sql_system")), Message("user", user)]

    def build_refine_messages(self, feedback: Feedback, lessons: Sequence[str] = ()) -> list[Message]:
        if self.prompt_format == "fewshot":
            return [Message("user", self._fewshot(lessons, feedback))]
        return super().build_refine_messages(feedback, lessons)

    def request_constraint(self, messages: Sequence[Message]) -> Constraint | None:
        """Every candidate request carries the schema grammar (``constrain=True``).

        Constrained requests send no stop strings: the grammar ends the query itself (at
        ``;``, or where the model picks EOS after a complete query), and the few-shot stops
        (``;``, a blank line) could cut a string literal or a query going on after a newline.
        """
        return self.constraint

    def completion_prompt(self, messages: Sequence[Message]) -> str | None:
        return messages[-1].content if self.prompt_format == "fewshot" else None

    def parse(self, text: str) -> str:
        if self.prompt_format == "fewshot" and not _START.match(text.lstrip()):
            # The prompt ends in "SQL: SELECT", so the completion is the rest of the query.
            text = "SELECT " + text.lstrip()
        return extract_sql(text)

    def _fewshot(self, lessons: Sequence[str], feedback: Feedback | None = None) -> str:
        tables, keys = _compact_schema(str(self.example.db_path))
        items = [s.strip() for s in lessons if s and s.strip()]
        lesson_lines = "".join(f"-- Lesson from earlier tasks: {s}\n" for s in items)
        return render_prompt(
            "text2sql_fewshot",
            schema=tables + (f"\nKeys: {keys}" if keys else ""),
            lessons=lesson_lines,
            question=self.question,
            feedback=_fewshot_feedback(feedback) + "\n" if feedback is not None else "",
        )

    async def verify(self, candidate: Candidate) -> Verdict:
        return await self.verifier.verify(self, candidate)

    async def answer_key(self, candidate: Candidate) -> Hashable | None:
        """The query's result, order-insensitive unless it has ORDER BY; ``None`` on error."""
        sql = candidate.answer
        if not isinstance(sql, str) or candidate.parse_error is not None:
            return None
        return result_key(sql, await self.execute(sql))

    async def execute(self, sql: str) -> SQLResult:
        """Run ``sql`` on the example's database through the read-only sandbox (cached per text)."""
        cached = self._results.get(sql)
        if cached is None:
            cached = await run_sql(self.example.db_path, sql, timeout_s=QUERY_TIMEOUT_S, max_rows=RESULT_ROWS)
            self._results[sql] = cached
        return cached


@functools.lru_cache(maxsize=64)
def _compact_schema(db_path: str) -> tuple[str, str]:
    return render_compact_schema(db_path)


def _fewshot_feedback(feedback: Feedback) -> str:
    """IAD's best/worst signal (self-refine's previous query) as SQL comments, the one shape a
    completion prompt can carry."""

    def slots(prefix: str, c: Candidate) -> dict[str, str]:
        sql = c.answer if isinstance(c.answer, str) else c.text
        message = c.verdict.feedback if c.verdict is not None else ""
        return {
            f"{prefix}sql": " ".join(sql.split())[:400],
            f"{prefix}score": f"{c.score:.2f}",
            f"{prefix}feedback": " ".join(message.split())[:300] or "no message",
        }

    if feedback.style == "revise":  # self-refine: the previous query alone, no contrast
        return render_prompt("text2sql_fewshot_self_refine", **slots("", feedback.best))
    worst = ""
    if feedback.worst is not None:
        worst = "\n" + render_prompt("text2sql_fewshot_worst", **slots("worst_", feedback.worst))
    return render_prompt("text2sql_fewshot_feedback", **slots("best_", feedback.best), worst_block=worst)


@functools.lru_cache(maxsize=64)
def _schema_text(db_path: str, sample_rows: int, max_chars: int) -> str:
    # Many examples share a database; render each one once per process.
    return render_schema(db_path, sample_rows=sample_rows, max_chars=max_chars)


# --- SQL extraction ------------------------------------------------------------------------

_FENCE = re.compile(r"```(.*?)(?:```|\Z)", re.DOTALL)
_LANG_TAG = re.compile(r"[ \t]*([\w+-]*)[ \t]*\n")
# SELECT anywhere; WITH only as a real CTE head, since "with" is common in prose.
_START = re.compile(
    r"\bSELECT\b|\bWITH\s+(?:RECURSIVE\s+)?[\w\"`\[\]]+\s*(?:\([^()]*\)\s*)?AS\s*(?:NOT\s+)?(?:MATERIALIZED\s+)?\(",
    re.IGNORECASE,
)
# Where a query usually starts: a line's start, or after "SQL:", "Query:", a backtick, a quote.
_LEADER = re.compile(r"(?:^|[:`\"'>])[ \t]*$")
# Right before a SELECT that is part of a larger statement: "(SELECT", "UNION SELECT".
_NESTED = re.compile(r"(?:\(|\b(?:UNION|ALL|INTERSECT|EXCEPT))\s*\Z", re.IGNORECASE)
_NON_SQL_FENCES = frozenset({"python", "py", "json", "text", "bash", "sh", "console", "yaml"})


def extract_sql(text: str) -> str:
    """Pull the first plausible SELECT or WITH query out of a model's reply.

    Handles ```sql fences (closed or cut off), "SQL:" prefixes, prose around the query, a
    trailing semicolon, explanation after it, and inline `backticks`. A query that sqlglot
    can parse wins over one that it cannot; if none parses, the first one found is returned
    as is, so that the database's error message reaches the feedback.

    Raises :class:`SQLExtractionError` when the reply has no SELECT or WITH at all.
    """
    regions: list[str] = []
    others: list[str] = []
    for m in _FENCE.finditer(text):
        body = m.group(1)
        tag = _LANG_TAG.match(body)  # "```sql\n": drop the tag; "```SELECT ...```" has none
        if tag is not None:
            body = body[tag.end() :]
        (others if tag is not None and tag.group(1).lower() in _NON_SQL_FENCES else regions).append(body)
    outside = _FENCE.sub("\n", text)
    fallback: str | None = None
    tried: dict[int, list[tuple[int, int]]] = {}  # id(region) -> spans of statements tried
    for region, starts in _candidate_starts(regions, outside, others):
        spans = tried.setdefault(id(region), [])
        for start in starts:
            if _NESTED.search(region, 0, start) and any(a <= start < b for a, b in spans):
                continue  # a subquery (or UNION arm) of a statement tried already is not a query
            pieces, end = _statement_at(region, start)
            spans.append((start, end))
            for piece in pieces:
                if _parses(piece):
                    return piece
            if fallback is None and pieces:
                # Unparseable: send the statement up to a blank line, and let the database
                # explain what is wrong with it.
                fallback = pieces[0].split("\n\n", 1)[0].strip()
    if fallback is not None:
        return fallback
    raise SQLExtractionError(
        "no SQL query found in the reply; answer with one SELECT query in a ```sql code block"
    )


def _candidate_starts(
    fenced: list[str], outside: str, other_fenced: list[str]
) -> list[tuple[str, list[int]]]:
    """Regions to search and where queries may start in them, most likely first.

    SQL (or untagged) fenced blocks come first; then, outside the fences, starts at a
    line's beginning or after a colon, then any other SELECT (which may be the verb of a
    sentence); last, blocks fenced as another language (a query inside Python code).
    """
    out = [(region, [m.start() for m in _START.finditer(region)]) for region in fenced]
    led: list[int] = []
    rest: list[int] = []
    for m in _START.finditer(outside):
        line_start = outside.rfind("\n", 0, m.start()) + 1
        (led if _LEADER.search(outside[line_start : m.start()]) else rest).append(m.start())
    out.append((outside, led))
    out.append((outside, rest))
    out += [(region, [m.start() for m in _START.finditer(region)]) for region in other_fenced]
    return out


def _statement_at(region: str, start: int) -> tuple[list[str], int]:
    """Readings of the statement starting at ``start``, longest first, and where it ends.

    The text runs to the first top-level semicolon (or the region's end, or a closing
    inline backtick). Shorter readings end before a line that reads as prose, which drops
    an explanation written without a semicolon; a line that continues SQL (``WHERE ...``)
    is never cut, so a query cut off mid-clause stays whole and fails loudly.
    """
    chunk = region[start:]
    line_end = chunk.find("\n")
    first_line = chunk if line_end < 0 else chunk[:line_end]
    prefix = region[region.rfind("\n", 0, start) + 1 : start]
    if prefix.count("`") % 2 == 1 and "`" in first_line:  # inline `SELECT ...` in a sentence
        chunk = first_line[: first_line.index("`")]
    statements = split_sql_statements(chunk)
    if not statements:
        return [], start + 1
    end = start + chunk.find(statements[0]) + len(statements[0])
    lines = statements[0].splitlines()
    cuts = [len(lines)] + [k for k in range(len(lines) - 1, 0, -1) if _reads_as_prose(lines[k:])]
    readings: list[str] = []
    for k in cuts:
        piece = "\n".join(lines[:k]).strip()
        # A sentence's full stop is not SQL ("... FROM singer.").
        for text in (piece, piece.rstrip(".").rstrip()):
            if text and text not in readings:
                readings.append(text)
    return readings, end


# Words that can begin a line in the middle of a query.
_SQL_WORDS = frozenset(
    "select from where and or not join inner left right full outer cross natural on using group order by "
    "having limit offset union intersect except all distinct as case when then else end in like glob "
    "between is null asc desc exists with values collate escape".split()
)
_FIRST_WORD = re.compile(r"[A-Za-z_]\w*")


def _reads_as_prose(rest: list[str]) -> bool:
    """Whether the lines after a cut start like a sentence rather than more SQL."""
    line = next((x.strip() for x in rest if x.strip()), "")
    if not line:
        return True
    word = _FIRST_WORD.match(line)
    if word is None:  # "(", ")", ",", "=", a number, a quote: SQL goes on
        return False
    after = line[word.end() : word.end() + 1]
    if word.group(0).lower() in _SQL_WORDS or after in (".", ",", "(") or " " not in line:
        return False
    return True


def _parses(sql: str) -> bool:
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.SqlglotError, RecursionError):
        return False
    return isinstance(tree, exp.Query)


# --- vote key ------------------------------------------------------------------------------


def has_order_by(sql: str) -> bool:
    """Whether ``sql`` has an ORDER BY anywhere (a text check when sqlglot cannot parse it)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.SqlglotError, RecursionError):
        return re.search(r"\border\s+by\b", sql, flags=re.IGNORECASE) is not None
    return tree is not None and tree.find(exp.Order) is not None


def result_key(sql: str, result: SQLResult) -> Hashable | None:
    """A hashable form of a query's result for self-consistency; ``None`` if it failed.

    Columns are put in a canonical order (results that differ only in column order agree,
    as in the official evaluator); rows form a multiset unless the query has ORDER BY.
    """
    if not result.ok:
        return None
    rows = result.rows
    if rows:
        columns = list(zip(*rows, strict=True))
        order = sorted(range(len(columns)), key=lambda j: sorted(map(repr, columns[j])))
        rows = tuple(tuple(row[j] for j in order) for row in rows)
    if has_order_by(sql):
        return ("ordered", rows, result.truncated)
    return ("unordered", frozenset(Counter(rows).items()), result.truncated)
