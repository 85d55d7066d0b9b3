"""The adaptive graph's parts: geometric waves up to a per-task cap, and refine-or-resample between waves.

``adaptive`` spends per task from the verifier's signal as it goes. Each round is one
*wave*: the first is small (1 candidate, decoded greedily: the single best guess is the
model's mode), and the run stops as soon as a candidate passes
(or the best score reaches ``threshold``), through the usual stopping evaluator. Otherwise
the next wave doubles (1, 2, 4, …) until the waves add up to the cap, ``n``. Between
waves, :func:`adapt` decides what the next wave samples from:

* **refine** (IAD's contrast prompt, :func:`nodes.refine`) when the last wave was
  *informative*: some candidate earned partial credit (0 < score < 1) or its verdict
  carried a message;
* **fresh samples** of the original prompt otherwise (all-or-nothing verdicts with no
  message tell a refine prompt nothing).

Both parts can be switched off for ablation, as graphs of their own: ``adaptive_sample``
always samples afresh, and ``adaptive_flat`` keeps every wave at one candidate. A given
``n_schedule`` replaces the geometric waves (``--n-schedule 2,4,8``: start with two).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from agentloop.graphs import nodes
from agentloop.graphs.context import LoopConfig, LoopContext
from agentloop.graphs.state import LoopState
from agentloop.graphs.task import Candidate

__all__ = ["adapt", "flat_waves", "geometric_waves", "informative", "resample", "waves_config"]


def geometric_waves(cap: int, first: int = 1) -> tuple[int, ...]:
    """Wave sizes first, 2·first, 4·first, … whose sum is ``cap`` (the last wave is cut to fit)."""
    waves: list[int] = []
    size, total = max(first, 1), 0
    while total < cap:
        waves.append(min(size, cap - total))
        total += waves[-1]
        size *= 2
    return tuple(waves)


def flat_waves(cap: int) -> tuple[int, ...]:
    """One candidate per wave up to ``cap``: the ablation of geometric growth."""
    return (1,) * cap


def waves_config(cfg: LoopConfig, *, geometric: bool = True) -> LoopConfig:
    """``cfg`` with its waves as the schedule: a given ``n_schedule`` as is, else waves up to ``n``.

    ``rounds`` becomes the number of waves, and ``n`` the cap (their sum), so the stored
    config says what a task could have spent at most.
    """
    if cfg.n_schedule:
        waves = tuple(cfg.n_schedule)
    else:
        waves = geometric_waves(cfg.n) if geometric else flat_waves(cfg.n)
    # One first candidate is the single best guess, so it is decoded greedily: one sample
    # at temperature 0.7 scored below greedy on every suite measured (docs/graphs.md).
    first = 0.0 if waves[0] == 1 else cfg.first_temperature
    return cfg.replace(n=sum(waves), rounds=len(waves), n_schedule=waves, first_temperature=first)


def informative(candidates: Sequence[Candidate]) -> bool:
    """Whether a wave's verdicts can steer a refinement: partial credit, or a verifier message."""
    for c in candidates:
        v = c.verdict
        if v is None or c.parse_error:
            continue
        if 0.0 < v.score < 1.0 or v.feedback.strip():
            return True
    return False


async def adapt(state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    """Between waves: IAD's refine feedback if the last wave was informative, else a fresh sample."""
    if informative(state.get("pending") or []):
        return await nodes.refine(state, runtime)
    return {"feedback": None}


async def resample(state: LoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    """Between waves: always sample the original prompt afresh (``adaptive_sample``)."""
    return {"feedback": None}
