"""Pull the completed function out of a model's reply: fenced, bare, or a continuation of the prompt.

The answer is always standalone code that defines the entry point; the scorer runs
``prompt + "\\n" + answer`` (the prompt's imports and helper functions come first, and the
answer's definition replaces the prompt's stub). A reply that defines no such function
raises :class:`CodeExtractionError`, whose message the refine prompt shows the model.
"""

from __future__ import annotations

import ast
import re

__all__ = ["CodeExtractionError", "extract_function", "strip_prompt_continuation"]

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_NON_PYTHON = frozenset({"text", "console", "bash", "sh", "shell", "json", "output", "plaintext"})
# Top-level lines that carry on a module of code (anything else at column 0 is prose).
_CODE_START = re.compile(
    r"(?:def|async\s+def|class|import|from|@|#|if\s+__name__|[A-Za-z_][\w.]*\s*(?:=|\())"
)


class CodeExtractionError(ValueError):
    """The reply holds no definition of the function; the message says what to send instead."""


def _defines(code: str, entry_point: str) -> bool:
    """Whether ``code`` parses and defines ``entry_point`` with a body beyond a docstring."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return f"def {entry_point}" in code
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
            ):
                body = body[1:]
            if body:
                return True
    return False


def _module_code(text: str, entry_point: str) -> str | None:
    """The code part of ``text``: from the first import or the def, to where prose starts at column 0."""
    lines = text.splitlines()
    start = next(
        (
            i
            for i, ln in enumerate(lines)
            if re.match(rf"\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", ln)
        ),
        None,
    )
    if start is None:
        return None
    indent = len(lines[start]) - len(lines[start].lstrip())

    def above_is_code(line: str) -> bool:
        # Imports and helpers (their bodies too) just above the def belong to it.
        body = line[indent:] if line[:indent].strip() == "" else line.lstrip()
        return not body.strip() or body[0].isspace() or _CODE_START.match(body) is not None

    while start > 0 and above_is_code(lines[start - 1]):
        start -= 1
    kept: list[str] = []
    for line in lines[start:]:
        stripped = line[indent:] if line[:indent].strip() == "" else line.lstrip()
        if stripped.strip() and not stripped[0].isspace() and not _CODE_START.match(stripped) and kept:
            if not stripped.startswith((")", "]", "}")):
                break
        kept.append(stripped)
    return "\n".join(kept).strip("\n") + "\n"


def strip_prompt_continuation(text: str) -> str:
    """A completion of the prompt cut where the function body ends (the first line at column 0)."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.strip() and not line[0].isspace():
            break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def extract_function(text: str, prompt: str, entry_point: str, *, completion: bool = False) -> str:
    """Standalone code from ``text`` that defines ``entry_point``.

    Tried in order: fenced blocks (a ```python block first) holding the def; the def in the
    bare reply; a fenced or bare function body, read as the continuation of ``prompt``.
    ``completion``: the reply continues the prompt (the few-shot format), so a body comes
    first. A candidate that does not parse is still returned when it names the function, so
    that its SyntaxError reaches the feedback.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    blocks.sort(key=lambda b: b[0] not in ("python", "py", "python3"))
    if completion:
        body = strip_prompt_continuation(text)
        if body.strip() and _defines(prompt + body, entry_point):
            return prompt + body
    for lang, body in blocks:
        if lang in _NON_PYTHON:
            continue
        code = _module_code(body, entry_point)
        if code is not None and _defines(code, entry_point):
            return code
    code = _module_code(_FENCE.sub("\n", text) if blocks else text, entry_point)
    if code is not None and _defines(code, entry_point):
        return code
    # A bare body (indented lines) in a block or in the reply: the rest of the prompt's function.
    for candidate in [body for lang, body in blocks if lang not in _NON_PYTHON] + [text]:
        body = strip_prompt_continuation(candidate.lstrip("\n"))
        if body.strip() and body[0].isspace() and _defines(prompt + body, entry_point):
            return prompt + body
    raise CodeExtractionError(
        f"no definition of `{entry_point}` found in the reply; answer with the complete function "
        f"(def {entry_point}(...): and its body) in a ```python code block"
    )
