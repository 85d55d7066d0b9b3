"""Entry-point plugins: a package built on the fly registers a graph, a suite and a backend.

The distribution is a module plus a ``*.dist-info`` folder with ``entry_points.txt``, on
PYTHONPATH: what ``pip install`` leaves behind, without installing anything.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from agentloop._plugins import GRAPH_GROUP, is_reference, plugin_names, reference_label
from agentloop.errors import did_you_mean

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "custom.md"

PLUGIN = '''
"""A tiny agentloop plugin: the suite asks for sums, the backend adds, the graphs are built-ins rewired."""

import re

from agentloop import Backend, ChatResponse, Completion, Usage
from agentloop.suites import Score, Suite, SuiteItem, content_hash
from agentloop.graphs import GraphSpec, PromptTask, Verdict, loop_graph


class SumSuite(Suite):
    name = "sums"
    default_verifier = "exact"
    default_limit = 3

    def items(self, spec, backend=None):
        rows = self.select(spec, [(a, a + 1) for a in range(6)])
        return [
            SuiteItem(
                PromptTask(f"What is {a} + {b}?", self.verify(a + b), id=f"sum-{a}", parse=str.strip),
                i,
                f"{a} + {b}",
                content_hash=content_hash([a, b]),
            )
            for i, (a, b) in enumerate(rows, start=spec.offset)
        ]

    @staticmethod
    def verify(gold):
        return lambda c: Verdict(float(c.answer == str(gold)), passed=c.answer == str(gold))

    async def score(self, item, result):
        a, b = map(int, item.question.split(" + "))
        return Score(correct=result.answer == str(a + b))


class Adder(Backend):
    def __init__(self, offset):
        self.id, self.offset = f"adder:{offset}", offset

    @classmethod
    def from_id(cls, arg, options):
        return cls(int(arg or 0))

    async def generate(self, request):
        a, b = map(int, re.findall(r"\\d+", request.messages[-1].content)[:2])
        text = str(a + b + self.offset)
        return ChatResponse([Completion(text, "stop", 1)] * request.n, Usage(5, request.n, 0.0, 1))


ONE_SHOT = GraphSpec("one_shot", "a single greedy candidate, from a plugin", lambda memory: loop_graph(feedback=None, memory=memory))


def rounds():
    """IAD's loop, from a plugin factory."""
    return loop_graph()
