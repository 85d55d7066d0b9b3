"""HumanEval as a graph task: the prompt (chat or few-shot completion), the function extraction, the vote key.

One :class:`HumanEvalTask` per problem. Its verifier (``tests`` or ``oracle``, see
:mod:`agentloop.suites.humaneval.verifiers`) decides the scores the graphs act on; the final
answer is scored by the official hidden tests apart from it, by the suite.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Literal

from agentloop.graphs.task import Candidate, Feedback, Task, Verdict, render_lessons
from agentloop.prompts import render_prompt
from agentloop.suites.humaneval.code import extract_function
from agentloop.suites.humaneval.data import HumanEvalProblem
from agentloop.types import Message

if TYPE_CHECKING:
    from agentloop.suites.humaneval.verifiers import HumanEvalVerifier

__all__ = ["FEWSHOT_STOP", "HumanEvalTask", "PromptFormat"]

PromptFormat = Literal["chat", "fewshot"]
# The few-shot completion continues the function body; a line at column 0 that starts another
# definition, a script or a comment ends it (the stops of the Codex paper, plus a fence).
FEWSHOT_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", "\n```")
# Lines of an earlier attempt the few-shot feedback shows (as comments).
_SHOWN_LINES = 30


class HumanEvalTask(Task):
    """One HumanEval problem: prompt with its signature and docstring, parse the function, verify it."""

    def __init__(
        self, problem: HumanEvalProblem, verifier: HumanEvalVerifier, *, prompt_format: PromptFormat = "chat"
    ):
        if prompt_format not in ("chat", "fewshot"):
            raise ValueError(f"unknown HumanEval prompt format {prompt_format!r}; use chat or fewshot")
        self.problem = problem
        self.id = problem.task_id
        self.verifier = verifier
        self.prompt_format = prompt_format
        self.stop = FEWSHOT_STOP if prompt_format == "fewshot" else ()

    def build_messages(self, lessons: Sequence[str] = ()) -> list[Message]:
        if self.prompt_format == "fewshot":
            return [Message("user", self._fewshot(lessons))]
        section = render_lessons(lessons)
        user = render_prompt(
            "humaneval_user",
            lessons=f"{section}\n\n" if section else "",
            prompt=self.problem.prompt.strip("\n"),
        )
        return [Message("system", render_prompt("humaneval_system")), Message("user", user)]

    def build_refine_messages(self, feedback: Feedback, lessons: Sequence[str] = ()) -> list[Message]:
        if self.prompt_format == "fewshot":
            return [Message("user", self._fewshot(lessons, feedback))]
        return super().build_refine_messages(feedback, lessons)

    def completion_prompt(self, messages: Sequence[Message]) -> str | None:
        return messages[-1].content if self.prompt_format == "fewshot" else None

    def parse(self, text: str) -> str:
        """Standalone code defining the entry point; raises when the reply has none."""
        return extract_function(
            text, self.problem.prompt, self.problem.entry_point, completion=self.prompt_format == "fewshot"
        )

    async def verify(self, candidate: Candidate) -> Verdict:
        return await self.verifier.verify(self, candidate)

    def answer_key(self, candidate: Candidate) -> Hashable | None:
        """Self-consistency votes on the code with blank lines and comments dropped (None: no code)."""
        code = candidate.answer
        if not isinstance(code, str) or candidate.parse_error is not None:
            return None
        lines = (ln.rstrip() for ln in code.splitlines())
        return "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))

    def _fewshot(self, lessons: Sequence[str], feedback: Feedback | None = None) -> str:
        items = [s.strip() for s in lessons if s and s.strip()]
        lesson_lines = "".join(f"# Lesson from earlier tasks: {s}\n" for s in items)
        return (
            render_prompt(
                "humaneval_fewshot",
                lessons=lesson_lines,
                feedback=_fewshot_feedback(feedback, self.problem) + "\n" if feedback is not None else "",
                prompt=self.problem.prompt.strip("\n"),
            )
            + "\n"
        )


def _fewshot_feedback(feedback: Feedback, problem: HumanEvalProblem) -> str:
    """The verifier's signal as Python comments, the one shape a completion prompt can carry."""

    def commented(c: Candidate) -> str:
        code = c.answer if isinstance(c.answer, str) else c.text
        # Show the function's own lines: the prompt part of a completion answer is repeated below.
        if code.startswith(problem.prompt):
            code = code[len(problem.prompt) :]
        lines = code.strip("\n").splitlines()[:_SHOWN_LINES] or ["(no code)"]
        return "\n".join(f"# {ln}" for ln in lines)

    def message(c: Candidate) -> str:
        text = c.verdict.feedback if c.verdict is not None else ""
        return " ".join(text.split())[:300] or "no message"

    best = feedback.best
    if feedback.style == "revise":
        return render_prompt(
            "humaneval_fewshot_self_refine",
            score=f"{best.score:.2f}",
            code=commented(best),
            feedback=message(best),
        )
    worst = ""
    if feedback.worst is not None:
        worst = "\n" + render_prompt(
            "humaneval_fewshot_worst",
            worst_score=f"{feedback.worst.score:.2f}",
            worst_feedback=message(feedback.worst),
        )
    return render_prompt(
        "humaneval_fewshot_feedback",
        best_score=f"{best.score:.2f}",
        best_code=commented(best),
        best_feedback=message(best),
        worst_block=worst,
    )
