"""What a stored run's config means: the budget settings and what ``agentloop run`` reports.

The runner writes these and the report reads them; both import this module, which imports
neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUDGET_DEFAULTS", "BUDGET_KEYS", "RunSummary", "difficulties", "effective_shape"]

# The settings that bound what one task may spend; `agentloop report --compare` says when two
# runs differ in any of them.
BUDGET_KEYS: tuple[str, ...] = (
    "max_candidates",
    "max_tokens_total",
    "max_seconds",
    "n",
    "rounds",
    "max_tokens",
    "max_steps",
)

#: What a run stored before a budget setting existed is taken to have had: the run spec's
#: defaults (a test keeps the two equal).
BUDGET_DEFAULTS: dict[str, Any] = {
    "max_candidates": None,
    "max_tokens_total": None,
    "max_seconds": None,
    "n": 4,
    "rounds": 3,
    "max_tokens": 256,
    "max_steps": None,
}

# Runs stored before the config recorded the suite's buckets came from the one suite that had
# them (Text2SQL, Spider's hardness levels): their order, for those runs only.
_LEGACY_LEVELS: tuple[str, ...] = ("easy", "medium", "hard", "extra")
# Runs stored before the config recorded the effective shape: the built-in graphs that fix it.
_LEGACY_ONE_ROUND = ("best_of_n", "self_consistency")


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
    """Candidates per round and rounds as the graph ran them (best_of_n: one round); None when unknown."""
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
    # This invocation's concept memory counts, ``{"retrieved", "written"}``; None without memory.
    memory: dict[str, int] | None = None

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
        return out
