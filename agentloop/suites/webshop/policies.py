"""WebShop policies, the agent side: how an episode picks its next action.

* ``react``: the model writes every action (``WebShopTask``'s chat and few-shot formats).
* ``choice``: the model writes the search query under a regex constraint, so the action
  is always a well-formed ``search[...]``; on every other page it chooses among the
  page's clickables by likelihood (``Backend.score``), as the original WebShop imitation
  agent did. Candidates sample the choice distribution at the run's temperature, seeded
  per candidate; temperature 0 takes the argmax.
* ``first``: search with the instruction text, click the first result, buy. No model
  calls: the floor every report can show.

The world (:mod:`agentloop.webshop`) never imports this module; it only reads the env's public surface.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Literal

from agentloop.backends import Backend, Constraint, Message, ScoreResponse
from agentloop.errors import AgentloopError
from agentloop.graphs import StepFn
from agentloop.webshop import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, PREV_PAGE, WebShopEnv

__all__ = [
    "POLICIES",
    "QUERY_PATTERN",
    "ChoicePolicy",
    "FirstPolicy",
    "PolicyName",
    "resolve_policy",
]

PolicyName = Literal["react", "choice", "first"]
POLICIES: tuple[str, ...] = ("react", "choice", "first")
MAX_QUERY_WORDS = 16
#: A short lowercase query of words (hyphens allowed inside), closed by ``]``: whatever the
#: model samples under it, ``search[<query>]`` is a well-formed action. At most
#: ``MAX_QUERY_WORDS`` words of at most 20 characters.
QUERY_PATTERN = rf"[a-z0-9]{{1,20}}([ -][a-z0-9]{{1,20}}){{0,{MAX_QUERY_WORDS - 1}}}\]"
_QUERY_WORD = re.compile(r"[a-z0-9]+")


def resolve_policy(policy: str, backend: Backend | None) -> PolicyName:
    """``auto`` is ``choice`` for backends that can score and constrain (in-process models), else ``react``.

    ``choice`` on a backend without both capabilities raises before anything is sent.
    """
    if policy == "auto":
        able = backend is not None and backend.supports_score and backend.supports_constraints
        return "choice" if able else "react"
    if policy not in POLICIES:
        raise AgentloopError(f"unknown webshop policy {policy!r}; use auto, {', '.join(POLICIES)}")
    if policy == "choice" and backend is not None:
        missing = [
            what
            for what, ok in (("score", backend.supports_score), ("constraints", backend.supports_constraints))
            if not ok
        ]
        if missing:
            raise AgentloopError(
                f"--policy choice needs a backend with score and constraints; {backend.id} lacks "
                f"{' and '.join(missing)} (use transformers or vllm, or --policy react)"
            )
    return policy  # type: ignore[return-value]


# --- the session: one episode's budgeted model access and its seeded sampler ---------------


class _Session:
    """One episode's access to the model: budgeted steps and scores, a seeded sampler.

    Everything goes through the graph's :class:`~agentloop.graphs.StepFn`, so every call is
    charged to the task's budget and counted, as the ReAct policy's requests are.
    """

    def __init__(self, step: StepFn):
        self._step = step
        # The rollout's own seed: candidates of a round draw different episodes, and a rerun
        # with the same run seed draws the same ones.
        seed = getattr(step, "seed", None)
        self.rng = random.Random(seed) if seed is not None else random.Random()
        self.temperature = float(getattr(step, "temperature", 0.0))

    async def step(self, prompt: str, constraint: Constraint, max_tokens: int) -> str | None:
        return await self._step([Message("user", prompt)], constraint=constraint, max_tokens=max_tokens)

    async def score(self, prompt: str, continuations: Sequence[str]) -> ScoreResponse | None:
        """One budgeted ``score`` call; ``None`` when the budget has no room."""
        return await self._step.score(prompt, continuations)

    def pick(self, values: Sequence[float]) -> int:
        """Argmax at temperature 0; else a draw from the softmax of ``values / T``."""
        if self.temperature == 0.0:
            return max(range(len(values)), key=values.__getitem__)
        top = max(values)
        weights = [math.exp((v - top) / self.temperature) for v in values]
        return self.rng.choices(range(len(values)), weights=weights)[0]


# --- policies ------------------------------------------------------------------------------


class ChoicePolicy:
    """Constrained query on the search page; likelihood choice among the clickables everywhere else.

    ``head`` is the round's prompt (instruction, lessons, IAD or self-refine notes): every
    query and every choice is conditioned on it, so feedback and memory act on the policy.

    Which clickables compete: on a results page, the products on it (not ``Back to
    Search``, ``< Prev`` or ``Next >``, which only make a greedy policy loop); on an item
    page, one option group at a time, in page order, before ``Buy Now`` is offered, so
    every option the instruction names gets chosen. The information sub-pages
    (Description, Features, Reviews) are never entered. When nothing is left, all the
    page's clickables compete.

    Choices are valued per token (totals fall with every token, so short titles would win
    whatever they say) and calibrated against each choice's prior: see :meth:`_values`.
    """

    def __init__(self, step: StepFn, head: str):
        self.session = _Session(step)
        self.head = head.rstrip() + "\n"
        self.settled: set[tuple[str, str]] = set()  # (asin, option group) chosen on item pages
        self._group: tuple[str, str] | None = None
        self._priors: dict[tuple[str, tuple[str, ...]], ScoreResponse] = {}

    async def act(self, env: WebShopEnv, observation: str) -> str | None:
        """The next action (always one the page accepts), or ``None`` when the budget ran out."""
        if env.has_search_bar:
            return await self._search()
        self._group = None
        cands = self.candidates(env, observation)
        i = 0
        if len(cands) > 1:
            values = await self._values(env, observation, [f"{t}\n" for t, _ in cands])
            if values is None:
                return None
            i = self.session.pick(values)
        if self._group is not None:
            self.settled.add(self._group)
        return f"click[{cands[i][1]}]"

    async def _values(self, env: WebShopEnv, observation: str, conts: list[str]) -> list[float] | None:
        """Each choice's value: per token, how much the instruction raises its log-likelihood.

        That is the pointwise mutual information of choice and instruction (the calibration
        of Holtzman et al., 2021, "Surface Form Competition"): the likelihood given the
        instruction, less the likelihood given the same frame without it, per token. Plain
        likelihood favours whatever is likely anyway (generic titles, common option values);
        on the 116 shipped goals the calibrated choice scored higher (docs/webshop.md).
        Pages without such a frame (sub-pages) use the mean log-likelihood given the page.
        """
        scores = await self.session.score(self._choice_prompt(env, observation), conts)
        if scores is None:
            return None
        frame = self._frame(env)
        if frame is None:
            return [c.mean_logprob for c in scores]
        key = (frame, tuple(conts))
        prior = self._priors.get(key)
        if prior is None:
            prior = await self.session.score(frame, conts)
            if prior is None:
                return None
            self._priors[key] = prior
        return [(c.logprob - u.logprob) / max(1, c.num_tokens) for c, u in zip(scores, prior, strict=True)]

    def _frame(self, env: WebShopEnv) -> str | None:
        """The choice prompt without the instruction: what the prior of each choice is read from."""
        if env.page == "results":
            return "Product: "
        if env.page == "item" and env.product is not None and self._group is not None:
            return f"Product: {env.product.name}\n{self._group[1]}: "
        return None

    def _choice_prompt(self, env: WebShopEnv, observation: str) -> str:
        """What a choice is conditioned on: the instruction (with lessons and notes), not the page.

        A product is chosen by how well its title follows the instruction, an option by how
        well its value follows the instruction and the product; the page itself is left
        out, because a small model then favours what it can copy from the page (the first
        title) over what fits. Measured on the 116 shipped goals (docs/webshop.md).
        """
        if env.page == "results":
            return f"{self.head}Product: "
        if env.page == "item" and env.product is not None and self._group is not None:
            return f"{self.head}Product: {env.product.name}\n{self._group[1]}: "
        return f"{self.head}Page:\n{observation}\nAction: click["

    def candidates(self, env: WebShopEnv, observation: str) -> list[tuple[str, str]]:
        """``(text scored, clickable)`` pairs for this page; the clickable is what the env accepts."""
        clickables = env.clickables()
        out: list[tuple[str, str]] = []
        if env.page == "results":
            for c in clickables:
                if c in (BACK_TO_SEARCH, PREV_PAGE):
                    continue
                if c == NEXT_PAGE:
                    continue  # products are chosen from the first page of results
                product = env.catalog.products.get(c)
                # Title and price, as the results page lists them: the instruction names a price cap.
                label = f"{product.name} ({product.price_tag})" if product is not None else c
                out.append((label, c))
        elif env.page == "item" and env.product is not None:
            # Groups this policy settled, not env.selected_options: a value shared by two
            # groups selects the first, and the second would be offered again and again.
            asin = env.product.asin
            for name, values in env.product.options.items():
                if (asin, name) not in self.settled:
                    out = [(v, v) for v in values if v in clickables]
                    self._group = (asin, name)
                    break
            else:
                out = [(BUY_NOW, BUY_NOW)]
        elif PREV_PAGE in clickables:
            out = [(PREV_PAGE, PREV_PAGE)]  # a sub-page: back to the item
        return out or [(c, c) for c in clickables]

    async def _search(self) -> str | None:
        text = await self.session.step(f"{self.head}Action: search[", Constraint.regex(QUERY_PATTERN), 64)
        if text is None:
            return None
        # The constraint makes this a no-op on a backend that honours it; it keeps the
        # action well-formed should one return text that does not match.
        words = _QUERY_WORD.findall(text.split("]", 1)[0].lower())[:MAX_QUERY_WORDS]
        return f"search[{' '.join(words) or 'products'}]"


class FirstPolicy:
    """Search the instruction text, click the first result, Buy Now: the floor, no model calls."""

    def __init__(self, instruction: str):
        self.query = " ".join(instruction.lower().split())

    async def act(self, env: WebShopEnv, observation: str) -> str | None:
        if env.has_search_bar:
            return f"search[{self.query}]"
        if env.page == "results":
            products = [c for c in env.clickables() if c in env.catalog.products]
            return f"click[{products[0]}]" if products else f"click[{BACK_TO_SEARCH}]"
        if env.page == "item":
            return f"click[{BUY_NOW}]"
        return f"click[{PREV_PAGE}]"
