"""Search in a SQL memory store: the lexical index every write keeps current, and stored embeddings.

Each concept's analyzed terms are its ``search_text``; per-namespace term and concept counts
(:class:`~agentloop.memory.models.TermStat`, :class:`~agentloop.memory.models.NamespaceStat`)
give BM25 its statistics without scanning the store (see :mod:`agentloop.memory.retrieval`).
"""

from __future__ import annotations

import builtins
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from agentloop.memory._store_base import _index_text, _record
from agentloop.memory._types import SearchHit, check_namespace
from agentloop.memory.models import Concept, NamespaceStat, TermStat
from agentloop.memory.retrieval import LexicalParams, analyze, bm25_rank, choose_terms, idf, query_terms

if TYPE_CHECKING:
    import numpy as np

    from agentloop.memory._dialects import Dialect

__all__ = ["SearchMixin"]

T = TypeVar("T")
_CONCEPTS = cast(Table, Concept.__table__)
_TERMS = cast(Table, TermStat.__table__)
_NAMESPACES = cast(Table, NamespaceStat.__table__)


class SearchMixin:
    """Lexical search, its term statistics, and embeddings for :class:`~agentloop.memory.store.SQLMemoryStore`."""

    if TYPE_CHECKING:
        _dialect: Dialect
        lexical: LexicalParams

        def _read(self) -> Session: ...

        def _write(self, fn: Callable[[Session], T], *, namespaces: Collection[str] | None) -> T: ...

    # --- the lexical index -------------------------------------------------------------------

    def _reindex(self, s: Session, concept: Concept, *, counted: bool = True) -> None:
        """Recompute a concept's search text after its fields changed (and, if ``counted``, its term stats)."""
        terms = analyze(_index_text(concept.title, concept.situation, concept.cues, concept.suggestion))
        if counted:
            old, new = set(concept.search_text.split()), set(terms)
            delta = Counter({t: 1 for t in new - old})
            delta.subtract({t: 1 for t in old - new})
            self._count_terms(s, concept.namespace, delta, concepts=0, terms=len(terms) - concept.search_len)
        concept.search_text = " ".join(terms)
        concept.search_len = len(terms)

    def _count_terms(
        self, s: Session, namespace: str, delta: Counter[str], *, concepts: int, terms: int
    ) -> None:
        """Apply document-frequency changes for one namespace (sorted: a fixed lock order)."""
        up = [{"namespace": namespace, "term": t, "df": d} for t, d in sorted(delta.items()) if d > 0]
        down = [{"b_ns": namespace, "b_term": t, "b_d": -d} for t, d in sorted(delta.items()) if d < 0]
        table = _TERMS
        if up:
            s.execute(self._dialect.upsert_add(table, ["namespace", "term"], ["df"]), up)  # type: ignore[arg-type]
        if down:
            s.execute(
                update(table)
                .where(table.c.namespace == bindparam("b_ns"), table.c.term == bindparam("b_term"))
                .values(df=table.c.df - bindparam("b_d")),
                down,
            )
            s.execute(
                delete(table).where(
                    table.c.namespace == namespace,
                    table.c.term.in_([d["b_term"] for d in down]),
                    table.c.df <= 0,
                )
            )
        if concepts or terms:
            ns_table = _NAMESPACES
            s.execute(
                self._dialect.upsert_add(ns_table, ["namespace"], ["concepts", "terms"]),  # type: ignore[arg-type]
                [{"namespace": namespace, "concepts": concepts, "terms": terms}],
            )
            if concepts < 0:
                s.execute(delete(ns_table).where(ns_table.c.namespace == namespace, ns_table.c.concepts <= 0))

    # --- search ------------------------------------------------------------------------------

    def search(
        self, query: str, *, namespace: str | None = None, k: int = 5, params: LexicalParams | None = None
    ) -> builtins.list[SearchHit]:
        if namespace is not None:
            check_namespace(namespace)
        if k < 1:
            return []
        with self._read() as s:
            ranked = self._lexical(s, query, namespace, k, params or self.lexical)
            if not ranked:
                return []
            rows = {c.id: c for c in s.scalars(select(Concept).where(Concept.id.in_([i for i, _ in ranked])))}
            return [SearchHit(_record(rows[i]), score) for i, score in ranked if i in rows]

    def _lexical(
        self, s: Session, query: str, namespace: str | None, k: int, params: LexicalParams
    ) -> builtins.list[tuple[int, float]]:
        """Two-phase BM25 (see :mod:`agentloop.memory.retrieval`): ``(id, score)``, best first."""
        terms = query_terms(query, params.max_query_terms)
        if not terms:
            return []
        size: Any
        if namespace is None:
            df_rows = s.execute(
                select(TermStat.term, func.sum(TermStat.df))
                .where(TermStat.term.in_(terms))
                .group_by(TermStat.term)
            )
            size = s.execute(select(func.sum(NamespaceStat.concepts), func.sum(NamespaceStat.terms))).one()
        else:
            df_rows = s.execute(
                select(TermStat.term, TermStat.df).where(
                    TermStat.namespace == namespace, TermStat.term.in_(terms)
                )
            )
            size = s.execute(
                select(NamespaceStat.concepts, NamespaceStat.terms).where(
                    NamespaceStat.namespace == namespace
                )
            ).one_or_none()
        dfs = {t: int(df) for t, df in df_rows}
        n_docs, n_terms = (int(size[0] or 0), int(size[1] or 0)) if size else (0, 0)
        chosen = choose_terms(dfs, params)
        if not chosen or n_docs == 0:
            return []
        weights = {t: idf(dfs[t], n_docs) for t in chosen}
        capped = {t for t in chosen if dfs[t] > params.budget}
        scope, limit = namespace, params.candidates
        if namespace is not None:
            # A namespace that holds most of the store filters better after phase 1 than
            # inside it (an FTS AND with a long list); fetch proportionally more candidates.
            total = s.scalar(select(func.sum(NamespaceStat.concepts))) or n_docs
            if n_docs * 2 >= total:
                scope, limit = None, math.ceil(params.candidates * total / n_docs)
        ids = self._dialect.candidates(s, weights, capped, scope, params.budget, limit)
        if not ids:
            return []
        # The namespace is checked here, not in SQL: given "id IN (...) AND namespace = ?",
        # SQLite without ANALYZE statistics scans the namespace index instead of the ids.
        docs = select(Concept.id, Concept.namespace, Concept.search_text).where(Concept.id.in_(ids))
        rows = [(r[0], r[2]) for r in s.execute(docs) if namespace is None or r[1] == namespace]
        return bm25_rank(terms, rows, dfs, n_docs, n_terms / n_docs, params)[:k]

    # --- embeddings --------------------------------------------------------------------------

    def set_embeddings(self, vectors: Mapping[int, np.ndarray], model_id: str) -> None:
        if not vectors:
            return
        table = _CONCEPTS
        rows = [{"b_id": cid, "b_vec": _to_bytes(v)} for cid, v in sorted(vectors.items())]

        def run(s: Session) -> None:
            s.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(embedding=bindparam("b_vec"), embedding_model=model_id),
                rows,
            )

        self._write(run, namespaces=())

    def get_embeddings(self, ids: Sequence[int], model_id: str) -> dict[int, np.ndarray]:
        with self._read() as s:
            return self._embeddings(s, ids, model_id)

    def _embeddings(self, s: Session, ids: Sequence[int], model_id: str) -> dict[int, np.ndarray]:
        import numpy as np

        if not ids:
            return {}
        rows = s.execute(
            select(Concept.id, Concept.embedding).where(
                Concept.id.in_(list(ids)), Concept.embedding_model == model_id, Concept.embedding.is_not(None)
            )
        )
        return {cid: np.frombuffer(cast(bytes, blob), dtype=np.float32) for cid, blob in rows}


def _to_bytes(vector: np.ndarray) -> bytes:
    import numpy as np

    return np.asarray(vector, dtype=np.float32).tobytes()
