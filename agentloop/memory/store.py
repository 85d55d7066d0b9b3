"""The memory store contract and its one implementation on SQLAlchemy (SQLite and PostgreSQL).

>>> store = SQLMemoryStore("sqlite:///memory.sqlite")          # or postgresql://...
>>> store.add(ConceptDraft(title=..., suggestion=...), namespace="spider")
>>> store.search("how many singers per country", namespace="spider", k=5)

Every write is one transaction, retried on transient conflicts. SQLite runs in WAL mode
and writes take the database's write lock up front (``BEGIN IMMEDIATE``), waiting on a
busy timeout; PostgreSQL writers take a transaction-scoped advisory lock per namespace.
So concurrent writers, in threads or processes, neither lose nor duplicate concepts,
and a merge always sees every concept committed before it.

This module opens the store and holds its transactions and plain queries; the rest is in
mixins along its seams: adding and merging drafts (``_store_merge``), the lexical index,
search and embeddings (``_store_search``), importing exports (``_store_import``), and
pruning and reindexing (``_store_maintenance``).
"""

from __future__ import annotations

import builtins
import itertools
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Engine, Text, create_engine, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from agentloop.errors import MissingExtraError
from agentloop.memory import migrate
from agentloop.memory._dialects import Dialect, dialect_for
from agentloop.memory._store_base import (
    EXPORT_FORMAT,
    ListOrder,
    MemoryStore,
    _now,
    _record,
    default_memory_url,
    resolve_memory_url,
)
from agentloop.memory._store_import import _IMPORT_BATCH, ImportMixin
from agentloop.memory._store_maintenance import MaintenanceMixin
from agentloop.memory._store_merge import MergeMixin
from agentloop.memory._store_search import SearchMixin
from agentloop.memory._types import (
    ConceptRecord,
    MemoryStats,
    MemoryStoreError,
    Provenance,
    check_namespace,
)
from agentloop.memory.merge import LEXICAL_THRESHOLD
from agentloop.memory.models import AbstractionStat, Concept, ConceptUse
from agentloop.memory.retrieval import LexicalParams

if TYPE_CHECKING:
    from agentloop.memory.retrieval import Embedder

__all__ = [
    "EXPORT_FORMAT",
    "MemoryStore",
    "SQLMemoryStore",
    "default_memory_url",
    "resolve_memory_url",
]

T = TypeVar("T")


class SQLMemoryStore(MergeMixin, SearchMixin, ImportMixin, MaintenanceMixin, MemoryStore):
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

    def record_abstraction(self, namespace: str, outcome: str, reason: str | None = None) -> None:
        if outcome not in ("accepted", "declined", "rejected"):
            raise ValueError(f"abstraction outcome must be accepted, declined or rejected, got {outcome!r}")

        def run(s: Session) -> None:
            row = s.get(AbstractionStat, namespace)
            if row is None:
                row = AbstractionStat(
                    namespace=namespace, attempted=0, accepted=0, declined=0, rejected=0, first_rejection=None
                )
                s.add(row)
            row.attempted += 1
            setattr(row, outcome, getattr(row, outcome) + 1)
            if outcome == "rejected" and row.first_rejection is None:
                row.first_rejection = (reason or "")[:500]

        self._write(run, namespaces=[namespace])

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
            tried_q = select(AbstractionStat).order_by(AbstractionStat.namespace)
            if namespace is not None:
                tried_q = tried_q.where(AbstractionStat.namespace == namespace)
            tried = list(s.scalars(tried_q))
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
            abstractions=sum(t.attempted for t in tried),
            abstractions_accepted=sum(t.accepted for t in tried),
            abstractions_declined=sum(t.declined for t in tried),
            abstractions_rejected=sum(t.rejected for t in tried),
            first_rejection=next((t.first_rejection for t in tried if t.first_rejection), None),
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
