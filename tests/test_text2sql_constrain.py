"""``--constrain schema`` on the Text2SQL suite: every candidate request carries its database's grammar."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentloop.backends import (
    Backend,
    ChatRequest,
    ChatResponse,
    Constraint,
    FunctionBackend,
    UnsupportedCapabilityError,
)
from agentloop.cli import app
from agentloop.errors import AgentloopError
from agentloop.graphs import LoopConfig, run_task
from agentloop.runs.runner import RunSpec, run_suite
from agentloop.suites import Text2SQLSuite
from agentloop.suites.text2sql.data import load_text2sql
from agentloop.suites.text2sql.grammar import SqlAcceptor, schema_grammar, sql_accepted
from agentloop.suites.text2sql.task import Text2SQLTask

EXAMPLES = load_text2sql(None)
# Two examples on different databases, so a request's grammar can be told apart.
FIRST = EXAMPLES[0]
OTHER = next(e for e in EXAMPLES if e.db_id != FIRST.db_id)


def expected(example, prompt_format: str) -> Constraint:
    fewshot = prompt_format == "fewshot"
    grammar = schema_grammar(example.db_path, after_select=fewshot, newlines=not fewshot, max_items=6)
    return Constraint.grammar(grammar)


def answers(prompt_format: str, sql: str) -> str:
    """What a model under the grammar would write for ``sql`` in this format."""
    return sql[len("SELECT") :] if prompt_format == "fewshot" else sql


class Recorder(FunctionBackend):
    """A double that answers a fixed SQL (in the request's format) and keeps every request."""

    def __init__(self, reply: str | list[str]):
        self.requests: list[ChatRequest] = []

        def fn(request: ChatRequest) -> str | list[str]:
            self.requests.append(request)
            return reply

        super().__init__(fn)


@pytest.mark.parametrize("prompt_format", ["chat", "fewshot"])
@pytest.mark.parametrize("graph", ["greedy", "best_of_n", "iad", "self_refine"])
def test_every_candidate_request_carries_the_tasks_grammar(prompt_format: str, graph: str) -> None:
    # A query that runs but returns nothing scores 0.5 under `exec`, so iad and self_refine
    # go on to their refine rounds, whose requests must carry the grammar too.
    sql = "SELECT name FROM singer WHERE age > 1000"
    for example in (FIRST, OTHER):
        backend = Recorder(answers(prompt_format, sql))
        task = Text2SQLTask(example, "exec", prompt_format=prompt_format, constrain=True)  # type: ignore[arg-type]
        config = LoopConfig(n=2, rounds=2, max_tokens=64, stop=Text2SQLSuite.stop)
        result = asyncio.run(run_task(task, backend, graph, config=config))
        rounds = 1 if graph in ("greedy", "best_of_n") else 2
        assert result.rounds == rounds and len(backend.requests) == rounds
        for request in backend.requests:
            assert request.constraint == expected(example, prompt_format) == task.constraint
            assert request.stop == ()  # the grammar ends the query; no stop string may cut it
        if rounds == 2:  # the refine round's prompt holds the feedback, and the same grammar
            assert backend.requests[0].messages != backend.requests[1].messages


def test_the_parsed_answer_is_a_sentence_of_the_full_grammar() -> None:
    for prompt_format in ("chat", "fewshot"):
        task = Text2SQLTask(FIRST, "exec", prompt_format=prompt_format, constrain=True)  # type: ignore[arg-type]
        text = answers(prompt_format, "SELECT count(*) FROM singer;")
        constraint = task.constraint
        assert constraint is not None and SqlAcceptor(str(constraint.value)).accepts(text)
        assert sql_accepted(FIRST.db_path, task.parse(text))


def test_the_fewshot_grammar_keeps_the_query_on_one_line() -> None:
    grammar = SqlAcceptor(str(expected(FIRST, "fewshot").value))
    assert grammar.accepts(" name FROM singer;")
    # A blank line is how the model ends an answer; the grammar would have to go on as SQL.
    assert not grammar.accepts(" name FROM singer\n\n;")
    assert not grammar.accepts("name FROM singer")  # "SELECTname"
    assert SqlAcceptor(str(expected(FIRST, "chat").value)).accepts("SELECT name\nFROM singer")


def test_unconstrained_tasks_send_no_constraint_and_keep_their_stops() -> None:
    backend = Recorder(" name FROM singer;")
    task = Text2SQLTask(FIRST, "exec", prompt_format="fewshot")
    asyncio.run(run_task(task, backend, "greedy", config=LoopConfig(max_tokens=64)))
    assert task.constraint is None
    assert backend.requests[0].constraint is None and ";" in backend.requests[0].stop


def test_the_judges_question_is_not_constrained() -> None:
    task = Text2SQLTask(FIRST, "judge", prompt_format="chat", constrain=True)  # type: ignore[arg-type]
    calls: list[ChatRequest] = []

    def fn(request: ChatRequest) -> str:
        calls.append(request)
        return "yes" if request.constraint is None else "SELECT name FROM singer"

    backend = FunctionBackend(fn)
    result = asyncio.run(run_task(task, backend, "greedy", config=LoopConfig(max_tokens=64)))
    assert result.passed
    assert [c.constraint is not None for c in calls] == [True, False]


class NoConstraints(Backend):
    id = "plain"

    async def generate(self, request: ChatRequest) -> ChatResponse:
        raise AssertionError("a constrained run must not reach the backend")


def test_auto_resolves_per_backend() -> None:
    mode = Text2SQLSuite.constrain_mode
    auto = RunSpec(constrain="auto")
    assert mode(auto, FunctionBackend(lambda r: "x")) == "schema"  # in process, takes grammars
    assert mode(auto, FunctionBackend(lambda r: "x", name="openai:m")) == "none"  # a server
    assert mode(auto, NoConstraints()) == "none"
    assert mode(RunSpec(constrain="auto", backend="transformers")) == "schema"
    assert mode(RunSpec(constrain="auto", backend="vllm:m")) == "schema"
    assert mode(RunSpec(constrain="auto", backend="openai:m")) == "none"
    assert mode(RunSpec(constrain="none"), FunctionBackend(lambda r: "x")) == "none"
    assert mode(RunSpec(constrain="schema"), FunctionBackend(lambda r: "x", name="openai:m")) == "schema"
    with pytest.raises(UnsupportedCapabilityError, match="--constrain schema needs"):
        mode(RunSpec(constrain="schema"), NoConstraints())
    with pytest.raises(ValueError, match="constrain must be"):
        RunSpec(constrain="grammar")


def test_schema_on_a_backend_without_constraints_fails_before_any_task(tmp_path: Path) -> None:
    spec = RunSpec(graph="greedy", constrain="schema", limit=3)
    with pytest.raises(UnsupportedCapabilityError, match="plain does not"):
        asyncio.run(run_suite(spec, run_dir=tmp_path / "run", backend=NoConstraints()))
    assert not (tmp_path / "run").exists()


def test_cli_fails_fast_with_one_line(tmp_path: Path) -> None:
    # OpenAI's own API takes no grammars: refused before the run dir exists or a task runs.
    args = ["run", "text2sql", "--backend", "openai:gpt-4o-mini", "--constrain", "schema"]
    env = {"HF_HUB_OFFLINE": "1", "AGENTLOOP_DEBUG": "", "OPENAI_API_KEY": "sk-test"}
    result = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path / "r")], env=env)
    assert result.exit_code not in (0, None), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "--constrain schema needs" in lines[0] and "openai:gpt-4o-mini" in lines[0]
    assert not (tmp_path / "r").exists()
    bad = CliRunner().invoke(app, ["run", "text2sql", "--constrain", "yes"], env=env)
    assert bad.exit_code not in (0, None) and "--constrain" in bad.stderr


