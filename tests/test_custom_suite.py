"""A user's suite and graph by file path and module path: examples/arith_suite.py under every graph."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.cli import app
from agentloop.graphs import GRAPHS
from agentloop.runs import RunSpec, run_suite_sync
from agentloop.runs.runner import default_run_dir
from agentloop.suites import get_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE_FILE = ROOT / "examples" / "arith_suite.py"
SUITE = f"{SUITE_FILE}:ArithSuite"
CRITIC = f"{ROOT / 'examples' / 'llm_critic_graph.py'}:critic_graph"
ANSWERS = {
    row["question"]: row["answer"]
    for row in map(json.loads, (ROOT / "examples" / "arith" / "problems.jsonl").read_text().splitlines())
}
runner = CliRunner()


def solver(request: ChatRequest) -> str:
    """A test double that knows every answer."""
    prompt = request.messages[-1].content
    question = next(q for q in ANSWERS if q in prompt)
    return f"Let me think.\nAnswer: {ANSWERS[question]}"


@pytest.fixture
def solving_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """``agentloop run`` in this process gets the solver instead of a model."""
    monkeypatch.setattr("agentloop.runs.runner.resolve_backend", lambda *a, **k: FunctionBackend(solver))


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_error_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_the_example_is_short_and_uses_only_the_public_api() -> None:
    source = SUITE_FILE.read_text()
    assert len(source.splitlines()) < 80
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {m for m in imported if m.startswith("agentloop")} <= {
        "agentloop",
        "agentloop.suites",
        "agentloop.runs",
        "agentloop.graphs",
    }
    assert len(ANSWERS) >= 20


@pytest.mark.parametrize("graph", [*GRAPHS, CRITIC])
def test_every_graph_solves_the_suite_through_the_python_api(graph: str, tmp_path: Path) -> None:
    spec = RunSpec(suite=SUITE, graph=graph, limit=3, n=2, rounds=2, verifier="exact")
    summary = run_suite_sync(spec, backend=FunctionBackend(solver), run_dir=tmp_path / "run")
    assert summary.tasks == 3 and summary.errors == 0
    assert summary.metrics["execution_accuracy"] == 1.0 and summary.metrics["verifier_pass_rate"] == 1.0
    assert summary.upper_bound  # "exact" reads the answer key
    assert summary.graph == graph


def test_a_wrong_answer_scores_wrong_and_the_gold_free_verifier_still_passes_it(tmp_path: Path) -> None:
    spec = RunSpec(suite=SUITE, graph="greedy", limit=2)
    summary = run_suite_sync(
        spec, backend=FunctionBackend(lambda request: "Answer: 99999"), run_dir=tmp_path / "run"
    )
    assert summary.verifier == "number" and not summary.upper_bound
    assert summary.metrics["execution_accuracy"] == 0.0 and summary.metrics["verifier_pass_rate"] == 1.0


def test_the_suite_loads_by_module_path_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    suite = get_suite("examples.arith_suite:ArithSuite")
    assert suite.name == "arith" and suite.default_limit == 5
    spec = RunSpec(suite="examples.arith_suite:ArithSuite", graph="examples.llm_critic_graph:critic_graph")
    assert default_run_dir(spec, tmp_path).name.startswith("ArithSuite-critic_graph-")
    summary = run_suite_sync(spec, backend=FunctionBackend(solver), run_dir=tmp_path / "run")
    assert summary.tasks == 20 and summary.metrics["execution_accuracy"] == 1.0  # no --limit: every task


def test_cli_run_resume_report_and_compare_on_a_user_suite(solving_backend: None, tmp_path: Path) -> None:
    rel_suite = os.path.relpath(SUITE_FILE) + ":ArithSuite"  # as a user types it
    first = tmp_path / "a"
    data = invoke_json("run", rel_suite, "--graph", CRITIC, "--limit", "3", "--run-dir", str(first))
    assert data["tasks"] == 3 and data["metrics"]["execution_accuracy"] == 1.0
    assert data["suite"] == SUITE  # stored absolute: a resume from elsewhere compares equal
    # A resume (given the path another way) runs nothing twice.
    again = invoke_json(
        "run", SUITE, "--graph", CRITIC, "--limit", "3", "--run-dir", str(first), "--resume"
    )  # fmt: skip
    assert again["skipped"] == 3

    report = invoke_json("report", str(first))
    assert report["upper_bound"] is False and report["metrics"]["execution_accuracy"] == 1.0
    assert report["config"]["graph_hash"] and report["config"]["scores_reward"] is False

    second = tmp_path / "b"
    invoke_json("run", SUITE, "--graph", "greedy", "--limit", "3", "--run-dir", str(second))
    table = runner.invoke(app, ["report", str(first), "--compare", str(second)])
    assert table.exit_code == 0, table.output
    assert "critic_graph" in table.stdout and "greedy" in table.stdout
    assert "3 tasks paired" in table.stdout  # the suite's content hashes pair the two runs


def test_resume_refuses_a_changed_graph(solving_backend: None, tmp_path: Path) -> None:
    graph_file = tmp_path / "my_graph.py"
    shutil.copy(ROOT / "examples" / "llm_critic_graph.py", graph_file)
    args = [
        "run",
        SUITE,
        "--graph",
        f"{graph_file}:critic_graph",
        "--limit",
        "2",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    invoke_json(*args)
    # The same graph without its critic: one node and two edges fewer.
    source = graph_file.read_text().replace("review=[critic]", "review=[]")
    graph_file.write_text(source)
    os.utime(graph_file, ns=(graph_file.stat().st_atime_ns, graph_file.stat().st_mtime_ns + 10**9))
    line = one_error_line([*args, "--resume"])
    assert "graph_hash" in line and "different config" in line


BAD_GRAPHS = {
    "wrong_state": (
        "from typing import TypedDict\nfrom langgraph.graph import START, StateGraph\n"
        "class S(TypedDict):\n    x: int\n"
        "def graph():\n    g = StateGraph(S)\n    g.add_node('propose', lambda s: {})\n"
        "    g.add_edge(START, 'propose')\n    return g\n",
        ["runs over S", "LoopState"],
    ),
    "no_context": (
        "from langgraph.graph import START, StateGraph\nfrom agentloop.graphs import LoopState, nodes\n"
        "def graph():\n    g = StateGraph(LoopState)\n    g.add_sequence([nodes.propose, nodes.select])\n"
        "    g.add_edge(START, 'propose')\n    return g\n",
        ["context schema", "LoopContext"],
    ),
    "missing_nodes": (
        "from langgraph.graph import START, StateGraph\n"
        "from agentloop.graphs import LoopContext, LoopState, nodes\n"
        "def graph():\n    g = StateGraph(LoopState, context_schema=LoopContext)\n"
        "    g.add_node(nodes.propose)\n    g.add_edge(START, 'propose')\n    return g\n",
        ["lacks the node(s) select (or vote)"],
    ),
    "import_error": (
        "import no_such_package_zz\ngraph = None\n",
        ["cannot import graph", "no_such_package_zz"],
    ),
    "not_a_graph": ("graph = 42\n", ["is a int, not a LangGraph StateGraph"]),
    "no_entry": (
        "from langgraph.graph import StateGraph\nfrom agentloop.graphs import LoopContext, LoopState\n"
        "graph = StateGraph(LoopState, context_schema=LoopContext)\n",
        ["does not compile"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_GRAPHS))
def test_a_graph_that_does_not_fit_fails_in_one_line(
    case: str, solving_backend: None, tmp_path: Path
) -> None:
    source, words = BAD_GRAPHS[case]
    (tmp_path / f"{case}.py").write_text(source)
    line = one_error_line(
        ["run", SUITE, "--graph", f"{tmp_path / case}.py:graph", "--run-dir", str(tmp_path / "r")]
    )
    for word in words:
        assert word in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("attr", "words"),
    [
        ("ArithSuit", ["has no attribute 'ArithSuit'", "did you mean 'ArithSuite'"]),
        ("parse_answer", ["not a Suite subclass or instance"]),
        ("Suite", ["does not implement items, score"]),
    ],
)
def test_a_suite_that_does_not_fit_fails_in_one_line(attr: str, words: list[str], tmp_path: Path) -> None:
    line = one_error_line(["run", f"{SUITE_FILE}:{attr}", "--run-dir", str(tmp_path / "r")])
    for word in words:
        assert word in line


def test_an_unknown_suite_name_says_how_to_give_your_own() -> None:
    line = one_error_line(["run", "text2sq"])
    assert "Did you mean 'text2sql'?" in line and "module:attr" in line


@pytest.mark.model
def test_the_example_runs_from_the_cli_on_the_embedded_model(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "agentloop", "run", "examples/arith_suite.py:ArithSuite", "--graph", "best_of_n",
            "--limit", "2", "--n", "2", "--max-tokens", "48", "--run-dir", str(tmp_path / "r"), "--json",
        ],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["tasks"] == 2 and data["errors"] == 0 and data["usage"]["candidates"] == 4
    assert 0.0 <= data["metrics"]["execution_accuracy"] <= 1.0
