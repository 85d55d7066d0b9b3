"""Read runs back from their run store: metrics, a comparison table, JSON and an accuracy-vs-compute plot."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentloop._plugins import reference_label
from agentloop.errors import AgentloopError
from agentloop.records.config import (
    BUDGET_DEFAULTS,
    BUDGET_KEYS,
    VERIFIER_ERROR,
    RunSummary,
    budget_spend,
    difficulties,
    effective_shape,
    shape_label,
)
from agentloop.records.store import StoredRun, StoredTask, open_store

__all__ = [
    "PairedDifference",
    "RunReport",
    "budget_difference",
    "check_comparable",
    "pair_tasks",
    "paired_difference",
    "first_line",
    "reports_json",
]

UPPER_BOUND_NOTE = (
    "oracle: the verifier compared candidates with the gold answer (for WebShop, the hidden goal's "
    "reward) while the run was going, so its accuracy or reward is an upper bound for analysis (the "
    "IAD paper's optimal verifier), not a result a deployed system could reach"
)


@dataclass(frozen=True, slots=True)
class RunReport:
    """One stored run and the numbers computed from it."""

    run_dir: Path
    run: StoredRun

    @classmethod
    def load(cls, run_dir: str | Path, *, store: str | None = None) -> RunReport:
        """The run in ``run_dir``, or (with ``store``, a database URL) the run of that name there.

        ``store`` also gives the password of a run dir whose run is in a database.
        """
        directory = Path(run_dir)
        with open_store(directory, store=store) as opened:
            return cls(directory, opened.load())

    @property
    def tasks(self) -> list[StoredTask]:
        return self.run.tasks

    @property
    def verifier(self) -> str:
        return str(self.run.config.get("verifier", "?"))

    @property
    def upper_bound(self) -> bool:
        if "upper_bound" in self.run.config:  # stored by the run: a user suite needs no reloading
            return bool(self.run.config["upper_bound"])
        # Runs stored before the flag: only the built-ins existed, and their oracle is "oracle".
        return self.verifier == "oracle"

    @property
    def scores_reward(self) -> bool:
        """Whether the run's headline is the reward (avg_reward, success_rate) rather than accuracy."""
        if "scores_reward" in self.run.config:
            return bool(self.run.config["scores_reward"])
        # Runs stored before the flag: reward suites stored a reward with every scored task.
        return any(t.reward is not None for t in self.tasks)

    @property
    def graph_label(self) -> str:
        """The graph's short name: a built-in's name, a user graph's file stem and attribute."""
        return reference_label(self.run.graph)

    @property
    def suite_label(self) -> str:
        """The suite's own name as the run recorded it, else its short reference."""
        return str(self.run.config.get("suite_name") or reference_label(self.run.suite))

    @property
    def metric(self) -> str:
        """The suite's headline name in ``--json`` metrics (runs before it was recorded: execution_accuracy)."""
        return str(self.run.config.get("metric") or "execution_accuracy")

    @property
    def metric_label(self) -> str:
        """The suite's headline label for tables, plots and the viewer."""
        if self.scores_reward:
            return "average reward"
        return str(self.run.config.get("metric_label") or "accuracy")

    @property
    def headline(self) -> float | None:
        """The run's headline number: the average reward, or the share of tasks scored correct."""
        tasks = self.tasks
        if self.scores_reward:
            return round(statistics.fmean(t.value for t in tasks), 4) if tasks else None
        return _share(sum(t.correct for t in tasks), len(tasks))

    @property
    def difficulties(self) -> tuple[str, ...]:
        """The suite's difficulty buckets as the run recorded them, easiest first (none: no breakdown)."""
        return difficulties(self.run.config, [t.difficulty for t in self.tasks])

    @property
    def label(self) -> str:
        return self.run_dir.name or str(self.run_dir)

    @property
    def n_rounds(self) -> str:
        """``n / rounds`` as the graph ran them (best_of_n: one round), for tables."""
        return _n_rounds(self.run)

    @property
    def complete(self) -> bool:
        return len(self.tasks) >= self.run.planned and not any(t.error for t in self.tasks)

    def metrics(self) -> dict[str, Any]:
        """Accuracy overall and by difficulty (or reward and success), verifier pass rate, cost and latency per task."""
        tasks = self.tasks
        n = len(tasks)

        def per_task(total: float) -> float | None:
            return round(total / n, 2) if n else None

        walls = [t.wall_s for t in tasks]
        usage, memory = self.usage(), self._memory_usage()
        if self.scores_reward:
            # A task that errored, or bought nothing, has reward 0 (StoredTask.value).
            quality: dict[str, Any] = {
                "avg_reward": round(statistics.fmean(t.value for t in tasks), 4) if n else None,
                "success_rate": _share(sum(t.value >= 1.0 for t in tasks), n),
            }
        else:
            accuracy = _share(sum(t.correct for t in tasks), n)
            # The suite's own name, and execution_accuracy as well: the one name 0.1 gave every suite.
            quality = {
                self.metric: accuracy,
                "execution_accuracy": accuracy,
                "by_difficulty": _by_difficulty(tasks, self.difficulties),
            }
        return {
            **quality,
            "verifier_pass_rate": _share(sum(t.passed for t in tasks), n),
            "candidates_per_task": per_task(sum(t.candidates for t in tasks)),
            "llm_calls_per_task": per_task(sum(t.llm_calls for t in tasks)),
            "tokens_per_task": per_task(usage["prompt_tokens"] + usage["completion_tokens"]),
            "completion_tokens_per_task": per_task(usage["completion_tokens"]),
            # Included in the tokens above: what concept memory spent (selection, abstraction).
            "memory_tokens_per_task": per_task(memory["total_tokens"]) if memory["llm_calls"] else None,
            "latency_s_mean": round(statistics.fmean(walls), 3) if walls else None,
            "latency_s_p50": round(statistics.median(walls), 3) if walls else None,
            "errors": sum(t.error is not None for t in tasks),
            # Of those errors: tasks whose verifier raised on every candidate (not wrong answers).
            "verifier_errors": sum((t.error or "").startswith(f"{VERIFIER_ERROR}:") for t in tasks),
        }

    def usage(self) -> dict[str, Any]:
        """Totals over the run. Memory's spend is in them, and also on its own under ``memory``."""
        tasks = self.tasks
        costs = [t.cost_usd for t in tasks if t.cost_usd is not None]
        unclaimed = self.run.memory_usage or {}
        out: dict[str, Any] = {
            "candidates": sum(t.candidates for t in tasks),
            "llm_calls": sum(t.llm_calls for t in tasks) + int(unclaimed.get("llm_calls", 0)),
            "prompt_tokens": sum(t.prompt_tokens for t in tasks) + int(unclaimed.get("prompt_tokens", 0)),
            "completion_tokens": sum(t.completion_tokens for t in tasks)
            + int(unclaimed.get("completion_tokens", 0)),
            "cost_usd": round(sum(costs), 6) if costs else None,
            "wall_s": round(self.run.wall_s, 3),
        }
        memory = self._memory_usage()
        if memory["llm_calls"] or any(t.memory_llm_calls is not None for t in tasks):
            out["memory"] = memory
        return out

    def _memory_usage(self) -> dict[str, int]:
        """Concept memory's spend: charged to tasks, plus batch abstractions no task claimed."""
        extra = self.run.memory_usage or {}
        calls = sum(t.memory_llm_calls or 0 for t in self.tasks) + int(extra.get("llm_calls", 0))
        prompt = sum(t.memory_prompt_tokens or 0 for t in self.tasks) + int(extra.get("prompt_tokens", 0))
        completion = sum(t.memory_completion_tokens or 0 for t in self.tasks) + int(
            extra.get("completion_tokens", 0)
        )
        return {
            "llm_calls": calls,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def budget(self) -> dict[str, Any] | None:
        """The run-level budget (``--budget-total``) and its spend, overall and per task; None without one."""
        total = self.run.config.get("budget_total")
        if total is None:
            return None
        unit = str(self.run.config.get("budget_unit") or BUDGET_DEFAULTS["budget_unit"])
        spends = [budget_spend(t, unit) for t in self.tasks]
        per_task = [
            {"task_id": t.task_id, "spent": s, "stop_reason": t.stop_reason}
            for t, s in zip(self.tasks, spends, strict=True)
        ]
        spent = sum(spends)
        return {
            "total": int(total),
            "unit": unit,
            "spent": spent,
            "left": int(total) - spent,
            "tasks": per_task,
        }

    def summary(self, *, skipped: int = 0) -> RunSummary:
        """The ``agentloop run --json`` summary of this run."""
        metrics = self.metrics()
        return RunSummary(
            suite=self.run.suite,
            graph=self.run.graph,
            backend=self.run.backend,
            verifier=self.verifier,
            upper_bound=self.upper_bound,
            tasks=len(self.tasks),
            planned=self.run.planned,
            errors=metrics["errors"],
            skipped=skipped,
            metrics=(
                {
                    "avg_reward": metrics["avg_reward"],
                    "success_rate": metrics["success_rate"],
                    "verifier_pass_rate": metrics["verifier_pass_rate"],
                }
                if self.scores_reward
                else {
                    self.metric: metrics[self.metric],
                    "execution_accuracy": metrics["execution_accuracy"],
                    "verifier_pass_rate": metrics["verifier_pass_rate"],
                    "by_difficulty": metrics["by_difficulty"],
                }
            ),
            usage=self.usage(),
            run_dir=str(self.run_dir),
            failed=[{"task_id": t.task_id, "error": first_line(t.error)} for t in self.failed_tasks()],
            budget=self.budget(),
        )

    def failed_tasks(self) -> list[StoredTask]:
        """The tasks stored with an error, in task order."""
        return [t for t in self.tasks if t.error is not None]

    def to_json(self, *, results: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "suite": self.run.suite,
            "graph": self.run.graph,
            "backend": self.run.backend,
            "verifier": self.verifier,
            "upper_bound": self.upper_bound,
            "config": self.run.config,
            "tasks": len(self.tasks),
            "planned": self.run.planned,
            "complete": self.complete,
            "metrics": self.metrics(),
            "usage": self.usage(),
        }
        budget = self.budget()
        if budget is not None:
            d["budget"] = budget
        if self.upper_bound:
            d["note"] = UPPER_BOUND_NOTE
        if results:
            d["results"] = [_result_json(t) for t in self.tasks]
        return d


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """``other`` minus ``base`` on the tasks both ran: the mean per-task difference and a bootstrap CI.

    The per-task number is :attr:`StoredTask.value`: the reward for suites scored by
    reward, 1/0 for correct/wrong otherwise. Tasks pair when their content hashes match
    (same database, question and gold; same goal), so runs over other data never pair by
    position. ``unpaired`` says why the other tasks were left out.
    """

    base: str
    other: str
    metric: str  # "reward" or "accuracy"
    tasks: int  # tasks paired
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float = 0.95
    unpaired: dict[str, int] = field(default_factory=dict)
    budget_differs: tuple[str, ...] = ()  # budget settings the two runs did not share

    @property
    def explanation(self) -> str:
        """One line: how many tasks were paired and why the others were not."""
        reasons = {
            "content_differs": "same id but other content (other data)",
            "only_base": f"only in {self.base}",
            "only_other": f"only in {self.other}",
            "unverified": "paired by id only (stored before task hashes existed)",
        }
        parts = [f"{n} {reasons[k]}" for k, n in self.unpaired.items() if n]
        tail = f"; {'; '.join(parts)}" if parts else ""
        return f"{self.other} vs {self.base}: {self.tasks} tasks paired{tail}"

    def to_json(self) -> dict[str, Any]:
        rnd = _round4
        return {
            "base": self.base,
            "other": self.other,
            "metric": self.metric,
            "paired_tasks": self.tasks,
            "unpaired": dict(self.unpaired),
            "difference": rnd(self.difference),
            "ci": [rnd(self.ci_low), rnd(self.ci_high)],
            "confidence": self.confidence,
            "same_budget": not self.budget_differs,
            "budget_differs": list(self.budget_differs),
        }


def pair_tasks(
    base: Sequence[StoredTask], other: Sequence[StoredTask]
) -> tuple[list[tuple[StoredTask, StoredTask]], dict[str, int]]:
    """Match the two runs' tasks by content hash; returns the pairs and why the rest did not pair.

    A task stored without a hash (an older run store) pairs by id and counts as
    ``unverified``. Repeated content pairs in task order.
    """
    by_hash: dict[str, list[StoredTask]] = {}
    by_id: dict[str, StoredTask] = {}
    for t in sorted(base, key=lambda t: t.index):
        if t.content_hash:
            by_hash.setdefault(t.content_hash, []).append(t)
        by_id[t.task_id] = t
    used: set[int] = set()
    pairs: list[tuple[StoredTask, StoredTask]] = []
    why = {"content_differs": 0, "only_base": 0, "only_other": 0, "unverified": 0}
    for t in sorted(other, key=lambda t: t.index):
        match = None
        if t.content_hash:
            match = next((b for b in by_hash.get(t.content_hash, []) if id(b) not in used), None)
        if match is None:
            same_id = by_id.get(t.task_id)
            if same_id is not None and id(same_id) not in used:
                if same_id.content_hash and t.content_hash:
                    why["content_differs"] += 1
                    continue
                match = same_id
                why["unverified"] += 1
        if match is None:
            why["only_other"] += 1
            continue
        used.add(id(match))
        pairs.append((match, t))
    why["only_base"] = max(0, len(base) - len(used) - why["content_differs"])
    return pairs, why


def paired_difference(
    base: RunReport, other: RunReport, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> PairedDifference:
    """``other - base`` over the tasks both runs stored, with a percentile bootstrap CI over those tasks."""
    pairs, why = pair_tasks(base.tasks, other.tasks)
    diffs = [o.value - b.value for b, o in pairs]
    metric = "reward" if base.scores_reward and other.scores_reward else "accuracy"
    differs = budget_difference(base, other)
    if not diffs:
        return PairedDifference(
            base.label, other.label, metric, 0, None, None, None, confidence, why, differs
        )
    rng = random.Random(seed)  # the same runs always print the same interval
    k = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=k)) for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    lo = means[int(tail * (resamples - 1))]
    hi = means[int((1.0 - tail) * (resamples - 1))]
    return PairedDifference(
        base.label, other.label, metric, k, statistics.fmean(diffs), lo, hi, confidence, why, differs
    )


