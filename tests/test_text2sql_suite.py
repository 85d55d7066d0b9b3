"""The Text2SQL task: SQL extraction from messy replies, the exec/judge/oracle verifiers, the vote key."""

from __future__ import annotations

import pytest

from agentloop.backends import FunctionBackend, ScriptedBackend
from agentloop.errors import AgentloopError
from agentloop.graphs import Candidate, LoopConfig, run_task
from agentloop.suites.text2sql import load_text2sql
from agentloop.suites.text2sql.task import SQLExtractionError, Text2SQLTask, extract_sql
from agentloop.suites.text2sql.verifiers import (
    VERIFIERS,
    JudgeVerifier,
    UnknownVerifierError,
    make_verifier,
    schema_info,
    unknown_identifiers,
)
from agentloop.tools.sql import SQLResult

EXAMPLES = load_text2sql()
SINGERS = EXAMPLES[0]  # concert_singer: "What is the total number of singers?"
assert SINGERS.db_id == "concert_singer" and SINGERS.gold_sql == "SELECT count(*) FROM singer"


def cand(sql: str | None, text: str | None = None) -> Candidate:
    return Candidate(round=0, index=0, text=text or sql or "", prompt_hash="h", answer=sql)


# --- SQL extraction ------------------------------------------------------------------------

COUNT = "SELECT count(*) FROM singer"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("```sql\nSELECT count(*) FROM singer;\n```", COUNT),
        ("```sqlite\nSELECT count(*) FROM singer\n```", COUNT),
        ("```\nSELECT count(*) FROM singer\n```", COUNT),
        ("```SELECT count(*) FROM singer```", COUNT),
        ("```sql SELECT count(*) FROM singer```", COUNT),
        ("SQL: SELECT count(*) FROM singer", COUNT),
        ("Query: SELECT count(*) FROM singer.", COUNT),
        ("SELECT count(*) FROM singer", COUNT),
        ("  select count(*) from singer ;  ", "select count(*) from singer"),
        ("The answer is `SELECT count(*) FROM singer`.", COUNT),
        ("SELECT count(*) FROM singer; -- count them\nThis returns the total number.", COUNT),
        ("SELECT count(*) FROM singer; Explanation: COUNT(*) counts rows.", COUNT),
        (
            "Sure! Here is the query:\n\n```sql\nSELECT name, age\nFROM singer\nORDER BY age DESC;\n```\n\n"
            "This query lists the singers from the oldest.",
            "SELECT name, age\nFROM singer\nORDER BY age DESC",
        ),
        (
            "To answer this, we select the names.\nSELECT name FROM singer WHERE age > 20\n"
            "This query selects singers older than 20.",
            "SELECT name FROM singer WHERE age > 20",
        ),
        (
            "We start with the singers table and count:\nSELECT count(*) FROM singer\n\nThat's all!",
            COUNT,
        ),
        (
            "WITH t AS (SELECT age FROM singer) SELECT max(age) FROM t;",
            "WITH t AS (SELECT age FROM singer) SELECT max(age) FROM t",
        ),
        (
            "with the highest age we need:\nSELECT name FROM singer ORDER BY age DESC LIMIT 1",
            "SELECT name FROM singer ORDER BY age DESC LIMIT 1",
        ),
        ("```sql\nSELECT a FROM t;\nSELECT b FROM u;\n```", "SELECT a FROM t"),
        (
            "SELECT name FROM singer WHERE country = 'France'; Explanation: the WHERE clause filters.",
            "SELECT name FROM singer WHERE country = 'France'",
        ),
        (
            "First I'll explain.\n```python\nprint('hi')\n```\nThen:\n```sql\nSELECT count(*) FROM singer\n```",
            COUNT,
        ),
        (
            "```sql\nSELECT name FROM singer WHERE name = 'a;b'\n```",
            "SELECT name FROM singer WHERE name = 'a;b'",
        ),
        (
            "```sql\nSELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
            "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
        ),
    ],
)
def test_extract_sql_finds_the_query(reply: str, expected: str) -> None:
    assert extract_sql(reply) == expected


def test_extract_sql_prefers_a_parsable_query_and_falls_back_to_the_first_one() -> None:
    # The cut-off query does not parse, but it is all there is: the database will explain.
    assert extract_sql("```sql\nSELECT name FROM singer WHERE age >") == "SELECT name FROM singer WHERE age >"
    # A query cut off mid-clause is never shortened into a different query that runs.
    cut = "```sql\nSELECT name\nFROM singer\nWHERE age >"
    assert extract_sql(cut) == "SELECT name\nFROM singer\nWHERE age >"
    inner = "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer"
    assert extract_sql(inner) == inner  # not the complete subquery inside it
    assert (
        extract_sql("SELECT name\nFROM singer\nThis query returns the names.") == "SELECT name\nFROM singer"
    )
    assert extract_sql("Select the names:\nSELECT name FROM singer") == "SELECT name FROM singer"
    # Prose that starts with "select" loses to a real query further on.
    assert (
        extract_sql("Please select the right rows.\n\nSELECT name FROM singer") == "SELECT name FROM singer"
    )


