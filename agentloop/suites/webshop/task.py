"""WebShop as a graphs task: a ReAct-style episode per candidate, in a fresh environment each.

Each candidate is one whole episode (:class:`~agentloop.graphs.RolloutTask`): at every
step the model sees the instruction, its earlier actions and the current page, and
answers ``Thought: ...`` / ``Action: ...``. The named graphs then work unchanged:
greedy runs one episode, best_of_n runs n and keeps the one the verifier likes best,
iad feeds the best and worst episodes, their scores and the verifier's critique into
the next round.

The agent side of WebShop: the world (:mod:`agentloop.webshop`) never imports it. The
verifiers are in :mod:`agentloop.suites.webshop.verifiers`, the policies in
:mod:`agentloop.suites.webshop.policies`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentloop.graphs.task import (
    Candidate,
    Feedback,
    Rollout,
    RolloutTask,
    StepFn,
    Verdict,
    append_to_prompt,
    render_lessons,
)
from agentloop.prompts import render_prompt
from agentloop.suites.webshop.policies import POLICIES, ChoicePolicy, FirstPolicy, PolicyName
from agentloop.suites.webshop.verifiers import VERIFIERS, VerifierName, judge_purchase, oracle_verdict
from agentloop.types import Message
from agentloop.webshop import (
    DEFAULT_MAX_STEPS,
    Catalog,
    Goal,
    Purchase,
    RewardInfo,
    StepResult,
    WebShopEnv,
    load_catalog,
    parse_action,
)

__all__ = [
    "PROMPT_FORMATS",
    "Outcome",
    "PromptFormat",
    "WebShopTask",
    "load_webshop_tasks",
    "parse_react",
    "task_outcome",
    "webshop_metrics",
]

PromptFormat = Literal["chat", "fewshot"]
#: ``chat``: a system prompt and ReAct turns (Thought/Action) for instruction-tuned models.
#: ``fewshot``: a raw completion transcript (one solved example, then page/action lines
#: ending in ``Action:``) for small local models, which cannot hold the ReAct format.
PROMPT_FORMATS: tuple[str, ...] = ("chat", "fewshot")
_ACTION_LINE = re.compile(r"^\s*action\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_ANY_ACTION = re.compile(r"\b(search|click|think)\s*\[[^\]\n]*\]", re.IGNORECASE)


@dataclass(slots=True)
class Outcome:
    """A finished episode: its actions, how it ended, what was bought, and the true reward.

    ``reward`` and ``reward_info`` come from the hidden goal. The rule verifier and the
    prompts never read them; they are here for metrics and the oracle.
    """

    instruction: str
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    ended: Literal["purchase", "step_limit", "stuck", "budget"] = "budget"
    purchase: Purchase | None = None
    reward: float = 0.0
    reward_info: RewardInfo | None = None

    @property
    def success(self) -> bool:
        return self.reward_info is not None and self.reward_info.success

    def to_dict(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "actions": list(self.actions),
            # The page after each action: what a viewer shows step by step.
            "observations": list(self.observations),
            "ended": self.ended,
            "purchase": self.purchase.to_dict() if self.purchase is not None else None,
            "reward": self.reward,
            "success": self.success,
            "reward_info": self.reward_info.to_dict() if self.reward_info is not None else None,
        }


def parse_react(text: str) -> str:
    """The action in a ReAct reply: the first ``Action:`` line, else the first ``search[...]``/``click[...]``."""
    m = _ACTION_LINE.search(text)
    if m is not None:
        inner = _ANY_ACTION.search(m.group(1))
        return inner.group(0) if inner is not None else m.group(1)
    m2 = _ANY_ACTION.search(text)
    return m2.group(0) if m2 is not None else text.strip()


class WebShopTask(RolloutTask):
    """One WebShop goal as a graphs task. Each candidate is one episode in a fresh environment."""

    def __init__(
        self,
        catalog: Catalog,
        goal: Goal | int,
        *,
        verifier: VerifierName | Callable[[Outcome], Verdict] = "rules",
        max_steps: int = DEFAULT_MAX_STEPS,
        show_attrs: bool = False,
        max_invalid: int | None = 3,
        prompt_format: PromptFormat = "chat",
        policy: PolicyName = "react",
    ):
        if policy not in POLICIES:
            raise ValueError(f"unknown WebShop policy {policy!r}; use one of: {', '.join(POLICIES)}")
        # react: the model writes each action in ``prompt_format``; choice and first have
        # their own compact completion prompt (webshop_choice.txt), see webshop_policies.
        self.policy = policy
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(
                f"unknown WebShop prompt format {prompt_format!r}; use one of: {', '.join(PROMPT_FORMATS)}"
            )
        self.prompt_format = prompt_format
        self.stop = ("]", "\n") if prompt_format == "fewshot" and policy == "react" else ()
        if max_invalid is not None and max_invalid < 1:
            raise ValueError(f"max_invalid must be >= 1 or None, got {max_invalid}")
        self.catalog = catalog
        self.goal = catalog.goals[goal] if isinstance(goal, int) else goal
        self.id = f"webshop-{self.goal.index}"
        self.max_steps = max_steps
        self.show_attrs = show_attrs
        self.max_invalid = max_invalid
        if verifier == "rules":
            self._judge: Callable[[Outcome], Verdict] = judge_purchase
        elif verifier == "oracle":
            self._judge = oracle_verdict
        elif callable(verifier):
            self._judge = verifier
        else:
            raise ValueError(f"unknown WebShop verifier {verifier!r}; choose one of {', '.join(VERIFIERS)}")
        self.verifier = verifier if isinstance(verifier, str) else getattr(verifier, "__name__", "custom")

    @property
    def instruction(self) -> str:
        return self.goal.instruction_text

    @property
    def memory_query(self) -> str:
        """What concept memory searches with and abstracts under: the instruction.

        Not the prompt: in the few-shot format its fixed demonstration alone fills the
        lexical query, so every goal would ask for the same lessons.
        """
        return self.instruction

    def build_messages(self, lessons: Sequence[str] = ()) -> list[Message]:
        if self.policy != "react":
            return [Message("user", self._fewshot_head(lessons, template="webshop_choice"))]
        if self.prompt_format == "fewshot":
            return [Message("user", self._fewshot_head(lessons))]
        section = render_lessons(lessons)
        task = render_prompt("webshop_task", instruction=self.instruction)
        return [
            Message("system", render_prompt("webshop_system")),
            Message("user", f"{section}\n\n{task}" if section else task),
        ]

    def build_refine_messages(self, feedback: Feedback, lessons: Sequence[str] = ()) -> list[Message]:
        """The task prompt plus the best and weakest earlier episodes, their scores and the critique."""
        if self.policy != "react":
            return [Message("user", self._fewshot_head(lessons, feedback, template="webshop_choice"))]
        if self.prompt_format == "fewshot":
            return [Message("user", self._fewshot_head(lessons, feedback))]
        return append_to_prompt(self.build_messages(lessons), feedback.render("webshop"))

    async def rollout(self, step: StepFn, messages: Sequence[Message]) -> Rollout:
        env = WebShopEnv(self.catalog, max_steps=self.max_steps, show_attrs=self.show_attrs)
        observation = env.reset(self.goal)
        out = Outcome(self.instruction)
        history: list[str] = []
        # Few-shot transcript: (page, action) so far; older pages shrink to one-line summaries.
        pages: list[tuple[str, str]] = [("[Search]", "search page")]
        last: StepResult | None = None
        invalid_run = 0
        chooser: ChoicePolicy | FirstPolicy | None = None
        if self.policy == "choice":
            chooser = ChoicePolicy(step, messages[-1].content)
        elif self.policy == "first":
            chooser = FirstPolicy(self.instruction)
        while not env.done:
            if self.max_invalid is not None and invalid_run >= self.max_invalid:
                out.ended = "stuck"  # a policy that cannot form an action only burns compute
                break
            opener = ""
            reply: str | None
            if chooser is not None:
                reply = await chooser.act(env, observation)
            elif self.prompt_format == "fewshot":
                # The page decides the verb (the search page takes only search[...], every other
                # page only click[...]), so the prompt starts the action and the model fills it in.
                opener = "search[" if env.page == "search" else "click["
                transcript = _transcript(pages, out.actions) + f" {opener}"
                prompt_messages = [Message("user", messages[-1].content + transcript)]
                reply = await step(prompt_messages)
            else:
                prompt = render_prompt(
                    "webshop_step",
                    history="\n".join(history) or "(none yet)",
                    observation=observation,
                    left=str(self.max_steps - env.steps),
                )
                reply = await step(append_to_prompt(messages, prompt))
            if reply is None:
                break  # the budget ran out mid-episode: no purchase
            if chooser is not None:
                action = reply  # the policy's action, valid on this page
            elif opener:
                action = f"{opener}{reply.split(']', 1)[0].strip()}]"
            else:
                action = parse_react(reply)
            last = env.step(action)
            observation = last.observation
            out.actions.append(action)
            out.observations.append(observation)
            invalid_run = 0 if last.valid else invalid_run + 1
            summary = _summary(env, last, action)
            history.append(f"{len(history) + 1}. {_one_line(action)} -> {summary}")
            pages.append((observation if last.valid else f"(invalid action: {last.message})", summary))
        _record_ending(out, env, last)
        ending = {
            "purchase": "Outcome: bought the product above.",
            "step_limit": f"Outcome: no purchase; the {self.max_steps}-action limit ran out.",
            "stuck": f"Outcome: no purchase; stopped after {self.max_invalid} invalid actions in a row.",
            "budget": "Outcome: no purchase; the compute budget ran out.",
        }[out.ended]
        text = "\n".join(["Actions:", *history, ending])
        return Rollout(text=text, answer=out, finish_reason="stop" if out.ended == "purchase" else "length")

    def replay(self, actions: Sequence[str], ended: str | None = None) -> Outcome:
        """The episode ``actions`` make in a fresh environment, with its purchase and true reward.

        The environment is deterministic, so a stored episode's actions give back its outcome
        offline, with no model: how runs stored before candidates kept their official scores
        are rescored. ``ended`` (the stored episode's) says how an episode with no purchase ended.
        """
        env = WebShopEnv(self.catalog, max_steps=self.max_steps, show_attrs=self.show_attrs)
        env.reset(self.goal)
        out = Outcome(self.instruction)
        last: StepResult | None = None
        for action in actions:
            if env.done:
                break
            last = env.step(action)
            out.actions.append(action)
            out.observations.append(last.observation)
        if not _record_ending(out, env, last) and ended in ("stuck", "budget"):
            out.ended = ended  # type: ignore[assignment]
        return out

    def completion_prompt(self, messages: Sequence[Message]) -> str | None:
        raw = self.prompt_format == "fewshot" or self.policy != "react"
        return messages[-1].content if raw else None

    def _fewshot_head(
        self, lessons: Sequence[str], feedback: Feedback | None = None, *, template: str = "webshop_fewshot"
    ) -> str:
        # Lessons come before the goal's instruction, as general context, and feedback after
        # it: between "Instruction:" and the action, a small model copied a lesson's words
        # ("search[best price]") into its search instead of the instruction's.
        tips = "".join(
            f"Tip from earlier episodes: {_one_line(s, 200)}\n" for s in lessons if s and s.strip()
        )
        notes = _fewshot_feedback(feedback) + "\n" if feedback is not None else ""
        values = {"instruction": self.instruction, "notes": notes, "lessons": tips}
        if template == "webshop_fewshot":
            values["steps"] = ""
        return render_prompt(template, **values)

    async def verify(self, candidate: Candidate) -> Verdict:
        outcome = candidate.answer
        if not isinstance(outcome, Outcome):
            return Verdict.failed("no episode to judge")
        return self._judge(outcome)

    def answer_key(self, candidate: Candidate) -> Hashable | None:
        """What self-consistency votes on: the product bought and its options."""
        outcome = candidate.answer
        if not isinstance(outcome, Outcome) or outcome.purchase is None:
            return None
        return (outcome.purchase.asin, tuple(sorted(outcome.purchase.options.items())))


# --- suite helpers --------------------------------------------------------------------------


def load_webshop_tasks(
    data: str | Path | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
    verifier: VerifierName = "rules",
    max_steps: int = DEFAULT_MAX_STEPS,
    show_attrs: bool = False,
    max_invalid: int | None = 3,
    human_goals: bool = True,
    catalog: Catalog | None = None,
    prompt_format: PromptFormat = "chat",
    policy: PolicyName = "react",
) -> list[WebShopTask]:
    """Tasks for goals ``offset .. offset+limit`` (shuffled order) of a catalog; all share one catalog and index."""
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError("offset and limit must be >= 0")
    cat = catalog if catalog is not None else load_catalog(data, human_goals=human_goals)
    end = None if limit is None else offset + limit
    return [
        WebShopTask(
            cat,
            g,
            verifier=verifier,
            max_steps=max_steps,
            show_attrs=show_attrs,
            max_invalid=max_invalid,
            prompt_format=prompt_format,
            policy=policy,
        )
        for g in cat.goals[offset:end]
    ]


def task_outcome(result: Any) -> tuple[float, bool]:
    """A finished run's true ``(reward, success)``: the selected candidate's episode, 0 when none.

    ``result`` is a :class:`~agentloop.graphs.LoopResult` or its ``to_dict()``.
    """
    if isinstance(result, dict):
        answer = result.get("answer") or {}
        reward = float(answer.get("reward") or 0.0) if isinstance(answer, dict) else 0.0
        return reward, bool(isinstance(answer, dict) and answer.get("success"))
    outcome = getattr(result, "answer", None)
    if not isinstance(outcome, Outcome):
        return 0.0, False
    return outcome.reward, outcome.success


def webshop_metrics(results: Sequence[Any]) -> dict[str, float]:
    """``avg_reward`` and ``success_rate`` (reward 1.0) over finished runs, by :func:`task_outcome`."""
    if not results:
        return {"avg_reward": 0.0, "success_rate": 0.0, "tasks": 0}
    outcomes = [task_outcome(r) for r in results]
    return {
        "avg_reward": sum(r for r, _ in outcomes) / len(outcomes),
        "success_rate": sum(1 for _, s in outcomes if s) / len(outcomes),
        "tasks": len(outcomes),
    }


# --- internals ------------------------------------------------------------------------------


def _summary(env: WebShopEnv, r: StepResult, action: str) -> str:
    """One line on where an action led, for the history the next step sees."""
    if not r.valid:
        return f"invalid ({r.message})"
    if r.purchase is not None:
        chosen = ", ".join(f"{k}: {v}" for k, v in r.purchase.options.items()) or "no options"
        return f"bought {r.purchase.asin} '{r.purchase.name}' ({chosen}) at {r.purchase.price_tag}"
    if r.done:
        return "the action limit ran out"
    page = env.page
    if page == "search":
        return "search page"
    if page == "results":
        first = r.observation.splitlines()[1] if "\n" in r.observation else ""
        return f"results, {first.lower()}"
    name = env.product.name if env.product is not None else ""
    if page == "item":
        _, arg = parse_action(action)
        picked = [
            f"{k}: {v}" for k, v in env.selected_options.items() if arg is not None and v == arg.lower()
        ]
        if picked:
            return "selected " + picked[0]
        return f"item page of '{name}' ({env.product.price_tag if env.product else ''})"
    return f"{page} page of '{name}'"


def _transcript(pages: Sequence[tuple[str, str]], actions: Sequence[str]) -> str:
    """The episode as few-shot lines: each page then its action, ending at ``Action:`` for the model.

    Only the last two pages are shown whole; earlier ones are their one-line summaries,
    so a long episode stays short and the shared prefix stays cacheable.
    """
    lines: list[str] = []
    for i, (page, summary) in enumerate(pages):
        shown = page if i >= len(pages) - 2 else f"({summary})"
        lines.append(f"\nPage:\n{shown}")
        lines.append(f"\nAction: {actions[i]}" if i < len(actions) else "\nAction:")
    return "".join(lines)


def _fewshot_feedback(feedback: Feedback) -> str:
    """IAD's contrast (best so far, last round's weakest) or self-refine's previous try, as
    ``Note:`` lines: the shape a completion transcript can carry.
    """

    def slots(prefix: str, c: Candidate) -> dict[str, str]:
        message = c.verdict.feedback if c.verdict is not None else ""
        return {
            f"{prefix}episode": _episode_line(c),
            f"{prefix}score": f"{c.score:.2f}",
            f"{prefix}status": "passed" if c.passed else "failed",
            f"{prefix}feedback": _one_line(message, 300) or "no message",
        }

    if feedback.style == "revise":
        return render_prompt("webshop_fewshot_self_refine", **slots("", feedback.best))
    worst = ""
    if feedback.worst is not None:
        worst = "\n" + render_prompt("webshop_fewshot_worst", **slots("worst_", feedback.worst))
    return render_prompt("webshop_fewshot_feedback", **slots("best_", feedback.best), worst_block=worst)


def _episode_line(c: Candidate) -> str:
    """An episode on one line: its actions in order, then how it ended."""
    out = c.answer
    if not isinstance(out, Outcome):
        return _one_line(c.text, 400)
    ending = {
        "purchase": "bought it",
        "step_limit": "no purchase (action limit)",
        "stuck": "no purchase (invalid actions)",
        "budget": "no purchase (budget)",
    }[out.ended]
    actions = " > ".join(_one_line(a, 80) for a in out.actions)
    return f"{_one_line(actions, 400)}; {ending}" if actions else ending


def _one_line(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _record_ending(out: Outcome, env: WebShopEnv, last: StepResult | None) -> bool:
    """Mark ``out`` as a purchase (with its reward) or as out of steps; whether either applied."""
    if last is not None and last.purchase is not None:
        out.ended, out.purchase, out.reward, out.reward_info = (
            "purchase",
            last.purchase,
            last.reward,
            last.reward_info,
        )
    elif env.done:
        out.ended = "step_limit"
    else:
        return False
    return True