def budget_difference(a: RunReport, b: RunReport) -> tuple[str, ...]:
    """The budget settings (:data:`BUDGET_KEYS`) on which two runs differ, as ``key: a -> b``."""

    def settings(r: RunReport) -> dict[str, Any]:
        values = {k: r.run.config.get(k, BUDGET_DEFAULTS[k]) for k in BUDGET_KEYS}
        effective = effective_shape(
            r.run.graph, {**r.run.config, "n": values["n"], "rounds": values["rounds"]}
        )
        if effective is not None:  # as the graph ran them: best_of_n runs one round whatever --rounds says
            values["n"], values["rounds"] = effective
        schedule = [int(k) for k in r.run.config.get("effective_n_schedule") or []]
        if len(set(schedule)) > 1:  # waves of different sizes: the whole schedule, not its first wave
            values["n"] = "→".join(str(k) for k in schedule)
        return values

    sa, sb = settings(a), settings(b)
    return tuple(f"{k}: {sa[k]} -> {sb[k]}" for k in BUDGET_KEYS if sa[k] != sb[k])


def check_comparable(reports: Sequence[RunReport]) -> None:
    """Refuse a comparison in which some run shares no task with the first."""
    for r in reports[1:]:
        pairs, why = pair_tasks(reports[0].tasks, r.tasks)
        if not pairs and reports[0].tasks and r.tasks:
            raise AgentloopError(
                f"{r.label} and {reports[0].label} share no task ({why['content_differs']} with the same "
                "id hold other content): compare runs over the same data"
            )


