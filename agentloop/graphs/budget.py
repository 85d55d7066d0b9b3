"""Exact compute budgets for a run: candidates, generated tokens and wall time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from agentloop.types import ChatResponse, Completion, LoopUsage, combine_usage

__all__ = ["Budget", "BudgetTracker", "Exhausted", "LoopUsage", "Reservation"]

Exhausted = Literal["candidates", "tokens", "wall_time"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Caps for one run; ``None`` means no cap.

    ``max_tokens`` caps *generated* (completion) tokens. Those can be held exactly,
    because every request's ``max_tokens`` is cut to what is left; prompt tokens are
    reported but cannot be capped ahead of a call, since only the backend knows how
    many tokens a prompt is. ``min_tokens`` is the smallest ``max_tokens`` worth
    sending: with less left, the run stops instead of asking for a stub answer.
    """

    max_candidates: int | None = None
    max_tokens: int | None = None
    max_wall_s: float | None = None
    min_tokens: int = 16

    def __post_init__(self) -> None:
        for name in ("max_candidates", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value}")
        if self.max_wall_s is not None and self.max_wall_s < 0:
            raise ValueError(f"max_wall_s must be >= 0 or None, got {self.max_wall_s}")
        if self.min_tokens < 1:
            raise ValueError(f"min_tokens must be >= 1, got {self.min_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Reservation:
    """Room held for one request: send at most ``n`` candidates of ``max_tokens`` each."""

    n: int
    max_tokens: int
    counts_candidates: bool
    call: int


class BudgetTracker:
    """Reserves room before each request and records what it actually spent.

    Reservations count against the caps while a request is in flight, so concurrent
    requests can never overshoot together. Everything runs on one event loop and no
    method awaits, so each call is atomic. The guarantee assumes the backend honours
    ``max_tokens`` (the contract); completions beyond ``n`` are dropped and not counted.
    """

    def __init__(self, budget: Budget | None = None, *, clock: Callable[[], float] = time.perf_counter):
        self.budget = budget or Budget()
        self._clock = clock
        self._start = clock()
        self.usage = LoopUsage()
        self._held_candidates = 0
        self._held_tokens = 0
        self._calls = 0

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._start

    @property
    def candidates_left(self) -> int | None:
        cap = self.budget.max_candidates
        return None if cap is None else cap - self.usage.candidates - self._held_candidates

    @property
    def tokens_left(self) -> int | None:
        cap = self.budget.max_tokens
        return None if cap is None else cap - self.usage.completion_tokens - self._held_tokens

    def exhausted(self, max_tokens: int = 1, *, counts_candidates: bool = True) -> Exhausted | None:
        """Which cap stops a request for one candidate of ``max_tokens`` now, if any."""
        b = self.budget
        if b.max_wall_s is not None and self.elapsed_s >= b.max_wall_s:
            return "wall_time"
        left = self.candidates_left
        if counts_candidates and left is not None and left < 1:
            return "candidates"
        tokens = self.tokens_left
        if tokens is not None and tokens < min(b.min_tokens, max_tokens):
            return "tokens"
        return None

    def reserve(self, n: int, max_tokens: int, *, counts_candidates: bool = True) -> Reservation | None:
        """Hold room for up to ``n`` candidates of up to ``max_tokens``; ``None`` if none fits.

        Candidates keep their full ``max_tokens`` while it fits, and fewer of them are
        sent instead; only a lone last candidate gets a shorter ``max_tokens``.
        """
        if n < 1 or max_tokens < 1:
            raise ValueError(f"n and max_tokens must be >= 1, got n={n}, max_tokens={max_tokens}")
        if self.exhausted(max_tokens, counts_candidates=counts_candidates) is not None:
            return None
        k, m = n, max_tokens
        left = self.candidates_left
        if counts_candidates and left is not None:
            k = min(k, left)
        tokens = self.tokens_left
        if tokens is not None:
            if tokens >= m:
                k = min(k, tokens // m)
            else:
                k, m = 1, tokens
        self._held_candidates += k if counts_candidates else 0
        self._held_tokens += k * m
        call = self._calls
        self._calls += 1
        return Reservation(n=k, max_tokens=m, counts_candidates=counts_candidates, call=call)

    def settle(self, reservation: Reservation, response: ChatResponse) -> list[Completion]:
        """Record a finished request; returns the completions it may keep (at most ``n``)."""
        self._release(reservation)
        kept = list(response.completions[: reservation.n])
        u = response.usage
        usage = self.usage
        usage.llm_calls += 1
        usage.cached_calls += int(u.cached)
        if reservation.counts_candidates:
            usage.candidates += len(kept)
        usage.prompt_tokens += u.prompt_tokens
        # Trust the call's usage, except: completions beyond n were not asked for and are
        # dropped uncounted; and some servers leave usage empty, where the per-completion
        # counts are the next best thing. A cached answer really cost nothing: its zeros stand.
        extra = len(response.completions) > reservation.n and _sum_tokens(kept) > 0
        if extra or not (u.completion_tokens or u.cached):
            usage.completion_tokens += _sum_tokens(kept)
        else:
            usage.completion_tokens += u.completion_tokens
        if u.cost_usd is not None:
            usage.cost_usd = (usage.cost_usd or 0.0) + u.cost_usd
        return kept

    def claim_candidate(self) -> bool:
        """Count one candidate that made no model call (a scripted episode); False without room."""
        if self.exhausted(1) is not None:
            return False
        self.usage.candidates += 1
        return True

    def fail(self, reservation: Reservation) -> None:
        """Record a request that raised. Its tokens are unknown and count as 0."""
        self._release(reservation)
        self.usage.llm_calls += 1
        self.usage.failed_calls += 1

    def snapshot(self) -> LoopUsage:
        return replace(self.usage, wall_s=self.elapsed_s)

    def _release(self, r: Reservation) -> None:
        self._held_candidates -= r.n if r.counts_candidates else 0
        self._held_tokens -= r.n * r.max_tokens

    def __repr__(self) -> str:
        return f"<BudgetTracker {self.budget} spent={self.usage}>"


def _sum_tokens(completions: Sequence[Completion]) -> int:
    return sum(c.completion_tokens for c in completions)


def usage_since(before: LoopUsage, after: LoopUsage) -> LoopUsage:
    """What was spent between two snapshots of one tracker."""
    return combine_usage(after, before, -1)
