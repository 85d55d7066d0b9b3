"""``agentloop view`` without a browser: what the run store keeps for it, the data layer, the HTTP
routes, escaping, the export and the CLI. The browser tests are in test_view_browser.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.records.store import RunStore
from agentloop.runs.runner import RunSpec, run_suite
from agentloop.view import ViewServer, export_html, open_runs
from agentloop.view._data import RunSource, TaskQuery, mean_interval, prompt_diff, safe_config

FIXTURES = Path(__file__).parent / "fixtures"


def load_runs_module():
    spec = importlib.util.spec_from_file_location("view_runs", FIXTURES / "view_runs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runs = load_runs_module()


@pytest.fixture(scope="module")
def t2s(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return runs.text2sql_runs(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def webshop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runs.webshop_run(tmp_path_factory.mktemp("view-webshop"))


@pytest.fixture()
def server(t2s: tuple[Path, Path]):
    greedy, iad = t2s
    with ViewServer(open_runs([greedy, iad])).start() as srv:
        yield srv


def get(srv: ViewServer, path: str) -> httpx.Response:
    return httpx.get(srv.url.rstrip("/") + path, follow_redirects=True, timeout=30)


# --- what the run store keeps for the viewer ------------------------------------------------


def test_the_store_keeps_each_rounds_prompt_and_the_stop_detail(t2s: tuple[Path, Path]) -> None:
    _, iad = t2s
    with RunStore.for_run_dir(iad, create=False) as store:
        run = store.load()
        task = next(t for t in run.tasks if t.index == 0)
        trajectory = store.trajectory(task.task_id)
        prompts = store.prompts(task.task_id)
    assert task.rounds == 2 and task.stop_detail
    hashes = [c["prompt_hash"] for c in trajectory]
    assert set(hashes) == set(prompts) and len(prompts) == 2  # one prompt per round
    second = prompts[trajectory[-1]["prompt_hash"]]
    assert "checked by a verifier" in second[-1].content
    assert runs.HOSTILE in second[-1].content  # the feedback quotes round one's answer


def test_the_task_detail_diffs_the_prompt_between_rounds(t2s: tuple[Path, Path]) -> None:
    _, iad = t2s
    source = RunSource(iad)
    try:
        detail = source.task("dev-0")
    finally:
        source.close()
    assert detail is not None and len(detail.rounds) == 2
    first, second = detail.rounds
    assert first.diff is None and first.prompt is not None
    added = [line.text for line in second.diff or [] if line.kind == "add"]
    assert any("checked by a verifier" in line for line in added)
    assert not [line for line in second.diff or [] if line.kind == "del"]  # feedback is appended
    assert sum(c.chosen for r in detail.rounds for c in r.candidates) == 1
    chosen = next(c for r in detail.rounds for c in r.candidates if c.chosen)
    assert chosen.round == 1 and chosen.passed


def test_prompt_diff_folds_long_unchanged_runs() -> None:
    old = "\n".join(f"line {i}" for i in range(40))
    new = old.replace("line 20", "line twenty")
    kinds = [d.kind for d in prompt_diff(old, new)]
    assert kinds.count("skip") == 2 and kinds.count("add") == 1 and kinds.count("del") == 1
    assert len(kinds) == 2 + 2 + 3 + 3  # two folds, the change, three lines of context each side


def test_task_query_filters_sorts_and_pages(t2s: tuple[Path, Path]) -> None:
    greedy, _ = t2s
    source = RunSource(greedy)
    try:
        wrong = source.tasks(TaskQuery(outcome="wrong"))
        assert [t.index for t in wrong.rows] == [0, 2, 4] and wrong.total == runs.LIMIT
        by_index_desc = source.tasks(TaskQuery(sort="index", desc=True, per_page=10))
        assert [t.index for t in by_index_desc.rows] == [5, 4, 3, 2, 1, 0]
        paged = source.tasks(TaskQuery(per_page=10, page=7))
        assert paged.page == 1 and paged.pages == 1  # a page past the end shows the last one
        assert source.tasks(TaskQuery(text="FRANCE")).matching == 1
        q = TaskQuery.from_params({"outcome": "bogus", "sort": "nope", "page": "x", "rmin": "nan"})
        assert q == TaskQuery()
        assert TaskQuery.from_params(TaskQuery(outcome="wrong", page=2).params()) == TaskQuery(
            outcome="wrong", page=2
        )
    finally:
        source.close()


def test_reward_ranges_filter_webshop_tasks(webshop: Path) -> None:
    source = RunSource(webshop)
    try:
        partial = source.tasks(TaskQuery(reward_min=0.01, reward_max=0.99))
        assert [t.index for t in partial.rows] == [1, 3]
        detail = source.task(partial.rows[0].task_id)
        assert detail is not None
        (cand,) = detail.rounds[0].candidates
        # Each step of the episode: the action, where it led, and the page it showed.
        assert [s.action for s in cand.steps][0].startswith("search[")
        assert all(s.observation for s in cand.steps) and cand.reward is not None
    finally:
        source.close()


def test_intervals_and_masked_config() -> None:
    iv = mean_interval([1.0] * 5)
    assert iv is not None and iv.mean == 1.0 and 0.5 < iv.low < 1.0 and iv.high == 1.0  # Wilson, not [1, 1]
    reward = mean_interval([0.2, 0.4, 0.6])
    assert reward is not None and reward.low < 0.4 < reward.high
    assert mean_interval([]) is None
    shown = safe_config(
        {"memory": "postgresql://me:hunter2@db/x", "api_key": "sk-123", "max_tokens": 64, "n": 4}
    )
    assert shown == {"memory": "postgresql://me:***@db/x", "api_key": "***", "max_tokens": 64, "n": 4}


# --- the server -------------------------------------------------------------------------------


def test_pages_render_and_model_text_is_escaped(server: ViewServer) -> None:
    home = get(server, "/")
    assert home.status_code == 200 and "t2s-greedy" in home.text and "Compare these runs" in home.text
    run = get(server, "/run/1?outcome=wrong")
    assert run.status_code == 200 and "2 of 6 tasks" in run.text
    page = get(server, "/run/1/task/dev-0")
    assert page.status_code == 200
    html = page.text
    # Model text is text: no tag it wrote survives as markup, in the candidate, the parsed
    # answer, the verifier's feedback or the prompt diff.
    assert "<script>window.__pwned" not in html and "</textarea><script>" not in html
    assert "<b>bold?</b>" not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert html.count("<script") == 1  # the page's own, with its nonce
    assert re.search(r"script-src 'nonce-[\w-]+'", html)
    assert get(server, "/run/1/task/nope").status_code == 404
    assert get(server, "/run/9").status_code == 404


def test_compare_counts_and_groups(server: ViewServer) -> None:
    page = get(server, "/compare?vs=1")
    assert page.status_code == 200
    for group, n in (
        ("improved", runs.IMPROVED),
        ("regressed", runs.REGRESSED),
        ("unchanged", runs.UNCHANGED),
    ):
        assert re.search(rf"data-count-{group}>{n}<", page.text), group
    # The paired difference is report --compare's: +1/6 on six paired tasks.
    assert "+0.167" in page.text and "6 paired tasks" in page.text
    improved = get(server, "/compare?vs=1&group=improved")
    assert improved.text.count('data-group="improved"') == runs.IMPROVED
    assert 'data-group="regressed"' not in improved.text


def test_a_partial_run_says_so_and_its_version_moves_as_tasks_land(tmp_path: Path) -> None:
    run_dir = runs.partial_run(tmp_path)
    with ViewServer(open_runs([run_dir])).start() as srv:
        page = get(srv, "/run/0")
        assert "Partial run: 3 of 6 tasks stored" in page.text and 'id="live"' in page.text
        before = get(srv, "/run/0/version").text
        runs.finish_run(run_dir)
        assert get(srv, "/run/0/version").text != before
        page = get(srv, "/run/0")
        assert "Partial run" not in page.text and "6 of 6" in page.text


def test_older_run_stores_open_without_prompts_or_lessons(t2s: tuple[Path, Path], tmp_path: Path) -> None:
    _, iad = t2s
    old = tmp_path / "old"
    shutil.copytree(iad, old)
    with sqlite3.connect(old / "run.sqlite") as conn:
        conn.execute("DROP TABLE prompts")
        conn.execute("DROP TABLE agentloop_run_store_version")  # stores from before migrations
        for column in ("stop_detail", "lessons", "lessons_written"):
            conn.execute(f"ALTER TABLE task_results DROP COLUMN {column}")
    with ViewServer(open_runs([old])).start() as srv:
        page = get(srv, "/run/0/task/dev-0")
    assert page.status_code == 200 and "The prompt was not stored" in page.text


# --- lessons from concept memory ------------------------------------------------------------


def test_lessons_shown_and_written_reach_the_task_page(tmp_path: Path) -> None:
    def model(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        if "memory of lessons" in prompt:
            question = re.search(r"Task:\n(.*)", prompt)
            assert question is not None
            concept = {
                # The question's first words name the lesson: all of it would restate the
                # question, which memory drops as an instance, not a concept.
                "title": f"Lesson from: {' '.join(question.group(1).split()[:5])}",
                "situation": "a question about singers",
                "cues": ["singers"],
                "suggestion": "Read the <age> column of the singer table.",
                "kind": "strategy",
            }
            return json.dumps({"concepts": [concept]})
        return "```sql\nSELECT name, age FROM singer\n```"

    memory = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    base = RunSpec(graph="greedy", backend="function", limit=2, concurrency=1, max_tokens=64, memory=memory)
    asyncio.run(run_suite(base, run_dir=tmp_path / "a", backend=FunctionBackend(model)))
    later = RunSpec(**{**base.to_dict(), "offset": 2, "limit": 1})
    asyncio.run(run_suite(later, run_dir=tmp_path / "b", backend=FunctionBackend(model)))
    a, b = RunSource(tmp_path / "a"), RunSource(tmp_path / "b")
    try:
        written = a.task("dev-0")
        assert written is not None and written.lessons_written
        assert "Lesson from: What is the total number" in written.lessons_written[0]
        shown = b.task("dev-2")
        assert shown is not None and shown.lessons and shown.lessons_written
        assert any("Lesson from: What is the total number" in line for line in shown.lessons)
    finally:
        a.close()
        b.close()
    with ViewServer(open_runs([tmp_path / "b"])).start() as srv:
        html = get(srv, "/run/0/task/dev-2").text
    assert "Lessons shown to this task" in html and "Read the &lt;age&gt; column" in html


# --- export and CLI -------------------------------------------------------------------------


def test_export_is_one_self_contained_file(t2s: tuple[Path, Path], webshop: Path, tmp_path: Path) -> None:
    greedy, iad = t2s
    out = export_html(open_runs([greedy, iad]), tmp_path / "out" / "runs.html")
    html = out.read_text(encoding="utf-8")
    # Nothing loaded from elsewhere: no external scripts, styles, images or fetches.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and html.count("<script") == 1
    assert "<script>window.__pwned" not in html
    for run in (0, 1):
        for position in range(runs.LIMIT):
            assert f'id="r{run}-t{position}"' in html
    assert 'id="compare"' in html and "data-client" in html
    single = export_html(open_runs([webshop]), tmp_path / "webshop.html").read_text(encoding="utf-8")
    assert 'id="compare"' not in single and "page</summary>" in single


def test_cli_exports_and_reports_a_missing_run_in_one_line(t2s: tuple[Path, Path], tmp_path: Path) -> None:
    greedy, iad = t2s
    out = tmp_path / "v.html"
    proc = subprocess.run(
        [sys.executable, "-m", "agentloop", "view", str(greedy), str(iad), "--export", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and f"wrote {out}" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "agentloop", "view", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no run found" in proc.stderr and "Traceback" not in proc.stderr


def test_the_core_never_imports_the_viewer() -> None:
    """The viewer is screen, like the CLI: only the CLI may import it."""
    import ast

    import agentloop

    package = Path(agentloop.__file__).resolve().parent
    offences = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).parts
        if rel[0] in ("view", "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offences += [f"{path.name}:{node.lineno}" for n in names if n.startswith("agentloop.view")]
    assert offences == []