def shared_tasks(reports: Sequence[RunReport]) -> tuple[list[RunReport], str | None]:
    """Each run cut to the tasks every run of its suite stored, and a line saying what was cut.

    A frontier ranks configurations by their mean over tasks, so each must be measured on the
    same tasks: a greedy run over 164 problems is not comparable, point for point, with a
    best-of-8 run over the first 82. Runs of a suite alone, or already aligned, are kept whole.
    """
    by_suite: dict[str, set[str]] = {}
    for r in reports:
        if not r.tasks:  # no point to draw either way; it must not empty the others
            continue
        ids = {t.task_id for t in r.tasks}
        by_suite[r.run.suite] = by_suite[r.run.suite] & ids if r.run.suite in by_suite else ids
    out: list[RunReport] = []
    cut: list[str] = []
    disjoint = sorted(s for s, ids in by_suite.items() if not ids)
    for r in reports:
        keep = by_suite.get(r.run.suite, set())
        if not r.tasks or not keep or len(keep) == len(r.tasks):
            out.append(r)
            continue
        tasks = [t for t in r.tasks if t.task_id in keep]
        cut.append(f"{r.label} {len(r.tasks)} -> {len(tasks)}")
        out.append(RunReport(r.run_dir, replace(r.run, tasks=tasks)))
    notes = []
    if cut:
        notes.append(f"compared on the tasks every run of a suite stored ({', '.join(cut)})")
    if disjoint:
        notes.append(f"the {', '.join(disjoint)} runs share no task: each is measured on its own tasks")
    return out, "; ".join(notes) or None


