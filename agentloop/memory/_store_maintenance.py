"""Maintenance of a SQL memory store: pruning concepts and rebuilding the search index."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from agentloop.memory._store_base import _index_text, _now, _record, namespace_terms
from agentloop.memory._store_import import _chunks
from agentloop.memory._types import PruneReport, check_namespace
from agentloop.memory.models import Concept, ConceptUse, NamespaceStat, TermStat
from agentloop.memory.retrieval import analyze

__all__ = ["MaintenanceMixin"]

T = TypeVar("T")


class MaintenanceMixin:
    """:meth:`prune` and :meth:`rebuild_index` for :class:`~agentloop.memory.store.SQLMemoryStore`."""

    if TYPE_CHECKING:
        _dialect: Any

        def _write(self, fn: Callable[[Session], T], *, namespaces: Collection[str] | None) -> T: ...

        def _count_terms(
            self, s: Session, namespace: str, delta: Counter[str], *, concepts: int, terms: int
        ) -> None: ...

    def prune(
        self,
        *,
        older_than: timedelta | None = None,
        never_helped: int | None = None,
        namespace: str | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> PruneReport:
        if older_than is None and never_helped is None:
            raise ValueError("prune needs older_than and/or never_helped")
        if never_helped is not None and never_helped < 1:
            raise ValueError(f"never_helped must be >= 1, got {never_helped}")
        if namespace is not None:
            check_namespace(namespace)
        now = now or _now()
        query = select(Concept).order_by(Concept.id)
        if namespace is not None:
            query = query.where(Concept.namespace == namespace)
        if older_than is not None:
            query = query.where(func.coalesce(Concept.last_used_at, Concept.updated_at) < now - older_than)
        if never_helped is not None:
            query = query.where(Concept.usage_count >= never_helped, Concept.success_count == 0)

        def run(s: Session) -> PruneReport:
            victims = list(s.scalars(query))
            records = tuple(_record(c) for c in victims)
            if dry_run or not victims:
                return PruneReport(records, dry_run)
            per_ns, sizes, counts = namespace_terms(
                (c.namespace, c.search_text, c.search_len) for c in victims
            )
            ids = [c.id for c in victims]
            for chunk in _chunks(ids, 500):
                s.execute(delete(ConceptUse).where(ConceptUse.concept_id.in_(chunk)))
                s.execute(
                    delete(Concept).where(Concept.id.in_(chunk)).execution_options(synchronize_session=False)
                )
            for ns in sorted(per_ns):
                gone = Counter({t: -d for t, d in per_ns[ns].items()})
                self._count_terms(s, ns, gone, concepts=-counts[ns], terms=-sizes[ns])
            return PruneReport(records, False)

        return self._write(run, namespaces=[namespace] if namespace is not None else None)

    def rebuild_index(self) -> None:
        """Re-analyse every concept and rebuild the full-text index and term statistics from scratch.

        Needed only after the analyser changes; normal writes keep all of it current.
        """

        def run(s: Session) -> None:
            s.execute(delete(TermStat))
            s.execute(delete(NamespaceStat))
            for concept in s.scalars(select(Concept).order_by(Concept.id)):
                terms = analyze(
                    _index_text(concept.title, concept.situation, concept.cues, concept.suggestion)
                )
                concept.search_text = " ".join(terms)
                concept.search_len = len(terms)
            s.flush()
            rows = s.execute(select(Concept.namespace, Concept.search_text, Concept.search_len))
            per_ns, sizes, counts = namespace_terms((ns, text_, n) for ns, text_, n in rows)
            for ns in sorted(per_ns):
                self._count_terms(s, ns, per_ns[ns], concepts=counts[ns], terms=sizes[ns])
            self._dialect.rebuild_index(s)

        self._write(run, namespaces=None)
