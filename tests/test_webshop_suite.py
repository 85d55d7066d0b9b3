"""``agentloop run webshop``: the suite through run_suite, rewards in the run store, resume, reports."""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.records.report import RunReport, paired_difference, reports_json
from agentloop.records.store import RUN_DB, RunStore, TaskOutcome
from agentloop.runs.runner import RunSpec, run_suite
from agentloop.suites import SUITES, get_suite
from agentloop.suites.webshop.suite import UnknownWebShopVerifierError, WebShopSuite
from agentloop.webshop import BUY_NOW, Goal, WebShopEnv, load_catalog, run_expert

LIMIT = 4
SPEC = RunSpec(suite="webshop", graph="greedy", backend="function", limit=LIMIT, max_tokens=64)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def goals(catalog) -> list[Goal]:
    return catalog.goals[:LIMIT]


def expert_plan(catalog, goal: Goal) -> list[str]:
    """The actions of the scripted expert that knows the goal."""
    episode = run_expert(WebShopEnv(catalog), goal)
    return [t.action for t in episode.turns]


def near_miss_plan(catalog, goal: Goal) -> list[str]:
    """Search the goal's title, buy the best-ranked product that is not the goal's, choose no option."""
    env = WebShopEnv(catalog)
    env.reset(goal)
    env.step(f"search[{goal.name}]")
    other = next(a for a in env.clickables() if a in catalog.products and a != goal.asin)
    return [f"search[{goal.name}]", f"click[{other}]", f"click[{BUY_NOW}]"]


def replay_reward(catalog, goal: Goal, plan: list[str]) -> float:
    """What the environment pays for ``plan``, computed here, apart from the run."""
    env = WebShopEnv(catalog)
    env.reset(goal)
    result = None
    for action in plan:
        result = env.step(action)
    assert result is not None and result.done
    return result.reward


def policy(plans: dict[str, list[str]], *, fail: Callable[[str], bool] = lambda _: False) -> FunctionBackend:
    """Plays ``plans[instruction]`` one action per step; the step is the length of the shown history."""

    def fn(request: ChatRequest) -> str:
        task = request.messages[1].content.split("Customer instruction: ", 1)[1]
        instruction = task.split("\n\n", 1)[0].strip()
        if fail(instruction):
            raise RuntimeError("backend down for this goal")
        prompt = request.messages[-1].content
        history = prompt.split("Your actions so far:\n", 1)[1].split("\n\nCurrent page:", 1)[0]
        done = 0 if history == "(none yet)" else len(history.splitlines())
        plan = plans[instruction]
        action = plan[done] if done < len(plan) else f"click[{BUY_NOW}]"
        return f"Thought: next step.\nAction: {action}"

    return FunctionBackend(fn)


def mixed_plans(catalog, goals: list[Goal]) -> dict[str, list[str]]:
    """The expert on even goals, a near miss on odd ones."""
    return {
        g.instruction_text: (expert_plan if i % 2 == 0 else near_miss_plan)(catalog, g)
        for i, g in enumerate(goals)
    }


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=timeout,
    )


# --- the suite ---------------------------------------------------------------------------------


def test_webshop_is_registered_with_its_own_default_verifier() -> None:
    assert SUITES["webshop"] is WebShopSuite
    # The spec looks nothing up; the runner fills the suite's default verifier in.
    assert RunSpec(suite="webshop").verifier is None
    assert RunSpec(suite="webshop").for_suite(get_suite("webshop")).verifier == "rules"
    assert RunSpec(suite="text2sql").for_suite(get_suite("text2sql")).verifier == "exec"
    suite = get_suite("webshop")
    assert suite.upper_bound("oracle") and not suite.upper_bound("rules")


def test_exec_and_unknown_verifiers_are_rejected_with_the_choices() -> None:
    suite = WebShopSuite()
    with pytest.raises(UnknownWebShopVerifierError, match=r"Text2SQL's verifier.*rules, oracle"):
        suite.items(RunSpec(suite="webshop", verifier="exec", limit=1))
    with pytest.raises(UnknownWebShopVerifierError, match="Did you mean 'oracle'"):
        suite.items(RunSpec(suite="webshop", verifier="orcale", limit=1))


def test_items_follow_offset_limit_and_max_steps(catalog) -> None:
    items = WebShopSuite().items(RunSpec(suite="webshop", offset=2, limit=3, max_steps=7))
    assert [i.index for i in items] == [2, 3, 4]
    assert [i.question for i in items] == [g.instruction_text for g in catalog.goals[2:5]]
    assert {i.task.max_steps for i in items} == {7}  # type: ignore[attr-defined]
    assert len({i.task_id for i in items}) == 3
    with pytest.raises(ValueError, match="max_steps"):
        RunSpec(suite="webshop", max_steps=0)