def reports_json(reports: Sequence[RunReport]) -> dict[str, Any]:
    """One run's JSON, or ``{"runs": [...], "comparison": [...]}`` when runs are compared.

    ``comparison`` holds each later run's paired difference from the first.
    """
    if len(reports) == 1:
        return reports[0].to_json()
    return {
        "runs": [r.to_json() for r in reports],
        "comparison": [paired_difference(reports[0], r).to_json() for r in reports[1:]],
    }


def _by_difficulty(tasks: Sequence[StoredTask], levels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Accuracy per bucket; tasks without one count as ``unknown`` only in a suite that has buckets."""
    out: dict[str, dict[str, Any]] = {}
    if not levels:
        return out
    for level in (*levels, None):
        subset = [t for t in tasks if t.difficulty == level]
        if subset:
            correct = sum(t.correct for t in subset)
            out[level or "unknown"] = {
                "tasks": len(subset),
                "correct": correct,
                "accuracy": _share(correct, len(subset)),
            }
    return out


def _result_json(t: StoredTask) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "index": t.index,
        "extra": t.extra,
        "difficulty": t.difficulty,
        "question": t.question,
        "answer": t.answer,
        "correct": t.correct,
        "reward": t.reward,
        "passed": t.passed,
        "score": t.score,
        "candidates": t.candidates,
        "llm_calls": t.llm_calls,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "rounds": t.rounds,
        "stop_reason": t.stop_reason,
        "wall_s": round(t.wall_s, 3),
        "error": t.error,
        "eval_error": t.eval_error,
        "attempt": t.attempt,
    }


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _round4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _n_rounds(run: StoredRun) -> str:
    return shape_label(run.graph, run.config)


def first_line(text: str | None, limit: int = 200) -> str:
    """An error's first non-empty line, clipped: what a one-line listing shows."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"
