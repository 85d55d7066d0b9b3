"""WebShop policies, the agent side: how an episode picks its next action.

* ``react``: the model writes every action (``WebShopTask``'s chat and few-shot formats).
* ``choice``: the model writes the search query under a regex constraint, so the action
  is always a well-formed ``search[...]``; on every other page it chooses among the
  page's clickables by likelihood (``Backend.score``), as the original WebShop imitation
  agent did. Candidates sample the choice distribution at the run's temperature, seeded
  per candidate; temperature 0 takes the argmax.
* ``first``: search with the instruction text, click the first result, buy. No model
  calls: the floor every report can show.

The world (``_env``) never imports this module; it only reads the env's public surface.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from agentloop.backends import (
    Backend,
    ChatRequest,
    ChatResponse,
    Completion,
    Constraint,
    Message,
    ScorePrompt,
    ScoreResponse,
    Usage,
)
from agentloop.errors import AgentloopError
from agentloop.graphs import LoopContext, StepFn
from agentloop.webshop._env import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, PREV_PAGE, WebShopEnv

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
_RESULTS_PAGE = re.compile(r"^Page (\d+) \(Total results", re.MULTILINE)


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


# --- the channel: a step that carries a constraint, or a scripted answer -------------------


@dataclass(frozen=True, slots=True)
class _Directive:
    constraint: Constraint | None = None
    answer: str | None = None
    max_tokens: int | None = None


# Set around one ``step`` call, in the rollout's own asyncio task: concurrent rollouts
# each see only their own directive.
_DIRECTIVE: ContextVar[_Directive | None] = ContextVar("webshop_policy_directive", default=None)


class _Channel(Backend):
    """The run's backend, seen through a policy: a step may carry a constraint or a scripted answer.

    Why a wrapper: a rollout asks the model only through the graph's ``step`` (so every
    request is budgeted and counted, and the first one holds the candidate slot), and
    ``step`` takes messages alone. The policy sets a directive around its call; this
    applies it to exactly that request and passes everything else through unchanged.
    """

    def __init__(self, inner: Backend):
        self.inner = inner
        self.id = inner.id
        self.constraint_kinds = inner.constraint_kinds
        self.supports_score = inner.supports_score
        self.episodes = 0  # numbers this run's episodes, for their sampling seeds

    async def generate(self, request: ChatRequest) -> ChatResponse:
        d = _DIRECTIVE.get()
        if d is None:
            return await self.inner.generate(request)
        if d.answer is not None:
            # A scripted action (the `first` floor): no model call, so nothing is spent.
            usage = Usage(llm_calls=1, cached=True, cost_usd=0.0)
            return ChatResponse([Completion(d.answer, "stop", 0)], usage, model="policy:first")
        changes: dict[str, object] = {"constraint": d.constraint, "stop": ()}
        if d.max_tokens is not None:
            changes["max_tokens"] = min(request.max_tokens, d.max_tokens)
        return await self.inner.generate(request.replace(**changes))

    async def score(self, prompt: ScorePrompt, continuations: Sequence[str]) -> ScoreResponse:
        return await self.inner.score(prompt, continuations)


class _Session:
    """One episode's access to the model inside a graph run: budgeted steps and scores, a seeded sampler."""

    def __init__(self, step: StepFn):
        from langgraph.runtime import get_runtime

        try:
            ctx = get_runtime(LoopContext).context
        except Exception as exc:  # outside a graph there is no budget to charge
            raise AgentloopError(
                "WebShop's choice and first policies run inside a graph (run_task / agentloop run)"
            ) from exc
        if not isinstance(ctx, LoopContext):
            raise AgentloopError("WebShop's choice and first policies need the graphs' LoopContext")
        if not isinstance(ctx.backend, _Channel):
            ctx.backend = _Channel(ctx.backend)
        self.ctx = ctx
        self.channel: _Channel = ctx.backend
        self._step = step
        # Numbered in start order (rollouts start in order, before their first await), so
        # the same run seed gives every candidate the same sampler again.
        k = self.channel.episodes
        self.channel.episodes += 1
        seed = ctx.config.seed
        self.rng = random.Random(f"webshop-choice/{seed}/{k}") if seed is not None else random.Random()
        self.temperature = ctx.config.temperature

    async def step(self, prompt: str, directive: _Directive) -> str | None:
        token = _DIRECTIVE.set(directive)
        try:
            return await self._step([Message("user", prompt)])
        finally:
            _DIRECTIVE.reset(token)

    async def score(self, prompt: str, continuations: Sequence[str]) -> ScoreResponse | None:
        """One budgeted ``score`` call; ``None`` when the budget has no room.

        It generates nothing, so it spends no completion tokens; the prompt and every
        continuation are prefilled, so all of them count as prompt tokens.
        """
        budget = self.ctx.budget
        r = budget.reserve(1, 1, counts_candidates=False)
        if r is None:
            return None
        try:
            response = await self.channel.score(prompt, continuations)
        except Exception:
            budget.fail(r)
            raise
        u = response.usage
        spent = Usage(
            prompt_tokens=u.prompt_tokens + u.completion_tokens,
            latency_s=u.latency_s,
            llm_calls=1,
            cost_usd=u.cost_usd,
        )
        budget.settle(r, ChatResponse([], spent, model=response.model))
        return response

    def pick(self, scores: ScoreResponse) -> int:
        """Argmax at temperature 0; else a draw from the softmax of mean log-likelihoods / T."""
        if self.temperature == 0.0:
            return scores.best(normalize=True)
        probs = scores.probs(normalize=True, temperature=self.temperature)
        return self.rng.choices(range(len(probs)), weights=probs)[0]


