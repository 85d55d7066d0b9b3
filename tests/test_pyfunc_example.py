"""examples/pyfunc_suite.py end to end, and the user-API gaps it exposed (issue 23).

A scripted model writes a wrong function first and fixes it when the prompt shows a failing
test, so refinement is what makes a difference: greedy and sampling solve half, IAD and
self-refine all. The example's tests run in real subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentloop.backends import FunctionBackend
from agentloop.cli import app
from agentloop.graphs import known_graphs
from agentloop.records import RunReport
from agentloop.runs import RunAbortedError, RunSpec, run_suite_sync
from agentloop.suites import SuiteError, get_suite
from agentloop.types import ChatRequest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pyfunc_suite.py"
SUITE = f"{EXAMPLE}:PyFuncSuite"
RIGHT = {
    "add": "a + b",
    "double": "2 * x",
    "is_even": "n % 2 == 0",
    "last": "xs[-1]",
}
FIRST_TRY_RIGHT = {"add", "is_even"}  # the others are wrong until a failing test is shown


class Coder:
    """Answers with the function; wrong at first for half the tasks, right once feedback shows a failure."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, request: ChatRequest) -> str:
        prompt = request.messages[-1].content if request.messages else (request.raw_prompt or "")
        if "memory of lessons" in prompt:  # an abstraction request: one lesson as JSON
            return json.dumps({"concepts": [LESSON]})
        self.prompts.append(prompt)
        name = re.findall(r"def (\w+)\(", prompt)[-1]
        args = re.findall(rf"def {name}\((.*?)\)", prompt)[-1]
        fixed = name in FIRST_TRY_RIGHT or "failed" in prompt
        body = RIGHT[name] if fixed else "None"
        return f"```python\ndef {name}({args}):\n    return {body}\n```"


LESSON = {
    "title": "Return the expression itself",
    "situation": "A small Python function whose docstring states the result",
    "cues": ["python", "function"],
    "suggestion": "Return the value the docstring names; check it against the {example}",
    "parameters": [{"name": "example", "type": "str"}],
    "kind": "strategy",
}


@pytest.mark.parametrize("graph", known_graphs())
def test_every_graph_runs_the_example_and_refinement_pays(graph: str, tmp_path: Path) -> None:
    spec = RunSpec(suite=SUITE, graph=graph, limit=4, n=2, rounds=2, backend="function")
    summary = run_suite_sync(spec, backend=FunctionBackend(Coder()), run_dir=tmp_path / "run")
    assert (summary.tasks, summary.errors, summary.verifier) == (4, 0, "tests")
    # adaptive refines after a wave whose verdicts carry a message (a failing test's).
    refines = graph in ("iad", "self_refine", "adaptive", "adaptive_flat")
    assert summary.metrics["accuracy"] == (1.0 if refines else 0.5)
    # The suite's own metric name, and the tests' verdict is the score (no second run).
    assert summary.metrics["accuracy"] == summary.metrics["verifier_pass_rate"]


def test_the_example_uses_only_the_public_api_and_stays_short() -> None:
    source = EXAMPLE.read_text()
    assert len(source.splitlines()) <= 100
    imported = set(re.findall(r"^from (agentloop[\w.]*) import", source, re.MULTILINE))
    assert imported <= {"agentloop.graphs", "agentloop.suites", "agentloop.types", "agentloop.runs"}


def test_a_reply_without_the_function_is_a_parse_failure_whose_message_reaches_the_refine_prompt(
    tmp_path: Path,
) -> None:
    prompts: list[str] = []

    def chatty(request: ChatRequest) -> str:
        prompts.append(request.messages[-1].content)
        return "I would write a function here."

    spec = RunSpec(suite=SUITE, graph="self_refine", limit=1, rounds=2, backend="function")
    summary = run_suite_sync(spec, backend=FunctionBackend(chatty), run_dir=tmp_path / "run")
    assert summary.metrics["accuracy"] == 0.0
    assert "defines no function add(...)" in prompts[-1]


