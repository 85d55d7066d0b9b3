"""The memory store contract and its one implementation on SQLAlchemy (SQLite and PostgreSQL).

>>> store = SQLMemoryStore("sqlite:///memory.sqlite")          # or postgresql://...
>>> store.add(ConceptDraft(title=..., suggestion=...), namespace="spider")
>>> store.search("how many singers per country", namespace="spider", k=5)

Every write is one transaction, retried on transient conflicts. SQLite runs in WAL mode
and writes take the database's write lock up front (``BEGIN IMMEDIATE``), waiting on a
busy timeout; PostgreSQL writers take a transaction-scoped advisory lock per namespace.
So concurrent writers, in threads or processes, neither lose nor duplicate concepts,
and a merge always sees every concept committed before it.
"""

from __future__ import annotations

import builtins
import itertools
import math
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Engine, Table, Text, bindparam, create_engine, delete, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from agentloop.errors import MissingExtraError
from agentloop.memory import migrate
from agentloop.memory._dialects import Dialect, dialect_for
from agentloop.memory._types import (
    AddResult,
    ConceptDraft,
    ConceptParameter,
    ConceptRecord,
    MemoryStats,
    MemoryStoreError,
    Provenance,
    SearchHit,
    check_namespace,
)
from agentloop.memory.merge import (
    LEXICAL_THRESHOLD,
    MergeMatch,
    Neighbour,
    find_match,
    merge_fields,
    title_key,
)
from agentloop.memory.models import Concept, ConceptUse, NamespaceStat, TermStat
from agentloop.memory.retrieval import LexicalParams, analyze, bm25_rank, choose_terms, idf, query_terms

if TYPE_CHECKING:
    import numpy as np

    from agentloop.memory.retrieval import Embedder

__all__ = [
    "EXPORT_FORMAT",
    "MemoryStore",
    "SQLMemoryStore",
    "default_memory_url",
    "resolve_memory_url",
]

from agentloop.memory._store_base import (
    EXPORT_FORMAT,
    ListOrder,
    MemoryStore,
    _index_text,
    _now,
    _record,
    default_memory_url,
    resolve_memory_url,
)
from agentloop.memory._store_import import _IMPORT_BATCH, ImportMixin
from agentloop.memory._store_maintenance import MaintenanceMixin

T = TypeVar("T")
_MERGE_NEIGHBOURS = 5
_CONCEPTS = cast(Table, Concept.__table__)
_TERMS = cast(Table, TermStat.__table__)
_NAMESPACES = cast(Table, NamespaceStat.__table__)


