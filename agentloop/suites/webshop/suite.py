"""The ``webshop`` suite for ``agentloop run``: WebShop goals as rollout tasks, scored by the true reward.

Each task is one goal of the catalog (``--data`` for the official files, the shipped
catalog otherwise); each candidate is a whole episode. The run steers with the
``rules`` verifier (gold-free) or ``oracle`` (the true reward, an upper bound), and every
final episode is scored with the official reward whichever verifier chose it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentloop.errors import AgentloopError, did_you_mean
from agentloop.suites._base import (
    CannotRescoreError,
    Score,
    Suite,
    SuiteError,
    SuiteItem,
    SuiteOptions,
    content_hash,
)
from agentloop.suites.webshop._names import VERIFIERS

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult
    from agentloop.types import Backend

__all__ = ["UnknownWebShopVerifierError", "WebShopSuite"]


class UnknownWebShopVerifierError(SuiteError):
    def __init__(self, name: str, known: list[str]):
        why = " ('exec' runs SQL: it is Text2SQL's verifier)" if name == "exec" else ""
        super().__init__(did_you_mean("webshop verifier", name, known, why=why))


class WebShopSuite(Suite):
    """WebShop episodes: ``avg_reward`` (mean official reward) and ``success_rate`` (reward 1.0)."""

    name = "webshop"
    default_verifier = "rules"
    verifiers = VERIFIERS
    upper_bounds = ("oracle",)
    scores_reward = True
    # An episode is many requests: on the embedded model 3 goals of `--n 2 --rounds 2` take ~6 minutes.
    default_limit = 3
    # A step's reply is one Thought and one Action; a small model goes on to invent the
    # next observation or a second turn, which only costs tokens.
    stop = ("\nObservation", "\nThought:")

    def check_verifier(self, verifier: str) -> str:
        if verifier not in self.verifiers:
            raise UnknownWebShopVerifierError(verifier, list(self.verifiers))
        return verifier

    def items(self, spec: SuiteOptions, backend: Backend | None = None) -> list[SuiteItem]:
        from agentloop.suites.webshop.policies import resolve_policy
        from agentloop.suites.webshop.task import load_webshop_tasks
        from agentloop.webshop import DEFAULT_MAX_STEPS, load_catalog

        verifier = spec.verifier or self.default_verifier
        if verifier not in VERIFIERS:
            raise UnknownWebShopVerifierError(verifier, list(VERIFIERS))
        # auto: choice for backends that score and constrain (in-process models), else react.
        policy = resolve_policy(spec.policy, backend)
        catalog = load_catalog(spec.data)
        tasks = load_webshop_tasks(
            limit=spec.limit,
            offset=spec.offset,
            verifier=verifier,  # type: ignore[arg-type]  # checked against VERIFIERS above
            max_steps=spec.max_steps if spec.max_steps is not None else DEFAULT_MAX_STEPS,
            catalog=catalog,
            prompt_format=self.prompt_format(spec),  # type: ignore[arg-type]
            policy=policy,
        )
        if not tasks:
            raise AgentloopError(
                f"--offset {spec.offset} --limit {spec.limit} selects no goals from a catalog of "
                f"{len(catalog.goals)}"
            )
        source = spec.data or "packaged:webshop"
        return [
            SuiteItem(
                task=t,
                index=t.goal.index,
                question=t.instruction,
                source=source,
                # The goal (instruction, target product, attributes, options, price) defines the task.
                content_hash=content_hash(["webshop", t.goal.to_dict()]),
            )
            for t in tasks
        ]

    def stored_answer(self, item: SuiteItem, text: str, answer: str | None) -> Any:
        """A stored episode, replayed from its actions in a fresh environment (no model needed)."""
        import json

        try:
            data = json.loads(answer) if answer else None
        except ValueError:
            data = None
        actions = data.get("actions") if isinstance(data, dict) else None
        if not isinstance(actions, list):
            raise CannotRescoreError("a stored WebShop episode keeps no actions to replay")
        ended = data.get("ended") if isinstance(data, dict) else None
        return item.task.replay([str(a) for a in actions], ended)  # type: ignore[attr-defined]

    async def score(self, item: SuiteItem, result: LoopResult) -> Score:
        from agentloop.suites.webshop.task import Outcome, task_outcome

        reward, success = task_outcome(result)
        outcome = result.answer
        if not isinstance(outcome, Outcome):
            return Score(False, "no episode", reward=0.0)
        if outcome.purchase is None:
            return Score(False, f"no purchase (the episode ended: {outcome.ended})", reward=0.0)
        return Score(success, reward=reward)