@pytest.mark.parametrize(
    "reply", ["I cannot answer that.", "", "```sql\nCREATE TABLE x (a int);\n```", "with pleasure"]
)
def test_extract_sql_raises_when_there_is_no_query(reply: str) -> None:
    with pytest.raises(SQLExtractionError, match="no SQL query found"):
        extract_sql(reply)


# --- prompt --------------------------------------------------------------------------------


def test_prompt_shows_schema_sample_rows_and_question() -> None:
    task = Text2SQLTask(SINGERS)
    system, user = task.build_messages()
    assert system.role == "system" and "```sql" in system.content
    assert 'CREATE TABLE "singer"' in user.content
    assert "example rows from singer" in user.content  # sample rows
    assert user.content.rstrip().endswith("Write the SELECT query that answers the question.")
    assert f"Question: {SINGERS.question}" in user.content
    with_lessons = task.build_messages(["Count with count(*)."])[1].content
    assert "Count with count(*)." in with_lessons and with_lessons.index("Count") < with_lessons.index(
        "CREATE"
    )


def test_schema_in_the_prompt_is_bounded() -> None:
    world = next(e for e in EXAMPLES if e.db_id == "world_1")
    task = Text2SQLTask(world, schema_chars=1500)
    assert len(task.schema) <= 1500


# --- exec verifier -------------------------------------------------------------------------


async def verdict(sql: str | None, verifier: str = "exec", example=SINGERS):
    return await Text2SQLTask(example, verifier).verify(cand(sql))


async def test_exec_passes_a_query_that_runs_and_returns_rows() -> None:
    v = await verdict(COUNT)
    assert v.passed and v.score == 1.0
    assert "returned 1 row" in v.feedback and "6" in v.feedback  # the result preview


async def test_exec_turns_database_errors_into_feedback() -> None:
    v = await verdict("SELECT nme FROM singer")
    assert not v.passed and v.score == 0.0
    assert "no such column: nme" in v.feedback
    v = await verdict("SELECT * FROM singers")
    assert "no such table: singers" in v.feedback
    v = await verdict("SELECT name FROM FROM singer")
    assert v.score == 0.0 and "syntax error" in v.feedback
    v = await verdict("DELETE FROM singer")
    assert v.score == 0.0 and "read-only" in v.feedback


async def test_exec_gives_partial_credit_to_empty_or_off_schema_results() -> None:
    empty = await verdict("SELECT name FROM singer WHERE country = 'Narnia'")
    assert not empty.passed and empty.score == 0.5 and "no rows" in empty.feedback
    nulls = await verdict("SELECT max(age) FROM singer WHERE age > 1000")
    assert not nulls.passed and nulls.score == 0.5 and "NULL" in nulls.feedback
    constant = await verdict("SELECT 6")
    assert not constant.passed and constant.score == 0.5 and "reads no table" in constant.feedback
    # SQLite reads an unknown double-quoted name as a string: it runs, and it is wrong.
    quoted = await verdict('SELECT "nme" FROM singer')
    assert not quoted.passed and quoted.score == 0.3 and "nme" in quoted.feedback


async def test_exec_accepts_spider_style_double_quoted_strings() -> None:
    v = await verdict('SELECT name FROM singer WHERE country = "France"')
    assert v.passed, v.feedback
    v = await verdict('SELECT name FROM singer WHERE country IN ("France", "Netherlands")')
    assert v.passed, v.feedback


async def test_exec_fails_a_candidate_without_sql() -> None:
    v = await verdict(None)
    assert not v.passed and v.score == 0.0


def test_unknown_identifiers_knows_aliases_and_ctes() -> None:
    info = schema_info(str(SINGERS.db_path))
    assert {"singer", "concert", "stadium", "singer_in_concert"} <= info.tables
    for sql in (
        "SELECT T1.name AS n FROM singer AS T1 ORDER BY n",
        "WITH t(a) AS (SELECT age FROM singer) SELECT max(a) FROM t",
        "SELECT x.c FROM (SELECT count(*) AS c FROM singer) AS x",
    ):
        check = unknown_identifiers(sql, info)
        assert check is not None and check.unknown == () and check.reads_table, sql
    check = unknown_identifiers("SELECT 1", info)
    assert check is not None and not check.reads_table
    assert unknown_identifiers("SELEC nothing", info) is None


# --- oracle --------------------------------------------------------------------------------