# --- policies ------------------------------------------------------------------------------


class ChoicePolicy:
    """Constrained query on the search page; likelihood choice among the clickables everywhere else.

    ``head`` is the round's prompt (instruction, lessons, IAD or self-refine notes): every
    query and every choice is conditioned on it, so feedback and memory act on the policy.

    Which clickables compete: all of the page's, except moves back to a page this episode
    has seen (``Back to Search`` and ``< Prev`` once a query was run, ``Next >`` to a seen
    page), which only make a greedy policy loop; the information sub-pages
    (Description, Features, Reviews), which it cannot read for the choice it returns to;
    and on an item page it settles one option group at a time, in page order, before
    ``Buy Now`` is offered, so every option the instruction names gets chosen. When
    nothing is left, all the page's clickables compete.

    Choices use the per-token mean log-likelihood: totals fall with every token, so they
    would rank "Next >" above any product title and short titles above long ones whatever
    they say; the mean asks how well each token fits the instruction.
    """

    def __init__(self, step: StepFn, head: str):
        self.session = _Session(step)
        self.head = head.rstrip() + "\n"
        self.seen: set[tuple[str, int]] = {("search", 0)}
        self.settled: set[tuple[str, str]] = set()  # (asin, option group) chosen on item pages
        self._group: tuple[str, str] | None = None

    async def act(self, env: WebShopEnv, observation: str) -> str | None:
        """The next action (always one the page accepts), or ``None`` when the budget ran out."""
        if env.has_search_bar:
            return await self._search()
        where = _where(env, observation)
        self.seen.add(where)
        self._group = None
        cands = self.candidates(env, observation)
        i = 0
        if len(cands) > 1:
            prompt = f"{self.head}Page:\n{observation}\nAction: click["
            scores = await self.session.score(prompt, [f"{label}]" for label, _ in cands])
            if scores is None:
                return None
            i = self.session.pick(scores)
        if self._group is not None:
            self.settled.add(self._group)
        return f"click[{cands[i][1]}]"

    def candidates(self, env: WebShopEnv, observation: str) -> list[tuple[str, str]]:
        """``(text scored, clickable)`` pairs for this page; the clickable is what the env accepts."""
        clickables = env.clickables()
        out: list[tuple[str, str]] = []
        if env.page == "results":
            page = _where(env, observation)[1]
            for c in clickables:
                if c in (BACK_TO_SEARCH, PREV_PAGE):
                    continue
                if c == NEXT_PAGE:
                    if ("results", page + 1) not in self.seen:
                        out.append((c, c))
                    continue
                product = env.catalog.products.get(c)
                out.append((product.name if product is not None else c, c))
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
        directive = _Directive(constraint=Constraint.regex(QUERY_PATTERN), max_tokens=64)
        text = await self.session.step(f"{self.head}Action: search[", directive)
        if text is None:
            return None
        # The constraint makes this a no-op on a backend that honours it; it keeps the
        # action well-formed should one return text that does not match.
        words = _QUERY_WORD.findall(text.split("]", 1)[0].lower())[:MAX_QUERY_WORDS]
        return f"search[{' '.join(words) or 'products'}]"


class FirstPolicy:
    """Search the instruction text, click the first result, Buy Now: the floor, no model calls.

    The first action still passes through the graph's ``step`` (as a scripted answer that
    spends nothing) because the graph makes a candidate of a rollout only once it asked
    ``step``; it counts as one cached call.
    """

    def __init__(self, step: StepFn, instruction: str):
        self.session = _Session(step)
        self.query = " ".join(instruction.lower().split())
        self.started = False

    async def act(self, env: WebShopEnv, observation: str) -> str | None:
        if env.has_search_bar:
            action = f"search[{self.query}]"
            if not self.started:
                self.started = True
                return await self.session.step(action, _Directive(answer=action))
            return action
        if env.page == "results":
            products = [c for c in env.clickables() if c in env.catalog.products]
            return f"click[{products[0]}]" if products else f"click[{BACK_TO_SEARCH}]"
        if env.page == "item":
            return f"click[{BUY_NOW}]"
        return f"click[{PREV_PAGE}]"


def _where(env: WebShopEnv, observation: str) -> tuple[str, int]:
    """The page as a key for 'seen': results pages by number, item pages by product."""
    if env.page == "results":
        m = _RESULTS_PAGE.search(observation)
        return ("results", int(m.group(1)) if m else 1)
    if env.page == "item" and env.product is not None:
        return (f"item:{env.product.asin}", 0)
    return (env.page, 0)
