"""Verifiers for HumanEval candidates: ``tests`` (the docstring's public examples, gold-free) and ``oracle``.

``tests`` runs the examples the prompt itself shows (``>>>`` lines and the "for example"
forms) against the candidate in the sandbox: the score is the fraction that pass, and the
feedback names the first that fails with what it should give and what it gave. The hidden
tests are never read by it. ``oracle`` runs the hidden ``check`` function, exactly as the
official scorer does; its runs are upper bounds, and reports label them so.
"""

from __future__ import annotations

import abc
import json
from typing import TYPE_CHECKING, Any, ClassVar

from agentloop.errors import AgentloopError, did_you_mean
from agentloop.graphs.task import Candidate, Verdict
from agentloop.suites.humaneval.data import Example
from agentloop.suites.humaneval.scoring import OFFICIAL_TIMEOUT_S, answer_completion, score_completion
from agentloop.tools.sandbox import Sandbox

if TYPE_CHECKING:
    from agentloop.suites.humaneval.task import HumanEvalTask

__all__ = [
    "VERIFIERS",
    "HumanEvalVerifier",
    "OracleVerifier",
    "TestsVerifier",
    "UnknownVerifierError",
    "examples_program",
]

# Each example gets this long (an infinite loop fails its example, not the run's whole budget).
EXAMPLE_TIMEOUT_S = 2.0
_SHOWN = 200  # characters of a value in the feedback


class UnknownVerifierError(AgentloopError, ValueError):
    def __init__(self, name: str):
        why = " ('exec' runs SQL: it is Text2SQL's verifier)" if name == "exec" else ""
        super().__init__(did_you_mean("humaneval verifier", name, VERIFIERS, why=why))


class HumanEvalVerifier(abc.ABC):
    """Judges one parsed candidate (standalone code) of a :class:`HumanEvalTask`."""

    name: ClassVar[str]
    #: True when the verifier reads the hidden tests: its runs are upper bounds, not results.
    upper_bound: ClassVar[bool] = False

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox

    @abc.abstractmethod
    async def verify(self, task: HumanEvalTask, candidate: Candidate) -> Verdict:
        """The verdict on ``candidate.answer``."""


# Runs after the candidate's code, in its globals: each example under its own timer, with the
# result compared by value (floats within 1e-6), else by repr, as doctest would.
_HARNESS = """
def __agentloop_examples__(examples, timeout):
    import math, signal
    def same(a, b):
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b or a == b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b
    class Late(BaseException):
        pass
    def late(signum, frame):
        raise Late()
    out = []
    for call, expected in examples:
        signal.signal(signal.SIGALRM, late)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            actual = eval(call, globals())
        except Late:
            out.append(["timeout", ""])
            continue
        except BaseException as exc:
            text = str(exc).strip().splitlines()
            out.append(["error", type(exc).__name__ + (": " + text[0] if text else "")])
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            want = eval(expected, {})
            ok = same(actual, want)
        except BaseException:
            ok = repr(actual).strip() == expected.strip() or str(actual).strip() == expected.strip()
        out.append(["pass" if ok else "fail", repr(actual)[:400]])
    return out
"""


def examples_program(task: HumanEvalTask, code: str, examples: tuple[Example, ...]) -> str:
    """The program that defines the candidate and sets ``__result__`` to each example's outcome."""
    pairs = json.dumps([[e.call, e.expected] for e in examples])
    return (
        f"{task.problem.prompt}\n{code}\n{_HARNESS}\n"
        f"__result__ = __agentloop_examples__({pairs}, {EXAMPLE_TIMEOUT_S})\n"
    )


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


class TestsVerifier(HumanEvalVerifier):
    """Gold-free: the docstring's examples pass (score = the fraction that pass); none: the code runs."""

    name = "tests"
    __test__ = False  # pytest: a verifier, not a test class

    async def verify(self, task: HumanEvalTask, candidate: Candidate) -> Verdict:
        code = candidate.answer
        if not isinstance(code, str) or not code.strip():
            return Verdict.failed("no function found in the answer", check="no_code")
        examples = task.problem.examples
        entry = task.problem.entry_point
        if not examples:
            program = (
                f"{task.problem.prompt}\n{code}\nassert callable({entry}), '{entry} is not a function'\n"
            )
            r = await self.sandbox.run(program, timeout_s=OFFICIAL_TIMEOUT_S, filename=task.id)
            if r.passed:
                return Verdict(
                    1.0,
                    True,
                    f"The code runs and defines {entry} (the docstring has no examples to check).",
                    {"check": "defines", "examples": 0},
                )
            return Verdict.failed(f"The code does not run: {r.error}", check="error", error=r.error)
        timeout = EXAMPLE_TIMEOUT_S * len(examples) + 1.0
        r = await self.sandbox.run(
            examples_program(task, code, examples), timeout_s=timeout, filename=task.id
        )
        outcomes = r.result if r.passed and isinstance(r.result, list) else None
        if outcomes is None or len(outcomes) != len(examples):
            return Verdict.failed(
                f"The code does not run: {r.error or 'it gave no results'}", check="error", error=r.error
            )
        passed = sum(1 for o in outcomes if o[0] == "pass")
        details: dict[str, Any] = {"check": "examples", "examples": len(examples), "passed_examples": passed}
        for example, (kind, actual) in zip(examples, outcomes, strict=True):
            if kind == "pass":
                continue
            call, want = _short(example.call), _short(example.expected)
            if kind == "fail":
                message = f"{call} should return {want}, but it returned {_short(actual)}."
            elif kind == "timeout":
                message = (
                    f"{call} should return {want}, but it did not finish within {EXAMPLE_TIMEOUT_S:g} s."
                )
            else:
                message = f"{call} should return {want}, but it raised {_short(actual)}."
            summary = f"{passed} of {len(examples)} docstring examples pass. The first that fails: {message}"
            return Verdict(passed / len(examples), False, summary, details)
        return Verdict(1.0, True, f"All {len(examples)} docstring examples pass.", details)


class OracleVerifier(HumanEvalVerifier):
    """The hidden ``check`` tests, as the official scorer runs them: an upper bound for analysis only."""

    name = "oracle"
    upper_bound = True

    async def verify(self, task: HumanEvalTask, candidate: Candidate) -> Verdict:
        code = candidate.answer
        if not isinstance(code, str) or not code.strip():
            return Verdict.failed("no function found in the answer", check="no_code")
        r = await score_completion(task.problem, answer_completion(code), self.sandbox)
        if r.passed:
            return Verdict(1.0, True, "The hidden tests pass.", {"check": "hidden"})
        return Verdict.failed(f"The hidden tests fail: {r.error or r.status}", check="hidden", error=r.error)


VERIFIERS: dict[str, type[HumanEvalVerifier]] = {v.name: v for v in (TestsVerifier, OracleVerifier)}
