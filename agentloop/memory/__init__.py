"""Concept memory (ArcMemo-style): abstract lessons from solved tasks, kept in SQLite or PostgreSQL.

:class:`ConceptMemory` is what a run passes to the graphs as ``memory=``;
:class:`SQLMemoryStore` is the store underneath; ``agentloop memory ...`` is the CLI.
See ``docs/memory.md``.
"""

from agentloop.memory._types import (
    KINDS,
    AddResult,
    ConceptDraft,
    ConceptKind,
    ConceptParameter,
    ConceptRecord,
    Evidence,
    ImportReport,
    MemoryStats,
    MemoryStoreError,
    MergeEvent,
    Provenance,
    PruneReport,
    SearchHit,
    check_namespace,
)
from agentloop.memory.abstraction import (
    ABSTRACTION_STYLES,
    AbstractionResult,
    AbstractionStyle,
    Trajectory,
    abstract,
    parse_concepts,
    parse_lesson_line,
)
from agentloop.memory.concept_memory import (
    SELECT_MODES,
    UPDATE_MODES,
    WRITE_MODES,
    ConceptMemory,
    MemoryCounters,
    SelectMode,
    UpdateMode,
    WriteMode,
    default_query,
    merge_counts,
)
from agentloop.memory.retrieval import Embedder, LexicalParams, MiniLMEmbedder
from agentloop.memory.store import MemoryStore, SQLMemoryStore, default_memory_url, resolve_memory_url

__all__ = [
    "ABSTRACTION_STYLES",
    "KINDS",
    "SELECT_MODES",
    "UPDATE_MODES",
    "WRITE_MODES",
    "AbstractionResult",
    "AbstractionStyle",
    "AddResult",
    "ConceptDraft",
    "ConceptKind",
    "ConceptMemory",
    "ConceptParameter",
    "ConceptRecord",
    "Embedder",
    "Evidence",
    "ImportReport",
    "LexicalParams",
    "MemoryCounters",
    "MemoryStats",
    "MemoryStore",
    "MemoryStoreError",
    "check_namespace",
    "MergeEvent",
    "MiniLMEmbedder",
    "PruneReport",
    "Provenance",
    "SQLMemoryStore",
    "SearchHit",
    "SelectMode",
    "Trajectory",
    "UpdateMode",
    "WriteMode",
    "abstract",
    "default_memory_url",
    "default_query",
    "merge_counts",
    "parse_concepts",
    "parse_lesson_line",
    "resolve_memory_url",
]
