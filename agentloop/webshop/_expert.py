"""A scripted expert that knows the goal: it proves each goal can be solved through the pages.

It searches the way an agent would (the instruction's words), pages through the
results for the goal's product, falls back to searching the product's title, picks
the option values that best match the goal's options, and buys. It acts only
through :meth:`WebShopEnv.step`, so every page and action it uses is a real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agentloop.webshop._catalog import Goal
from agentloop.webshop._env import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, StepResult, WebShopEnv
from agentloop.webshop._reward import fuzzy_score, normalize_color

__all__ = ["Episode", "Turn", "expert_search_query", "run_expert"]

_PRICE_SUFFIX = re.compile(r",? and price lower than [\d.]+ dollars\s*$")


@dataclass(frozen=True, slots=True)
class Turn:
    action: str
    observation: str
    valid: bool = True


@dataclass(slots=True)
class Episode:
    """One episode: the instruction, every action and what it returned, and how it ended."""

    instruction: str
    first_observation: str
    turns: list[Turn] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    last: StepResult | None = None

    def record(self, action: str, result: StepResult) -> StepResult:
        self.turns.append(Turn(action, result.observation, result.valid))
        self.reward, self.done, self.last = result.reward, result.done, result
        return result

    def to_dict(self) -> dict[str, Any]:
        last = self.last
        return {
            "instruction": self.instruction,
            "turns": [
                {"action": t.action, "observation": t.observation, "valid": t.valid} for t in self.turns
            ],
            "reward": self.reward,
            "done": self.done,
            "purchase": last.purchase.to_dict() if last is not None and last.purchase is not None else None,
            "reward_info": last.reward_info.to_dict()
            if last is not None and last.reward_info is not None
            else None,
        }


def expert_search_query(goal: Goal) -> str:
    """The instruction without its price clause: what a shopper would type."""
    return _PRICE_SUFFIX.sub("", goal.instruction_text)


def run_expert(env: WebShopEnv, goal: Goal | int, *, max_pages: int = 5) -> Episode:
    """Play one episode for ``goal`` with full knowledge of it; returns the episode."""
    first = env.reset(goal)
    g = env.goal
    assert g is not None
    ep = Episode(g.instruction_text, first)
    for query in (expert_search_query(g), g.name):
        if ep.done:
            return ep
        if not env.has_search_bar:
            ep.record(f"click[{BACK_TO_SEARCH}]", env.step(f"click[{BACK_TO_SEARCH}]"))
        ep.record(f"search[{query}]", env.step(f"search[{query}]"))
        for _ in range(max_pages):
            if ep.done:
                return ep
            clickables = env.clickables()
            if g.asin in clickables:
                return _buy(env, g, ep)
            if NEXT_PAGE not in clickables:
                break
            ep.record(f"click[{NEXT_PAGE}]", env.step(f"click[{NEXT_PAGE}]"))
    return ep


def _buy(env: WebShopEnv, goal: Goal, ep: Episode) -> Episode:
    ep.record(f"click[{goal.asin}]", env.step(f"click[{goal.asin}]"))
    product = env.catalog.products[goal.asin]
    for wanted in goal.goal_options:
        value = _best_option(product.options, wanted)
        if value is not None and not ep.done:
            ep.record(f"click[{value}]", env.step(f"click[{value}]"))
    if not ep.done:
        ep.record(f"click[{BUY_NOW}]", env.step(f"click[{BUY_NOW}]"))
    return ep


def _best_option(options: Any, wanted: str) -> str | None:
    best, best_score = None, -1
    for values in options.values():
        for v in values:
            score = 101 if v == wanted else fuzzy_score(normalize_color(v), normalize_color(wanted))
            if score > best_score:
                best, best_score = v, score
    return best
