"""Concept memory in ``agentloop run``: run A writes, run B (other questions) reads, resume never writes twice.

The backend is the package's function backend: it answers Text2SQL prompts with SQL and the
abstraction prompt with a JSON concept. The memory runs on SQLite and, when
AGENTLOOP_TEST_POSTGRES_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.cli import app
from agentloop.memory import SQLMemoryStore
from agentloop.records.store import ConfigMismatchError, RunStore, TaskOutcome
from agentloop.runs import runner as runner_module
from agentloop.runs.runner import RunSpec, memory_run_id, run_suite
from agentloop.suites import Score, Text2SQLSuite, get_suite

PG_URL = os.environ.get("AGENTLOOP_TEST_POSTGRES_URL")
LESSONS_HEADER = "Lessons from similar tasks solved earlier"
SPEC = RunSpec(graph="greedy", backend="function", limit=3, concurrency=1, max_tokens=64)


class Model:
    """SQL for Text2SQL prompts (every query runs, so the exec verifier passes it); for the
    abstraction prompt, one concept named after the task's question, about singers' ages.
    """

    def __init__(self) -> None:
        self.task_prompts: list[str] = []
        self.abstractions = 0

    def __call__(self, request: ChatRequest) -> str:
        prompt = request.raw_prompt if request.raw_prompt is not None else request.messages[-1].content
        if prompt.endswith("Lesson:"):  # the completion-style abstraction (small models)
            self.abstractions += 1
            question = prompt.rsplit("Task: ", 1)[1].split("\n", 1)[0]
            return f" Singers by age, from: {_head(question)} | a question about singers | read {{column}} of singer"
        if prompt.endswith("SQL: SELECT"):  # the few-shot Text2SQL prompt: the rest of the query
            self.task_prompts.append(prompt)
            return " name, age FROM singer;"
        if "memory of lessons" in prompt:
            self.abstractions += 1
            question = re.search(r"Task:\n(.*)", prompt)
            assert question is not None
            return json.dumps({"concepts": [self.lesson(question.group(1))]})
        self.task_prompts.append(prompt)
        return "```sql\nSELECT name, age FROM singer\n```"

    @staticmethod
    def lesson(question: str) -> dict[str, object]:
        return {
            "title": f"Lesson from: {_head(question)}",
            "situation": "A question about singers and their age",
            "cues": ["singers", "age"],
            "suggestion": "Read the {column} of table {table}; check the singer table's age column.",
            "parameters": [{"name": "table", "type": "str"}, {"name": "column", "type": "str"}],
            "kind": "strategy",
        }


def _head(question: str) -> str:
    """A question's first words: enough to tell lessons apart, too few to restate it (memory drops those)."""
    return " ".join(question.split()[:5])


def uses(url: str, run_id: str) -> list[tuple[str, str | None]]:
    """``(task_id, outcome)`` of every concept shown in run ``run_id``."""
    store = SQLMemoryStore(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT task_id, outcome FROM concept_uses WHERE run_id = :r ORDER BY id"), {"r": run_id}
            )
            return [(r[0], r[1]) for r in rows]
    finally:
        store.close()


def writes(url: str, run_dir: Path) -> dict[str, int]:
    store = SQLMemoryStore(url)
    try:
        return store.writes_by_run(memory_run_id(run_dir), namespace="text2sql")
    finally:
        store.close()


