"""Rescore a stored sampling run offline: official scores for candidates stored without one.

Runs stored before revision 0004 of the run store kept each candidate's verdict but not its
official score, which accuracy-vs-k curves are drawn from (:mod:`agentloop.records.curves`).
:func:`rescore_run` loads the run's suite (records never import one, so this lives with the
runs), rebuilds its tasks from the stored config, rebuilds each candidate from what the
store kept (:meth:`Suite.stored_answer`: the task's own parse of the text; WebShop replays
the episode's actions) and scores it as the runner does (:meth:`Suite.score_candidate`, and
the vote key when the graph voted). No model is asked: Text2SQL executes the SQL on its
database (read-only), HumanEval runs the hidden tests in its sandbox.

The scores are written into the store (only where a candidate still has none, so a second
rescoring has nothing to do and two at once agree), task by task, so an interrupted
rescoring keeps what it did. Where the store cannot be written (a read-only file), the
scores are returned for the caller to use this once, and :attr:`Rescored.note` says why.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from agentloop.errors import AgentloopError
from agentloop.graphs import Candidate, LoopResult, Verdict
from agentloop.graphs.budget import LoopUsage
from agentloop.records.curves import CURVE_GRAPHS
from agentloop.records.report import first_line
from agentloop.records.store import (
    CandidateScore,
    RunStore,
    RunStoreError,
    StoredRun,
    StoredTask,
    needs_score,
    open_store,
)
from agentloop.runs.spec import STORED_DEFAULTS, RunSpec
from agentloop.runs.tasks import _vote_key
from agentloop.suites import CannotRescoreError, Suite, SuiteItem, get_suite

__all__ = ["RescoreError", "Rescored", "rescore_run", "rescore_run_sync"]

# Scores are written in batches of about this many candidates (and at the end).
FLUSH_EVERY = 100


class RescoreError(AgentloopError):
    """A run cannot be rescored offline; the message (one line) says why and what to do."""


@dataclass(frozen=True, slots=True)
class Rescored:
    """What :func:`rescore_run` did: candidates scored, those the suite failed on, and whether saved."""

    run: str
    suite: str
    candidates: int = 0
    failed: int = 0
    saved: bool = True
    note: str = ""  # why the scores were not saved in the store
    # Every score computed, by (task id, position): what a caller draws from when not saved.
    scores: dict[tuple[str, int], CandidateScore] = field(default_factory=dict, repr=False)

    @property
    def officials(self) -> dict[tuple[str, int], dict[str, Any]]:
        """The scores as the store keeps them, for :func:`agentloop.records.curves.load_curve`."""
        return {k: v.to_dict() for k, v in self.scores.items()}


async def rescore_run(
    target: str | os.PathLike[str],
    *,
    store: str | None = None,
    label: str | None = None,
    on_start: Callable[[int, str], None] | None = None,
    advance: Callable[[int], None] | None = None,
    concurrency: int = 4,
    keys: bool = False,
) -> Rescored:
    """Score every candidate of the run at ``target`` (a run dir, or a run's name in ``store``) that has no official score.

    With ``keys``, a ``best_of_n`` run's candidates also get the vote key self-consistency
    would have voted them under (their scores stay), so its candidates draw a vote curve too.

    ``on_start(candidates, suite_name)`` is called once the suite has loaded and before any
    candidate is scored (never when there is nothing to do); ``advance(n)`` as each task's n are done.
    Raises :class:`RescoreError` (one line) when the suite cannot be loaded, cannot rebuild the
    run's tasks, or cannot score a stored candidate offline.
    """
    name = label or Path(target).name or str(target)
    with open_store(target, store=store) as opened:
        run = opened.load()
        if run.graph not in CURVE_GRAPHS:
            return Rescored(name, str(run.config.get("suite_name") or run.suite))
        keys = keys and CURVE_GRAPHS[run.graph] == "best"
        todo = opened.unscored_candidates(keys=keys)
        count = sum(needs_score(c, keys=keys) for cands in todo.values() for c in cands)
        if not count:
            return Rescored(name, str(run.config.get("suite_name") or run.suite))
        suite = _load_suite(run, name)
        items = _items(suite, run, name, list(todo))
        stored = {t.task_id: t for t in run.tasks}
        if on_start is not None:
            on_start(count, suite.name)
        writer = _Writer(opened)
        voted = keys or CURVE_GRAPHS[run.graph] == "vote"
        gate = asyncio.Semaphore(max(1, concurrency))
        failed = 0

        async def one(task_id: str) -> None:
            nonlocal failed
            async with gate:
                scored, bad = await _score_task(
                    suite, items[task_id], stored[task_id], todo[task_id], voted, name, keys=keys
                )
            failed += bad
            writer.add(task_id, scored)
            if advance is not None:
                advance(len(scored) + bad)

        jobs = [asyncio.create_task(one(t)) for t in todo]
        try:
            await asyncio.gather(*jobs)
        finally:
            for j in jobs:
                j.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            writer.flush()  # what was scored is kept, even when a later task raised
    return Rescored(
        name,
        suite.name,
        len(writer.scores),
        failed,
        saved=not writer.note,
        note=writer.note,
        scores=writer.scores,
    )


def rescore_run_sync(target: str | os.PathLike[str], **kwargs: Any) -> Rescored:
    """Blocking wrapper around :func:`rescore_run`."""
    return asyncio.run(rescore_run(target, **kwargs))


class _Writer:
    """Writes scores into the store in batches; on the first write the store refuses, keeps them in memory."""

    def __init__(self, store: RunStore):
        self.store = store
        self.scores: dict[tuple[str, int], CandidateScore] = {}
        self.pending: dict[int, CandidateScore] = {}
        self.note = ""

    def add(self, task_id: str, scored: list[tuple[int, int, CandidateScore]]) -> None:
        for row_id, position, score in scored:
            self.scores[(task_id, position)] = score
            self.pending[row_id] = score
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.note:
            return
        try:
            self.store.fill_official(self.pending)
        except (DBAPIError, RunStoreError) as exc:
            reason = getattr(exc, "orig", None) or exc
            self.note = f"the store {self.store.safe_url} could not be written ({first_line(str(reason))})"
        self.pending = {}


def _load_suite(run: StoredRun, name: str) -> Suite:
    try:
        return get_suite(run.suite)
    except Exception as exc:
        raise RescoreError(
            f"cannot rescore run {name}: its suite {run.suite!r} does not load ({first_line(str(exc))}); put "
            "the suite back where the run found it (or install the plugin that gives it) and add --rescore "
            "again, or rerun the run to draw its curve"
        ) from None


def _spec(run: StoredRun, suite: Suite) -> RunSpec:
    """The run's spec as stored (settings added since take what runs before them had), to rebuild its tasks."""
    values: dict[str, Any] = {
        f.name: run.config.get(f.name, STORED_DEFAULTS.get(f.name))
        for f in fields(RunSpec)
        if f.name in run.config or f.name in STORED_DEFAULTS
    }
    # What only decides how fast, where, or with what memory the run ran: not its tasks.
    values.update(
        suite=run.suite,
        executor="local",
        ray_address=None,
        workers=None,
        base_url=None,
        memory=None,
        memory_backend=None,
        budget_total=None,
    )
    return RunSpec(**values).for_suite(suite)


def _items(suite: Suite, run: StoredRun, name: str, task_ids: list[str]) -> dict[str, SuiteItem]:
    """The suite's items for ``task_ids``, checked to be the tasks the run stored (by content hash)."""
    try:
        spec = _spec(run, suite)
        items = {i.task_id: i for i in suite.items(spec, None)}
        if any(t not in items for t in task_ids) and (spec.offset or spec.limit is not None):
            items = {i.task_id: i for i in suite.items(replace(spec, offset=0, limit=None), None)}
    except AgentloopError as exc:
        raise RescoreError(f"cannot rescore run {name}: its suite cannot rebuild its tasks ({exc})") from None
    except (ValueError, OSError) as exc:
        raise RescoreError(
            f"cannot rescore run {name}: its suite cannot rebuild its tasks ({type(exc).__name__}: "
            f"{first_line(str(exc))})"
        ) from None
    missing = [t for t in task_ids if t not in items]
    if missing:
        raise RescoreError(
            f"cannot rescore run {name}: its suite's data no longer holds task(s) {', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}; give the run's data back (its --data), or rerun it"
        )
    hashes = {t.task_id: t.content_hash for t in run.tasks}
    changed = [
        t for t in task_ids if hashes.get(t) and items[t].content_hash and hashes[t] != items[t].content_hash
    ]
    if changed:
        raise RescoreError(
            f"cannot rescore run {name}: task(s) {', '.join(changed[:3])} changed in its suite's data since "
            "the run (their content hashes differ), so scoring its answers now would mix two tasks; rerun it"
        )
    return {t: items[t] for t in task_ids}


async def _score_task(
    suite: Suite,
    item: SuiteItem,
    task: StoredTask,
    rows: list[dict[str, Any]],
    voted: bool,
    name: str,
    *,
    keys: bool = False,
) -> tuple[list[tuple[int, int, CandidateScore]], int]:
    """One task's candidates without an official score, scored as the runner would have: (row id, position, score)s and failures.

    The final answer keeps the task's own stored score (the runner reused it too).
    """
    built = [_candidate(suite, item, row, name) for row in rows]
    cands = [c for c, _ in built]
    best = next((c for c, row in zip(cands, rows, strict=True) if row["best"]), None)
    result = LoopResult(
        task_id=task.task_id,
        graph="",
        best=best,
        candidates=cands,
        rounds=task.rounds,
        stop_reason=task.stop_reason or "max_rounds",  # type: ignore[arg-type]
        usage=LoopUsage(),
        error=task.error,
        votes={} if voted else None,
    )
    out: list[tuple[int, int, CandidateScore]] = []
    failed = 0
    for (c, rebuilt), row in zip(built, rows, strict=True):
        official = row["official"]
        if not needs_score(row, keys=keys):
            continue
        if not rebuilt:
            failed += 1
            continue
        try:
            if official is not None:  # scored already: only its vote key is new
                correct, reward = bool(official.get("correct")), official.get("reward")
            elif c is best:
                correct, reward = task.correct, task.reward
            else:
                s = await suite.score_candidate(item, result, c)
                correct, reward = s.correct, s.reward
            key = await _vote_key(item, c) if voted else None
        except CannotRescoreError as exc:
            raise RescoreError(
                f"cannot rescore run {name} offline: {exc}; rerun it to draw its curve"
            ) from None
        except Exception:  # as in the runner: a candidate that fails to score stays without one
            failed += 1
            continue
        out.append((row["id"], row["position"], CandidateScore(correct=correct, reward=reward, key=key)))
    return out, failed


def _candidate(suite: Suite, item: SuiteItem, row: Mapping[str, Any], name: str) -> tuple[Candidate, bool]:
    """The stored candidate as the graph had it, and whether its answer could be rebuilt."""
    v = row["verdict"]
    verdict = None
    if isinstance(v, dict):
        verdict = Verdict(
            float(v.get("score", 0.0)),
            bool(v.get("passed")),
            str(v.get("feedback") or ""),
            v.get("details") or {},
        )
    answer, ok = None, True
    if row["parse_error"] is None:
        try:
            answer = suite.stored_answer(item, row["text"], row["answer"])
        except CannotRescoreError as exc:
            raise RescoreError(
                f"cannot rescore run {name} offline: {exc}; rerun it to draw its curve"
            ) from None
        except Exception:
            ok = False
    candidate = Candidate(
        round=row["round"],
        index=row["index"],
        text=row["text"],
        prompt_hash=row["prompt_hash"],
        answer=answer,
        verdict=verdict,
        completion_tokens=row["completion_tokens"],
        prompt_tokens=row["prompt_tokens"],
        latency_s=row["latency_s"],
        call=row["call"],
        finish_reason=row["finish_reason"],
        parse_error=row["parse_error"],
        verify_s=row["verify_s"],
    )
    return candidate, ok
