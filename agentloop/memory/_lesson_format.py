"""The lesson formats abstraction asks for: decoding constraints for them, and a lenient line reader.

A backend that can constrain decoding (``"grammar"`` or ``"regex"`` in its
``constraint_kinds``) is held to the format, so even a 135M model returns a well-formed
lesson or the word ``none``. For backends that cannot, :func:`read_lesson_line` accepts
the variants models write instead of ``title | situation | suggestion``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentloop.types import Constraint

__all__ = [
    "DECLINE",
    "completion_constraint",
    "is_decline",
    "json_constraint",
    "lesson_fields",
]

# What a model writes to say that nothing generalises.
DECLINE = "none"
_DECLINES = re.compile(r"\W*(none|nothing|n/?a|no lesson|no lessons|no concepts?)\W*", re.IGNORECASE)

# Bounds on each field, in characters: enough for a lesson, short enough that a model that
# does not stop ends early (the store clips longer text anyway).
TITLE_CHARS = 100
SITUATION_CHARS = 200
SUGGESTION_CHARS = 300
_CUE_CHARS = 40
_MAX_CUES = 4

# No "|" inside a field, no line break; the first character is not a space, so a field
# cannot be all padding.
_FIELD = r"[^|\n ][^|\n]{{0,{n}}}"
_LINE = " ?" + r" ?\| ?".join(
    _FIELD.format(n=n - 1) for n in (TITLE_CHARS, SITUATION_CHARS, SUGGESTION_CHARS)
)


def completion_constraint(kinds: frozenset[str]) -> Constraint | None:
    """One ``title | situation | suggestion`` line or ``none``, as a regex (or a grammar); None if
    the backend honours neither."""
    if "regex" in kinds:
        return Constraint.regex(f"({_LINE}| ?{DECLINE})")
    if "grammar" in kinds:
        return Constraint.grammar(f"start: LINE\nLINE: /({_LINE}| ?{DECLINE})/\n")
    return None


def _json_string(limit: int) -> str:
    # A JSON string without escapes or control characters: what a lesson needs, and nothing a
    # small model can loop in (no unbounded escape sequences).
    return rf'/"[^"\\\x00-\x1f]{{1,{limit}}}"/'


def json_constraint(kinds: frozenset[str], max_concepts: int) -> Constraint | None:
    """``{"concepts": [...]}`` with at most ``max_concepts`` items and bounded fields, as a Lark
    grammar; None if the backend cannot take one (an empty list is how a model declines)."""
    if "grammar" not in kinds or max_concepts < 1:
        return None
    items = "concept"
    for _ in range(max_concepts - 1):
        items = f'concept (", " {items})?'
    cues = 'CUE (", " CUE (", " CUE (", " CUE)?)?)?'
    assert _MAX_CUES == 4  # the nesting above
    grammar = (
        f'start: "{{\\"concepts\\": [" ({items})? "]}}"\n'
        'concept: "{\\"title\\": " TITLE ", \\"situation\\": " SITUATION ", \\"cues\\": [" '
        f'({cues})? "], \\"suggestion\\": " SUGGESTION ", \\"kind\\": " KIND "}}"\n'
        'KIND: "\\"strategy\\"" | "\\"pitfall\\"" | "\\"pattern\\""\n'
        f"TITLE: {_json_string(TITLE_CHARS)}\n"
        f"SITUATION: {_json_string(SITUATION_CHARS)}\n"
        f"SUGGESTION: {_json_string(SUGGESTION_CHARS)}\n"
        f"CUE: {_json_string(_CUE_CHARS)}\n"
    )
    return Constraint.grammar(grammar)


def is_decline(text: str) -> bool:
    """Whether a reply says that there is no lesson (``none``, ``N/A``, ``no lesson``...)."""
    return bool(_DECLINES.fullmatch(text.strip()))


_LABELS = re.compile(
    r"\b(title|name|lesson|situation|when|context|suggestion|action|do|advice)\s*[:=]\s*", re.IGNORECASE
)
_LABEL_FIELD = {
    "title": "title",
    "name": "title",
    "lesson": "title",
    "situation": "situation",
    "when": "situation",
    "context": "situation",
    "suggestion": "suggestion",
    "action": "suggestion",
    "do": "suggestion",
    "advice": "suggestion",
}
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)]|lesson\s*\d*\s*[:.)-])\s*", re.IGNORECASE)
_DASH = re.compile(r"\s+[-–—]\s+")


def _labelled(text: str) -> tuple[str, str, str] | None:
    """``Title: ... Situation: ... Suggestion: ...`` (on one line or several)."""
    marks = list(_LABELS.finditer(text))
    found: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        value = text[m.end() : end].strip(" \t\n;,.|")
        found.setdefault(_LABEL_FIELD[m.group(1).lower()], value)
    if found.get("title") and found.get("suggestion"):
        return found["title"], found.get("situation", ""), found["suggestion"]
    return None


def _from_json(text: str) -> tuple[str, str, str] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data: Any = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("concepts"), list) and data["concepts"]:
        data = data["concepts"][0]
    if not isinstance(data, dict):
        return None
    title = str(data.get("title") or data.get("name") or "")
    suggestion = str(data.get("suggestion") or data.get("do") or data.get("action") or "")
    if title and suggestion:
        return title, str(data.get("situation") or data.get("when") or ""), suggestion
    return None


def _separated(line: str) -> tuple[str, str, str] | None:
    for parts in (line.split("|"), _DASH.split(line)):
        parts = [p.strip() for p in parts]
        if len(parts) >= 2 and parts[0] and parts[-1]:
            return parts[0], " ".join(parts[1:-1]), parts[-1]
    return None


def lesson_fields(text: str) -> tuple[str, str, str] | None:
    """``(title, situation, suggestion)`` from a reply in any of the shapes models write, or None.

    Tried in order: a JSON object, labelled fields, then each line (bullets and numbers
    stripped) split on ``|`` or on a spaced dash.
    """
    text = text.strip()
    if not text:
        return None
    found = _from_json(text) or _labelled(text)
    if found is not None:
        return found
    for raw in text.splitlines():
        line = _BULLET.sub("", raw).strip()
        if line and (found := _separated(line)) is not None:
            return found
    return None
