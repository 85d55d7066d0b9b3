"""The split of ``agentloop.evals`` into suites, runs and records: what users relied on still works.

Old import paths re-export for one release with a warning; ``import agentloop`` and the viewer
load no engine; a run store written by the previous release (0.1, ``agentloop.evals``) opens,
reports, resumes and views; a plugin suite that is gone leaves its runs readable.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from agentloop.backends import FunctionBackend
from agentloop.records import RunReport, RunStore
from agentloop.runs import RunSpec, run_suite_sync
from agentloop.suites.text2sql import load_text2sql
from agentloop.types import ChatRequest

OLD_RUN = Path(__file__).parent / "fixtures" / "release_0_1" / "text2sql_run"
HEAVY = ("langgraph", "torch", "transformers")


def solver(request: ChatRequest) -> str:
    """The gold SQL of whichever shipped question the prompt holds."""
    text = request.messages[-1].content if request.messages else (request.raw_prompt or "")
    for ex in load_text2sql(None):
        if ex.question in text:
            return f"```sql\n{ex.gold_sql}\n```"
    return "```sql\nSELECT 1\n```"


def loaded_after(code: str) -> dict[str, bool]:
    """Which heavy modules a fresh interpreter has loaded after running ``code``."""
    probe = code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("agentloop.evals:Suite", "agentloop.suites:Suite"),
        ("agentloop.evals:run_suite_sync", "agentloop.runs:run_suite_sync"),
        ("agentloop.evals:RunSpec", "agentloop.runs:RunSpec"),
        ("agentloop.evals:load_text2sql", "agentloop.suites.text2sql:load_text2sql"),
        ("agentloop.evals.runner:RunSpec", "agentloop.runs.runner:RunSpec"),
        ("agentloop.evals.run_store:RunStore", "agentloop.records.store:RunStore"),
        ("agentloop.evals.suites:get_suite", "agentloop.suites:get_suite"),
        ("agentloop.evals.sql_grammar:schema_grammar", "agentloop.suites.text2sql.grammar:schema_grammar"),
        ("agentloop.evals.webshop_task:WebShopTask", "agentloop.suites.webshop.task:WebShopTask"),
    ],
)
def test_an_old_import_path_still_works_and_warns(old: str, new: str) -> None:
    old_module, _, name = old.partition(":")
    new_module, _, new_name = new.partition(":")
    sys.modules.pop(old_module, None) if old_module != "agentloop.evals" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(importlib.import_module(old_module), name)
    assert value is getattr(importlib.import_module(new_module), new_name)
    assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught)


def test_import_agentloop_and_the_webshop_world_load_no_engine() -> None:
    assert loaded_after("import agentloop, agentloop.webshop") == dict.fromkeys(HEAVY, False)


def test_names_on_the_top_level_load_on_first_use() -> None:
    loaded = loaded_after("import agentloop\nagentloop.run_task")
    assert loaded["langgraph"] and not loaded["torch"]


def test_the_viewer_opens_a_run_without_graphs_backends_or_suites(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    code = textwrap.dedent(
        f"""
        from agentloop.view._data import RunSource, TaskQuery
        source = RunSource({str(run)!r})
        page = source.tasks(TaskQuery())
        assert page.total == 3, page
        assert source.task(page.rows[0].task_id) is not None
        import sys
        assert not any(m.startswith(("agentloop.graphs", "agentloop.backends", "agentloop.suites")) for m in sys.modules)
        """
    )
    assert loaded_after(code) == dict.fromkeys(HEAVY, False)


def test_a_store_of_the_previous_release_reports_resumes_and_views(tmp_path: Path) -> None:
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    report = RunReport.load(run)
    metrics = report.metrics()
    assert (metrics["execution_accuracy"], len(report.tasks)) == (1.0, 3)
    # Spider's buckets come back from the tasks' own levels; the database from the old column.
    assert list(metrics["by_difficulty"]) == ["easy", "medium"]
    assert report.n_rounds == "2 / 1" and report.tasks[0].extra == {"db_id": report.tasks[0].extra["db_id"]}
    assert report.tasks[0].extra["db_id"]

    # The same flags as the old run, with a larger --limit: the run is extended, not redone.
    spec = RunSpec(graph="best_of_n", n=2, limit=5, backend="function", constrain="none", prompt="chat")
    summary = run_suite_sync(spec, backend=FunctionBackend(solver), run_dir=run, resume=True)
    assert (summary.tasks, summary.skipped, summary.metrics["execution_accuracy"]) == (5, 3, 1.0)
    with RunStore.for_run_dir(run, create=False) as store:
        tasks = store.load().tasks
    assert all(t.extra and t.extra.get("db_id") for t in tasks)

    pytest.importorskip("jinja2")
    from agentloop.view import export_html, open_runs

    html = export_html(open_runs([run]), tmp_path / "old.html").read_text()
    assert tasks[-1].question.replace("'", "&#39;")[:30] in html or tasks[-1].task_id in html


PLUGIN = """
from agentloop.graphs import PromptTask, Verdict
from agentloop.suites import Score, Suite, SuiteItem


class EchoSuite(Suite):
    name = "echo"
    default_verifier = "exact"
    difficulties = ("short", "long")

    def items(self, spec, backend=None):
        words = ["a", "bb", "ccc"]
        return [
            SuiteItem(
                task=PromptTask(f"say {w}", lambda c, w=w: Verdict(float(c.text == w), c.text == w), id=w),
                index=i,
                question=f"say {w}",
                difficulty="short" if len(w) < 3 else "long",
                extra={"length": len(w)},
            )
            for i, w in enumerate(words)
        ]

    async def score(self, item, result):
        return Score(result.answer == item.task.id)
"""


def test_a_run_of_a_plugin_suite_that_is_gone_still_reports_and_views(tmp_path: Path) -> None:
    plugin = tmp_path / "echo_suite.py"
    plugin.write_text(PLUGIN)
    spec = RunSpec(suite=f"{plugin}:EchoSuite", graph="greedy", backend="function")
    echo = FunctionBackend(lambda r: r.messages[-1].content.removeprefix("say "))
    run_suite_sync(spec, backend=echo, run_dir=tmp_path / "run")
    plugin.unlink()
    for name in [m for m in sys.modules if "echo_suite" in m]:
        del sys.modules[name]

    report = RunReport.load(tmp_path / "run")
    metrics = report.metrics()
    assert metrics["execution_accuracy"] == 1.0
    assert list(metrics["by_difficulty"]) == ["short", "long"]  # the suite's order, as recorded
    assert report.n_rounds == "1 / 1"  # greedy's effective shape, recorded by the run
    assert report.tasks[0].extra == {"length": 1}

    pytest.importorskip("jinja2")
    from agentloop.view import export_html, open_runs

    html = export_html(open_runs([tmp_path / "run"]), tmp_path / "echo.html").read_text()
    assert "say ccc" in html
