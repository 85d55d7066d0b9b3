"""The memory's data types: drafts going in, records and reports coming out."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from agentloop.errors import AgentloopError

__all__ = [
    "KINDS",
    "AddResult",
    "ConceptDraft",
    "ConceptKind",
    "ConceptParameter",
    "ConceptRecord",
    "Evidence",
    "ImportReport",
    "MemoryStats",
    "MemoryStoreError",
    "MergeEvent",
    "Provenance",
    "PruneReport",
    "SearchHit",
    "check_namespace",
]

# strategy: how to approach a kind of task; pitfall: a mistake the failed attempts made
# and how to avoid it; pattern: a reusable answer shape with typed parameters.
ConceptKind = Literal["strategy", "pitfall", "pattern"]
KINDS: tuple[str, ...] = get_args(ConceptKind)

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")
_TITLE_CHARS = 200
_SITUATION_CHARS = 1000
_SUGGESTION_CHARS = 2000
_CUE_CHARS = 200
MAX_CUES = 16
MAX_PARAMETERS = 8


class MemoryStoreError(AgentloopError):
    """The memory store cannot be opened or used as asked (bad URL, newer schema, bad input)."""


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is a valid name (letters, digits and ``._:/@+-``, up to 200), else an error."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise MemoryStoreError(
            f"invalid memory namespace {namespace!r}: use 1-200 letters, digits or ._:/@+- "
            "(starting with a letter or digit), e.g. 'spider' or 'text2sql:spider-dev'"
        )
    return namespace


def _clip(text: Any, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class ConceptParameter:
    """A typed slot in a concept's suggestion, e.g. ``name='table', type='str'``."""

    name: str
    type: str = "str"
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _clip(self.name, 80))
        object.__setattr__(self, "type", _clip(self.type or "str", 40))
        object.__setattr__(self, "description", _clip(self.description, 300))
        if not self.name:
            raise ValueError("a concept parameter needs a name")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "description": self.description}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptParameter:
        return cls(
            name=d.get("name", ""), type=d.get("type") or "str", description=d.get("description") or ""
        )


def _cues(cues: Iterable[Any]) -> tuple[str, ...]:
    out: dict[str, str] = {}
    for cue in cues:
        text = _clip(cue, _CUE_CHARS)
        if text and text.lower() not in out:
            out[text.lower()] = text
    return tuple(out.values())[:MAX_CUES]


@dataclass(frozen=True, slots=True)
class ConceptDraft:
    """A concept before it is stored: when it applies (situation, cues) and what to do.

    Text is whitespace-normalised and clipped; ``title`` and ``suggestion`` must not be
    empty. ``cues`` are short phrases that signal the situation (``"per each"``,
    ``"most recent"``); duplicates are dropped.
    """

    title: str
    suggestion: str
    situation: str = ""
    cues: tuple[str, ...] = ()
    parameters: tuple[ConceptParameter, ...] = ()
    kind: ConceptKind = "strategy"

    def __post_init__(self) -> None:
        title = _clip(self.title, _TITLE_CHARS)
        suggestion = _clip(self.suggestion, _SUGGESTION_CHARS)
        if not title or not suggestion:
            raise ValueError("a concept needs a title and a suggestion")
        if self.kind not in KINDS:
            raise ValueError(f"concept kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        params = tuple(
            p if isinstance(p, ConceptParameter) else ConceptParameter.from_dict(p) for p in self.parameters
        )
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "suggestion", suggestion)
        object.__setattr__(self, "situation", _clip(self.situation, _SITUATION_CHARS))
        object.__setattr__(self, "cues", _cues(self.cues))
        object.__setattr__(self, "parameters", params[:MAX_PARAMETERS])

    def index_text(self) -> str:
        """The text the lexical index sees."""
        return "\n".join([self.title, self.situation, *self.cues, self.suggestion])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "situation": self.situation,
            "cues": list(self.cues),
            "suggestion": self.suggestion,
            "parameters": [p.to_dict() for p in self.parameters],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptDraft:
        return cls(
            title=d.get("title", ""),
            suggestion=d.get("suggestion", ""),
            situation=d.get("situation", ""),
            cues=tuple(d.get("cues") or ()),
            parameters=tuple(ConceptParameter.from_dict(p) for p in d.get("parameters") or ()),
            kind=d.get("kind") or "strategy",
        )


