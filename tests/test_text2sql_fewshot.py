"""The few-shot completion format for small models: compact schema, raw prompt, SELECT pre-fill, IAD feedback."""

from __future__ import annotations

import pytest

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.errors import AgentloopError
from agentloop.graphs import LoopConfig, run_task
from agentloop.runs.runner import RunSpec
from agentloop.suites import Text2SQLSuite
from agentloop.suites.text2sql import load_text2sql
from agentloop.suites.text2sql.task import Text2SQLTask
from agentloop.tools.sql_schema import render_compact_schema

EXAMPLES = load_text2sql()
SINGERS = EXAMPLES[0]  # concert_singer: "What is the total number of singers?"


def test_compact_schema_lists_every_table_with_its_columns_and_foreign_keys() -> None:
    tables, keys = render_compact_schema(SINGERS.db_path)
    lines = tables.splitlines()
    assert [line.split("(")[0] for line in lines] == ["stadium", "singer", "concert", "singer_in_concert"]
    assert "singer(Singer_ID, Name, Country, Song_Name, Song_release_year, Age, Is_male)" in lines
    assert "concert.Stadium_ID = stadium.Stadium_ID" in keys.split("; ")


def test_compact_schema_quotes_names_that_need_it(tmp_path) -> None:
    import sqlite3

    db = tmp_path / "odd.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute('CREATE TABLE "order items" ("item id" INTEGER, qty INTEGER, "2nd" TEXT)')
    tables, keys = render_compact_schema(db)
    assert tables == '"order items"("item id", qty, "2nd")' and keys == ""


def test_fewshot_prompt_ends_in_select_and_carries_lessons() -> None:
    task = Text2SQLTask(SINGERS, prompt_format="fewshot")
    messages = task.build_messages(["Count rows with count(*)."])
    prompt = task.completion_prompt(messages)
    assert prompt is not None and prompt.endswith(f"Question: {SINGERS.question}\nSQL: SELECT")
    assert "-- Lesson from earlier tasks: Count rows with count(*)." in prompt
    assert "singer_in_concert(concert_ID, Singer_ID)" in prompt
    assert "CREATE TABLE" not in prompt  # the chat format's schema style is not mixed in
    assert Text2SQLTask(SINGERS).completion_prompt(Text2SQLTask(SINGERS).build_messages()) is None


@pytest.mark.parametrize(
    ("completion", "sql"),
    [
        (" count(*) FROM singer", "SELECT count(*) FROM singer"),
        ("count(*) FROM singer", "SELECT count(*) FROM singer"),
        (" SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),  # the model repeated it
    ],
)
def test_fewshot_parse_restores_the_prefilled_select(completion: str, sql: str) -> None:
    assert Text2SQLTask(SINGERS, prompt_format="fewshot").parse(completion) == sql


def test_unknown_prompt_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="chat, fewshot"):
        Text2SQLTask(SINGERS, prompt_format="xml")  # type: ignore[arg-type]
    with pytest.raises(AgentloopError, match="unknown --prompt 'xml'"):
        Text2SQLSuite.prompt_format(RunSpec(prompt="xml"))


@pytest.mark.parametrize(
    ("backend", "prompt", "expected"),
    [
        ("transformers", "auto", "fewshot"),
        ("transformers:/models/qwen", "auto", "fewshot"),
        ("openai:gpt-4o-mini", "auto", "chat"),
        ("anthropic:claude-sonnet-4-5", "auto", "chat"),
        ("openai:gpt-4o-mini", "fewshot", "fewshot"),
        ("transformers", "chat", "chat"),
    ],
)
def test_auto_prompt_format_follows_the_backend(backend: str, prompt: str, expected: str) -> None:
    assert Text2SQLSuite.prompt_format(RunSpec(backend=backend, prompt=prompt)) == expected


async def test_iad_on_the_fewshot_format_sends_raw_prompts_with_the_sql_stops_and_feedback() -> None:
    seen: list[ChatRequest] = []

    def reply(request: ChatRequest) -> list[str]:
        seen.append(request)
        if len(seen) == 1:  # round 1: a broken query and one that runs but returns no rows
            return [" nme FROM singer", " name FROM singer WHERE age > 1000"]
        return [" count(*) FROM singer"] * request.n

    task = Text2SQLTask(SINGERS, prompt_format="fewshot")
    result = await run_task(task, FunctionBackend(reply), "iad", config=LoopConfig(n=2, rounds=3))
    assert result.answer == "SELECT count(*) FROM singer" and result.passed
    assert len(seen) == 2
    first, second = seen
    assert first.raw_prompt is not None and first.raw_prompt.endswith("SQL: SELECT")
    assert {";", "\n\n", "\nQuestion:"} <= set(first.stop)
    # Round 2 carries the distilled signal as SQL comments right before the answer slot.
    feedback = second.raw_prompt.split(f"Question: {SINGERS.question}\n", 1)[1]
    assert "The best so far (score 0.50): SELECT name FROM singer WHERE age > 1000" in feedback
    assert "The weakest one (score 0.00): SELECT nme FROM singer" in feedback
    assert "no such column" in feedback
    assert feedback.endswith("SQL: SELECT")
    assert second.raw_prompt.startswith(first.raw_prompt.rsplit("Question:", 1)[0])  # shared prefix