async def test_oracle_compares_with_gold_and_is_labelled_an_upper_bound() -> None:
    assert VERIFIERS["oracle"].upper_bound and not VERIFIERS["exec"].upper_bound
    right = await verdict("SELECT count(*) FROM singer AS s", "oracle")
    assert right.passed and right.score == 1.0
    wrong = await verdict("SELECT count(*) FROM stadium", "oracle")
    assert not wrong.passed and 0.0 < wrong.score < 0.5 and "does not match" in wrong.feedback
    broken = await verdict("SELECT nme FROM singer", "oracle")
    assert broken.score == 0.0 and "no such column" in broken.feedback


def test_oracle_needs_gold_sql() -> None:
    from dataclasses import replace

    with pytest.raises(AgentloopError, match="needs gold SQL"):
        Text2SQLTask(replace(SINGERS, gold_sql=None), "oracle")


def test_unknown_verifier_suggests_the_closest() -> None:
    with pytest.raises(UnknownVerifierError, match="Did you mean 'oracle'"):
        make_verifier("orcale")


# --- judge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "passed", "check"),
    [
        ("Yes.", True, "judge_yes"),
        ("no, it does not", False, "judge_no"),
        ("Perhaps", False, "judge_unclear"),
    ],
)
async def test_judge_asks_the_backend_once_exec_passes(reply: str, passed: bool, check: str) -> None:
    backend = ScriptedBackend([reply])
    task = Text2SQLTask(SINGERS, JudgeVerifier(backend))
    v = await task.verify(cand(COUNT))
    assert v.passed is passed and v.details["check"] == check
    prompt = backend.requests[0].messages[-1].content
    assert SINGERS.question in prompt and COUNT in prompt and "yes or no" in prompt


async def test_judge_does_not_ask_when_exec_fails() -> None:
    backend = ScriptedBackend([])  # any call would raise
    v = await Text2SQLTask(SINGERS, JudgeVerifier(backend)).verify(cand("SELECT nme FROM singer"))
    assert v.score == 0.0 and backend.requests == []


async def test_judge_calls_count_in_the_run_budget_but_not_as_candidates() -> None:
    def reply(request) -> str:
        last = request.messages[-1].content
        return "yes" if "yes or no" in last else f"```sql\n{COUNT}\n```"

    backend = FunctionBackend(reply)
    task = Text2SQLTask(SINGERS, make_verifier("judge"))
    result = await run_task(task, backend, "best_of_n", config=LoopConfig(n=2, max_tokens=32))
    assert result.passed and result.verdict is not None and result.verdict.details["judge"] == "yes"
    assert result.usage.candidates == 2
    assert result.usage.llm_calls == 1 + 2  # one batched proposal, one judge call per candidate
    assert backend.calls == 3


# --- the vote key --------------------------------------------------------------------------


def key(task: Text2SQLTask, sql: str, rows, ok: bool = True):
    from agentloop.suites.text2sql.task import result_key

    result = SQLResult(columns=("a", "b"), rows=tuple(rows)) if ok else SQLResult(error="boom")
    return result_key(sql, result)


def test_answer_key_ignores_row_and_column_order_unless_ordered() -> None:
    task = Text2SQLTask(SINGERS)
    rows = [(1, "x"), (2, "y"), (2, "y")]
    assert key(task, "SELECT a, b FROM t", rows) == key(task, "SELECT a, b FROM t", rows[::-1])
    swapped = [(b, a) for a, b in rows]
    assert key(task, "SELECT a, b FROM t", rows) == key(task, "SELECT b, a FROM t", swapped)
    assert key(task, "SELECT a, b FROM t", rows) != key(task, "SELECT a, b FROM t", rows[:2])  # multiset
    ordered = "SELECT a, b FROM t ORDER BY a"
    assert key(task, ordered, rows) != key(task, ordered, rows[::-1])
    assert key(task, "SELECT a", rows, ok=False) is None


async def test_answer_key_runs_the_query_and_abstains_on_errors() -> None:
    task = Text2SQLTask(SINGERS)
    a = await task.answer_key(cand("SELECT name, age FROM singer"))
    b = await task.answer_key(cand("SELECT age, name FROM singer ORDER BY -age LIMIT 100"))
    assert a is not None and b is not None and a != b  # ORDER BY makes the order count
    c = await task.answer_key(cand("SELECT age, name FROM singer WHERE 1"))
    assert a == c
    assert await task.answer_key(cand("SELECT nme FROM singer")) is None


async def test_self_consistency_votes_on_execution_results() -> None:
    replies = [
        "```sql\nSELECT name FROM singer WHERE age > 40\n```",
        "```sql\nSELECT name FROM singer WHERE age >= 41 ORDER BY name DESC\n```",  # ordered: own key
        "```sql\nSELECT count(*) FROM singer\n```",
        "SQL: SELECT name FROM singer WHERE 40 < age",
    ]
    task = Text2SQLTask(SINGERS)
    result = await run_task(task, ScriptedBackend([replies]), "self_consistency", config=LoopConfig(n=4))
    assert result.answer == "SELECT name FROM singer WHERE age > 40"
    assert result.votes is not None and max(result.votes.values()) == 2
