"""Adding concepts to a SQL memory store: a draft merges into a near-duplicate, or is inserted.

A near-duplicate is a concept of the same namespace with the same title key, or one of the
lexical neighbours :func:`~agentloop.memory.merge.find_match` accepts (with embedding
similarity when the store has an embedder); :func:`~agentloop.memory.merge.merge_fields`
decides what the merged concept keeps.
"""

from __future__ import annotations

import builtins
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentloop.memory._store_base import _now, _record
from agentloop.memory._store_search import _to_bytes
from agentloop.memory._types import AddResult, ConceptDraft, ConceptParameter, Provenance, check_namespace
from agentloop.memory.merge import MergeMatch, Neighbour, find_match, merge_fields, title_key
from agentloop.memory.models import Concept
from agentloop.memory.retrieval import LexicalParams, analyze

if TYPE_CHECKING:
    import numpy as np

    from agentloop.memory.retrieval import Embedder

__all__ = ["MergeMixin"]

T = TypeVar("T")
_MERGE_NEIGHBOURS = 5


class MergeMixin:
    """:meth:`add_many` for :class:`~agentloop.memory.store.SQLMemoryStore`: merge or insert each draft."""

    if TYPE_CHECKING:
        embedder: Embedder | None
        merge_threshold: float
        lexical: LexicalParams

        def _write(self, fn: Callable[[Session], T], *, namespaces: Collection[str] | None) -> T: ...

        def _lexical(
            self, s: Session, query: str, namespace: str | None, k: int, params: LexicalParams
        ) -> builtins.list[tuple[int, float]]: ...

        def _embeddings(self, s: Session, ids: Sequence[int], model_id: str) -> dict[int, np.ndarray]: ...

        def _reindex(self, s: Session, concept: Concept, *, counted: bool = True) -> None: ...

        def _count_terms(
            self, s: Session, namespace: str, delta: Counter[str], *, concepts: int, terms: int
        ) -> None: ...

    def add_many(
        self, drafts: Sequence[ConceptDraft], *, namespace: str, provenance: Provenance | None = None
    ) -> list[AddResult]:
        check_namespace(namespace)
        provenance = provenance or Provenance()
        if not drafts:
            return []
        vectors = self.embedder.encode([_draft_embedding_text(d) for d in drafts]) if self.embedder else None

        def run(s: Session) -> list[AddResult]:
            out = []
            for i, draft in enumerate(drafts):
                vec = vectors[i] if vectors is not None else None
                out.append(self._add_one(s, draft, namespace, provenance, vec))
            return out

        return self._write(run, namespaces=[namespace])

    def _add_one(
        self,
        s: Session,
        draft: ConceptDraft,
        namespace: str,
        provenance: Provenance,
        vector: np.ndarray | None,
    ) -> AddResult:
        now = _now()
        match = self._find_match(s, draft, namespace, vector)
        if match is not None:
            concept = self._merge_into(s, match, draft, provenance, now)
            return AddResult("merged", _record(concept), match.reason, match.similarity)
        terms = analyze(draft.index_text())
        concept = Concept(
            uid=uuid.uuid4().hex,
            namespace=namespace,
            kind=draft.kind,
            title=draft.title,
            title_key=title_key(draft.title),
            situation=draft.situation,
            cues=list(draft.cues),
            suggestion=draft.suggestion,
            parameters=[p.to_dict() for p in draft.parameters],
            provenance=Provenance(
                provenance.task_ids, provenance.run_ids, evidence=provenance.evidence
            ).to_dict(),
            search_text=" ".join(terms),
            search_len=len(terms),
            created_at=now,
            updated_at=now,
            version=1,
            usage_count=0,
            success_count=0,
            support_count=1,
        )
        if vector is not None and self.embedder is not None:
            concept.embedding = _to_bytes(vector)
            concept.embedding_model = self.embedder.model_id
        s.add(concept)
        s.flush()
        self._count_terms(s, namespace, Counter(set(terms)), concepts=1, terms=len(terms))
        return AddResult("inserted", _record(concept))

    def _find_match(
        self, s: Session, draft: ConceptDraft, namespace: str, vector: np.ndarray | None
    ) -> MergeMatch | None:
        key = title_key(draft.title)
        same = s.scalar(select(Concept.id).where(Concept.namespace == namespace, Concept.title_key == key))
        if same is not None:
            return MergeMatch(same, "title", 1.0)
        ranked = self._lexical(s, draft.index_text(), namespace, _MERGE_NEIGHBOURS, self.lexical)
        if not ranked:
            return None
        rows = s.execute(
            select(Concept.id, Concept.title_key, Concept.search_text).where(
                Concept.id.in_([i for i, _ in ranked])
            )
        ).all()
        cosines: dict[int, float] = {}
        if vector is not None and self.embedder is not None:
            stored = self._embeddings(s, [r.id for r in rows], self.embedder.model_id)
            for r in rows:
                if r.id in stored:
                    cosines[r.id] = float(stored[r.id] @ vector)
        neighbours = [
            Neighbour(r.id, r.title_key, frozenset(r.search_text.split()), cosines.get(r.id)) for r in rows
        ]
        return find_match(draft, neighbours, threshold=self.merge_threshold)

    def _merge_into(
        self, s: Session, match: MergeMatch, draft: ConceptDraft, provenance: Provenance, now: datetime
    ) -> Concept:
        concept = s.get(Concept, match.concept_id, with_for_update=True)
        assert concept is not None
        merged = merge_fields(
            situation=concept.situation,
            cues=concept.cues,
            parameters=[ConceptParameter.from_dict(p) for p in concept.parameters],
            provenance=Provenance.from_dict(concept.provenance),
            draft=draft,
            draft_provenance=provenance,
            match=match,
            now=now,
        )
        concept.situation = merged.situation
        concept.cues = list(merged.cues)
        concept.parameters = [p.to_dict() for p in merged.parameters]
        concept.provenance = merged.provenance.to_dict()
        self._reindex(s, concept)
        concept.version += 1
        concept.support_count += 1
        concept.updated_at = now
        s.flush()
        return concept


def _draft_embedding_text(d: ConceptDraft) -> str:
    return ". ".join(s for s in (d.title, d.situation, "; ".join(d.cues)) if s)
