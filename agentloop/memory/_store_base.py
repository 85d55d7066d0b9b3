"""The memory store contract (:class:`MemoryStore`) and where a store lives by default."""

from __future__ import annotations

import abc
import builtins
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Self

from agentloop.memory._types import (
    AddResult,
    ConceptDraft,
    ConceptParameter,
    ConceptRecord,
    ImportReport,
    MemoryStats,
    MemoryStoreError,
    Provenance,
    PruneReport,
    SearchHit,
)
from agentloop.memory.models import Concept
from agentloop.memory.retrieval import LexicalParams

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ListOrder",
    "MemoryStore",
    "default_memory_url",
    "resolve_memory_url",
]

ListOrder = Literal["updated", "created", "usage", "success", "id"]

EXPORT_FORMAT = "agentloop-memory"
EXPORT_VERSION = 1


def default_memory_url() -> str:
    """``$AGENTLOOP_HOME/memory.sqlite`` if set, else ``memory.sqlite`` in the user data dir."""
    home = os.environ.get("AGENTLOOP_HOME")
    if home:
        base = Path(home).expanduser()
    else:
        from platformdirs import user_data_dir

        base = Path(user_data_dir("agentloop", appauthor=False))
    return f"sqlite:///{base / 'memory.sqlite'}"


def resolve_memory_url(url: str | os.PathLike[str] | None = None) -> str:
    """A SQLAlchemy URL for ``url``: a URL, a plain file path (SQLite), or ``None`` for the default.

    ``postgresql://`` and ``postgres://`` get the psycopg 3 driver.
    """
    if url is None or str(url) == "":
        return default_memory_url()
    s = os.fspath(url)
    if "://" not in s:
        return f"sqlite:///{Path(s).expanduser().resolve()}"
    scheme, rest = s.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if scheme == "sqlite" or scheme.startswith(("sqlite+", "postgresql+")):
        return s
    raise MemoryStoreError(
        f"unsupported memory URL {s!r}: use sqlite:///PATH, a file path, or postgresql://USER@HOST/DB"
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _index_text(title: str, situation: str, cues: Iterable[str], suggestion: str) -> str:
    return "\n".join([title, situation, *cues, suggestion])


def namespace_terms(
    rows: Iterable[tuple[str, str, int]],
) -> tuple[dict[str, Counter[str]], Counter[str], Counter[str]]:
    """Per namespace, from ``(namespace, search_text, search_len)`` rows: how many concepts hold
    each term, the terms in all, and the concepts; what the term statistics count."""
    per_ns: dict[str, Counter[str]] = defaultdict(Counter)
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for ns, text, n in rows:
        per_ns[ns].update(set(text.split()))
        sizes[ns] += n
        counts[ns] += 1
    return per_ns, sizes, counts


def _record(c: Concept) -> ConceptRecord:
    return ConceptRecord(
        id=c.id,
        uid=c.uid,
        namespace=c.namespace,
        kind=c.kind,
        title=c.title,
        situation=c.situation,
        cues=tuple(c.cues or ()),
        suggestion=c.suggestion,
        parameters=tuple(ConceptParameter.from_dict(p) for p in c.parameters or ()),
        provenance=Provenance.from_dict(c.provenance),
        created_at=c.created_at,
        updated_at=c.updated_at,
        last_used_at=c.last_used_at,
        version=c.version,
        usage_count=c.usage_count,
        success_count=c.success_count,
        support_count=c.support_count,
    )


class MemoryStore(abc.ABC):
    """Where concepts live. :class:`SQLMemoryStore` is the implementation; the conformance
    tests (``tests/test_memory_store.py``) say what any other must do.
    """

    url: str

    @abc.abstractmethod
    def add_many(
        self, drafts: Sequence[ConceptDraft], *, namespace: str, provenance: Provenance | None = None
    ) -> list[AddResult]:
        """Insert each draft, or merge it into a near-duplicate; one transaction; results in order."""

    def add(self, draft: ConceptDraft, *, namespace: str, provenance: Provenance | None = None) -> AddResult:
        """Insert ``draft`` or merge it into a near-duplicate in ``namespace``."""
        return self.add_many([draft], namespace=namespace, provenance=provenance)[0]

    @abc.abstractmethod
    def get(self, ref: int | str) -> ConceptRecord | None:
        """The concept with this id (int) or uid (str), or ``None``."""

    @abc.abstractmethod
    def list(
        self, *, namespace: str | None = None, limit: int = 50, offset: int = 0, order: ListOrder = "updated"
    ) -> builtins.list[ConceptRecord]:
        """Concepts, newest first by default."""

    @abc.abstractmethod
    def search(
        self, query: str, *, namespace: str | None = None, k: int = 5, params: LexicalParams | None = None
    ) -> builtins.list[SearchHit]:
        """The ``k`` concepts that best match ``query`` lexically (BM25), best first."""

    @abc.abstractmethod
    def record_uses(self, shown: Sequence[tuple[int, float | None]], *, task_id: str, run_id: str) -> int:
        """Record that these ``(concept id, score)`` were shown to a task, in this order."""

    @abc.abstractmethod
    def record_outcome(self, *, task_id: str, run_id: str, passed: bool) -> int:
        """Set the outcome of a task's open uses; returns how many uses it closed."""

    @abc.abstractmethod
    def writes_by_run(self, run_id: str, *, namespace: str | None = None) -> dict[str, int]:
        """Drafts that run ``run_id`` stored, per task id: an insert counts for the first task
        and run of its provenance, a merge for its own. A resumed run skips these tasks.
        """

    def record_abstraction(  # noqa: B027 - optional: a store may keep no such counts
        self, namespace: str, outcome: str, reason: str | None = None
    ) -> None:
        """Count one abstraction in ``namespace``: ``outcome`` is accepted, declined or rejected
        (``reason`` says why). A store that keeps no such counts ignores it."""

    @abc.abstractmethod
    def stats(self, namespace: str | None = None) -> MemoryStats:
        """Counts over the store or one namespace."""

    @abc.abstractmethod
    def iter_export(self, *, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Each concept (with its uses) as a JSON-ready dict, in id order."""

    @abc.abstractmethod
    def import_items(self, items: Iterable[Mapping[str, Any]]) -> ImportReport:
        """Load exported concepts: new uids are inserted, known ones updated if newer."""

    @abc.abstractmethod
    def prune(
        self,
        *,
        older_than: timedelta | None = None,
        never_helped: int | None = None,
        namespace: str | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> PruneReport:
        """Drop concepts unused and unchanged for ``older_than``, and/or shown at least
        ``never_helped`` times without a task passing. Both given: a concept must match both.
        """

    @abc.abstractmethod
    def get_embeddings(self, ids: Sequence[int], model_id: str) -> dict[int, np.ndarray]:
        """Stored vectors of ``model_id`` for these concepts (missing ones left out)."""

    @abc.abstractmethod
    def set_embeddings(self, vectors: Mapping[int, np.ndarray], model_id: str) -> None:
        """Store vectors of ``model_id``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def export_json(self, target: str | os.PathLike[str] | IO[str], *, namespace: str | None = None) -> int:
        """Write the store (or one namespace) as JSON; returns the number of concepts."""
        if isinstance(target, str | os.PathLike):
            with open(target, "w", encoding="utf-8") as fp:
                return self.export_json(fp, namespace=namespace)
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": _now().isoformat(),
            "namespace": namespace,
        }
        target.write(json.dumps(header, ensure_ascii=False)[:-1] + ', "concepts": [')
        n = 0
        for n, item in enumerate(self.iter_export(namespace=namespace), 1):
            target.write(("\n" if n == 1 else ",\n") + json.dumps(item, ensure_ascii=False))
        target.write("\n]}\n")
        return n

    def import_json(self, source: str | os.PathLike[str] | IO[str]) -> ImportReport:
        """Load a file written by :meth:`export_json`."""
        if isinstance(source, str | os.PathLike):
            with open(source, encoding="utf-8") as fp:
                return self.import_json(fp)
        try:
            data = json.load(source)
        except json.JSONDecodeError as exc:
            raise MemoryStoreError(f"not a memory export (invalid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise MemoryStoreError(
                f"not a memory export: expected a JSON object with format={EXPORT_FORMAT!r}"
            )
        if data.get("version") != EXPORT_VERSION:
            raise MemoryStoreError(
                f"memory export version {data.get('version')!r} is not supported (this agentloop "
                f"reads version {EXPORT_VERSION})"
            )
        return self.import_items(data.get("concepts") or [])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
