"""Near-duplicate detection and merging of concepts, so one lesson is stored once.

A draft merges into an existing concept of its namespace when their normalised titles
match, or when the Dice coefficient of their analysed terms reaches the store's
threshold, or (with an embedder) when the cosine of their embeddings does. A merge
never drops the draft: its task and run ids join the concept's provenance, the
draft itself is kept whole in ``provenance.merges``, new cues and parameters are
added, and ``version`` and ``support_count`` go up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from agentloop.memory._types import (
    MAX_CUES,
    MAX_PARAMETERS,
    ConceptDraft,
    ConceptParameter,
    MergeEvent,
    Provenance,
)
from agentloop.memory.retrieval import analyze, fold

__all__ = [
    "EMBEDDING_THRESHOLD",
    "LEXICAL_THRESHOLD",
    "MergeMatch",
    "MergedFields",
    "dice",
    "find_match",
    "merge_fields",
    "term_set",
    "title_key",
]

# Dice over analysed terms. Rewordings of one lesson by the same model land around
# 0.6-0.8; different lessons about the same SQL feature stay under 0.5.
LEXICAL_THRESHOLD = 0.6
EMBEDDING_THRESHOLD = 0.9
_KEY_CHARS = 255


def title_key(title: str) -> str:
    """The normalised title: analysed terms (folded, stemmed, stopwords dropped) in order."""
    key = " ".join(analyze(title)) or " ".join(re.findall(r"\S+", fold(title)))
    return key[:_KEY_CHARS]


def term_set(draft: ConceptDraft) -> frozenset[str]:
    return frozenset(analyze(draft.index_text()))


def dice(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 0.0
    return 2.0 * len(a & b) / (len(a) + len(b))


@dataclass(frozen=True, slots=True)
class MergeMatch:
    """Which existing concept a draft merges into, and why."""

    concept_id: int
    reason: Literal["title", "lexical", "embedding"]
    similarity: float


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An existing concept as :func:`find_match` sees it."""

    concept_id: int
    title_key: str
    terms: frozenset[str]
    cosine: float | None = None


def find_match(
    draft: ConceptDraft,
    neighbours: Sequence[Neighbour],
    *,
    threshold: float = LEXICAL_THRESHOLD,
    embedding_threshold: float = EMBEDDING_THRESHOLD,
) -> MergeMatch | None:
    """The neighbour ``draft`` should merge into, or ``None`` to insert it.

    A title match wins; otherwise the most similar neighbour at or above a threshold.
    """
    key = title_key(draft.title)
    for n in neighbours:
        if n.title_key == key:
            return MergeMatch(n.concept_id, "title", 1.0)
    terms = term_set(draft)
    best: MergeMatch | None = None
    for n in neighbours:
        sim = dice(terms, n.terms)
        if sim >= threshold and (best is None or sim > best.similarity):
            best = MergeMatch(n.concept_id, "lexical", sim)
    if best is not None:
        return best
    for n in neighbours:
        if n.cosine is not None and n.cosine >= embedding_threshold:
            if best is None or n.cosine > best.similarity:
                best = MergeMatch(n.concept_id, "embedding", n.cosine)
    return best


@dataclass(frozen=True, slots=True)
class MergedFields:
    """The columns a merge changes."""

    situation: str
    cues: tuple[str, ...]
    parameters: tuple[ConceptParameter, ...]
    provenance: Provenance


def _union_cues(old: Iterable[str], new: Iterable[str]) -> tuple[str, ...]:
    out: dict[str, str] = {}
    for cue in [*old, *new]:
        out.setdefault(cue.lower(), cue)
    return tuple(out.values())[:MAX_CUES]


def _union_parameters(
    old: Sequence[ConceptParameter], new: Sequence[ConceptParameter]
) -> tuple[ConceptParameter, ...]:
    out: dict[str, ConceptParameter] = {}
    for p in [*old, *new]:
        out.setdefault(p.name.lower(), p)
    return tuple(out.values())[:MAX_PARAMETERS]


def merge_fields(
    *,
    situation: str,
    cues: Sequence[str],
    parameters: Sequence[ConceptParameter],
    provenance: Provenance,
    draft: ConceptDraft,
    draft_provenance: Provenance,
    match: MergeMatch,
    now: datetime,
) -> MergedFields:
    """The existing concept's fields after merging ``draft`` into it.

    The existing title, kind and suggestion stay (they have already been shown to
    tasks); the draft is recorded whole in ``provenance.merges``.
    """
    event = MergeEvent(
        at=now,
        reason=match.reason,
        similarity=match.similarity,
        draft=draft,
        task_ids=draft_provenance.task_ids,
        run_ids=draft_provenance.run_ids,
    )
    return MergedFields(
        situation=situation or draft.situation,
        cues=_union_cues(cues, draft.cues),
        parameters=_union_parameters(parameters, draft.parameters),
        provenance=provenance.union(
            Provenance(
                draft_provenance.task_ids, draft_provenance.run_ids, (event,), draft_provenance.evidence
            )
        ),
    )
