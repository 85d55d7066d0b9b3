"""Turning a solved task's trajectory into 0-3 abstract concepts with one LLM call (ArcMemo-style).

The prompt (``agentloop/prompts/memory_abstract.txt``) shows the question, the failed
attempts with the verifier's feedback, and the passing answer, and asks for lessons
that carry over to other tasks as JSON. :func:`parse_concepts` reads that JSON
leniently: code fences, prose around it, a bare list, a single object, trailing
commas, cues as one string and unknown kinds are all accepted.

Small base-like models (the embedded 135M one) cannot follow that prompt: they start the
JSON and repeat a phrase until ``max_tokens``. ``style="completion"`` asks them instead
to continue a few-shot list with one ``title | situation | suggestion`` line
(``memory_abstract_completion.txt``); it shows no failed attempts, and what comes back
is read by :func:`parse_lesson_line`.

A backend that can constrain decoding is held to the lesson format (a grammar for the
JSON, a regex or grammar for the line; see ``_lesson_format``), so a model that cannot
follow the prompt still returns a well-formed lesson, or declines with ``none`` / ``[]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from agentloop.memory._lesson_format import completion_constraint, is_decline, json_constraint, lesson_fields
from agentloop.memory._types import KINDS, ConceptDraft, ConceptParameter
from agentloop.prompts import render_prompt
from agentloop.types import Backend, ChatRequest, Constraint, Message, Usage

if TYPE_CHECKING:
    from agentloop.graphs.result import LoopResult

__all__ = [
    "ABSTRACTION_STYLES",
    "AbstractionError",
    "AbstractionResult",
    "AbstractionStyle",
    "Attempt",
    "Trajectory",
    "abstract",
    "extract_json",
    "instance_problem",
    "parse_concepts",
    "trim_loops",
    "parse_lesson_line",
]

AbstractionStyle = Literal["json", "completion"]
ABSTRACTION_STYLES: tuple[str, ...] = get_args(AbstractionStyle)
# A lesson line is short; a small model that does not stop is cut off well before this
# (a constrained one ends at the format's bound, about 600 characters).
_COMPLETION_TOKENS = 160

log = logging.getLogger(__name__)

_QUESTION_CHARS = 3000
_ATTEMPT_CHARS = 800
_FEEDBACK_CHARS = 400
_ANSWER_CHARS = 1500


# A lesson that shares this many consecutive words with its task's answer copies it, and this
# many with the task's question restates it: either way it is an instance, not a concept.
COPY_ANSWER_WORDS = 6
COPY_QUESTION_WORDS = 8
# A word trigram seen this often in one field of a lesson: the model looped.
REPEATS = 3


class AbstractionError(ValueError):
    """The model's reply held no JSON that could be read as concepts."""


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " [...]"


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failed candidate as the abstraction prompt shows it."""

    text: str
    feedback: str = ""
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Trajectory:
    """What the abstraction prompt needs from a task: its question, the answer lessons are drawn
    from, and the failures before it.

    ``passed``, ``score`` and ``candidate`` (its position in the run) say how far that answer
    is to be trusted; they go into the lesson's provenance.
    """

    task_id: str
    question: str
    answer: str
    failed: tuple[Attempt, ...] = ()
    passed: bool = True
    score: float = 1.0
    candidate: int | None = None

    @classmethod
    def from_result(
        cls, question: str, result: LoopResult, *, max_failed: int = 3, require_pass: bool = True
    ) -> Trajectory:
        """The trajectory of a run from its best candidate, with the last ``max_failed`` distinct failures.

        ``require_pass=False`` takes the best candidate even if the verifier rejected it (or,
        with no best, the last candidate that has text).
        """
        best = result.best
        if best is None and not require_pass:
            best = next((c for c in reversed(result.candidates) if c.text.strip()), None)
        if best is None or (require_pass and not result.passed):
            raise ValueError(f"task {result.task_id!r} did not pass: only passing runs are abstracted")
        seen: set[str] = set()
        failed: list[Attempt] = []
        for c in reversed(result.candidates):
            text = c.text.strip()
            if c is best or c.passed or not text or text in seen:
                continue
            seen.add(text)
            feedback = c.verdict.feedback if c.verdict is not None else (c.parse_error or "")
            failed.append(Attempt(text, feedback, c.score))
            if len(failed) >= max_failed:
                break
        position = next((i for i, c in enumerate(result.candidates) if c is best), None)
        return cls(
            result.task_id,
            question,
            best.text,
            tuple(reversed(failed)),
            passed=best.passed,
            score=best.score,
            candidate=position,
        )

    def prompt(self, max_concepts: int) -> str:
        if self.failed:
            attempts = "\n\n".join(
                f"Attempt {i} (score {a.score:.2f}):\n{_cut(a.text, _ATTEMPT_CHARS)}\n"
                f"Verifier: {_cut(a.feedback, _FEEDBACK_CHARS) or '(no message)'}"
                for i, a in enumerate(self.failed, 1)
            )
        else:
            attempts = "(none: the first answer passed)"
        return render_prompt(
            "memory_abstract",
            max_concepts=str(max_concepts),
            question=_cut(self.question, _QUESTION_CHARS),
            attempts=attempts,
            answer=self._answer(),
        )

    def _answer(self) -> str:
        answer = _cut(self.answer, _ANSWER_CHARS)
        # An unverified answer (memory_write="best" or "all") must not be taught as a right one.
        return answer if self.passed else f"(not verified: the verifier gave it {self.score:.2f})\n{answer}"


@dataclass(slots=True)
class AbstractionResult:
    """What one abstraction call gave: drafts, or a decline (``declined``), or an ``error``."""

    drafts: list[ConceptDraft]
    usage: Usage = field(default_factory=Usage)
    raw: str = ""
    error: str | None = None
    declined: bool = False
    constrained: bool = False


async def abstract(
    backend: Backend,
    trajectory: Trajectory,
    *,
    max_concepts: int = 3,
    max_tokens: int = 800,
    style: AbstractionStyle = "json",
    constrain: bool = True,
) -> AbstractionResult:
    """Ask ``backend`` (greedy) for up to ``max_concepts`` concepts from ``trajectory``
    (``style="completion"``: one concept, from a raw few-shot prompt).

    With ``constrain`` (the default) and a backend that honours grammars or regexes, the
    request carries the lesson format as a constraint. A reply that cannot be parsed gives
    no drafts and sets ``error``; ``none`` or an empty list sets ``declined``; a backend
    error propagates.
    """
    kinds: frozenset[str] = frozenset(backend.constraint_kinds) if constrain else frozenset()
    if style == "completion":
        return await _abstract_completion(
            backend, trajectory, max_tokens=min(max_tokens, _COMPLETION_TOKENS), kinds=kinds
        )
    if style != "json":
        raise ValueError(f"abstraction style must be one of {', '.join(ABSTRACTION_STYLES)}, got {style!r}")
    constraint = json_constraint(kinds, max_concepts)
    request = ChatRequest(
        messages=(Message("user", trajectory.prompt(max_concepts)),),
        n=1,
        temperature=0.0,
        max_tokens=max_tokens,
        constraint=constraint,
    )
    response = await backend.generate(request)
    raw = response.texts[0] if response.completions else ""
    try:
        drafts = parse_concepts(raw, max_concepts=max_concepts)
    except AbstractionError as exc:
        log.warning("abstraction for task %r gave no usable JSON: %s", trajectory.task_id, exc)
        return AbstractionResult([], response.usage, raw, str(exc), constrained=constraint is not None)
    declined = not drafts and _empty_list(raw)
    return AbstractionResult(
        drafts, response.usage, raw, declined=declined, constrained=constraint is not None
    )


def _empty_list(raw: str) -> bool:
    data = extract_json(raw)
    return data == [] or (isinstance(data, dict) and data.get("concepts") == [])


async def _abstract_completion(
    backend: Backend, trajectory: Trajectory, *, max_tokens: int, kinds: frozenset[str]
) -> AbstractionResult:
    prompt = render_prompt(
        "memory_abstract_completion",
        question=" ".join(_cut(trajectory.question, _QUESTION_CHARS).split()),
        answer=" ".join(_cut(trajectory.answer, _ANSWER_CHARS).split()),
    )
    constraint: Constraint | None = completion_constraint(kinds)
    request = ChatRequest(
        raw_prompt=prompt, n=1, temperature=0.0, max_tokens=max_tokens, stop=("\n",), constraint=constraint
    )
    response = await backend.generate(request)
    raw = response.texts[0] if response.completions else ""
    constrained = constraint is not None
    if is_decline(raw):
        return AbstractionResult([], response.usage, raw, declined=True, constrained=constrained)
    try:
        draft = parse_lesson_line(raw)
    except AbstractionError as exc:
        log.warning("abstraction for task %r gave no usable lesson: %s", trajectory.task_id, exc)
        return AbstractionResult([], response.usage, raw, str(exc), constrained=constrained)
    return AbstractionResult([draft], response.usage, raw, constrained=constrained)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,40})\}")


def _placeholders(suggestion: str) -> tuple[ConceptParameter, ...]:
    """The ``{name}`` placeholders of a suggestion as parameters, in order, once each."""
    return tuple(ConceptParameter(name=n) for n in dict.fromkeys(_PLACEHOLDER.findall(suggestion)))


def parse_lesson_line(text: str) -> ConceptDraft:
    """A concept from one ``title | situation | suggestion`` line (what ``style="completion"`` asks for).

    Two fields are read as title and suggestion; ``{name}`` placeholders in the suggestion
    become its parameters. Variants models write instead are accepted too: ``Title: ...
    Situation: ... Suggestion: ...``, fields separated by a spaced dash, a numbered or
    bulleted line, and a JSON object.
    """
    line = text.strip().splitlines()[0] if text.strip() else ""
    fields = lesson_fields(text)
    if fields is None:
        raise AbstractionError(f"expected 'title | situation | suggestion', got {line[:120]!r}")
    title, situation, suggestion = fields
    try:
        return ConceptDraft(
            title=title, situation=situation, suggestion=suggestion, parameters=_placeholders(suggestion)
        )
    except ValueError as exc:
        raise AbstractionError(f"unusable lesson {line[:120]!r}: {exc}") from None


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text`` (fenced or not), or ``None``."""
    chunks = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in chunks:
        repaired = _TRAILING_COMMA.sub(r"\1", chunk).strip()
        for candidate in (chunk.strip(), repaired):
            try:
                return json.loads(candidate)
            except json.JSONDecodeError:
                pass
        # JSON inside prose: the first bracket where a whole value parses. Scanning the
        # repaired text keeps a trailing comma from making an inner list win.
        for i in [i for i, ch in enumerate(repaired) if ch in "{["][:50]:
            try:
                value, _ = decoder.raw_decode(repaired, i)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict | list):
                return value
    return None