def test_memory_writes_and_shows_lessons_with_the_example(tmp_path: Path) -> None:
    memory = f"sqlite:///{tmp_path / 'lessons.db'}"
    spec = RunSpec(suite=SUITE, graph="iad", limit=2, n=2, rounds=2, backend="function", memory=memory)
    first = run_suite_sync(spec, backend=FunctionBackend(Coder()), run_dir=tmp_path / "a")
    assert first.memory is not None and first.memory["written"] >= 1
    coder = Coder()
    again = run_suite_sync(
        RunSpec(**{**spec.to_dict(), "memory": memory, "offset": 2}),
        backend=FunctionBackend(coder),
        run_dir=tmp_path / "b",
    )
    assert again.memory is not None and again.memory["retrieved"] >= 1
    assert any(LESSON["title"] in p for p in coder.prompts)


@pytest.mark.model
def test_memory_on_the_embedded_model_writes_lessons_then_shows_them(tmp_path: Path) -> None:
    """Issue 26's user case on a real model: the embedded SmolLM2-135M (llama.cpp engine, so the
    abstraction request is grammar-constrained) writes lessons from the tasks it solves in one
    run, and the next run over other tasks retrieves them."""
    pytest.importorskip("xllamacpp", reason="the llamacpp extra: pip install 'agentloop[llamacpp]'")
    memory = f"sqlite:///{tmp_path / 'lessons.db'}"
    spec = RunSpec(suite=SUITE, graph="greedy", limit=2, backend="llamacpp", max_tokens=96, memory=memory)
    first = run_suite_sync(spec, run_dir=tmp_path / "a")
    assert first.memory is not None
    assert first.memory["written"] >= 1, first.memory
    assert first.memory["abstractions_rejected"] == 0  # constrained: well-formed or declined
    assert first.memory["unverified_skipped"] + first.memory["abstractions_attempted"] == 2
    again = run_suite_sync(RunSpec(**{**spec.to_dict(), "offset": 2}), run_dir=tmp_path / "b")
    assert again.memory is not None and again.memory["retrieved"] >= 1, again.memory


