"""What a stored run's config means: the budget settings and what ``agentloop run`` reports.

The runner writes these and the report reads them; both import this module, which imports
neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUDGET_DEFAULTS",
    "BUDGET_KEYS",
    "VERIFIER_ERROR",
    "RunSummary",
    "budget_spend",
    "difficulties",
    "effective_shape",
    "shape_label",
]

# The settings that bound what one task may spend; `agentloop report --compare` says when two
# runs differ in any of them.
BUDGET_KEYS: tuple[str, ...] = (
    "max_candidates",
    "max_tokens_total",
    "max_seconds",
    "n",
    "rounds",
    "n_schedule",
    "max_tokens",
    "max_steps",
    "budget_total",
    "budget_unit",
)

#: What a run stored before a budget setting existed is taken to have had: the run spec's
#: defaults (a test keeps the two equal).
BUDGET_DEFAULTS: dict[str, Any] = {
    "max_candidates": None,
    "max_tokens_total": None,
    "max_seconds": None,
    "n": 4,
    "rounds": 3,
    "n_schedule": [],
    "max_tokens": 256,
    "max_steps": None,
    "budget_total": None,
    "budget_unit": "candidates",
}

#: The error class stored for a task whose verifier raised on every candidate: not a wrong
#: answer, and counted apart (``verifier_errors``).
VERIFIER_ERROR = "VerifierError"

# Runs stored before the config recorded the suite's buckets came from the one suite that had
# them (Text2SQL, Spider's hardness levels): their order, for those runs only.
_LEGACY_LEVELS: tuple[str, ...] = ("easy", "medium", "hard", "extra")
# Runs stored before the config recorded the effective shape: the built-in graphs that fix it.
_LEGACY_ONE_ROUND = ("best_of_n", "self_consistency")


def budget_spend(task: Any, unit: str) -> int:
    """What a stored task spent of a run-level budget (``--budget-total``) in ``unit``.

    ``candidates``: candidates sampled. ``tokens``: generated tokens, less what concept memory
    generated for the task (memory's calls never count against a budget).
    """
    if unit == "candidates":
        return int(task.candidates)
    return int(task.completion_tokens) - int(getattr(task, "memory_completion_tokens", None) or 0)


def difficulties(config: Mapping[str, Any], stored: Iterable[str | None] = ()) -> tuple[str, ...]:
    """The run's difficulty buckets, easiest first: as recorded, else (an old run) the tasks' own."""
    recorded = config.get("difficulties")
    if isinstance(recorded, list):
        return tuple(str(level) for level in recorded)
    present = {level for level in stored if level}
    return tuple(
        sorted(present, key=lambda lvl: (_LEGACY_LEVELS.index(lvl) if lvl in _LEGACY_LEVELS else 99, lvl))
    )


def effective_shape(graph: str, config: Mapping[str, Any]) -> tuple[int, int] | None:
    """Candidates per round and rounds as the graph ran them (best_of_n: one round); None when unknown.

    With a schedule, the first round's count (see :func:`shape_label` for the whole schedule).
    """
    if "effective_n" in config and "effective_rounds" in config:
        return int(config["effective_n"]), int(config["effective_rounds"])
    try:
        n, rounds = int(config["n"]), int(config["rounds"])
    except (KeyError, TypeError, ValueError):
        return None
    if graph == "greedy":
        return 1, 1
    if graph in _LEGACY_ONE_ROUND:
        return n, 1
    return n, rounds


def shape_label(graph: str, config: Mapping[str, Any]) -> str:
    """``n / rounds`` as the graph ran them, for tables: ``4→1 / 2`` with a per-round schedule."""
    shape = effective_shape(graph, config)
    if shape is None:
        return f"{config.get('n', '?')} / {config.get('rounds', '?')}"
    schedule = [int(k) for k in config.get("effective_n_schedule") or []]
    n = "→".join(str(k) for k in schedule[: shape[1]]) if schedule else str(shape[0])
    return f"{n} / {shape[1]}"


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What ``agentloop run --json`` prints."""

    suite: str
    graph: str
    backend: str
    verifier: str
    upper_bound: bool
    tasks: int
    planned: int
    errors: int
    skipped: int  # finished in an earlier session and not redone
    metrics: dict[str, Any]
    usage: dict[str, Any]
    run_dir: str
    extra: dict[str, Any] = field(default_factory=dict)
    # This invocation's concept memory counts (``MemoryCounters.to_dict``: lessons retrieved and
    # written, abstractions attempted/accepted/declined/rejected, the first rejection); None
    # without memory.
    memory: dict[str, Any] | None = None
    # Every task stored with an error, as ``{"task_id", "error"}`` (the error's first line).
    failed: list[dict[str, str]] = field(default_factory=list)
    # With ``--budget-total``: the budget, its unit, what the tasks spent and each task's share
    # and spend (:meth:`RunReport.budget`, plus the ledger's allowances); None without one.
    budget: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "suite": self.suite,
            "graph": self.graph,
            "backend": self.backend,
            "verifier": self.verifier,
            "upper_bound": self.upper_bound,
            "tasks": self.tasks,
            "planned": self.planned,
            "errors": self.errors,
            "skipped": self.skipped,
            "metrics": self.metrics,
            "usage": self.usage,
            "run_dir": self.run_dir,
        }
        if self.memory is not None:
            out["memory"] = self.memory
        if self.failed:
            out["failed"] = self.failed
        if self.budget is not None:
            out["budget"] = self.budget
        return out
