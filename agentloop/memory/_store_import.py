"""Importing exported concepts into a SQL memory store: parsing, matching by uid and title, merging."""

from __future__ import annotations

import builtins
import functools
import itertools
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentloop.memory._store_base import _now, _record, namespace_terms
from agentloop.memory._types import (
    KINDS,
    ConceptDraft,
    ConceptParameter,
    ImportReport,
    MemoryStoreError,
    MergeEvent,
    Provenance,
    check_namespace,
)
from agentloop.memory.merge import (
    MergeMatch,
    merge_fields,
    title_key,
)
from agentloop.memory.models import Concept, ConceptUse
from agentloop.memory.retrieval import analyze

__all__ = ["ImportMixin"]

T = TypeVar("T")
_IMPORT_BATCH = 500


class ImportMixin:
    """:meth:`import_items` for :class:`~agentloop.memory.store.SQLMemoryStore`.

    A concept this store already has (same uid) is overwritten only by a newer version; one
    with the title of a concept in its namespace is merged into it; anything else is inserted.
    """

    if TYPE_CHECKING:

        def _write(self, fn: Callable[[Session], T], *, namespaces: Collection[str] | None) -> T: ...

        def _reindex(self, s: Session, concept: Concept, *, counted: bool = True) -> None: ...

        def _count_terms(
            self, s: Session, namespace: str, delta: Counter[str], *, concepts: int, terms: int
        ) -> None: ...

    def import_items(self, items: Iterable[Mapping[str, Any]]) -> ImportReport:
        totals = Counter[str]()
        for n, batch in enumerate(_chunks(items, _IMPORT_BATCH)):
            parsed = [_parse_item(item, n * _IMPORT_BATCH + i + 1) for i, item in enumerate(batch)]
            namespaces = sorted({p[0].namespace for p in parsed})
            totals.update(
                self._write(functools.partial(self._import_batch, parsed=parsed), namespaces=namespaces)
            )
        return ImportReport(**{k: totals[k] for k in ("inserted", "merged", "updated", "skipped", "uses")})

    def _import_batch(self, s: Session, parsed: list[tuple[Concept, list[ConceptUse]]]) -> Counter[str]:
        out: Counter[str] = Counter()
        uids = [c.uid for c, _ in parsed]
        by_uid = {c.uid: c for c in s.scalars(select(Concept).where(Concept.uid.in_(uids)))}
        inserts: list[tuple[Concept, list[ConceptUse]]] = []
        # Concepts inserted by this batch: their terms are counted once, at the end.
        fresh: set[int] = set()
        keys = {(c.namespace, c.title_key) for c, _ in parsed}
        by_key = {
            (c.namespace, c.title_key): c
            for c in s.scalars(
                select(Concept).where(
                    Concept.namespace.in_({k[0] for k in keys}), Concept.title_key.in_({k[1] for k in keys})
                )
            )
        }
        for incoming, uses in parsed:
            known = by_uid.get(incoming.uid)
            if known is not None:
                if incoming.version > known.version:
                    self._overwrite(s, known, incoming, counted=id(known) not in fresh)
                    out["updated"] += 1
                else:
                    out["skipped"] += 1
                continue
            key = (incoming.namespace, incoming.title_key)
            target = by_key.get(key)
            if target is not None:
                self._absorb(s, target, incoming, counted=id(target) not in fresh)
                for use in uses:
                    use.concept = target
                s.add_all(uses)
                out["merged"] += 1
                out["uses"] += len(uses)
                continue
            by_key[key] = by_uid[incoming.uid] = incoming
            fresh.add(id(incoming))
            s.add(incoming)
            inserts.append((incoming, uses))
        per_ns, sizes, counts = namespace_terms(
            (c.namespace, c.search_text, c.search_len) for c, _ in inserts
        )
        for concept, uses in inserts:
            for use in uses:
                use.concept = concept
            s.add_all(uses)
            out["uses"] += len(uses)
        s.flush()
        for ns in sorted(per_ns):
            self._count_terms(s, ns, per_ns[ns], concepts=counts[ns], terms=sizes[ns])
        out["inserted"] += len(inserts)
        return out

    def _overwrite(self, s: Session, known: Concept, incoming: Concept, *, counted: bool) -> None:
        """A newer version of a concept this store has: take its content and counters."""
        for attr in (
            "kind",
            "title",
            "situation",
            "cues",
            "suggestion",
            "parameters",
            "provenance",
            "version",
        ):
            setattr(known, attr, getattr(incoming, attr))
        for attr in ("usage_count", "success_count", "support_count"):
            setattr(known, attr, max(getattr(known, attr), getattr(incoming, attr)))
        known.updated_at = max(known.updated_at, incoming.updated_at)
        if known.title_key != incoming.title_key:
            clash = s.scalar(
                select(Concept.id).where(
                    Concept.namespace == known.namespace,
                    Concept.title_key == incoming.title_key,
                    Concept.id != known.id,
                )
            )
            if clash is None:
                known.title_key = incoming.title_key
        self._reindex(s, known, counted=counted)

    def _absorb(self, s: Session, target: Concept, incoming: Concept, *, counted: bool) -> None:
        """Merge an imported concept into one with the same title: provenance kept, counts added."""
        now = _now()
        draft = _record(incoming).draft()
        prov = Provenance.from_dict(target.provenance).union(Provenance.from_dict(incoming.provenance))
        merged = merge_fields(
            situation=target.situation,
            cues=target.cues,
            parameters=[ConceptParameter.from_dict(p) for p in target.parameters],
            provenance=prov,
            draft=draft,
            draft_provenance=Provenance(),
            match=MergeMatch(target.id or 0, "title", 1.0),
            now=now,
        )
        target.situation = merged.situation
        target.cues = list(merged.cues)
        target.parameters = [p.to_dict() for p in merged.parameters]
        # The merge event says "import": the draft came from another store, not a task.
        events = (*merged.provenance.merges[:-1], MergeEvent(now, "import", 1.0, draft))
        target.provenance = Provenance(prov.task_ids, prov.run_ids, events, prov.evidence).to_dict()
        target.usage_count += incoming.usage_count
        target.success_count += incoming.success_count
        target.support_count += incoming.support_count
        target.version += 1
        target.updated_at = now
        self._reindex(s, target, counted=counted)


