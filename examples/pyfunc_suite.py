"""A suite of small Python functions whose verifier runs each function's tests in a subprocess.

    agentloop run examples/pyfunc_suite.py:PyFuncSuite --graph iad --n 2 --rounds 2 --max-tokens 96

Model code is untrusted: it runs in a separate, isolated interpreter (``-I``) in a fresh temp
dir, with an empty environment and a time limit. A failing test's message is the feedback the
next round's prompt shows. Public API only (docs/custom.md).
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile

from agentloop.graphs import Candidate, PromptTask, Verdict
from agentloop.suites import Suite, SuiteItem, content_hash

# (name, signature and docstring, tests): each test is an expression that must be true.
TASKS = [
    ("add", "def add(a, b):\n    '''Return a + b.'''", ["add(2, 3) == 5", "add(-1, 1) == 0"]),
    ("double", "def double(x):\n    '''Return twice x.'''", ["double(4) == 8", "double(0) == 0"]),
    ("is_even", "def is_even(n):\n    '''True if n is even.'''", ["is_even(2)", "not is_even(7)"]),
    ("last", "def last(xs):\n    '''The last item of the list xs.'''", ["last([1, 2, 3]) == 3"]),
    ("square", "def square(x):\n    '''Return x squared.'''", ["square(3) == 9", "square(-2) == 4"]),
    ("maximum", "def maximum(xs):\n    '''The largest item of xs.'''", ["maximum([3, 9, 2]) == 9"]),
    ("reverse", "def reverse(s):\n    '''s backwards.'''", ["reverse('abc') == 'cba'", "reverse('') == ''"]),
    ("count_a", "def count_a(s):\n    '''How many times 'a' occurs in s.'''", ["count_a('banana') == 3"]),
]
TIMEOUT_S = 5.0
CHECK = "import sys\nfor i, t in enumerate(sys.argv[1:]):\n    assert eval(t), f'test {i} failed: {t}'\n"


def extract_function(name: str, text: str) -> str:
    """The code of the reply (a fenced block, or the bare text) if it defines ``name``; else a parse error."""
    fenced = re.search(r"```(?:python)?\n(.*?)(?:```|$)", text, re.DOTALL)
    code = fenced.group(1) if fenced else text
    if not re.search(rf"^def {name}\(", code, re.MULTILINE):
        raise ValueError(f"the reply defines no function {name}(...): answer with the whole function")
    return code


async def run_tests(code: str, tests: list[str]) -> Verdict:
    """Run ``code`` then each test in a fresh isolated interpreter; the first failure is the feedback."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", code + "\n" + CHECK, *tests,
            cwd=tmp, env={}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return Verdict.failed(f"timed out after {TIMEOUT_S:.0f} s")
    if proc.returncode == 0:
        return Verdict(1.0, True, f"all {len(tests)} tests pass")
    last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
    failed = re.search(r"test (\d+) failed", last)  # tests before it passed; an error passes none
    return Verdict(int(failed.group(1)) / len(tests) if failed else 0.0, False, last[:300])


class PyFuncSuite(Suite):
    """Write a Python function from its signature; the tests are the verifier and the score."""

    name = "pyfunc"
    default_limit = 4
    default_verifier = "tests"
    verifiers = {"tests": "run the function's tests in an isolated subprocess"}
    verifier_is_scorer = True  # score() reuses the final verdict: no second test run
    stop = ("\n```\n",)

    def items(self, spec, backend=None) -> list[SuiteItem]:
        rows = self.select(spec, list(enumerate(TASKS)))
        return [SuiteItem(task=self.task(*row), index=i, question=row[0], content_hash=content_hash(row))
                for i, row in rows]  # fmt: skip

    @staticmethod
    def task(name: str, signature: str, tests: list[str]) -> PromptTask:
        async def verify(c: Candidate) -> Verdict:
            return await run_tests(c.answer, tests)

        prompt = f"Complete this Python function. Answer with the whole function in a ```python block.\n\n{signature}"
        return PromptTask(prompt, verify, id=name, parse=lambda text: extract_function(name, text))