async def test_run_a_writes_concepts_and_run_b_on_other_questions_reads_them(
    memory_url: str, tmp_path: Path
) -> None:
    model_a = Model()
    spec_a = RunSpec(**{**SPEC.to_dict(), "memory": memory_url})
    a = await run_suite(spec_a, run_dir=tmp_path / "a", backend=FunctionBackend(model_a))
    assert a.tasks == 3 and a.errors == 0 and a.metrics["verifier_pass_rate"] == 1.0
    # Every task passed the verifier, so each was abstracted into one concept.
    assert model_a.abstractions == 3
    assert _rw(a.to_json()["memory"]) == {"retrieved": a.memory["retrieved"], "written": 3}  # type: ignore[index]
    assert writes(memory_url, tmp_path / "a") == {"dev-0": 1, "dev-1": 1, "dev-2": 1}

    # Run B: a new run (and a new memory object) on questions A never saw.
    model_b = Model()
    spec_b = RunSpec(**{**SPEC.to_dict(), "memory": memory_url, "offset": 3, "limit": 2, "memory_k": 2})
    b = await run_suite(spec_b, run_dir=tmp_path / "b", backend=FunctionBackend(model_b))
    assert b.memory is not None and b.memory["retrieved"] > 0
    first_prompt = model_b.task_prompts[0]
    assert "What is the average, minimum, and maximum age of all singers from France?" in first_prompt
    assert LESSONS_HEADER in first_prompt and "Lesson from: " in first_prompt
    assert "Read the {column} of table {table}" in first_prompt

    # Every concept shown is in the use table, closed with its task's outcome (the verifier's pass).
    shown = uses(memory_url, memory_run_id(tmp_path / "b"))
    assert len(shown) == b.memory["retrieved"]
    stored = {t.task_id: t.passed for t in RunStore.for_run_dir(tmp_path / "b").load().tasks}
    assert {task for task, _ in shown} <= set(stored)
    assert all(outcome == ("passed" if stored[task] else "failed") for task, outcome in shown)

    # The summary without memory keeps its old shape.
    c = await run_suite(SPEC, run_dir=tmp_path / "c", backend=FunctionBackend(Model()))
    assert "memory" not in c.to_json() and c.memory is None