# --- run_suite end to end -------------------------------------------------------------------------


async def test_run_scores_each_episode_by_the_true_reward(tmp_path: Path, catalog, goals) -> None:
    plans = mixed_plans(catalog, goals)
    expected = [replay_reward(catalog, g, plans[g.instruction_text]) for g in goals]
    assert expected[0] == 1.0 and expected[1] < 1.0  # the near miss must cost something

    run_dir = tmp_path / "run"
    summary = await run_suite(SPEC, run_dir=run_dir, backend=policy(plans))
    data = summary.to_json()
    assert data["suite"] == "webshop" and data["verifier"] == "rules" and not data["upper_bound"]
    assert data["tasks"] == LIMIT and data["errors"] == 0
    assert set(data["metrics"]) == {"avg_reward", "success_rate", "verifier_pass_rate"}
    assert data["metrics"]["avg_reward"] == pytest.approx(statistics.fmean(expected), abs=1e-4)
    assert data["metrics"]["success_rate"] == pytest.approx(sum(r == 1.0 for r in expected) / LIMIT)
    assert set(data["usage"]) >= {"candidates", "llm_calls", "prompt_tokens", "completion_tokens", "wall_s"}
    assert data["usage"]["candidates"] == LIMIT  # greedy: one episode per goal
    steps = sum(len(p) for p in plans.values())
    assert data["usage"]["llm_calls"] == steps  # one request per action

    stored = RunReport.load(run_dir).tasks
    assert [t.task_id for t in stored] == [f"webshop-{g.index}" for g in goals]
    assert [t.reward for t in stored] == pytest.approx(expected)
    assert [t.correct for t in stored] == [r == 1.0 for r in expected]
    bought = json.loads(stored[0].answer or "{}")
    assert bought["purchase"]["asin"] == goals[0].asin and bought["reward"] == 1.0


async def test_oracle_runs_are_upper_bounds(tmp_path: Path, catalog, goals) -> None:
    plans = {g.instruction_text: expert_plan(catalog, g) for g in goals}
    spec = RunSpec(**{**SPEC.to_dict(), "verifier": "oracle"})
    summary = await run_suite(spec, run_dir=tmp_path / "oracle", backend=policy(plans))
    assert summary.upper_bound and summary.verifier == "oracle"
    assert summary.metrics["avg_reward"] == 1.0 and summary.metrics["success_rate"] == 1.0
    # The oracle passes exactly the episodes with reward 1.
    assert summary.metrics["verifier_pass_rate"] == 1.0


async def test_resume_reruns_only_the_failed_goal(tmp_path: Path, catalog, goals) -> None:
    plans = mixed_plans(catalog, goals)
    broken = goals[1].instruction_text
    run_dir = tmp_path / "run"
    first = await run_suite(SPEC, run_dir=run_dir, backend=policy(plans, fail=lambda i: i == broken))
    assert first.tasks == LIMIT and first.errors == 1
    failed = next(t for t in RunReport.load(run_dir).tasks if t.error is not None)
    assert failed.task_id == f"webshop-{goals[1].index}" and failed.value == 0.0

    asked: list[str] = []

    def record(instruction: str) -> bool:
        asked.append(instruction)
        return False

    again = await run_suite(SPEC, run_dir=run_dir, backend=policy(plans, fail=record), resume=True)
    assert set(asked) == {broken}  # the stored goals were not replayed
    assert again.skipped == LIMIT - 1 and again.errors == 0
    expected = [replay_reward(catalog, g, plans[g.instruction_text]) for g in goals]
    assert again.metrics["avg_reward"] == pytest.approx(statistics.fmean(expected), abs=1e-4)

    other = RunSpec(**{**SPEC.to_dict(), "max_steps": 5})
    with pytest.raises(Exception, match="max_steps: None -> 5"):
        await run_suite(other, run_dir=run_dir, backend=policy(plans), resume=True)