def _items(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("concepts", "lessons", "items"):
            if isinstance(data.get(key), list):
                return data[key]
        if "title" in data:
            return [data]
    raise AbstractionError(f"expected a list of concepts, got {type(data).__name__}")


def _cues(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p for p in re.split(r"[;\n]|,\s", value) if p.strip())
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if isinstance(v, str | int | float))
    return ()


def _parameters(value: Any) -> tuple[ConceptParameter, ...]:
    out = []
    if isinstance(value, dict):
        value = [{"name": k, **(v if isinstance(v, dict) else {"type": str(v)})} for k, v in value.items()]
    for p in value if isinstance(value, list) else []:
        try:
            if isinstance(p, str):
                out.append(ConceptParameter(name=p))
            elif isinstance(p, dict):
                out.append(ConceptParameter.from_dict({k: str(v) for k, v in p.items() if v is not None}))
        except ValueError:
            continue
    return tuple(out)


def _draft(item: Any) -> ConceptDraft | None:
    if not isinstance(item, dict):
        return None
    kind = str(item.get("kind") or item.get("type") or "strategy").strip().lower()
    try:
        return ConceptDraft(
            title=str(item.get("title") or item.get("name") or ""),
            situation=str(item.get("situation") or item.get("when") or ""),
            cues=_cues(item.get("cues")),
            suggestion=str(item.get("suggestion") or item.get("do") or item.get("action") or ""),
            # The constrained JSON has no "parameters": the suggestion's {placeholders} stand in.
            parameters=_parameters(item["parameters"])
            if item.get("parameters") is not None
            else _placeholders(str(item.get("suggestion") or item.get("do") or item.get("action") or "")),
            kind=kind if kind in KINDS else "strategy",  # type: ignore[arg-type]
        )
    except ValueError:
        return None


