"""``--budget-total``: one budget for the whole run of an adaptive graph, shared deterministically.

The suite below has three kinds of task, answered by a scripted model: ``hopeless`` (never any
credit), ``easy`` (the first candidate passes) and ``climb`` (partial credit every time, never a
pass). Every number comes from the real runner, ledger, run store and report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.cli import app
from agentloop.errors import AgentloopError
from agentloop.graphs import Candidate, LoopResult, PromptTask, Verdict
from agentloop.records.report import RunReport
from agentloop.records.store import ConfigMismatchError
from agentloop.runs import RunSpec
from agentloop.runs.ledger import Ledger
from agentloop.runs.runner import run_suite
from agentloop.suites import Score, Suite, SuiteItem, content_hash

SUITE = f"{Path(__file__).resolve()}:KindsSuite"
KINDS = ["hopeless", "easy", "climb", "climb"]
MIXED = ["climb", "hopeless", "easy", "climb", "hopeless", "climb", "easy", "climb", "hopeless", "climb"]
ANSWERS = {"hopeless": "the answer is 0", "easy": "the answer is 42", "climb": "the answer is 41"}


def verify(c: Candidate) -> Verdict:
    score = {42: 1.0, 41: 0.5}.get(c.answer, 0.0)
    return Verdict(score, passed=score == 1.0)


class KindsSuite(Suite):
    """Tasks whose kinds come from ``--data`` (comma-separated), default :data:`KINDS`."""

    name = "kinds"
    default_verifier = "score"
    verifiers = {"score": "partial credit for 41, a pass for 42"}

    def items(self, spec: Any, backend: Any = None) -> list[SuiteItem]:
        kinds = Path(spec.data).read_text().split(",") if spec.data else KINDS
        rows = [(f"t{i}", kind) for i, kind in enumerate(kinds)]
        items = []
        for index, (task_id, kind) in enumerate(self.select(spec, rows), start=spec.offset):
            prompt = f"Task {task_id} kind={kind}: what is six times seven?"
            task = PromptTask(prompt, verify, id=task_id, parse=lambda t: int(re.findall(r"\d+", t)[-1]))
            items.append(SuiteItem(task, index, prompt, content_hash=content_hash([task_id, kind])))
        return items

    async def score(self, item: SuiteItem, result: LoopResult) -> Score:
        return Score(correct=result.passed)


def model(request: ChatRequest) -> list[str]:
    kind = re.search(r"kind=(\w+)", request.messages[0].content + request.messages[-1].content)
    assert kind is not None
    return [ANSWERS[kind.group(1)]] * request.n


async def slow_first(request: ChatRequest) -> list[str]:
    """The same answers, with earlier tasks slower: under concurrency, later tasks finish first."""
    import asyncio

    task = re.search(r"Task t(\d+)", request.messages[0].content + request.messages[-1].content)
    assert task is not None
    await asyncio.sleep(0.003 * (12 - int(task.group(1))))
    return model(request)


def spec(**changes: Any) -> RunSpec:
    base: dict[str, Any] = dict(
        suite=SUITE,
        graph="adaptive",
        backend="function",
        n=8,
        budget_total=20,
        budget_window=1,
        concurrency=1,
    )
    return RunSpec(**{**base, **changes})


def data(tmp_path: Path, kinds: list[str]) -> str:
    path = tmp_path / "kinds.txt"
    path.write_text(",".join(kinds))
    return str(path)


async def run(tmp_path: Path, name: str, s: RunSpec, *, fn: Any = model, **kwargs: Any) -> Any:
    return await run_suite(s, run_dir=tmp_path / name, backend=FunctionBackend(fn), **kwargs)


def per_task(run_dir: Path) -> list[tuple[str, int, int, str | None, float | None]]:
    report = RunReport.load(run_dir)
    return [(t.task_id, t.candidates, t.completion_tokens, t.stop_reason, t.score) for t in report.tasks]


# --- the ledger's rule --------------------------------------------------------------------------


def test_base_shares_add_up_to_the_budget() -> None:
    ledger = Ledger(10, 4, window=0)
    assert [ledger.base(i) for i in range(4)] == [3, 3, 2, 2]
    assert Ledger(3, 5, window=0).base(4) == 0  # a budget smaller than the tasks: some start at 0


def test_savings_go_to_tasks_past_the_window_up_to_their_cap() -> None:
    ledger = Ledger(20, 4, window=1, cap=8)
    assert ledger.ready(0) and ledger.ready(1) and not ledger.ready(2)
    assert ledger.allowance(0) == 5 and ledger.allowance(1) == 5
    ledger.finish(0, 3, releases=True)  # saved 2
    assert ledger.ready(2) and not ledger.ready(3)
    assert ledger.allowance(2) == 7
    ledger.finish(1, 1, releases=True)  # saved 4: the pool holds 6 - 2 = 4, the cap lets 3 in
    assert ledger.allowance(3) == 8


def test_a_task_with_an_error_hands_nothing_on() -> None:
    ledger = Ledger(20, 3, window=0)
    ledger.allowance(0)
    ledger.finish(0, 0, releases=False)
    assert ledger.allowance(1) == 7  # its base only (20 = 7 + 7 + 6)


def test_the_ledger_never_hands_out_more_than_the_budget() -> None:
    import random

    rng = random.Random(0)
    for _ in range(200):
        tasks, total, window = rng.randint(1, 12), rng.randint(1, 60), rng.randint(0, 3)
        ledger = Ledger(total, tasks, window=window, cap=rng.choice([None, 1, 4, 9]))
        spent = 0
        for i in range(tasks):  # finished in task order, each spending some of its allowance
            s = rng.randint(0, ledger.allowance(i))
            ledger.finish(i, s, releases=rng.random() < 0.8)
            spent += s
        assert spent <= total


# --- runs ---------------------------------------------------------------------------------------


async def test_a_hopeless_task_stops_early_and_its_savings_go_to_a_climbing_task(tmp_path: Path) -> None:
    summary = await run(tmp_path, "r", spec())
    assert per_task(tmp_path / "r") == [
        ("t0", 3, 12, "no_progress", 0.0),  # two waves (1 + 2) with no credit: it gives up
        ("t1", 1, 4, "threshold", 1.0),  # passes at once: 4 of its 5 go back
        ("t2", 7, 28, "budget", 0.5),  # 5 + t0's 2 savings: waves 1, 2, 4
        ("t3", 8, 32, "max_rounds", 0.5),  # 5 + 3 of the pool (its cap is n=8)
    ]
    budget = summary.budget
    assert budget["total"] == 20 and budget["unit"] == "candidates" and budget["window"] == 1
    assert budget["spent"] == 19 <= 20 and budget["left"] == 1
    assert [t["allowance"] for t in budget["tasks"]] == [5, 5, 7, 8]
    assert [t["spent"] for t in budget["tasks"]] == [3, 1, 7, 8]
    assert summary.to_json()["budget"] == budget
    assert RunReport.load(tmp_path / "r").to_json()["budget"]["spent"] == 19


async def test_without_savings_a_climbing_task_keeps_to_its_base_share(tmp_path: Path) -> None:
    # The same climbing task, alone in its budget share, gets 5 (1 + 2 + 2 of the wave of 4).
    s = spec(data=data(tmp_path, ["climb", "climb", "climb", "climb"]))
    summary = await run(tmp_path, "r", s)
    assert [t["spent"] for t in summary.budget["tasks"]] == [5, 5, 5, 5]


@pytest.mark.parametrize(
    "changes",
    [
        {"budget_total": 7},
        {"budget_total": 23, "budget_window": 0},
        {"budget_total": 31, "budget_window": 3, "graph": "adaptive_flat"},
        {"budget_total": 40, "budget_unit": "tokens", "max_tokens": 8},
        {"budget_total": 90, "budget_unit": "tokens", "max_tokens": 8, "graph": "adaptive_sample"},
    ],
)
async def test_the_budget_is_never_exceeded(tmp_path: Path, changes: dict[str, Any]) -> None:
    summary = await run(tmp_path, "r", spec(data=data(tmp_path, MIXED), concurrency=4, **changes))
    budget = summary.budget
    assert 0 < budget["spent"] <= budget["total"]
    for t in budget["tasks"]:
        assert t["spent"] <= t["allowance"]
    unit = "candidates" if changes.get("budget_unit", "candidates") == "candidates" else "completion_tokens"
    assert summary.usage[unit] == budget["spent"]


async def test_the_same_seed_and_order_give_the_same_run_under_any_concurrency(tmp_path: Path) -> None:
    s = spec(data=data(tmp_path, MIXED), budget_total=33, budget_window=2)
    one = await run(tmp_path, "c1", s)
    order: list[str] = []
    four = await run(
        tmp_path,
        "c4",
        RunSpec(**{**s.to_dict(), "concurrency": 4}),
        fn=slow_first,
        on_task=lambda o: order.append(o.task_id),
    )
    assert order != sorted(order, key=lambda t: int(t[1:]))  # tasks really finished out of order
    assert per_task(tmp_path / "c1") == per_task(tmp_path / "c4")
    assert one.budget["tasks"] == four.budget["tasks"]
    assert one.budget["spent"] == four.budget["spent"] <= 33


async def test_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    s = spec(data=data(tmp_path, MIXED), budget_total=33, budget_window=2, concurrency=3)
    whole = await run(tmp_path, "whole", s)

    seen: list[str] = []

    def interrupt(outcome: Any) -> None:
        seen.append(outcome.task_id)
        if len(seen) == 4:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        await run(tmp_path, "cut", s, fn=slow_first, on_task=interrupt)
    assert 4 <= len(RunReport.load(tmp_path / "cut").tasks) < len(MIXED)
    resumed = await run(tmp_path, "cut", s, resume=True)
    assert resumed.skipped >= 4
    assert per_task(tmp_path / "cut") == per_task(tmp_path / "whole")
    assert resumed.budget["tasks"] == whole.budget["tasks"]


# --- refusals -----------------------------------------------------------------------------------


def test_a_budget_needs_an_adaptive_graph_and_a_positive_total() -> None:
    with pytest.raises(AgentloopError, match="--graph adaptive"):
        spec(graph="iad")
    for bad in (0, -5):
        with pytest.raises(AgentloopError, match="--budget-total must be >= 1"):
            spec(budget_total=bad)
    with pytest.raises(AgentloopError, match="--budget-unit"):
        spec(budget_unit="dollars")
    assert spec().loop_config().give_up_after == 2
    assert spec(budget_total=None).loop_config().give_up_after is None  # adaptive alone never gives up


async def test_a_resume_must_repeat_the_budget_and_the_tasks(tmp_path: Path) -> None:
    await run(tmp_path, "r", spec())
    with pytest.raises(ConfigMismatchError, match="budget_total: 20 -> 30"):
        await run(tmp_path, "r", spec(budget_total=30), resume=True)
    with pytest.raises(ConfigMismatchError, match="budget_unit: 'candidates' -> 'tokens'"):
        await run(tmp_path, "r", spec(budget_unit="tokens"), resume=True)
    with pytest.raises(AgentloopError, match="over 4 tasks, and this resume selects 2"):
        await run(tmp_path, "r", spec(limit=2), resume=True)
    again = await run(tmp_path, "r", spec(), resume=True)
    assert again.skipped == 4 and again.budget["spent"] == 19


def one_line(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, env={"AGENTLOOP_DEBUG": ""})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--budget-total", "10"], ["--budget-total", "--graph adaptive", "'iad'"]),
        (["--graph", "adaptive", "--budget-total", "0"], ["--budget-total must be >= 1", "got 0"]),
    ],
)
def test_cli_refusals_are_one_line(args: list[str], words: list[str], tmp_path: Path) -> None:
    line = one_line(["run", SUITE, "--backend", "function", "--run-dir", str(tmp_path / "r"), *args])
    for word in words:
        assert word in line
    assert not (tmp_path / "r").exists()


def test_an_unknown_unit_is_a_usage_error(tmp_path: Path) -> None:
    args = ["run", SUITE, "--graph", "adaptive", "--budget-total", "10", "--budget-unit", "usd"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "use one of candidates, tokens" in result.output


def test_cli_runs_and_resumes_with_the_stored_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setattr("agentloop.runs.runner.resolve_backend", lambda *a, **k: FunctionBackend(model))
    args = ["run", SUITE, "--graph", "adaptive", "--n", "8", "--budget-total", "20", "--budget-window", "1"]
    result = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["budget"]["spent"] == 19 and out["budget"]["total"] == 20
    # --resume takes the stored budget; a different one is refused in one line.
    result = CliRunner().invoke(app, ["run", "--resume", "--run-dir", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["budget"]["spent"] == 19
    line = one_line(["run", "--resume", "--run-dir", str(tmp_path / "r"), "--budget-total", "25"])
    assert "budget_total: 20 -> 25" in line
    table = CliRunner().invoke(app, ["report", str(tmp_path / "r")])
    assert "19/20 candidates" in table.output