def _chunks(items: Iterable[T], size: int) -> Iterator[builtins.list[T]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _parse_time(value: Any, default: datetime) -> datetime:
    if not value:
        return default
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


# Every concept in an export must have these; the rest have defaults (docs/memory.md).
REQUIRED = ("namespace", "title", "suggestion")
_OUTCOMES = (None, "passed", "failed")


def _check_item(item: Any, position: int) -> None:
    """One-line errors for what a hand-written export most often gets wrong."""
    where = f"concept {position} of the memory export"
    if not isinstance(item, Mapping):
        raise MemoryStoreError(f"{where} is a {type(item).__name__}, not a JSON object")
    missing = [k for k in REQUIRED if not item.get(k)]
    if missing:
        raise MemoryStoreError(
            f"{where} has no {', '.join(repr(k) for k in missing)} (every concept needs {', '.join(REQUIRED)})"
        )
    for key in ("usage_count", "success_count", "support_count", "version"):
        value = item.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise MemoryStoreError(f"{where}: {key} must be an integer >= 0, got {value!r}")
    cues = item.get("cues")
    if cues is not None and (not isinstance(cues, list) or not all(isinstance(c, str) for c in cues)):
        raise MemoryStoreError(f"{where}: cues must be a list of strings, got {cues!r}")
    params = item.get("parameters")
    if params is not None and (
        not isinstance(params, list) or not all(isinstance(p, Mapping) for p in params)
    ):
        raise MemoryStoreError(
            f"{where}: parameters must be a list of objects with a name, type and description, got {params!r}"
        )
    kind = item.get("kind")
    if kind is not None and kind not in KINDS:
        raise MemoryStoreError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    provenance = item.get("provenance") or {}
    if not isinstance(provenance, Mapping):
        raise MemoryStoreError(f"{where}: provenance must be an object, got {type(provenance).__name__}")
    for e in provenance.get("evidence") or ():
        if not isinstance(e, Mapping) or not e.get("task_id"):
            raise MemoryStoreError(f"{where}: each evidence entry needs a task_id")
        score = e.get("score", 1.0)
        if not isinstance(score, int | float) or isinstance(score, bool) or not 0.0 <= score <= 1.0:
            raise MemoryStoreError(f"{where}: an evidence score must be a number in [0, 1], got {score!r}")
    for key in ("created_at", "updated_at", "last_used_at"):
        _check_time(item.get(key), f"{where}: {key}")
    for u in item.get("uses") or ():
        if not isinstance(u, Mapping) or not u.get("task_id"):
            raise MemoryStoreError(f"{where}: each use needs a task_id")
        if u.get("outcome") not in _OUTCOMES:
            raise MemoryStoreError(
                f"{where}: a use's outcome is passed, failed or null, got {u.get('outcome')!r}"
            )
        if u.get("score") is not None and not isinstance(u["score"], int | float):
            raise MemoryStoreError(f"{where}: a use's score must be a number or null, got {u['score']!r}")
        _check_time(u.get("shown_at"), f"{where}: a use's shown_at")


def _check_time(value: Any, what: str) -> None:
    if not value:
        return
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise MemoryStoreError(
            f"{what} must be an ISO 8601 time (2026-01-31T12:00:00+00:00), got {value!r}"
        ) from None


def _parse_item(item: Mapping[str, Any], position: int = 1) -> tuple[Concept, builtins.list[ConceptUse]]:
    """An exported concept as a new (unsaved) row, validated."""
    _check_item(item, position)
    try:
        namespace = check_namespace(item["namespace"])
        draft = ConceptDraft(
            title=item["title"],
            suggestion=item["suggestion"],
            situation=item.get("situation") or "",
            cues=tuple(item.get("cues") or ()),
            parameters=tuple(ConceptParameter.from_dict(p) for p in item.get("parameters") or ()),
            kind=item.get("kind") or "strategy",
        )
        provenance = Provenance.from_dict(item.get("provenance"))
    except (KeyError, TypeError, ValueError) as exc:
        raise MemoryStoreError(f"concept {position} of the memory export: {exc}") from None
    now = _now()
    terms = analyze(draft.index_text())
    concept = Concept(
        uid=str(item.get("uid") or uuid.uuid4().hex)[:32],
        namespace=namespace,
        kind=draft.kind,
        title=draft.title,
        title_key=title_key(draft.title),
        situation=draft.situation,
        cues=list(draft.cues),
        suggestion=draft.suggestion,
        parameters=[p.to_dict() for p in draft.parameters],
        provenance=provenance.to_dict(),
        search_text=" ".join(terms),
        search_len=len(terms),
        created_at=_parse_time(item.get("created_at"), now),
        updated_at=_parse_time(item.get("updated_at"), now),
        last_used_at=_parse_time(item.get("last_used_at"), now) if item.get("last_used_at") else None,
        version=int(item.get("version") or 1),
        usage_count=int(item.get("usage_count") or 0),
        success_count=int(item.get("success_count") or 0),
        support_count=int(item.get("support_count") or 1),
    )
    uses = [
        ConceptUse(
            task_id=str(u["task_id"]),
            run_id=str(u.get("run_id") or ""),
            shown_at=_parse_time(u.get("shown_at"), now),
            rank=int(u.get("rank") or 0),
            score=u.get("score"),
            outcome=u.get("outcome"),
        )
        for u in item.get("uses") or ()
    ]
    return concept, uses