def parse_concepts(text: str, *, max_concepts: int = 3) -> list[ConceptDraft]:
    """Concept drafts from a model's reply; items without a title or suggestion are skipped.

    Raises :class:`AbstractionError` when the reply holds no usable JSON at all; an
    empty list in the reply is a valid "nothing generalises".
    """
    data = extract_json(text)
    if data is None:
        raise AbstractionError(f"no JSON in the reply: {text[:120]!r}")
    drafts = [d for d in (_draft(item) for item in _items(data)) if d is not None]
    return drafts[:max_concepts]


_WORD = re.compile(r"[A-Za-z0-9_]+(?:\.[0-9]+)?")
# A literal worth flagging: a number of two or more digits (or with decimals), or an id that
# mixes letters and digits (a product id such as B07ZK6XQ3T, a column such as col_2020).
_LITERAL = re.compile(
    r"^(?:[0-9]{2,}(?:\.[0-9]+)?|[0-9]+\.[0-9]+|(?=[A-Za-z_]*[0-9])(?=[0-9_]*[A-Za-z])\w{5,})$"
)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _shared_run(a: list[str], b: list[str], n: int) -> str | None:
    """The first run of ``n`` consecutive words of ``a`` that also occurs in ``b``, or None."""
    if len(a) < n or len(b) < n:
        return None
    grams = {tuple(b[i : i + n]) for i in range(len(b) - n + 1)}
    for i in range(len(a) - n + 1):
        if tuple(a[i : i + n]) in grams:
            return " ".join(a[i : i + n])
    return None


