"""``agentloop run`` budgets and stopping, memory's cost on the task, and paired comparisons.

Runs use the package's function backend over the shipped Spider subset, so every number
below comes from the real runner, run store and report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.cli import app
from agentloop.errors import AgentloopError
from agentloop.records.report import RunReport, check_comparable, paired_difference
from agentloop.records.store import ConfigMismatchError, RunStore
from agentloop.runs.runner import RunSpec, run_suite

BAD_SQL = "```sql\nSELECT nope FROM nowhere\n```"  # fails every round: the loop never passes
GOOD_SQL = "```sql\nSELECT name FROM singer\n```"


def chat(text: str):
    return lambda request: text


def spec(**changes: object) -> RunSpec:
    base = dict(graph="iad", backend="function", prompt="chat", limit=3, n=2, rounds=4, concurrency=2)
    return RunSpec(**{**base, **changes})  # type: ignore[arg-type]


async def test_max_candidates_caps_every_task_exactly(tmp_path: Path) -> None:
    summary = await run_suite(
        spec(max_candidates=3), run_dir=tmp_path / "r", backend=FunctionBackend(chat(BAD_SQL))
    )
    tasks = RunReport.load(tmp_path / "r").tasks
    assert [t.candidates for t in tasks] == [3, 3, 3]  # 2 + 1: the second round gets what is left
    assert {t.stop_reason for t in tasks} == {"budget"}
    assert summary.usage["candidates"] == 9


async def test_max_tokens_total_caps_generated_tokens_per_task(tmp_path: Path) -> None:
    long_answer = "```sql\nSELECT nope FROM nowhere WHERE " + " AND ".join(["x = 1"] * 40) + "\n```"
    await run_suite(
        spec(max_tokens_total=100, max_tokens=40),
        run_dir=tmp_path / "r",
        backend=FunctionBackend(chat(long_answer)),
    )
    tasks = RunReport.load(tmp_path / "r").tasks
    assert all(0 < t.completion_tokens <= 100 for t in tasks)
    assert {t.stop_reason for t in tasks} == {"budget"}


async def test_without_caps_the_same_run_spends_more(tmp_path: Path) -> None:
    await run_suite(spec(), run_dir=tmp_path / "r", backend=FunctionBackend(chat(BAD_SQL)))
    tasks = RunReport.load(tmp_path / "r").tasks
    assert [t.candidates for t in tasks] == [8, 8, 8]
    assert {t.stop_reason for t in tasks} == {"max_rounds"}


async def test_patience_stops_after_rounds_without_a_better_best(tmp_path: Path) -> None:
    await run_suite(spec(patience=1), run_dir=tmp_path / "r", backend=FunctionBackend(chat(BAD_SQL)))
    tasks = RunReport.load(tmp_path / "r").tasks
    assert {t.rounds for t in tasks} == {2} and {t.stop_reason for t in tasks} == {"no_improvement"}


async def test_threshold_above_the_gold_free_pass_score_keeps_iad_going(tmp_path: Path) -> None:
    # A query that runs and returns rows passes the exec verifier at score 1.0; with a threshold of
    # 1.0 it still stops at once, and with no threshold too. The threshold reaches the loop config.
    assert spec(threshold=0.4).loop_config().threshold == 0.4
    assert spec(top_p=0.9).loop_config().top_p == 0.9
    await run_suite(spec(threshold=1.0), run_dir=tmp_path / "r", backend=FunctionBackend(chat(GOOD_SQL)))
    tasks = RunReport.load(tmp_path / "r").tasks
    assert {t.stop_reason for t in tasks} == {"threshold"} and {t.rounds for t in tasks} == {1}


def test_bad_budget_values_are_refused() -> None:
    for bad in ({"max_candidates": 0}, {"max_tokens_total": -1}, {"max_seconds": 0.0}, {"top_p": 0.0}):
        with pytest.raises(ValueError):
            spec(**bad)


async def test_resume_must_repeat_the_budget(tmp_path: Path) -> None:
    backend = FunctionBackend(chat(BAD_SQL))
    await run_suite(spec(max_candidates=3, limit=1), run_dir=tmp_path / "r", backend=backend)
    with pytest.raises(ConfigMismatchError, match="max_candidates: 3 -> 4"):
        await run_suite(spec(max_candidates=4, limit=1), run_dir=tmp_path / "r", resume=True, backend=backend)


async def test_a_store_from_before_budgets_resumes_with_the_defaults(tmp_path: Path) -> None:
    backend = FunctionBackend(chat(BAD_SQL))
    await run_suite(spec(limit=1), run_dir=tmp_path / "r", backend=backend)
    store = RunStore.for_run_dir(tmp_path / "r")
    with store._transaction() as s:  # what an older version wrote: no budget keys at all
        from agentloop.records._schema import RunRow

        row = s.query(RunRow).one()
        row.config = {
            k: v
            for k, v in row.config.items()
            if k
            not in ("max_candidates", "max_tokens_total", "max_seconds", "top_p", "threshold", "patience")
        }
    store.close()
    summary = await run_suite(spec(limit=1), run_dir=tmp_path / "r", resume=True, backend=backend)
    assert summary.tasks == 1 and summary.skipped == 1
    with pytest.raises(ConfigMismatchError, match="max_seconds: None -> 5.0"):
        await run_suite(spec(limit=1, max_seconds=5.0), run_dir=tmp_path / "r", resume=True, backend=backend)


def _memory_model(request: ChatRequest) -> str:
    prompt = request.messages[-1].content
    if "memory of lessons" in prompt:
        concept = {
            "title": "Singers by age",
            "situation": "A question about singers and their age",
            "cues": ["singers"],
            "suggestion": "Read the age column of singer.",
            "kind": "strategy",
        }
        return json.dumps({"concepts": [concept]})
    return GOOD_SQL


async def test_memory_spend_is_charged_to_the_task_and_reported_on_its_own(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    s = spec(graph="greedy", memory=url, memory_abstract="json", concurrency=1)
    summary = await run_suite(s, run_dir=tmp_path / "r", backend=FunctionBackend(_memory_model))
    report = RunReport.load(tmp_path / "r")
    memory = report.usage()["memory"]
    assert memory["llm_calls"] == 3 and memory["completion_tokens"] > 0  # one abstraction per task
    for t in report.tasks:
        assert t.memory_llm_calls == 1 and t.memory_completion_tokens
        assert t.llm_calls == 2  # the candidate and the abstraction
        assert t.completion_tokens > t.memory_completion_tokens
    assert summary.usage["memory"] == memory
    assert summary.usage["llm_calls"] == 6
    assert report.metrics()["memory_tokens_per_task"] == round(memory["total_tokens"] / 3, 2)


async def test_batch_abstractions_are_charged_to_the_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    s = spec(graph="greedy", memory=url, memory_abstract="json", memory_update="batch", concurrency=1)
    await run_suite(s, run_dir=tmp_path / "r", backend=FunctionBackend(_memory_model))
    report = RunReport.load(tmp_path / "r")
    assert all(t.memory_llm_calls == 0 for t in report.tasks)  # written after the tasks were stored
    assert report.usage()["memory"]["llm_calls"] == 3
    assert report.usage()["llm_calls"] == 6


# --- paired comparisons ---------------------------------------------------------------------


def _other_spider(tmp_path: Path) -> Path:
    """A Spider-style file whose first questions are not the shipped ones (same ids dev-0...)."""
    from agentloop.suites.text2sql.data import default_spider_dir

    root = default_spider_dir()
    records = json.loads((root / "dev.json").read_text())
    other = tmp_path / "spider"
    other.mkdir()
    (other / "database").symlink_to(root / "database")
    (other / "tables.json").symlink_to(root / "tables.json")
    (other / "dev.json").write_text(json.dumps(records[20:30]))
    return other


def test_compare_refuses_runs_that_share_no_task(tmp_path: Path) -> None:
    import asyncio

    backend = FunctionBackend(chat(GOOD_SQL))
    asyncio.run(run_suite(spec(graph="greedy"), run_dir=tmp_path / "a", backend=backend))
    other = spec(graph="greedy", data=str(_other_spider(tmp_path)))
    asyncio.run(run_suite(other, run_dir=tmp_path / "b", backend=backend))
    a, b = RunReport.load(tmp_path / "a"), RunReport.load(tmp_path / "b")
    assert [t.task_id for t in a.tasks] == [t.task_id for t in b.tasks]  # ids alone would pair them
    d = paired_difference(a, b)
    assert d.tasks == 0 and d.unpaired["content_differs"] == 3
    with pytest.raises(AgentloopError, match="share no task"):
        check_comparable([a, b])
    result = CliRunner().invoke(app, ["report", str(tmp_path / "a"), "--compare", str(tmp_path / "b")])
    assert result.exit_code != 0 and "share no task" in result.output


def test_compare_pairs_by_content_and_says_how_many(tmp_path: Path) -> None:
    import asyncio

    backend = FunctionBackend(chat(GOOD_SQL))
    asyncio.run(run_suite(spec(graph="greedy", limit=4), run_dir=tmp_path / "a", backend=backend))
    asyncio.run(
        run_suite(
            spec(graph="best_of_n", offset=2, limit=4, max_candidates=2),
            run_dir=tmp_path / "b",
            backend=backend,
        )
    )
    a, b = RunReport.load(tmp_path / "a"), RunReport.load(tmp_path / "b")
    d = paired_difference(a, b)
    assert d.tasks == 2 and d.unpaired == {
        "content_differs": 0,
        "only_base": 2,
        "only_other": 2,
        "unverified": 0,
    }
    # Effective settings: greedy samples 1 candidate, best_of_n its n=2, both in one round.
    assert d.budget_differs == ("max_candidates: None -> 2", "n: 1 -> 2")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "a"), "--compare", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "2 tasks paired; 2 only in a; 2 only in b" in result.output
    assert "did not run under the same budget (max_candidates: None -> 2, n: 1 -> 2)" in result.output
    data = json.loads(
        CliRunner()
        .invoke(app, ["report", str(tmp_path / "a"), "--compare", str(tmp_path / "b"), "--json"])
        .output
    )
    assert data["comparison"][0]["paired_tasks"] == 2 and data["comparison"][0]["same_budget"] is False


async def test_a_memory_that_does_not_open_leaves_no_run_dir(tmp_path: Path) -> None:
    bad = spec(graph="greedy", memory="postgresql://nobody@127.0.0.1:1/x")
    with pytest.raises(AgentloopError, match="memory store"):
        await run_suite(bad, run_dir=tmp_path / "r", backend=FunctionBackend(chat(GOOD_SQL)))
    assert not (tmp_path / "r").exists()  # so the same command, fixed, starts afresh


async def test_an_aborted_run_says_how_to_resume_it(tmp_path: Path) -> None:
    def broken(request: ChatRequest) -> str:
        raise ConnectionError("server gone.")

    from agentloop.runs.runner import RunAbortedError

    with pytest.raises(RunAbortedError) as info:
        await run_suite(spec(graph="greedy"), run_dir=tmp_path / "r", backend=FunctionBackend(broken))
    message = str(info.value)
    assert f"--resume --run-dir {tmp_path / 'r'}" in message and ".." not in message


async def test_the_progress_bar_shows_tasks_accuracy_and_tokens(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    await run_suite(
        spec(graph="greedy", limit=2),
        run_dir=tmp_path / "r",
        backend=FunctionBackend(chat(GOOD_SQL)),
        progress=console,
    )
    text = out.getvalue()
    assert "text2sql" in text and "2/2" in text and "acc 0.000" in text and " tokens" in text  # both wrong


def test_a_budget_note_names_the_whole_wave_schedule(tmp_path: Path) -> None:
    import asyncio

    backend = FunctionBackend(chat(GOOD_SQL))
    asyncio.run(run_suite(spec(graph="best_of_n", n=4, limit=2), run_dir=tmp_path / "a", backend=backend))
    asyncio.run(
        run_suite(
            spec(graph="iad", n=4, rounds=2, n_schedule=(1, 3), limit=2),
            run_dir=tmp_path / "b",
            backend=backend,
        )
    )
    d = paired_difference(RunReport.load(tmp_path / "a"), RunReport.load(tmp_path / "b"))
    # Not "n: 4 -> 1" (the first wave alone), which reads as if b spent a quarter of a's.
    assert "n: 4 -> 1→3" in d.budget_differs