class SQLMemoryStore(ImportMixin, MaintenanceMixin, MemoryStore):
    """The memory store on SQLite (default) or PostgreSQL, upgraded to the current schema on open.

    ``embedder`` adds embedding similarity to near-duplicate detection (and stores each
    new concept's vector); ``merge_threshold`` is the lexical (Dice) similarity at which
    a draft merges into an existing concept; ``lexical`` tunes search. With ``create=False``
    a store that does not exist yet raises :class:`MemoryStoreError` instead of being created.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        embedder: Embedder | None = None,
        merge_threshold: float = LEXICAL_THRESHOLD,
        lexical: LexicalParams | None = None,
        retries: int = 8,
        upgrade: bool = True,
        create: bool = True,
    ):
        self.url = resolve_memory_url(url)
        self.embedder = embedder
        self.merge_threshold = merge_threshold
        self.lexical = lexical or LexicalParams()
        self._retries = retries
        self._engine = _create_engine(self.url, create=create)
        self._dialect: Dialect = dialect_for(self._engine.dialect.name)
        self._dialect.configure(self._engine)
        self._write_engine = self._engine.execution_options(agentloop_write=True)
        try:
            if not create:
                with self._engine.connect() as conn:
                    if migrate.current_revision(conn) is None:
                        raise MemoryStoreError(
                            f"no memory store in {self.safe_url}: it holds no concepts table"
                        )
            self.revision = migrate.upgrade(self._engine) if upgrade else None
        except (DBAPIError, MemoryStoreError) as exc:
            self._engine.dispose()
            if isinstance(exc, MemoryStoreError):
                raise
            # One line for the CLI: a server that is down, a file that is not a database, ...
            reason = " ".join(str(exc.orig).split())
            raise MemoryStoreError(
                f"cannot open the memory store {self.safe_url}: {reason}; check its URL or path"
            ) from exc

    def __repr__(self) -> str:
        return f"<SQLMemoryStore {self.safe_url!r}>"

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # --- transactions --------------------------------------------------------------------

    def _read(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    def _write(self, fn: Callable[[Session], T], *, namespaces: Collection[str] | None) -> T:
        """Run ``fn`` in one write transaction, retried with backoff on transient conflicts."""
        delay = 0.02
        for attempt in itertools.count(1):
            try:
                with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
                    self._dialect.lock(session, namespaces)
                    return fn(session)
            except DBAPIError as exc:
                if attempt >= self._retries or not self._dialect.transient(exc):
                    raise
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    # --- writes ----------------------------------------------------------------------------

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
            provenance=Provenance(provenance.task_ids, provenance.run_ids).to_dict(),
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

    def record_uses(self, shown: Sequence[tuple[int, float | None]], *, task_id: str, run_id: str) -> int:
        if not shown:
            return 0
        now = _now()
        ids = sorted({cid for cid, _ in shown})

        def run(s: Session) -> int:
            s.execute(
                update(Concept)
                .where(Concept.id.in_(ids))
                .values(usage_count=Concept.usage_count + 1, last_used_at=now)
                .execution_options(synchronize_session=False)
            )
            s.add_all(
                ConceptUse(
                    concept_id=cid, task_id=task_id, run_id=run_id, shown_at=now, rank=rank, score=score
                )
                for rank, (cid, score) in enumerate(shown)
            )
            return len(shown)

        return self._write(run, namespaces=())

    def record_outcome(self, *, task_id: str, run_id: str, passed: bool) -> int:
        def run(s: Session) -> int:
            closed = s.execute(
                update(ConceptUse)
                .where(
                    ConceptUse.task_id == task_id, ConceptUse.run_id == run_id, ConceptUse.outcome.is_(None)
                )
                .values(outcome="passed" if passed else "failed")
                .returning(ConceptUse.concept_id)
                .execution_options(synchronize_session=False)
            ).all()
            ids = sorted({r[0] for r in closed})
            if passed and ids:
                s.execute(
                    update(Concept)
                    .where(Concept.id.in_(ids))
                    .values(success_count=Concept.success_count + 1)
                    .execution_options(synchronize_session=False)
                )
            return len(closed)

        return self._write(run, namespaces=())

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

    # --- reads -----------------------------------------------------------------------------

    def get(self, ref: int | str) -> ConceptRecord | None:
        with self._read() as s:
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                c = s.get(Concept, int(ref))
            else:
                c = s.scalar(select(Concept).where(Concept.uid == ref))
            return _record(c) if c is not None else None

    def list(
        self, *, namespace: str | None = None, limit: int = 50, offset: int = 0, order: ListOrder = "updated"
    ) -> builtins.list[ConceptRecord]:
        orders: dict[str, tuple[Any, ...]] = {
            "updated": (Concept.updated_at.desc(), Concept.id.desc()),
            "created": (Concept.created_at.desc(), Concept.id.desc()),
            "usage": (Concept.usage_count.desc(), Concept.id.desc()),
            "success": (Concept.success_count.desc(), Concept.id.desc()),
            "id": (Concept.id.asc(),),
        }
        if order not in orders:
            raise ValueError(f"order must be one of {', '.join(orders)}, got {order!r}")
        query = select(Concept).order_by(*orders[order]).limit(limit).offset(offset)
        if namespace is not None:
            query = query.where(Concept.namespace == namespace)
        with self._read() as s:
            return [_record(c) for c in s.scalars(query)]

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

    def writes_by_run(self, run_id: str, *, namespace: str | None = None) -> dict[str, int]:
        # A substring match on the JSON text narrows the scan on both databases; the exact
        # pairs are read from the parsed provenance.
        query = select(Concept.provenance).where(
            cast(Any, Concept.provenance).cast(Text).contains(run_id, autoescape=True)
        )
        if namespace is not None:
            query = query.where(Concept.namespace == check_namespace(namespace))
        counts: Counter[str] = Counter()
        with self._read() as s:
            for raw in s.scalars(query):
                p = Provenance.from_dict(raw)
                if p.run_ids[:1] == (run_id,) and p.task_ids:
                    counts[p.task_ids[0]] += 1
                for m in p.merges:
                    if run_id in m.run_ids:
                        counts.update(m.task_ids)
        return dict(counts)

    def stats(self, namespace: str | None = None) -> MemoryStats:
        def scoped(q: Any) -> Any:
            return q.where(Concept.namespace == namespace) if namespace is not None else q

        with self._read() as s:
            per_ns: dict[str, int] = dict(
                s.execute(scoped(select(Concept.namespace, func.count()).group_by(Concept.namespace))).all()
            )
            outcomes: dict[str | None, int] = dict(
                s.execute(
                    scoped(
                        select(ConceptUse.outcome, func.count())
                        .join(Concept, Concept.id == ConceptUse.concept_id)
                        .group_by(ConceptUse.outcome)
                    )
                ).all()
            )
            never_used = s.scalar(scoped(select(func.count()).where(Concept.usage_count == 0))) or 0
            helped = s.scalar(scoped(select(func.count()).where(Concept.success_count > 0))) or 0
            revision = migrate.current_revision(s.connection())
        return MemoryStats(
            concepts=sum(per_ns.values()),
            namespaces={k: per_ns[k] for k in sorted(per_ns)},
            uses=sum(outcomes.values()),
            uses_passed=outcomes.get("passed", 0),
            uses_failed=outcomes.get("failed", 0),
            never_used=never_used,
            helped=helped,
            revision=revision,
            url=self.safe_url,
        )

    def iter_export(self, *, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        last = 0
        while True:
            query = select(Concept).where(Concept.id > last).order_by(Concept.id).limit(_IMPORT_BATCH)
            if namespace is not None:
                query = query.where(Concept.namespace == namespace)
            with self._read() as s:
                batch = list(s.scalars(query))
                if not batch:
                    return
                uses: dict[int, builtins.list[dict[str, Any]]] = defaultdict(list)
                for u in s.scalars(
                    select(ConceptUse)
                    .where(ConceptUse.concept_id.in_([c.id for c in batch]))
                    .order_by(ConceptUse.id)
                ):
                    uses[u.concept_id].append(
                        {
                            "task_id": u.task_id,
                            "run_id": u.run_id,
                            "shown_at": u.shown_at.isoformat(),
                            "rank": u.rank,
                            "score": u.score,
                            "outcome": u.outcome,
                        }
                    )
            for c in batch:
                item = _record(c).to_dict()
                del item["id"]
                item["uses"] = uses.get(c.id, [])
                yield item
            last = batch[-1].id

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


def _create_engine(url: str, *, create: bool = True) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise MemoryStoreError(f"the memory store runs on SQLite or PostgreSQL, not {backend!r}")
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            # One shared connection, or every connection would see its own empty database.
            return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        path = Path(database).expanduser()
        if not create and not path.is_file():
            raise MemoryStoreError(f"no memory store at {path}: the file does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    try:
        return create_engine(url, pool_pre_ping=True)
    except ImportError as exc:
        raise MissingExtraError(exc.name or "psycopg", "postgres") from None


def _draft_embedding_text(d: ConceptDraft) -> str:
    return ". ".join(s for s in (d.title, d.situation, "; ".join(d.cues)) if s)


def _to_bytes(vector: np.ndarray) -> bytes:
    import numpy as np

    return np.asarray(vector, dtype=np.float32).tobytes()