@dataclass(frozen=True, slots=True)
class MergeEvent:
    """A draft that was merged into an existing concept, kept whole so nothing is lost."""

    at: datetime
    reason: Literal["title", "lexical", "embedding", "import"]
    similarity: float
    draft: ConceptDraft
    task_ids: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "reason": self.reason,
            "similarity": round(self.similarity, 4),
            "draft": self.draft.to_dict(),
            "task_ids": list(self.task_ids),
            "run_ids": list(self.run_ids),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MergeEvent:
        return cls(
            at=datetime.fromisoformat(d["at"]),
            reason=d.get("reason", "title"),
            similarity=float(d.get("similarity", 0.0)),
            draft=ConceptDraft.from_dict(d["draft"]),
            task_ids=tuple(d.get("task_ids") or ()),
            run_ids=tuple(d.get("run_ids") or ()),
        )


@dataclass(frozen=True, slots=True)
class Evidence:
    """The candidate a lesson was drawn from: which task and run, its position among the run's
    candidates, the verifier's score in [0, 1] and pass/fail, and the verifier's name.

    Kept so that a lesson written from an unverified answer (``memory_write="best"``) can be
    told apart from one the verifier passed.
    """

    task_id: str
    run_id: str = ""
    candidate: int | None = None
    score: float = 1.0
    passed: bool = True
    verifier: str = ""

    def __post_init__(self) -> None:
        score = float(self.score)
        if not 0.0 <= score <= 1.0:  # NaN fails too
            raise ValueError(f"evidence score must be in [0, 1], got {self.score!r}")
        object.__setattr__(self, "score", score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "run_id": self.run_id,
            "candidate": self.candidate,
            "score": self.score,
            "passed": self.passed,
            "verifier": self.verifier,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        candidate = d.get("candidate")
        return cls(
            task_id=str(d["task_id"]),
            run_id=str(d.get("run_id") or ""),
            candidate=None if candidate is None else int(candidate),
            score=float(d.get("score", 1.0)),
            passed=bool(d.get("passed", True)),
            verifier=str(d.get("verifier") or ""),
        )


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a concept came from: the tasks and runs it was abstracted from, the candidates
    (``evidence``) it was drawn from, and its merges."""

    task_ids: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()
    merges: tuple[MergeEvent, ...] = ()
    evidence: tuple[Evidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_ids": list(self.task_ids),
            "run_ids": list(self.run_ids),
            "merges": [m.to_dict() for m in self.merges],
            "evidence": [e.to_dict() for e in self.evidence],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Provenance:
        d = d or {}
        return cls(
            task_ids=tuple(d.get("task_ids") or ()),
            run_ids=tuple(d.get("run_ids") or ()),
            merges=tuple(MergeEvent.from_dict(m) for m in d.get("merges") or ()),
            evidence=tuple(Evidence.from_dict(e) for e in d.get("evidence") or ()),
        )

    def union(self, other: Provenance) -> Provenance:
        """Both provenances, duplicates dropped, order kept."""
        return Provenance(
            task_ids=tuple(dict.fromkeys(self.task_ids + other.task_ids)),
            run_ids=tuple(dict.fromkeys(self.run_ids + other.run_ids)),
            merges=self.merges + other.merges,
            evidence=tuple(dict.fromkeys(self.evidence + other.evidence)),
        )


@dataclass(frozen=True, slots=True)
class ConceptRecord:
    """A stored concept."""

    id: int
    uid: str
    namespace: str
    kind: str
    title: str
    situation: str
    cues: tuple[str, ...]
    suggestion: str
    parameters: tuple[ConceptParameter, ...]
    provenance: Provenance
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None
    version: int = 1
    usage_count: int = 0
    success_count: int = 0
    support_count: int = 1

    def render(self) -> str:
        """The concept as one lesson line for a prompt."""
        text = self.title
        if self.situation:
            text += f" (when: {self.situation})"
        text += f": {self.suggestion}"
        if self.parameters:
            params = "; ".join(
                f"{p.name} ({p.type}){': ' + p.description if p.description else ''}" for p in self.parameters
            )
            text += f" [parameters: {params}]"
        return text

    def embedding_text(self) -> str:
        """What the embedding rerank compares with the query: when the concept applies."""
        return ". ".join(s for s in (self.title, self.situation, "; ".join(self.cues)) if s)

    def draft(self) -> ConceptDraft:
        kind = self.kind if self.kind in KINDS else "strategy"
        return ConceptDraft(
            title=self.title,
            suggestion=self.suggestion,
            situation=self.situation,
            cues=self.cues,
            parameters=self.parameters,
            kind=kind,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uid": self.uid,
            "namespace": self.namespace,
            "kind": self.kind,
            "title": self.title,
            "situation": self.situation,
            "cues": list(self.cues),
            "suggestion": self.suggestion,
            "parameters": [p.to_dict() for p in self.parameters],
            "provenance": self.provenance.to_dict(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "version": self.version,
            "usage_count": self.usage_count,
            "success_count": self.success_count,
            "support_count": self.support_count,
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A concept and its retrieval score (BM25, or the cosine after an embedding rerank)."""

    concept: ConceptRecord
    score: float


@dataclass(frozen=True, slots=True)
class AddResult:
    """What happened to one draft: a new concept, or a merge into ``concept`` (never dropped)."""

    action: Literal["inserted", "merged"]
    concept: ConceptRecord
    reason: Literal["new", "title", "lexical", "embedding"] = "new"
    similarity: float | None = None


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """Counts over the store, or over one namespace."""

    concepts: int
    namespaces: dict[str, int]
    uses: int
    uses_passed: int
    uses_failed: int
    never_used: int
    helped: int
    revision: str | None = None
    url: str = ""
    # Abstraction calls, kept across sessions: attempted = accepted + declined + rejected.
    abstractions: int = 0
    abstractions_accepted: int = 0
    abstractions_declined: int = 0
    abstractions_rejected: int = 0
    first_rejection: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "concepts": self.concepts,
            "namespaces": dict(self.namespaces),
            "uses": self.uses,
            "uses_passed": self.uses_passed,
            "uses_failed": self.uses_failed,
            "never_used": self.never_used,
            "helped": self.helped,
            "revision": self.revision,
            "url": self.url,
            "abstractions_attempted": self.abstractions,
            "abstractions_accepted": self.abstractions_accepted,
            "abstractions_declined": self.abstractions_declined,
            "abstractions_rejected": self.abstractions_rejected,
            "first_rejection": self.first_rejection,
        }


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: concepts new to this store, merged into one by title, updated, or skipped."""

    inserted: int = 0
    merged: int = 0
    updated: int = 0
    skipped: int = 0
    uses: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "inserted": self.inserted,
            "merged": self.merged,
            "updated": self.updated,
            "skipped": self.skipped,
            "uses": self.uses,
        }


@dataclass(frozen=True, slots=True)
class PruneReport:
    """The concepts a prune removed (or would remove, with ``dry_run``)."""

    removed: tuple[ConceptRecord, ...] = field(default_factory=tuple)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": len(self.removed),
            "dry_run": self.dry_run,
            "concepts": [{"id": c.id, "namespace": c.namespace, "title": c.title} for c in self.removed],
        }