_SENTENCE_END = re.compile(r"[.;!?](?=\s|$)")


def _loop_start(words: list[str]) -> int | None:
    """The index of the word where a word trigram comes round for the ``REPEATS``-th time, or None."""
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - 2):
        gram = tuple(words[i : i + 3])
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] >= REPEATS:
            return i
    return None


def _trim_loop(text: str) -> str:
    """``text`` up to where the model started to loop, at the last sentence end before it."""
    matches = list(_WORD.finditer(text))
    i = _loop_start([m.group().lower() for m in matches])
    if i is None:
        return text
    cut = matches[i].start()
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, cut)]
    return text[: ends[-1] if ends else cut].rstrip(" ,;:-")


def trim_loops(draft: ConceptDraft) -> ConceptDraft:
    """``draft`` with each field cut where the model started to loop.

    Small models often write a lesson and then repeat its last phrase until the token limit;
    what came before the loop (its first two rounds at least) can still be a lesson, which
    :func:`instance_problem` then judges.
    """
    title, situation, suggestion = (_trim_loop(t) for t in (draft.title, draft.situation, draft.suggestion))
    if (title, situation, suggestion) == (draft.title, draft.situation, draft.suggestion):
        return draft
    return dataclasses.replace(draft, title=title, situation=situation, suggestion=suggestion)


def instance_problem(draft: ConceptDraft, trajectory: Trajectory) -> str | None:
    """Why ``draft`` is not a reusable concept, in a few words, or None when it may be one.

    ArcMemo's lessons are abstractions; what small models write instead is caught by form
    alone, never by asking another model:

    * it **loops**: a word trigram three times or more in one field (a model that did not stop);
    * it is **unfinished**: the suggestion ends with a colon (``you can use the following
      code:``), so it promises what it does not say;
    * its suggestion **copies its answer** (six consecutive words: a whole query, an
      episode's actions), or the lesson **restates its question** (eight: the task's own
      wording);
    * it **names a value of its task**: a number of two or more digits, or an id mixing
      letters and digits, that the question or answer also holds (a product id, a price, a
      year from the question), where the format asks for a ``{placeholder}``.
    """
    for text in (draft.title, draft.situation, draft.suggestion):
        field_words = _words(text)
        i = _loop_start(field_words)
        if i is not None:
            return f"loops ({' '.join(field_words[i : i + 3])!r} {REPEATS} times)"
    if draft.suggestion.rstrip().endswith(":"):
        return "unfinished (the suggestion ends with a colon)"
    copied = _shared_run(_words(draft.suggestion), _words(trajectory.answer), COPY_ANSWER_WORDS)
    if copied is not None:
        return f"copies its answer ({copied!r})"
    lesson = " ".join((draft.title, draft.situation, " ".join(draft.cues), draft.suggestion))
    restated = _shared_run(_words(lesson), _words(trajectory.question), COPY_QUESTION_WORDS)
    if restated is not None:
        return f"restates its question ({restated!r})"
    task = {w for w in _WORD.findall(f"{trajectory.question} {trajectory.answer}") if _LITERAL.match(w)}
    for w in _WORD.findall(lesson):
        if w in task:
            return f"names a value of its task ({w!r})"
    return None