def test_resume_compares_constrain(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    backend = Recorder(" name FROM singer;")
    spec = RunSpec(graph="greedy", constrain="none", limit=1, prompt="fewshot")
    asyncio.run(run_suite(spec, run_dir=run_dir, backend=backend))
    with pytest.raises(AgentloopError, match="constrain"):
        asyncio.run(run_suite(RunSpec(graph="greedy", constrain="schema", limit=1, prompt="fewshot"),
                              run_dir=run_dir, resume=True, backend=backend))  # fmt: skip
    with sqlite3.connect(run_dir / "run.sqlite") as conn:
        (config,) = conn.execute("SELECT config FROM runs").fetchone()
    assert json.loads(config)["constrain"] == "none"


@pytest.mark.model
def test_embedded_model_writes_accepted_sql_that_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "greedy"
    proc = subprocess.run(
        [sys.executable, "-m", "agentloop", "run", "text2sql", "--graph", "greedy", "--limit", "2",
         "--constrain", "schema", "--max-tokens", "64", "--run-dir", str(run_dir), "--json"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tasks"] == 2
    with sqlite3.connect(run_dir / "run.sqlite") as conn:
        rows = conn.execute(
            "SELECT t.task_id, c.text, c.answer FROM candidates c JOIN task_results t ON c.task_result_id = t.id"
        ).fetchall()
    assert len(rows) == 2
    by_id = {e.id: e for e in EXAMPLES}
    for task_id, text, answer in rows:
        db = by_id[task_id].db_path
        assert sql_accepted(db, "SELECT" + text), text  # the raw completion continues "SQL: SELECT"
        assert sql_accepted(db, answer), answer
        with sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True) as conn:
            conn.execute(answer).fetchall()