async def test_report_json_and_paired_comparison(tmp_path: Path, catalog, goals) -> None:
    good = {g.instruction_text: expert_plan(catalog, g) for g in goals}
    mixed = mixed_plans(catalog, goals)
    await run_suite(SPEC, run_dir=tmp_path / "good", backend=policy(good))
    await run_suite(SPEC, run_dir=tmp_path / "mixed", backend=policy(mixed))

    proc = run_cli("report", str(tmp_path / "mixed"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert 0.0 <= data["metrics"]["avg_reward"] <= 1.0 and "execution_accuracy" not in data["metrics"]
    assert [r["reward"] for r in data["results"]] == pytest.approx(
        [replay_reward(catalog, g, mixed[g.instruction_text]) for g in goals]
    )

    reports = [RunReport.load(tmp_path / "good"), RunReport.load(tmp_path / "mixed")]
    diffs = [b.value - a.value for a, b in zip(reports[0].tasks, reports[1].tasks, strict=True)]
    d = paired_difference(*reports)
    assert d.metric == "reward" and d.tasks == LIMIT
    assert d.difference == pytest.approx(statistics.fmean(diffs)) and d.difference < 0
    assert d.ci_low is not None and d.ci_high is not None
    assert min(diffs) <= d.ci_low <= d.difference <= d.ci_high <= max(diffs)
    assert reports_json(reports)["comparison"][0]["difference"] == pytest.approx(d.difference, abs=1e-4)

    table = run_cli("report", str(tmp_path / "good"), "--compare", str(tmp_path / "mixed"))
    assert table.returncode == 0, table.stderr
    assert "avg reward" in table.stdout and "success rate" in table.stdout and "accuracy" not in table.stdout


def test_cli_rejects_exec_for_webshop_in_one_line(tmp_path: Path) -> None:
    proc = run_cli("run", "webshop", "--verifier", "exec", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and "rules, oracle" in " ".join(lines), proc.stderr


# --- run stores written before the reward column -------------------------------------------------


def test_a_run_store_without_the_reward_column_still_opens(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    with RunStore.for_run_dir(run_dir) as store:
        run_id = store.open_run(
            suite="text2sql", graph="greedy", backend="function", config={"verifier": "exec"}, planned=2,
            resume=False,
        )  # fmt: skip
        for i, correct in enumerate((True, False)):
            store.record(run_id, TaskOutcome(f"dev-{i}", i, "q?", correct, 0.0, 1.0, 0.5))
    # What a store written before the column existed looks like (and before migrations).
    with sqlite3.connect(run_dir / RUN_DB) as db:
        db.execute("ALTER TABLE task_results DROP COLUMN reward")
        db.execute("DROP TABLE agentloop_run_store_version")
        assert "reward" not in {row[1] for row in db.execute("PRAGMA table_info(task_results)")}

    report = RunReport.load(run_dir)
    assert [t.reward for t in report.tasks] == [None, None]
    assert report.metrics()["execution_accuracy"] == 0.5
    with sqlite3.connect(run_dir / RUN_DB) as db:
        assert "reward" in {row[1] for row in db.execute("PRAGMA table_info(task_results)")}


# --- the embedded model ---------------------------------------------------------------------------


@pytest.mark.model
def test_cli_runs_webshop_on_the_embedded_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "greedy"
    proc = run_cli(
        "run", "webshop", "--graph", "greedy", "--n", "1", "--rounds", "1", "--limit", "1",
        "--max-steps", "2", "--max-tokens", "32", "--run-dir", str(run_dir), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["suite"] == "webshop" and data["backend"] == "transformers" and data["tasks"] == 1
    assert 0.0 <= data["metrics"]["avg_reward"] <= 1.0
    assert 0.0 <= data["metrics"]["success_rate"] <= 1.0
    assert data["metrics"]["success_rate"] <= data["metrics"]["avg_reward"]
    # One episode of at most two actions. The embedded model gets --policy choice (auto): the
    # query is one request, a choice two score calls (given the instruction, and the prior).
    assert data["usage"]["candidates"] == 1 and 1 <= data["usage"]["llm_calls"] <= 3
    assert 0 < data["usage"]["completion_tokens"] <= 2 * 32
    stored = RunReport.load(run_dir).tasks[0]
    assert stored.reward is not None and stored.reward == data["metrics"]["avg_reward"]


@pytest.mark.parametrize(
    ("backend", "prompt", "expected"),
    [
        ("transformers", "auto", "fewshot"),
        ("openai:gpt-4o-mini", "auto", "chat"),
        ("transformers", "chat", "chat"),
    ],
)
def test_webshop_prompt_format_follows_the_backend(backend: str, prompt: str, expected: str) -> None:
    from agentloop.runs.runner import RunSpec
    from agentloop.suites.webshop.suite import WebShopSuite

    spec = RunSpec(suite="webshop", backend=backend, prompt=prompt, limit=1)
    assert WebShopSuite.prompt_format(spec) == expected
    assert all(item.task.prompt_format == expected for item in WebShopSuite().items(spec))
