"""The run store and the runner: per-task commits, resume after kill -9, config checks, reports.

The store tests run against SQLite and, when AGENTLOOP_TEST_POSTGRES_URL is set, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.errors import AgentloopError
from agentloop.graphs import Candidate, LoopUsage, Verdict
from agentloop.records.render import plot_reports, render_reports
from agentloop.records.report import RunReport, reports_json
from agentloop.records.store import (
    ConfigMismatchError,
    RunExistsError,
    RunNotFoundError,
    RunStore,
    TaskOutcome,
)
from agentloop.runs.runner import RESULT_KEYS, RunAbortedError, RunSpec, run_suite

FIXTURES = Path(__file__).parent / "fixtures"
HELPER = FIXTURES / "slow_text2sql_run.py"


def load_helper():
    spec = importlib.util.spec_from_file_location("slow_text2sql_run", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helper = load_helper()


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- the store contract, on every database ---------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path: Path) -> Iterator[RunStore]:
    if request.param == "sqlite":
        s = RunStore.for_run_dir(tmp_path / "run")
    else:
        s = RunStore(request.getfixturevalue("pg_url"))  # a fresh schema (conftest.py)
    try:
        yield s
    finally:
        s.close()


def outcome(task_id: str, *, correct: bool = True, error: str | None = None, n: int = 2) -> TaskOutcome:
    now = time.time()
    cands = [
        Candidate(
            round=0,
            index=i,
            text=f"```sql\nSELECT {i}\n```",
            prompt_hash="abc",
            answer=f"SELECT {i}",
            verdict=Verdict(score=0.5 * i, passed=i == 1, feedback="ok", details={"rows": i}),
            completion_tokens=5,
            prompt_tokens=50,
            latency_s=0.1,
        )
        for i in range(n)
    ]
    return TaskOutcome(
        task_id=task_id,
        index=int(task_id.rsplit("-", 1)[1]),
        question="q?",
        correct=correct,
        started=now,
        finished=now,
        wall_s=0.2,
        db_id="db",
        difficulty="easy",
        answer="SELECT 1",
        passed=True,
        score=0.5,
        usage=LoopUsage(candidates=n, llm_calls=1, prompt_tokens=50, completion_tokens=5 * n),
        rounds=1,
        stop_reason="threshold",
        error=error,
        candidates=cands,
        best_position=1,
    )


def open_run(store: RunStore, name: str, *, resume: bool = False, **config) -> int:
    cfg = {"n": 2, "graph": "iad", "concurrency": 4, **config}
    return store.open_run(
        suite="text2sql",
        graph=cfg["graph"],
        backend="function",
        config=cfg,
        planned=3,
        resume=resume,
        name=name,
        compare=["n", "graph"],
    )


def test_store_records_tasks_with_their_trajectory(store: RunStore) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    run = open_run(store, name)
    store.record(run, outcome("dev-0"), run_wall_s=1.5)
    store.record(run, outcome("dev-1", correct=False, error="BackendError: down"))
    assert store.finished_task_ids(run) == {"dev-0"}  # errored tasks are retried on resume
    loaded = store.load(name)
    assert [t.task_id for t in loaded.tasks] == ["dev-0", "dev-1"]
    assert loaded.wall_s == 1.5 and loaded.planned == 3
    first = loaded.tasks[0]
    assert first.correct and first.candidates == 2 and first.prompt_tokens == 50 and first.attempt == 1
    traj = store.trajectory("dev-0", name)
    assert [c["index"] for c in traj] == [0, 1]
    assert traj[1]["best"] and traj[1]["verdict"]["details"] == {"rows": 1}
    assert traj[0]["text"].startswith("```sql")


def test_store_replaces_an_earlier_attempt(store: RunStore) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    run = open_run(store, name)
    store.record(run, outcome("dev-0", error="boom", n=3))
    store.record(run, outcome("dev-0", n=1))
    (task,) = store.load(name).tasks
    assert task.error is None and task.attempt == 2
    assert len(store.trajectory("dev-0", name)) == 1


def test_store_resume_checks_the_config(store: RunStore) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    run = open_run(store, name)
    with pytest.raises(RunExistsError, match="--resume"):
        open_run(store, name)
    # Keys outside `compare` (concurrency) may change; the new value is kept.
    assert open_run(store, name, resume=True, concurrency=8) == run
    assert store.load(name).config["concurrency"] == 8 and store.load(name).sessions == 2
    with pytest.raises(ConfigMismatchError) as info:
        open_run(store, name, resume=True, n=3, graph="best_of_n")
    message = str(info.value)
    assert "n: 2 -> 3" in message and "graph: 'iad' -> 'best_of_n'" in message
    assert "--run-dir" in message


def test_store_for_a_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="no run found"):
        RunStore.for_run_dir(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


# --- the runner ----------------------------------------------------------------------------

SPEC = RunSpec(graph="best_of_n", backend="function", n=2, limit=5, max_tokens=64)


async def test_run_stores_every_task_and_scores_against_gold(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    summary = await run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(helper.answer))
    data = summary.to_json()
    assert data["tasks"] == 5 and data["planned"] == 5 and data["errors"] == 0
    assert data["usage"]["candidates"] == 10 and data["usage"]["llm_calls"] == 5
    assert data["metrics"]["execution_accuracy"] == pytest.approx(2 / 5)
    assert data["metrics"]["verifier_pass_rate"] == 1.0  # every answer runs and returns rows
    assert set(data["usage"]) >= {"candidates", "llm_calls", "prompt_tokens", "completion_tokens", "wall_s"}
    assert data["run_dir"] == str(run_dir) and not data["upper_bound"]

    # The store holds each task and its trajectory; scoring is execution accuracy vs gold.
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        rows = db.execute(
            "SELECT task_id, correct, answer, candidates FROM task_results ORDER BY 1"
        ).fetchall()
        n_candidates = db.execute("SELECT count(*) FROM candidates").fetchone()[0]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert [r[0] for r in rows] == [f"dev-{i}" for i in range(5)]
    assert [bool(r[1]) for r in rows] == [True, False, False, True, False]
    assert rows[0][2] == "SELECT count(*) FROM singer" and n_candidates == 10 and journal == "wal"

    report = RunReport.load(run_dir)
    results = report.to_json()["results"]
    assert [r["task_id"] for r in results] == [r[0] for r in rows]
    assert report.metrics()["by_difficulty"]["easy"]["tasks"] >= 1


async def test_a_task_that_raises_is_stored_and_retried_on_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    def flaky(request: ChatRequest) -> str:
        if "Question: What is the total number of singers?" in request.messages[-1].content:
            raise RuntimeError("model fell over")
        return helper.answer(request)

    summary = await run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(flaky))
    assert summary.errors == 1 and summary.tasks == 5
    assert summary.metrics["execution_accuracy"] == pytest.approx(1 / 5)
    (broken,) = [t for t in RunReport.load(run_dir).tasks if t.error]
    assert broken.task_id == "dev-0" and "model fell over" in broken.error and not broken.correct

    calls: list[str] = []

    def fixed(request: ChatRequest) -> str:
        calls.append(request.messages[-1].content)
        return helper.answer(request)

    summary = await run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(fixed), resume=True)
    assert len(calls) == 1 and summary.skipped == 4  # only the errored task ran again
    assert summary.errors == 0 and summary.metrics["execution_accuracy"] == pytest.approx(2 / 5)
    assert {t.task_id: t.attempt for t in RunReport.load(run_dir).tasks}["dev-0"] == 2


async def test_the_run_stops_when_every_task_fails(tmp_path: Path) -> None:
    def down(request: ChatRequest) -> str:
        raise ConnectionError("connection refused")

    with pytest.raises(RunAbortedError, match="connection refused"):
        await run_suite(SPEC, run_dir=tmp_path / "run", backend=FunctionBackend(down))
    stored = RunReport.load(tmp_path / "run").tasks
    assert 1 <= len(stored) < 5 and all(t.error for t in stored)


async def test_resume_refuses_a_different_config_and_needs_a_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    await run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(helper.answer))
    with pytest.raises(RunExistsError, match="already holds a run"):
        await run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(helper.answer))
    other = RunSpec(**{**SPEC.to_dict(), "n": 3, "verifier": "oracle", "concurrency": 1})
    with pytest.raises(ConfigMismatchError) as info:
        await run_suite(other, run_dir=run_dir, backend=FunctionBackend(helper.answer), resume=True)
    assert "n: 2 -> 3" in str(info.value) and "verifier: 'exec' -> 'oracle'" in str(info.value)
    assert "concurrency" not in str(info.value)  # speed knobs may change on resume
    with pytest.raises(AgentloopError, match="--resume needs --run-dir"):
        await run_suite(SPEC, backend=FunctionBackend(helper.answer), resume=True)
    assert "concurrency" not in RESULT_KEYS and "base_url" not in RESULT_KEYS


async def test_resume_with_a_larger_limit_extends_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = RunSpec(**{**SPEC.to_dict(), "limit": 2})
    await run_suite(first, run_dir=run_dir, backend=FunctionBackend(helper.answer))
    calls: list[str] = []

    def counting(request: ChatRequest) -> str:
        calls.append(request.messages[-1].content)
        return helper.answer(request)

    summary = await run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(counting), resume=True)
    assert summary.skipped == 2 and summary.tasks == 5
    assert len(calls) == 3  # one batched call for each of the three new tasks
    report = RunReport.load(run_dir)
    assert len(report.tasks) == 5 and report.run.config["limit"] == SPEC.limit and report.run.planned == 5


def test_kill_9_loses_no_finished_task_and_resume_finishes_the_rest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(HELPER), str(run_dir), "1.0"])
    try:
        deadline = time.monotonic() + 120
        stored: list[tuple[str, float]] = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            stored = _stored_rows(run_dir)
            if stored:
                break
        assert stored, "the helper run stored no task in time"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = dict(_stored_rows(run_dir))
    assert 1 <= len(before) < 5, before  # killed midway, finished tasks intact

    calls: list[str] = []

    def fast(request: ChatRequest) -> str:
        calls.append(request.messages[-1].content)
        return helper.answer(request)

    summary = asyncio.run(run_suite(helper.SPEC, run_dir=run_dir, backend=FunctionBackend(fast), resume=True))
    after = dict(_stored_rows(run_dir))
    assert sorted(after) == [f"dev-{i}" for i in range(5)]
    assert len(calls) == 5 - len(before)  # greedy: one request per task, only for the rest
    for task_id, finished in before.items():
        assert after[task_id] == finished  # not redone
    assert summary.tasks == 5 and summary.skipped == len(before)
    assert summary.metrics["execution_accuracy"] == pytest.approx(2 / 5)


def _stored_rows(run_dir: Path) -> list[tuple[str, float]]:
    path = run_dir / "run.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT task_id, finished FROM task_results ORDER BY task_id").fetchall()
    except sqlite3.OperationalError:  # the tables are not created yet
        return []


# --- reports -------------------------------------------------------------------------------


async def test_report_labels_oracle_runs_as_upper_bounds(tmp_path: Path) -> None:
    from rich.console import Console

    exec_dir, oracle_dir = tmp_path / "exec", tmp_path / "oracle"
    await run_suite(SPEC, run_dir=exec_dir, backend=FunctionBackend(helper.answer))
    oracle = RunSpec(**{**SPEC.to_dict(), "verifier": "oracle"})
    await run_suite(oracle, run_dir=oracle_dir, backend=FunctionBackend(helper.answer))
    reports = [RunReport.load(exec_dir), RunReport.load(oracle_dir)]

    console = Console(record=True, width=160)
    render_reports(reports, console)
    text = console.export_text()
    for needle in ("accuracy", "verifier passed", "tokens / task", "latency", "oracle (upper bound)", "easy"):
        assert needle in text
    assert "upper bound for analysis" in text

    data = reports_json(reports)
    assert [r["upper_bound"] for r in data["runs"]] == [False, True]
    assert "note" in data["runs"][1] and "results" in data["runs"][0]
    # With the oracle, only gold-matching answers pass.
    assert (
        data["runs"][1]["metrics"]["verifier_pass_rate"] == data["runs"][1]["metrics"]["execution_accuracy"]
    )


async def test_report_cli_json_and_one_line_errors(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    await run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(helper.answer))
    proc = run_cli("report", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {r["task_id"] for r in data["results"]} == {f"dev-{i}" for i in range(5)}
    assert all(isinstance(r["correct"], bool) for r in data["results"])
    assert_one_line_error(run_cli("report", str(tmp_path / "missing")), "no run found")


async def test_run_cli_errors_are_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    spec = RunSpec(**{**SPEC.to_dict(), "backend": "transformers"})
    await run_suite(spec, run_dir=run_dir, backend=FunctionBackend(helper.answer))
    # None of these loads a model: each fails before the first request.
    assert_one_line_error(run_cli("run", "txt2sql"), "Did you mean 'text2sql'")
    assert_one_line_error(run_cli("run", "text2sql", "--graph", "best_of"), "Did you mean 'best_of_n'")
    assert_one_line_error(run_cli("run", "text2sql", "--verifier", "orcale"), "Did you mean 'oracle'")
    assert_one_line_error(run_cli("run", "text2sql", "--resume"), "--resume needs --run-dir")
    mismatch = run_cli(
        "run", "text2sql", "--graph", "best_of_n", "--n", "3", "--limit", "5", "--max-tokens", "64",
        "--run-dir", str(run_dir), "--resume",
    )  # fmt: skip
    assert_one_line_error(mismatch, "different config", "n: 2 -> 3", "--run-dir")
    exists = run_cli("run", "text2sql", "--run-dir", str(run_dir))
    assert_one_line_error(exists, "already holds a run", "--resume")


def test_plot_needs_the_plot_extra_or_writes_a_png(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    asyncio.run(run_suite(SPEC, run_dir=run_dir, backend=FunctionBackend(helper.answer)))
    reports = [RunReport.load(run_dir)]
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(AgentloopError, match=r"pip install 'agentloop\[plot\]'"):
            plot_reports(reports, tmp_path / "acc.png")
        assert_one_line_error(
            run_cli("report", str(run_dir), "--plot", str(tmp_path / "acc.png")), "agentloop[plot]"
        )
    else:
        out = plot_reports(reports, tmp_path / "acc.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