@pytest.mark.model
def test_resume_with_no_flags_continues_with_the_stored_configuration(tmp_path: Path) -> None:
    """A task the first session lost is run again by ``--resume --run-dir`` alone, on the real model."""
    run_dir = tmp_path / "run"
    spec = RunSpec(suite=SUITE, graph="greedy", limit=2, max_tokens=48, backend="transformers")

    def lost_second(request: ChatRequest) -> str:
        if "def double(" in request.messages[-1].content:
            raise ConnectionError("the server went away")
        return Coder()(request)

    first = run_suite_sync(spec, backend=FunctionBackend(lost_second), run_dir=run_dir)
    assert first.errors == 1
    result = CliRunner().invoke(app, ["run", "--resume", "--run-dir", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["tasks"], data["skipped"], data["errors"]) == (2, 1, 0)
    # A flag given that differs from the stored run is refused, in one line.
    other = CliRunner().invoke(app, ["run", "--resume", "--run-dir", str(run_dir), "--n", "7"])
    assert other.exit_code == 2 and "different config" in other.stderr and "Traceback" not in other.output


RAISING = """
from agentloop.graphs import PromptTask
from agentloop.suites import Suite, SuiteItem


def verify(candidate):
    raise KeyError("no such column")


class RaisingSuite(Suite):
    name = "raising"
    default_verifier = "strict"
    verifiers = {"strict": "raises, always"}
    verifier_is_scorer = True

    def items(self, spec, backend=None):
        if spec.data and spec.data.endswith("bad"):
            raise ValueError("--data must name a tasks file")
        return [SuiteItem(task=PromptTask(f"say {i}", verify, id=f"t{i}"), index=i, question=f"say {i}")
                for i in range(7)]
"""


@pytest.fixture
def raising_suite(tmp_path: Path) -> str:
    path = tmp_path / "raising_suite.py"
    path.write_text(RAISING)
    return f"{path}:RaisingSuite"


def test_a_verifier_that_raises_on_every_candidate_is_an_error_not_a_wrong_answer(
    raising_suite: str, tmp_path: Path
) -> None:
    spec = RunSpec(suite=raising_suite, graph="best_of_n", n=2, backend="function")
    # Every task failing stops the run (nothing was right), and says why in one line.
    with pytest.raises(RunAbortedError, match="VerifierError: the verifier raised on every candidate"):
        run_suite_sync(
            spec, backend=FunctionBackend(lambda r: "hi"), run_dir=tmp_path / "run", abort_after=99
        )
    summary = RunReport.load(tmp_path / "run").summary()
    assert summary.errors == 7 and summary.metrics["accuracy"] == 0.0
    assert all(f["error"].startswith("VerifierError: the verifier raised") for f in summary.failed)
    assert "no such column" in summary.failed[0]["error"]
    assert RunReport.load(tmp_path / "run").metrics()["verifier_errors"] == 7


def test_the_console_names_failed_tasks_and_where_to_see_them_all(raising_suite: str, tmp_path: Path) -> None:
    from rich.console import Console

    from agentloop.records.render import render_failures

    spec = RunSpec(suite=raising_suite, graph="greedy", backend="function")
    with pytest.raises(RunAbortedError):
        run_suite_sync(
            spec, backend=FunctionBackend(lambda r: "hi"), run_dir=tmp_path / "run", abort_after=99
        )
    console = Console(record=True, width=200)
    render_failures([RunReport.load(tmp_path / "run")], console)
    text = console.export_text()
    assert "7 task(s) failed" in text and "7 of them verifier errors" in text
    assert "t0: VerifierError:" in text and "t4:" in text and "t5:" not in text and "and 2 more" in text
    assert f"agentloop report {tmp_path / 'run'} --errors" in text

    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--errors"])
    assert result.exit_code == 0 and all(f"t{i}" in result.stdout for i in range(7))


def test_unknown_verifier_and_bad_suite_input_are_one_line_errors(
    raising_suite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "unused")  # nothing is sent: the errors come first
    with pytest.raises(SuiteError, match="unknown verifier 'loose'.*strict"):
        RunSpec(suite=raising_suite, verifier="loose").for_suite(get_suite(raising_suite))
    for args, words in (
        (["--verifier", "loose"], ["unknown verifier 'loose'", "strict"]),
        (["--data", "bad"], ["raising", "--data must name a tasks file"]),
    ):
        result = CliRunner().invoke(
            app,
            [
                "run",
                raising_suite,
                "--backend",
                "openai:x",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--run-dir",
                str(tmp_path / "r"),
                *args,
            ],
        )
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
        assert all(w in lines[0] for w in words), lines[0]


def test_names_come_from_the_suite_not_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentloop.runs import default_run_dir

    spec = RunSpec(suite=SUITE, graph=f"{ROOT / 'examples' / 'llm_critic_graph.py'}:critic_graph")
    assert default_run_dir(spec, tmp_path, suite_name="pyfunc").name.startswith("pyfunc-critic_graph-")
    run_suite_sync(
        RunSpec(suite=SUITE, graph="greedy", limit=1, backend="function", n=4, rounds=3),
        backend=FunctionBackend(Coder()),
        run_dir=tmp_path / "run",
    )
    config = RunReport.load(tmp_path / "run").run.config
    assert (config["effective_n"], config["effective_rounds"], config["suite_name"]) == (1, 1, "pyfunc")
    assert RunReport.load(tmp_path / "run").n_rounds == "1 / 1"


def test_the_sandbox_pattern_keeps_model_code_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    from pyfunc_suite import run_tests  # type: ignore[import-not-found]

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    leak = "import os\nassert 'OPENAI_API_KEY' not in os.environ, 'leaked'\ndef f():\n    return 1"
    verdict = asyncio.run(run_tests(leak, ["f() == 1"]))
    assert verdict.passed, verdict.feedback


def test_the_viewer_marks_the_chosen_candidate_and_ties_as_tied(tmp_path: Path) -> None:
    """Greedy-equal candidates: best_of_n keeps the first; the viewer says the others tie, not 'best'."""
    pytest.importorskip("jinja2")
    from agentloop.view import RunSource

    spec = RunSpec(suite=SUITE, graph="best_of_n", limit=1, n=3, backend="function")
    run_suite_sync(spec, backend=FunctionBackend(Coder()), run_dir=tmp_path / "run")  # 3 equal right answers
    source = RunSource(tmp_path / "run")
    detail = source.task("add")
    assert detail is not None
    (round0,) = detail.rounds
    assert [c.chosen for c in round0.candidates] == [True, False, False]
    assert all(c.tied and not c.best_of_round for c in round0.candidates)
