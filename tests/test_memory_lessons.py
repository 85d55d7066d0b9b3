"""Issue 26: constrained abstraction, lenient lesson lines, verified-only writes, a separate
abstraction backend, abstraction counts, and the documented export format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentloop.backends import FunctionBackend
from agentloop.cli import app
from agentloop.graphs import PromptTask, Verdict, run_task
from agentloop.memory import (
    ConceptDraft,
    ConceptMemory,
    MemoryStoreError,
    SQLMemoryStore,
    Trajectory,
    abstract,
    merge_counts,
    parse_lesson_line,
)
from agentloop.memory.abstraction import AbstractionError, instance_problem, trim_loops
from agentloop.runs import RunSpec, run_suite_sync
from agentloop.types import ChatRequest

ROOT = Path(__file__).resolve().parents[1]
SUITE = f"{ROOT / 'examples' / 'pyfunc_suite.py'}:PyFuncSuite"
# What the embedded model wrote for the user suite (issue 26): no lesson format at all.
PROSE = "Create a function that returns the sum of a and b."
LINE = " Return the expression | a one-line function named in its docstring | return {expression} directly"
TRAJECTORY = Trajectory("add", "def add(a, b): Return a + b.", "def add(a, b):\n    return a + b")


class Unconstrained(FunctionBackend):
    """A backend that cannot constrain decoding (an API without grammars)."""

    constraint_kinds = frozenset()


def _prompt(request: ChatRequest) -> str:
    return request.raw_prompt or (request.messages[-1].content if request.messages else "")


def _is_abstraction(request: ChatRequest) -> bool:
    prompt = _prompt(request)
    return "memory of lessons" in prompt or prompt.rstrip().endswith("Lesson:")


# --- constrained requests ---------------------------------------------------------------------


async def test_completion_requests_carry_the_lesson_line_constraint() -> None:
    seen: list[ChatRequest] = []

    def model(request: ChatRequest) -> str:
        seen.append(request)
        return LINE

    out = await abstract(FunctionBackend(model), TRAJECTORY, style="completion")
    (constraint,) = [r.constraint for r in seen]
    assert constraint is not None and constraint.kind == "regex" and out.constrained
    assert constraint.matches(LINE) and constraint.matches(" none")
    assert not constraint.matches(PROSE)  # the reply cannot be decoded any more
    assert out.drafts[0].title == "Return the expression" and out.error is None


async def test_json_requests_carry_a_bounded_grammar_that_llguidance_accepts() -> None:
    seen: list[ChatRequest] = []
    reply = json.dumps(
        {
            "concepts": [
                {
                    "title": "Return the expression",
                    "situation": "a one-line function",
                    "cues": ["return", "docstring"],
                    "suggestion": "return {expression} directly",
                    "kind": "pattern",
                }
            ]
        }
    )

    def model(request: ChatRequest) -> str:
        seen.append(request)
        return reply

    out = await abstract(FunctionBackend(model), TRAJECTORY, max_concepts=2)
    (constraint,) = [r.constraint for r in seen]
    assert constraint is not None and constraint.kind == "grammar"
    assert [d.kind for d in out.drafts] == ["pattern"]
    assert [p.name for p in out.drafts[0].parameters] == ["expression"]  # from the placeholder
    pytest.importorskip("llguidance")
    from agentloop.suites.text2sql.accept import SqlAcceptor  # llguidance, byte by byte

    acceptor = SqlAcceptor(str(constraint.value))
    assert acceptor.accepts(reply) and acceptor.accepts('{"concepts": []}')
    three = json.dumps({"concepts": [json.loads(reply)["concepts"][0]] * 3})
    assert not acceptor.accepts(three)  # max_concepts=2
    assert not acceptor.accepts(reply.replace("directly", "x" * 400))  # bounded fields
    line = await abstract(FunctionBackend(lambda r: LINE), TRAJECTORY, style="completion")
    assert line.drafts


async def test_a_backend_that_cannot_constrain_gets_no_constraint() -> None:
    seen: list[ChatRequest] = []

    def model(request: ChatRequest) -> str:
        seen.append(request)
        return PROSE

    out = await abstract(Unconstrained(model), TRAJECTORY, style="completion")
    assert seen[0].constraint is None and not out.constrained
    assert out.drafts == [] and out.error is not None and "Create a function" in out.error
    off = await abstract(FunctionBackend(model), TRAJECTORY, style="completion", constrain=False)
    assert seen[1].constraint is None and off.error is not None


async def test_a_decline_is_not_a_rejection() -> None:
    for reply, style in ((" none", "completion"), ('{"concepts": []}', "json")):
        out = await abstract(FunctionBackend(lambda r, reply=reply: reply), TRAJECTORY, style=style)  # type: ignore[misc]
        assert out.declined and out.error is None and out.drafts == []


# --- the lenient parser -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        " Sum two numbers | a function adds its arguments | return {a} + {b}",
        "Title: Sum two numbers Situation: a function adds its arguments Suggestion: return {a} + {b}",
        "Title: Sum two numbers\nSituation: a function adds its arguments\nSuggestion: return {a} + {b}",
        "Sum two numbers - a function adds its arguments - return {a} + {b}",
        "1. Sum two numbers | a function adds its arguments | return {a} + {b}",
        "- Sum two numbers | a function adds its arguments | return {a} + {b}",
        "Lesson: Sum two numbers | a function adds its arguments | return {a} + {b}",
        '{"title": "Sum two numbers", "situation": "a function adds its arguments", "suggestion": "return {a} + {b}"}',
        "Here is the lesson:\nSum two numbers | a function adds its arguments | return {a} + {b}",
    ],
)
def test_parse_lesson_line_accepts_the_variants_models_write(reply: str) -> None:
    d = parse_lesson_line(reply)
    assert (d.title, d.situation, d.suggestion) == (
        "Sum two numbers",
        "a function adds its arguments",
        "return {a} + {b}",
    )
    assert [p.name for p in d.parameters] == ["a", "b"]


@pytest.mark.parametrize("reply", [PROSE, "", "   ", "|  |", "Title: only a title"])
def test_parse_lesson_line_rejects_what_has_no_lesson_in_it(reply: str) -> None:
    with pytest.raises(AbstractionError, match="title | situation | suggestion"):
        parse_lesson_line(reply)


# --- counts, verified-only writing ------------------------------------------------------------


def _task(passes: bool) -> PromptTask:
    return PromptTask(
        "Write add(a, b).", lambda c: Verdict(0.4 if not passes else 1.0, passed=passes), id="add"
    )


async def test_counters_and_stats_count_attempts_accepted_declined_and_rejected(tmp_path: Path) -> None:
    replies = iter([LINE, " none", PROSE])

    def model(request: ChatRequest) -> str:
        return next(replies) if _is_abstraction(request) else "def add(a, b): return a + b"

    url = f"sqlite:///{tmp_path / 'm.db'}"
    memory = ConceptMemory.open(
        url, namespace="pyfunc", backend=Unconstrained(model), abstraction="completion"
    )
    for i in range(3):
        task = PromptTask("Write add(a, b).", lambda c: Verdict(1.0, passed=True), id=f"add{i}")
        await run_task(task, memory.backend, "greedy", memory=memory)  # type: ignore[arg-type]
    await memory.aclose()
    counts = memory.counters.to_dict()
    assert (counts["abstractions_attempted"], counts["abstractions_accepted"]) == (3, 1)
    assert (counts["abstractions_declined"], counts["abstractions_rejected"]) == (1, 1)
    assert "add2" in counts["first_rejection"] and "Create a function" in counts["first_rejection"]
    with SQLMemoryStore(url) as store:
        stats = store.stats("pyfunc").to_dict()
    assert stats["abstractions_attempted"] == 3 and stats["abstractions_rejected"] == 1
    assert "Create a function" in stats["first_rejection"]
    out = CliRunner().invoke(app, ["memory", "stats", "--db", url])
    assert out.exit_code == 0, out.output
    assert "abstractions: 3 attempted, 1 accepted, 1 declined, 1 rejected" in out.output


@pytest.mark.parametrize(("write", "written"), [("passed", 0), ("best", 1), ("all", 1)])
async def test_memory_write_decides_whether_a_failing_task_writes(write: str, written: int) -> None:
    calls: list[str] = []

    def model(request: ChatRequest) -> str:
        if _is_abstraction(request):
            calls.append(_prompt(request))
            return LINE
        return "def add(a, b): return a - b"

    backend = FunctionBackend(model)
    memory = ConceptMemory(
        SQLMemoryStore("sqlite://"),
        namespace="pyfunc",
        backend=backend,
        abstraction="completion",
        write=write,  # type: ignore[arg-type]
        verifier="tests",
        owns_store=True,
    )
    result = await run_task(_task(passes=False), backend, "greedy", memory=memory)
    assert not result.passed
    assert len(calls) == written and memory.counters.written == written
    assert memory.counters.unverified_skipped == (1 if write == "passed" else 0)
    if written:
        (concept,) = memory.store.list()
        (evidence,) = concept.provenance.evidence
        assert (evidence.task_id, evidence.passed, evidence.score) == ("add", False, 0.4)
        assert evidence.verifier == "tests" and evidence.candidate == 0
    await memory.aclose()


async def test_a_passing_task_keeps_its_evidence() -> None:
    backend = FunctionBackend(lambda r: LINE if _is_abstraction(r) else "def add(a, b): return a + b")
    memory = ConceptMemory(
        SQLMemoryStore("sqlite://"),
        namespace="pyfunc",
        backend=backend,
        abstraction="completion",
        owns_store=True,
    )
    await run_task(_task(passes=True), backend, "greedy", memory=memory)
    (concept,) = memory.store.list()
    (evidence,) = concept.provenance.evidence
    assert evidence.passed and evidence.score == 1.0 and evidence.run_id == memory.run_id
    await memory.aclose()


def test_merge_counts_adds_counts_and_keeps_the_first_rejection() -> None:
    a = {"written": 1, "abstractions_rejected": 0, "first_rejection": None}
    b = {"written": 2, "abstractions_rejected": 1, "first_rejection": "task 'x': bad"}
    c = {"written": 0, "abstractions_rejected": 1, "first_rejection": "task 'y': worse"}
    assert merge_counts(merge_counts(merge_counts(None, a), b), c) == {
        "written": 3,
        "abstractions_rejected": 2,
        "first_rejection": "task 'x': bad",
    }


def test_run_spec_checks_memory_write_and_backend() -> None:
    assert RunSpec().memory_write == "passed" and RunSpec().memory_backend is None
    with pytest.raises(ValueError, match="memory_write must be one of passed, best, all"):
        RunSpec(memory_write="some")
    with pytest.raises(ValueError, match="memory_backend"):
        RunSpec(memory_backend=" ")
    # auto looks at the model that writes lessons, not the one that solves
    assert RunSpec(backend="openai:x", memory_backend="transformers").memory_abstraction() == "completion"
    assert RunSpec(backend="transformers", memory_backend="openai:x").memory_abstraction() == "json"


# --- a separate abstraction backend, end to end ------------------------------------------------


class Writer(FunctionBackend):
    closed = 0

    async def aclose(self) -> None:
        type(self).closed += 1


def test_memory_backend_writes_the_lessons_and_the_solver_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    solver_prompts: list[str] = []
    writer_prompts: list[str] = []

    def solve(request: ChatRequest) -> str:
        solver_prompts.append(_prompt(request))
        assert not _is_abstraction(request), "the solver was asked to abstract"
        name = re.findall(r"def (\w+)\(", _prompt(request))[-1]
        args = re.findall(rf"def {name}\((.*?)\)", _prompt(request))[-1]
        body = {"add": "a + b", "double": "2 * x"}[name]
        return f"```python\ndef {name}({args}):\n    return {body}\n```"

    def write(request: ChatRequest) -> str:
        writer_prompts.append(_prompt(request))
        return LINE

    writer = Writer(write, name="writer")
    Writer.closed = 0
    import agentloop.backends

    def resolve(backend_id: str, **kwargs: Any) -> Writer:
        assert backend_id == "writer:strong"
        return writer

    monkeypatch.setattr(agentloop.backends, "resolve_backend", resolve)
    memory = f"sqlite:///{tmp_path / 'lessons.db'}"
    spec = RunSpec(
        suite=SUITE,
        graph="greedy",
        limit=2,
        backend="function",
        memory=memory,
        memory_backend="writer:strong",
        memory_abstract="completion",
    )
    summary = run_suite_sync(spec, backend=FunctionBackend(solve), run_dir=tmp_path / "run")
    assert summary.memory is not None and summary.memory["written"] == 2
    assert summary.memory["abstractions_accepted"] == 2 and summary.memory["first_rejection"] is None
    assert len(writer_prompts) == 2 and all(p.rstrip().endswith("Lesson:") for p in writer_prompts)
    assert len(solver_prompts) == 2
    assert Writer.closed == 1  # the memory owned it and closed it
    # The writer's tokens are memory's, not the solver's.
    assert summary.usage["memory"]["llm_calls"] == 2


# --- the documented export format ---------------------------------------------------------------


def _doc_example() -> str:
    text = (ROOT / "docs" / "memory.md").read_text()
    match = re.search(r"<!-- minimal-export -->\s*```json\n(.*?)```", text, re.DOTALL)
    assert match, "docs/memory.md lost its minimal export example"
    return match.group(1)


def test_the_documented_minimal_example_imports(tmp_path: Path) -> None:
    path = tmp_path / "minimal.json"
    path.write_text(_doc_example())
    db = f"sqlite:///{tmp_path / 'm.db'}"
    out = CliRunner().invoke(app, ["memory", "import", str(path), "--db", db, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["inserted"] == 1
    with SQLMemoryStore(db) as store:
        (hit,) = store.search("empty list input", namespace="pyfunc", k=3)
    assert hit.concept.title == "Handle the empty input first" and hit.concept.kind == "strategy"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=2), "memory export version 2 is not supported"),
        (lambda d: d["concepts"][0].pop("suggestion"), "concept 1 of the memory export has no 'suggestion'"),
        (
            lambda d: d["concepts"][0].update(provenance={"evidence": [{"task_id": "t", "score": 1.5}]}),
            r"concept 1 of the memory export: an evidence score must be a number in \[0, 1\], got 1.5",
        ),
        (
            lambda d: d["concepts"][0].update(usage_count=-1),
            "concept 1 of the memory export: usage_count must be an integer >= 0",
        ),
        (lambda d: d["concepts"][0].update(cues="empty"), "cues must be a list of strings, got 'empty'"),
        (lambda d: d["concepts"][0].update(parameters=["x"]), "parameters must be a list of objects"),
        (lambda d: d["concepts"][0].update(kind="banana"), "kind must be one of strategy, pitfall, pattern"),
        (lambda d: d["concepts"][0].update(provenance=["t1"]), "provenance must be an object, got list"),
        (
            lambda d: d["concepts"][0].update(provenance={"evidence": [{"score": 1.0}]}),
            "concept 1 of the memory export: each evidence entry needs a task_id",
        ),
        (
            lambda d: d["concepts"][0].update(created_at="yesterday"),
            "concept 1 of the memory export: created_at must be an ISO 8601 time",
        ),
    ],
)
def test_import_errors_are_one_line(tmp_path: Path, change: Any, message: str) -> None:
    data = json.loads(_doc_example())
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with SQLMemoryStore(f"sqlite:///{tmp_path / 'm.db'}") as store, pytest.raises(MemoryStoreError) as err:
        store.import_json(path)
    assert re.search(message, str(err.value)) and "\n" not in str(err.value)
    out = CliRunner().invoke(app, ["memory", "import", str(path), "--db", f"sqlite:///{tmp_path / 'c.db'}"])
    assert out.exit_code != 0 and re.search(message, " ".join(out.output.split()))


# --- the user-suite case of the issue ------------------------------------------------------------


class ConstrainedModel:
    """Stands in for the embedded model: left to itself it writes prose where a lesson is asked
    (as the issue saw), but under a constraint it writes what the constraint allows."""

    def __init__(self) -> None:
        self.constrained = 0

    def __call__(self, request: ChatRequest) -> str:
        prompt = _prompt(request)
        if _is_abstraction(request):
            if request.constraint is None:
                return PROSE
            self.constrained += 1
            assert request.constraint.matches(LINE)
            return LINE
        name = re.findall(r"def (\w+)\(", prompt)[-1]
        args = re.findall(rf"def {name}\((.*?)\)", prompt)[-1]
        body = {"add": "a + b", "double": "2 * x", "is_even": "n % 2 == 0", "last": "xs[-1]"}[name]
        return f"```python\ndef {name}({args}):\n    return {body}\n```"


def test_the_user_suite_writes_in_one_run_and_retrieves_in_the_next(tmp_path: Path) -> None:
    memory = f"sqlite:///{tmp_path / 'lessons.db'}"
    spec = RunSpec(suite=SUITE, graph="greedy", limit=2, backend="transformers", memory=memory)
    assert spec.memory_abstraction() == "completion"
    model = ConstrainedModel()
    first = run_suite_sync(spec, backend=FunctionBackend(model), run_dir=tmp_path / "a")
    assert first.memory is not None and first.memory["written"] >= 1 and model.constrained == 2
    assert first.memory["abstractions_rejected"] == 0
    again = run_suite_sync(
        RunSpec(**{**spec.to_dict(), "memory": memory, "offset": 2}),
        backend=FunctionBackend(model),
        run_dir=tmp_path / "b",
    )
    assert again.memory is not None and again.memory["retrieved"] >= 1
    # Without the constraint the same model's prose is rejected, with the reason kept.
    unconstrained = run_suite_sync(
        RunSpec(**{**spec.to_dict(), "memory": f"sqlite:///{tmp_path / 'other.db'}"}),
        backend=Unconstrained(model),
        run_dir=tmp_path / "c",
    )
    assert unconstrained.memory is not None and unconstrained.memory["written"] == 0
    assert "expected 'title | situation | suggestion'" in unconstrained.memory["first_rejection"]


def test_the_cli_refuses_an_unknown_write_mode_in_one_line() -> None:
    out = CliRunner().invoke(app, ["run", "pyfunc", "--memory-write", "sometimes"])
    assert out.exit_code != 0 and "use one of passed, best, all" in " ".join(out.output.split())


def test_the_cli_summary_reports_the_abstractions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentloop.runs import runner as runner_module

    monkeypatch.setattr(runner_module, "resolve_backend", lambda *a, **k: Unconstrained(ConstrainedModel()))
    args = ["run", SUITE, "--graph", "greedy", "--backend", "function", "--limit", "1"]
    args += ["--memory", f"sqlite:///{tmp_path / 'm.db'}", "--memory-abstract", "completion"]
    out = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "abstractions: 1 attempted, 0 accepted, 0 declined, 1 rejected" in text
    assert "Create a function" in text


# --- lessons that are instances, not concepts ----------------------------------------------------

SQL_TASK = Trajectory(
    "cars",
    "How many cars were made in 1980 by the maker American Motor Company?",
    "SELECT COUNT(*) FROM cars_data WHERE Year = 1980",
)
SHOP_TASK = Trajectory(
    "crackers",
    "i want gluten-free crackers, pack of 12, and price lower than 50.00 dollars",
    "search[gluten-free crackers]\nclick[B0Z0WM93MT]\nclick[pack of 12]\nclick[buy now]",
)


@pytest.mark.parametrize(
    ("task", "draft", "problem"),
    [
        (
            SQL_TASK,
            ConceptDraft("Count", "SELECT COUNT(*) FROM cars_data WHERE Year = {year}"),
            "copies its answer",
        ),
        (
            SQL_TASK,
            ConceptDraft("Cars", "count rows", situation="how many cars were made in 1980 by the maker"),
            "restates its question",
        ),
        (
            SHOP_TASK,
            ConceptDraft("Crackers", "Click [B0Z0WM93MT] to find them"),
            "names a value of its task ('B0Z0WM93MT')",
        ),
        (
            SHOP_TASK,
            ConceptDraft("Price", "buy what costs under 50.00 dollars"),
            "names a value of its task ('50.00')",
        ),
        (SQL_TASK, ConceptDraft("Count", "you can use the following SQL query:"), "unfinished"),
        (SQL_TASK, ConceptDraft("Loop", "then count, then count, then count, then count"), "loops"),
    ],
)
def test_instances_are_told_from_concepts(task: Trajectory, draft: ConceptDraft, problem: str) -> None:
    found = instance_problem(draft, task)
    assert found is not None and found.startswith(problem), found


@pytest.mark.parametrize(
    "draft",
    [
        ConceptDraft(
            "Count all rows", "SELECT count(*) FROM {table}", situation="the question asks how many"
        ),
        ConceptDraft("Shop within a price limit", "pick a result whose price is under {limit}"),
        # One-digit numbers are not a task's values: "0 and 1", "the first 2".
        ConceptDraft("Empty inputs", "return 0 for an empty sum and 1 for an empty product"),
    ],
)
def test_concepts_pass_the_check(draft: ConceptDraft) -> None:
    assert instance_problem(draft, SQL_TASK) is None
    assert instance_problem(draft, SHOP_TASK) is None


def test_a_loop_is_cut_at_the_last_sentence_before_it() -> None:
    looped = ConceptDraft(
        "Add a list of numbers to a list of strings. Add a list of st",
        "then price less than 20, then price less than 20, then price less than 20, then",
    )
    trimmed = trim_loops(looped)
    assert trimmed.title == "Add a list of numbers to a list of strings."
    assert trimmed.suggestion == "then price less than 20, then price less than 20"
    plain = ConceptDraft("Count all rows", "SELECT count(*) FROM {table}")
    assert trim_loops(plain) is plain
    assert trim_loops(ConceptDraft("go go go go go", "x")).title == "go go"  # two rounds stay


async def test_an_abstraction_that_only_gives_instances_is_rejected_with_the_reason(tmp_path: Path) -> None:
    replies = iter(
        [
            " Count cars | a question about cars | SELECT COUNT(*) FROM cars_data WHERE Year = 1980",
            " Count all rows | the question asks how many | SELECT count(*) FROM {table}",
        ]
    )

    def model(request: ChatRequest) -> str:
        return next(replies) if _is_abstraction(request) else SQL_TASK.answer

    url = f"sqlite:///{tmp_path / 'm.db'}"
    memory = ConceptMemory.open(url, namespace="sql", backend=Unconstrained(model), abstraction="completion")
    for i in range(2):
        task = PromptTask(SQL_TASK.question, lambda c: Verdict(1.0, passed=True), id=f"cars{i}")
        await run_task(task, memory.backend, "greedy", memory=memory)  # type: ignore[arg-type]
    await memory.aclose()
    counts = memory.counters.to_dict()
    assert (counts["abstractions_accepted"], counts["abstractions_rejected"], counts["written"]) == (1, 1, 1)
    assert "cars0" in counts["first_rejection"] and "copies its answer" in counts["first_rejection"]
    with SQLMemoryStore(url) as store:
        (concept,) = store.list(namespace="sql")
    assert concept.title == "Count all rows"
    # check_lessons=False keeps what the model wrote, as before.
    replies = iter([" Count cars | a question about cars | SELECT COUNT(*) FROM cars_data WHERE Year = 1980"])
    loose = ConceptMemory.open(
        f"sqlite:///{tmp_path / 'loose.db'}",
        namespace="sql",
        backend=Unconstrained(model),
        abstraction="completion",
        check_lessons=False,
    )
    task = PromptTask(SQL_TASK.question, lambda c: Verdict(1.0, passed=True), id="cars")
    await run_task(task, loose.backend, "greedy", memory=loose)  # type: ignore[arg-type]
    await loose.aclose()
    assert loose.counters.written == 1