async def test_a_task_written_but_not_finished_is_not_written_again_on_resume(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dev-1 passes its verifier and writes its concept, then its scoring raises: it is stored
    # as an error, so a resume runs it again. The second run must not write it again.
    real_score = Text2SQLSuite.score

    async def broken_score(self: Text2SQLSuite, item, result) -> Score:  # type: ignore[no-untyped-def]
        if item.task_id == "dev-1":
            raise RuntimeError("scorer fell over")
        return await real_score(self, item, result)

    spec = RunSpec(**{**SPEC.to_dict(), "memory": memory_url})
    run_dir = tmp_path / "run"
    monkeypatch.setattr(Text2SQLSuite, "score", broken_score)
    first = await run_suite(spec, run_dir=run_dir, backend=FunctionBackend(Model()))
    assert first.errors == 1 and writes(memory_url, run_dir) == {"dev-0": 1, "dev-1": 1, "dev-2": 1}

    monkeypatch.setattr(Text2SQLSuite, "score", real_score)
    model = Model()
    again = await run_suite(spec, run_dir=run_dir, backend=FunctionBackend(model), resume=True)
    assert again.errors == 0 and again.skipped == 2 and len(model.task_prompts) == 1
    assert model.abstractions == 0 and _rw(again.memory) == {
        "retrieved": again.memory["retrieved"],
        "written": 0,
    }  # type: ignore[index]
    assert writes(memory_url, run_dir) == {"dev-0": 1, "dev-1": 1, "dev-2": 1}


async def test_a_crash_mid_run_loses_no_finished_tasks_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    spec = RunSpec(**{**SPEC.to_dict(), "memory": url, "limit": 4})
    run_dir = tmp_path / "run"

    def crash_after_two(outcome: TaskOutcome) -> None:
        if outcome.task_id == "dev-1":
            raise KeyboardInterrupt  # what Ctrl-C looks like to the loop: no batch flush either

    with pytest.raises(KeyboardInterrupt):
        await run_suite(spec, run_dir=run_dir, backend=FunctionBackend(Model()), on_task=crash_after_two)
    finished = {t.task_id for t in RunStore.for_run_dir(run_dir).load().tasks}
    assert finished == {"dev-0", "dev-1"}
    # update="task" writes inside the task, before the run store records it.
    assert set(writes(url, run_dir)) >= finished

    model = Model()
    done = await run_suite(spec, run_dir=run_dir, backend=FunctionBackend(model), resume=True)
    assert done.tasks == 4 and done.skipped == 2
    assert writes(url, run_dir) == {"dev-0": 1, "dev-1": 1, "dev-2": 1, "dev-3": 1}


async def test_batch_mode_writes_at_the_end_even_when_the_run_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    spec = RunSpec(**{**SPEC.to_dict(), "memory": url, "memory_update": "batch"})
    model = Model()
    seen_during_run: list[int] = []

    def count(outcome: TaskOutcome) -> None:
        seen_during_run.append(sum(writes(url, tmp_path / "run").values()))

    summary = await run_suite(spec, run_dir=tmp_path / "run", backend=FunctionBackend(model), on_task=count)
    assert seen_during_run == [0, 0, 0]  # nothing is written while the batch waits...
    assert _rw(summary.memory) == {"retrieved": 0, "written": 3}  # ...and all of it at the end
    assert LESSONS_HEADER not in "".join(model.task_prompts)

    def fail_on_second(outcome: TaskOutcome) -> None:
        if outcome.task_id == "dev-4":
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        await run_suite(
            RunSpec(**{**spec.to_dict(), "offset": 3}),
            run_dir=tmp_path / "failed",
            backend=FunctionBackend(Model()),
            on_task=fail_on_second,
        )
    # The two tasks that finished before the failure were flushed on the way out.
    assert writes(url, tmp_path / "failed") == {"dev-3": 1, "dev-4": 1}


async def test_resume_must_repeat_the_memory_settings(tmp_path: Path) -> None:
    url = str(tmp_path / "memory.sqlite")  # a plain path works too
    run_dir = tmp_path / "run"
    spec = RunSpec(**{**SPEC.to_dict(), "memory": url, "limit": 1})
    await run_suite(spec, run_dir=run_dir, backend=FunctionBackend(Model()))
    for change in ({"memory_update": "batch"}, {"memory_k": 5}, {"memory": None}):
        other = RunSpec(**{**spec.to_dict(), "memory": url, **change})
        with pytest.raises(ConfigMismatchError, match=next(iter(change))):
            await run_suite(other, run_dir=run_dir, backend=FunctionBackend(Model()), resume=True)
    # The same settings, with the path spelled as a URL, resume fine.
    same = RunSpec(**{**spec.to_dict(), "memory": f"sqlite:///{url}"})
    done = await run_suite(same, run_dir=run_dir, backend=FunctionBackend(Model()), resume=True)
    assert done.skipped == 1
    # Without memory its settings are not compared (runs stored before memory lack them).
    assert "memory_k" in spec.result_keys() and "memory_k" not in SPEC.result_keys()
    assert "memory" in SPEC.result_keys()


async def test_the_embedded_model_path_writes_one_line_lessons(tmp_path: Path) -> None:
    # Labelled transformers: the Text2SQL prompt is few-shot and lessons are abstracted in the
    # completion style, both raw prompts; the function backend stands in for the model.
    url = str(tmp_path / "memory.sqlite")
    spec = RunSpec(**{**SPEC.to_dict(), "backend": "transformers", "memory": url})
    assert spec.memory_abstraction() == "completion"
    assert RunSpec(backend="openai:gpt-4o-mini").memory_abstraction() == "json"
    assert RunSpec(memory_abstract="json").memory_abstraction() == "json"
    model = Model()
    a = await run_suite(spec, run_dir=tmp_path / "a", backend=FunctionBackend(model))
    assert a.memory is not None and a.memory["written"] == 3 and model.abstractions == 3
    model_b = Model()
    b_spec = RunSpec(**{**spec.to_dict(), "offset": 3, "limit": 1, "memory_update": "off"})
    b = await run_suite(b_spec, run_dir=tmp_path / "b", backend=FunctionBackend(model_b))
    store = SQLMemoryStore(url)
    concepts = store.stats("text2sql").concepts  # the three lessons may merge
    store.close()
    assert _rw(b.memory) == {"retrieved": min(3, concepts), "written": 0} and model_b.abstractions == 0
    (prompt,) = model_b.task_prompts
    assert prompt.count("Singers by age, from: ") == min(3, concepts) >= 1
    assert "read {column} of singer" in prompt and prompt.endswith("SQL: SELECT")


def test_the_stored_config_never_holds_a_database_password() -> None:
    spec = RunSpec(memory="postgresql://agent:s3cret@db.internal/memory")
    assert "s3cret" in (spec.memory or "")
    assert "s3cret" not in json.dumps(spec.to_dict())
    # The spec looks nothing up: the runner fills the namespace in from the suite it resolved.
    assert spec.memory_namespace is None
    assert spec.for_suite(get_suite("text2sql")).memory_namespace == "text2sql"
    with pytest.raises(ValueError, match="memory_update"):
        RunSpec(memory="m.sqlite", memory_update="sometimes")


def test_cli_run_with_memory_then_export_and_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``agentloop run --memory`` twice (other questions the second time), then export and import."""
    models: list[Model] = []

    def function_backend(backend_id: str, **kwargs: object) -> FunctionBackend:
        models.append(Model())
        return FunctionBackend(models[-1])

    monkeypatch.setattr(runner_module, "resolve_backend", function_backend)
    cli = CliRunner()
    db = tmp_path / "m.db"
    common = ["run", "text2sql", "--graph", "greedy", "--backend", "function", "--concurrency", "1"]
    common += ["--memory", f"sqlite:///{db}", "--json"]

    a = cli.invoke(app, [*common, "--limit", "3", "--run-dir", str(tmp_path / "a")])
    assert a.exit_code == 0, a.output
    assert json.loads(a.stdout)["memory"]["written"] == 3
    b = cli.invoke(app, [*common, "--offset", "3", "--limit", "2", "--run-dir", str(tmp_path / "b")])
    assert b.exit_code == 0, b.output
    assert json.loads(b.stdout)["memory"]["retrieved"] > 0
    assert LESSONS_HEADER in models[1].task_prompts[0]

    bad = cli.invoke(app, [*common, "--memory-update", "sometimes", "--run-dir", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "--memory-update" in bad.output

    out = tmp_path / "export.json"
    assert cli.invoke(app, ["memory", "export", "--db", str(db), "--out", str(out)]).exit_code == 0
    fresh = tmp_path / "fresh.db"
    imported = cli.invoke(app, ["memory", "import", str(out), "--db", str(fresh)])
    assert imported.exit_code == 0, imported.output

    def concepts(path: Path) -> int:
        proc = cli.invoke(app, ["memory", "stats", "--db", str(path), "--json"])
        assert proc.exit_code == 0, proc.output
        return json.loads(proc.stdout)["concepts"]

    assert concepts(db) >= 1 and concepts(fresh) == concepts(db)
    shown = sum(json.loads(r.stdout)["memory"]["retrieved"] for r in (a, b))
    with sqlite3.connect(fresh) as conn:  # the uses travel with the concepts
        assert conn.execute("SELECT count(*) FROM concept_uses").fetchone()[0] == shown


def _rw(counts: dict[str, Any] | None) -> dict[str, Any]:
    """The lesson counts of a run's memory summary (the abstraction counts are tested apart)."""
    assert counts is not None
    return {"retrieved": counts["retrieved"], "written": counts["written"]}


def test_memory_refuses_to_write_from_a_verifier_that_reads_the_gold(tmp_path: Path) -> None:
    from agentloop.errors import AgentloopError
    from agentloop.runs import run_suite_sync

    arith = f"{Path(__file__).resolve().parents[1] / 'examples' / 'arith_suite.py'}:ArithSuite"
    calls: list[int] = []

    def model(request: ChatRequest) -> str:
        calls.append(1)
        return "Answer: 0"

    db = f"sqlite:///{tmp_path / 'm.db'}"
    spec = RunSpec(suite=arith, graph="greedy", backend="function", limit=2, verifier="exact", memory=db)
    with pytest.raises(AgentloopError, match="checks them against the gold answers.*--memory-update off"):
        run_suite_sync(spec, backend=FunctionBackend(model), run_dir=tmp_path / "gold")
    assert not calls and not (tmp_path / "gold").exists()
    # Reading is fine, and the gold-free verifier may write.
    read = run_suite_sync(
        RunSpec(**{**spec.to_dict(), "memory_update": "off"}),
        backend=FunctionBackend(model),
        run_dir=tmp_path / "read",
    )
    written = run_suite_sync(
        RunSpec(**{**spec.to_dict(), "verifier": "number"}),
        backend=FunctionBackend(model),
        run_dir=tmp_path / "w",
    )
    assert read.tasks == written.tasks == 2 and calls
