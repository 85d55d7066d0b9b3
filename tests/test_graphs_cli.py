"""``agentloop graphs list`` and ``agentloop graphs show``: every graph, drawn by LangGraph's own API."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentloop.cli import app
from agentloop.graphs import GRAPHS

runner = CliRunner()
CRITIC = str(Path(__file__).resolve().parents[1] / "examples" / "llm_critic_graph.py") + ":critic_graph"


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_list_shows_every_built_in_graph_with_its_description() -> None:
    result = runner.invoke(app, ["graphs", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(GRAPHS) <= set(rows)
    for name, spec in GRAPHS.items():
        assert rows[name] == {"name": name, "source": "built-in", "description": spec.description}

    table = runner.invoke(app, ["graphs", "list"])
    assert table.exit_code == 0 and "self_consistency" in table.stdout and "majority vote" in table.stdout


@pytest.mark.parametrize("name", list(GRAPHS))
def test_show_draws_mermaid_with_every_node_and_edge(name: str) -> None:
    result = runner.invoke(app, ["graphs", "show", name, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"__start__", "propose", "__end__"} <= set(data["nodes"])
    assert data["format"] == "mermaid" and data["drawing"].lstrip().startswith("---")
    for node in data["nodes"]:
        assert node in data["drawing"]
    assert {"source": "__start__", "target": "recall", "conditional": False, "label": None} in data["edges"]
    text = runner.invoke(app, ["graphs", "show", name])
    assert text.exit_code == 0 and text.stdout.strip() == data["drawing"].strip()


def test_show_marks_iads_conditional_edges() -> None:
    data = json.loads(runner.invoke(app, ["graphs", "show", "iad", "--json"]).stdout)
    conditional = {(e["source"], e["target"], e["label"]) for e in data["edges"] if e["conditional"]}
    assert conditional == {("select", "refine", "continue"), ("select", "remember", "stop")}


def test_show_takes_a_graph_by_file_path() -> None:
    data = json.loads(runner.invoke(app, ["graphs", "show", CRITIC, "--json"]).stdout)
    assert "critic" in data["nodes"]
    assert {"source": "verify", "target": "critic", "conditional": False, "label": None} in data["edges"]


@pytest.mark.skipif(importlib.util.find_spec("grandalf") is None, reason="needs agentloop[draw]")
def test_show_ascii() -> None:
    result = runner.invoke(app, ["graphs", "show", "self_refine", "--format", "ascii"])
    assert result.exit_code == 0, result.output
    assert "| revise |" in result.stdout and "| propose |" in result.stdout


def test_ascii_without_grandalf_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "grandalf" else real(n, *a))
    line = one_error_line(runner.invoke(app, ["graphs", "show", "iad", "--format", "ascii"]))
    assert "pip install grandalf" in line


def test_png_offline_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from langchain_core.runnables.graph import Graph

    def offline(self, **kwargs):
        raise ValueError("Failed to reach the API while trying to render your graph")

    monkeypatch.setattr(Graph, "draw_mermaid_png", offline)
    line = one_error_line(
        runner.invoke(app, ["graphs", "show", "iad", "-f", "png", "-o", str(tmp_path / "g.png")])
    )
    assert "cannot draw PNG here" in line and "--format mermaid" in line
    assert not (tmp_path / "g.png").exists()


def test_png_is_written_where_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from langchain_core.runnables.graph import Graph

    monkeypatch.setattr(Graph, "draw_mermaid_png", lambda self, **kw: b"\x89PNG fake")
    out = tmp_path / "iad.png"
    result = runner.invoke(app, ["graphs", "show", "iad", "--format", "png", "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(out) and out.read_bytes() == b"\x89PNG fake"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("iadd", ["unknown graph 'iadd'", "Did you mean 'iad'?", "module:attr"]),
        (CRITIC.replace(":critic_graph", ":critic"), ["takes arguments"]),
        (CRITIC + "x", ["has no attribute 'critic_graphx'", "did you mean 'critic_graph'"]),
        ("no_such_module_zz:graph", ["cannot import graph", "No module named 'no_such_module_zz'"]),
    ],
)
def test_show_bad_names_are_one_line(name: str, words: list[str]) -> None:
    line = one_error_line(runner.invoke(app, ["graphs", "show", name]))
    for word in words:
        assert word in line


def test_show_refuses_an_unknown_format() -> None:
    result = runner.invoke(app, ["graphs", "show", "iad", "--format", "svg"])
    assert result.exit_code == 2 and "mermaid" in result.output