'''

ENTRY_POINTS = {
    "agentloop.suites": {
        "sums": "agentloop_demo_plugin:SumSuite",
        "broken-suite": "agentloop_demo_broken:Suite",
    },
    "agentloop.graphs": {
        "one_shot": "agentloop_demo_plugin:ONE_SHOT",
        "demo_rounds": "agentloop_demo_plugin:rounds",
        "broken": "agentloop_demo_broken:graph",
    },
    "agentloop.backends": {"adder": "agentloop_demo_plugin:Adder"},
}


def write_distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]]) -> None:
    """The ``*.dist-info`` metadata ``pip install`` writes, enough for importlib.metadata.entry_points."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    sections = [
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "agentloop_demo_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (site / "agentloop_demo_broken.py").write_text("raise RuntimeError('this plugin is broken')\n")
    write_distribution(site, "agentloop-demo-plugin", ENTRY_POINTS)
    return site


def cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args], capture_output=True, text=True, env=env, timeout=300
    )


def ok_json(site: Path, *args: str) -> dict:
    proc = cli(site, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_plugin_suite_graph_and_backend_run_end_to_end(site: Path, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    data = ok_json(site, "run", "sums", "--graph", "demo_rounds", "--backend", "adder", "--run-dir", run_dir)
    assert data["suite"] == "sums" and data["graph"] == "demo_rounds" and data["backend"] == "adder"
    assert data["tasks"] == 3 and data["metrics"]["execution_accuracy"] == 1.0  # default_limit 3
    again = ok_json(
        site, "run", "sums", "--graph", "demo_rounds", "--backend", "adder", "--run-dir", run_dir, "--resume"
    )
    assert again["skipped"] == 3
    report = ok_json(site, "report", run_dir)
    assert report["metrics"]["execution_accuracy"] == 1.0 and report["config"]["graph_hash"]

    # A backend that adds one too many: every answer wrong, refined for all three rounds.
    wrong = ok_json(site, "run", "sums", "-g", "one_shot", "-b", "adder:1", "--run-dir", str(tmp_path / "w"))
    assert wrong["metrics"]["execution_accuracy"] == 0.0 and wrong["usage"]["candidates"] == 3 * 4


def test_graphs_list_shows_plugins_and_a_broken_one_as_such(site: Path) -> None:
    rows = {r["name"]: r for r in ok_json(site, "graphs", "list")}
    assert rows["iad"]["source"] == "built-in"
    assert rows["one_shot"] == {
        "name": "one_shot",
        "source": "plugin",
        "description": "a single greedy candidate, from a plugin",
    }
    assert rows["demo_rounds"]["description"] == "IAD's loop, from a plugin factory."
    assert (
        "does not load" in rows["broken"]["description"]
        and "this plugin is broken" in rows["broken"]["description"]
    )
    drawn = ok_json(site, "graphs", "show", "demo_rounds")
    assert "refine" in drawn["nodes"]


def test_a_broken_plugin_breaks_only_itself(site: Path, tmp_path: Path) -> None:
    assert cli(site, "graphs", "show", "iad").returncode == 0
    line = error_line(cli(site, "run", "sums", "--graph", "broken", "--run-dir", str(tmp_path / "r")))
    assert "graph plugin 'broken' (from agentloop-demo-plugin)" in line and "this plugin is broken" in line
    line = error_line(cli(site, "run", "broken-suite", "--run-dir", str(tmp_path / "r")))
    assert "suite plugin 'broken-suite'" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["run", "sums", "--graph", "demo_round"],
            ["Did you mean 'demo_rounds'?", "one_shot", "broken", "iad"],
        ),
        (["run", "sum"], ["Did you mean 'sums'?", "text2sql", "broken-suite"]),
        (["run", "sums", "--backend", "addr"], ["Did you mean 'adder'?", "openai"]),
    ],
)
def test_unknown_names_list_the_plugins_too(
    site: Path, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    line = error_line(cli(site, *args, "--run-dir", str(tmp_path / "r")))
    for word in words:
        assert word in line


def test_entry_points_are_listed_without_importing_the_plugin(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentloop.graphs import library

    monkeypatch.syspath_prepend(str(site))
    try:
        assert {"one_shot", "demo_rounds", "broken"} <= set(plugin_names(GRAPH_GROUP))
        assert "agentloop_demo_plugin" not in sys.modules and "agentloop_demo_broken" not in sys.modules
        assert library.graph_spec("one_shot").description == "a single greedy candidate, from a plugin"
        assert "agentloop_demo_plugin" in sys.modules and "agentloop_demo_broken" not in sys.modules
    finally:
        library._plugin_spec.cache_clear()
        sys.modules.pop("agentloop_demo_plugin", None)


def test_references_and_did_you_mean() -> None:
    assert is_reference("pkg.mod:graph") and is_reference("path/to/my file.py:make")
    assert not is_reference("iad") and not is_reference("text2sql") and not is_reference("openai:gpt-4o-mini")
    assert not is_reference("mod:") and reference_label("/a/b/c.py:critic_graph") == "critic_graph"
    message = did_you_mean("graph", "iadd", ["greedy", "iad"])
    assert message == "unknown graph 'iadd'. Did you mean 'iad'? Known graphs: greedy, iad."


def doc_commands() -> list[str]:
    """Every line of the ```bash blocks in docs/custom.md."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def run_doc_commands(tmp_path: Path, *, with_model: bool) -> list[str]:
    """Run the doc's commands from a copy of examples/; ``pip install -e DIR`` becomes a dist-info on PYTHONPATH.

    Without the model, a ``run`` on the default backend is left out, and so is every command
    that reads its run dir. Returns the commands that ran.
    """
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    site, paths, ran, skipped_dirs = tmp_path / "site", [], [], set()
    for line in doc_commands():
        argv = shlex.split(line)
        if argv[:3] == ["pip", "install", "-e"]:
            project = tomllib.loads((tmp_path / argv[3] / "pyproject.toml").read_text())["project"]
            write_distribution(site, project["name"], project["entry-points"])
            paths += [str(site), str(tmp_path / argv[3])]
            continue
        assert argv[0] == "agentloop", line
        dirs = {a for a in argv if a.startswith("runs/")}
        if not with_model and ((argv[1] == "run" and "--backend" not in argv) or dirs & skipped_dirs):
            skipped_dirs |= dirs
            continue
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(paths)}
        proc = subprocess.run(
            [sys.executable, "-m", "agentloop", *argv[1:]], capture_output=True, text=True, cwd=tmp_path, env=env,
            timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, f"{line}\n{proc.stderr}"
        ran.append(line)
    return ran


def test_the_doc_commands_that_need_no_model(tmp_path: Path) -> None:
    ran = run_doc_commands(tmp_path, with_model=False)
    assert any("--backend lastnum" in line for line in ran)
    assert any(line.startswith("agentloop graphs show examples/llm_critic_graph.py") for line in ran)
    assert (tmp_path / "runs" / "arith-lastnum").is_dir()


@pytest.mark.model
def test_the_commands_in_docs_custom_md(tmp_path: Path) -> None:
    ran = run_doc_commands(tmp_path, with_model=True)
    assert ran == [line for line in doc_commands() if not line.startswith("pip ")]
