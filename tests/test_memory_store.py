"""Conformance tests for the memory store: every test runs on SQLite and on PostgreSQL.

PostgreSQL runs when AGENTLOOP_TEST_POSTGRES_URL points at a database the tests may
create schemas in (each test gets its own schema, dropped afterwards).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text

from agentloop.memory import (
    ConceptDraft,
    ConceptParameter,
    LexicalParams,
    MemoryStoreError,
    Provenance,
    SQLMemoryStore,
    migrate,
    resolve_memory_url,
)
from agentloop.memory.models import Concept, NamespaceStat, TermStat

PG_URL = os.environ.get("AGENTLOOP_TEST_POSTGRES_URL")


@pytest.fixture
def store_url(memory_url: str) -> str:
    """An empty memory on each database (the ``memory_url`` fixture in conftest.py)."""
    return memory_url


@pytest.fixture
def store(store_url: str) -> Iterator[SQLMemoryStore]:
    s = SQLMemoryStore(store_url)
    yield s
    s.close()


def draft(title: str, suggestion: str = "", **kw) -> ConceptDraft:
    return ConceptDraft(title=title, suggestion=suggestion or f"Do the {title.lower()} thing.", **kw)


def words(seed: object, n: int) -> str:
    """``n`` made-up words, the same for the same seed: text no other seed's text resembles."""
    rng = random.Random(str(seed))
    return " ".join(
        "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(4)) for _ in range(n)
    )


def distinct(seed: object) -> ConceptDraft:
    return ConceptDraft(title=words(seed, 4), suggestion=words(f"{seed}/s", 8))


GROUP_BY = ConceptDraft(
    title="Count rows per group",
    situation="The question asks how many items there are for each category.",
    cues=("how many", "for each", "per"),
    suggestion="SELECT {key}, COUNT(*) FROM {table} GROUP BY {key}.",
    parameters=(ConceptParameter("table", "str", "the table to count"), ConceptParameter("key", "str")),
    kind="pattern",
)
LATEST = ConceptDraft(
    title="Pick the most recent row",
    situation="The question asks for the latest or most recent record.",
    cues=("latest", "most recent", "newest"),
    suggestion="ORDER BY the date column DESC and LIMIT 1 instead of comparing with MAX in a join.",
    kind="strategy",
)
NULLS = ConceptDraft(
    title="Exclude missing values before averaging",
    situation="An average over a nullable column where the question ignores unknown values.",
    cues=("average", "known", "missing"),
    suggestion="Filter WHERE {column} IS NOT NULL; AVG already skips NULLs but COUNT(*) does not.",
    kind="pitfall",
)
JOIN_KEYS = ConceptDraft(
    title="Join on the foreign key, not on the name",
    situation="Two tables share a name-like column as well as an id.",
    cues=("join", "name", "id"),
    suggestion="Join on the declared foreign key column; names repeat across rows.",
    kind="pitfall",
)


# --- add, get, merge ----------------------------------------------------------------------


def test_add_and_get_round_trip(store: SQLMemoryStore) -> None:
    r = store.add(GROUP_BY, namespace="spider", provenance=Provenance(("task-1",), ("run-1",)))
    assert r.action == "inserted" and r.reason == "new"
    c = r.concept
    assert (c.title, c.kind, c.situation, c.suggestion) == (
        GROUP_BY.title,
        "pattern",
        GROUP_BY.situation,
        GROUP_BY.suggestion,
    )
    assert c.cues == GROUP_BY.cues and c.parameters == GROUP_BY.parameters
    assert c.provenance.task_ids == ("task-1",) and c.provenance.run_ids == ("run-1",)
    assert (c.version, c.usage_count, c.success_count, c.support_count) == (1, 0, 0, 1)
    assert c.created_at.tzinfo is not None and abs(datetime.now(UTC) - c.created_at) < timedelta(minutes=1)
    assert store.get(c.id) == c
    assert store.get(c.uid) == c
    assert store.get(str(c.id)) == c
    assert store.get(999_999) is None and store.get("nope") is None


def test_namespace_is_validated(store: SQLMemoryStore) -> None:
    for bad in ("", " spider", "a b", "-x", "x" * 201):
        with pytest.raises(MemoryStoreError, match="invalid memory namespace"):
            store.add(GROUP_BY, namespace=bad)
    assert store.add(GROUP_BY, namespace="text2sql:spider-dev/v1.2").action == "inserted"


def test_title_match_merges_keeping_provenance_and_counts(store: SQLMemoryStore) -> None:
    first = store.add(GROUP_BY, namespace="spider", provenance=Provenance(("t1",), ("r1",))).concept
    again = ConceptDraft(
        title="count rows per groups!",
        suggestion="Use GROUP BY on the key with COUNT(*).",
        cues=("number of", "for each"),
        parameters=(ConceptParameter("filter", "str"),),
    )
    r = store.add(again, namespace="spider", provenance=Provenance(("t2",), ("r2",)))
    assert r.action == "merged" and r.reason == "title" and r.concept.id == first.id
    c = store.get(first.id)
    assert c is not None
    assert c.title == GROUP_BY.title and c.suggestion == GROUP_BY.suggestion
    assert c.provenance.task_ids == ("t1", "t2") and c.provenance.run_ids == ("r1", "r2")
    assert (c.version, c.support_count) == (2, 2)
    assert c.cues == ("how many", "for each", "per", "number of")
    assert [p.name for p in c.parameters] == ["table", "key", "filter"]
    # Nothing of the merged draft is lost: it is kept whole in the provenance.
    (event,) = c.provenance.merges
    assert event.draft == again and event.reason == "title" and event.task_ids == ("t2",)
    assert c.updated_at >= c.created_at
    # The merged draft's new cue is searchable now.
    assert [h.concept.id for h in store.search("number of", namespace="spider")] == [c.id]
    assert store.stats().concepts == 1


def test_similar_wording_merges_and_distinct_lessons_do_not(store: SQLMemoryStore) -> None:
    base = store.add(LATEST, namespace="spider").concept
    reworded = ConceptDraft(
        title="Most recent record via ordering",
        situation="The question asks for the latest or most recent record.",
        cues=("latest", "most recent"),
        suggestion="ORDER BY the date column DESC and LIMIT 1 rather than comparing with MAX in a join.",
    )
    r = store.add(reworded, namespace="spider")
    assert r.action == "merged" and r.reason == "lexical" and r.concept.id == base.id
    assert r.similarity is not None and r.similarity >= store.merge_threshold
    for d in (GROUP_BY, NULLS, JOIN_KEYS):
        assert store.add(d, namespace="spider").action == "inserted"
    assert store.stats().concepts == 4


class ConstantEmbedder:
    """Every text gets the same vector: whatever is a lexical neighbour is an embedding twin."""

    model_id = "constant"

    def encode(self, texts):
        import numpy as np

        return np.ones((len(texts), 4), dtype=np.float32) / 2


def test_embedding_similarity_merges_what_wording_does_not(store_url: str) -> None:
    with SQLMemoryStore(store_url, embedder=ConstantEmbedder()) as store:
        base = store.add(LATEST, namespace="spider").concept
        assert store.get_embeddings([base.id], "constant").keys() == {base.id}
        other = ConceptDraft(title="Newest entry first", suggestion="Sort by date, newest first, take one.")
        r = store.add(other, namespace="spider")
        assert r.action == "merged" and r.reason == "embedding" and r.concept.id == base.id
        assert r.similarity == pytest.approx(1.0)
        # No word in common: not a lexical neighbour, so never compared.
        assert store.add(distinct("unrelated"), namespace="spider").action == "inserted"


def test_add_many_is_one_batch_and_merges_within_it(store: SQLMemoryStore) -> None:
    results = store.add_many(
        [GROUP_BY, LATEST, draft("Count rows per group", "GROUP BY again.")],
        namespace="spider",
        provenance=Provenance(("t9",), ("r9",)),
    )
    assert [r.action for r in results] == ["inserted", "inserted", "merged"]
    assert results[2].concept.id == results[0].concept.id
    assert store.stats().concepts == 2


def test_same_title_in_two_namespaces_stays_two_concepts(store: SQLMemoryStore) -> None:
    a = store.add(GROUP_BY, namespace="spider").concept
    b = store.add(GROUP_BY, namespace="bird").concept
    assert a.id != b.id
    assert store.stats().namespaces == {"bird": 1, "spider": 1}


# --- search ---------------------------------------------------------------------------------


def _fill(store: SQLMemoryStore, namespace: str = "spider") -> dict[str, int]:
    return {
        d.title: store.add(d, namespace=namespace).concept.id for d in (GROUP_BY, LATEST, NULLS, JOIN_KEYS)
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("How many singers are there for each country?", GROUP_BY.title),
        ("What is the most recent concert's name?", LATEST.title),
        ("Average age of the known dogs, ignoring missing ages", NULLS.title),
        ("List the students' names joined with their course ids", JOIN_KEYS.title),
    ],
)
def test_search_ranks_the_relevant_concept_first(store: SQLMemoryStore, query: str, expected: str) -> None:
    ids = _fill(store)
    hits = store.search(query, namespace="spider", k=4)
    assert hits and hits[0].concept.id == ids[expected]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_search_stays_in_its_namespace(store: SQLMemoryStore) -> None:
    spider = _fill(store, "spider")
    other = store.add(LATEST, namespace="spider-dev").concept
    # "spider" and "spider-dev" share a token: the exact namespace still decides.
    hits = store.search("most recent latest", namespace="spider", k=10)
    assert {h.concept.id for h in hits} <= set(spider.values())
    assert hits[0].concept.id == spider[LATEST.title]
    assert [h.concept.id for h in store.search("most recent latest", namespace="spider-dev")] == [other.id]
    assert store.search("most recent", namespace="nowhere") == []
    everywhere = {h.concept.id for h in store.search("most recent latest", k=10)}
    assert {spider[LATEST.title], other.id} <= everywhere


def test_search_with_nothing_to_find(store: SQLMemoryStore) -> None:
    assert store.search("anything", namespace="spider") == []
    _fill(store)
    assert store.search("", namespace="spider") == []
    assert store.search("the of that with", namespace="spider") == []
    assert store.search("zzzunknownterm", namespace="spider") == []
    assert store.search("count", namespace="spider", k=0) == []


def test_search_caps_terms_beyond_the_budget(store: SQLMemoryStore) -> None:
    # Every concept shares "widget"; with a budget of 5 postings phase 1 reads only the
    # newest 5 of them, and a rare term still finds its concept.
    drafts = [draft(f"Widget {words(i, 3)}", f"Widget {words(f's{i}', 6)}") for i in range(30)]
    results = store.add_many(drafts, namespace="w")
    assert {r.action for r in results} == {"inserted"}
    ids = [r.concept.id for r in results]
    store.add(draft("Widget special zebra", "Zebra widgets need stripes."), namespace="w")
    params = LexicalParams(budget=5, candidates=50)
    hits = store.search("widget", namespace="w", k=50, params=params)
    assert 1 <= len(hits) <= 5 and all(h.concept.id > ids[-6] for h in hits)
    assert store.search("zebra widget", namespace="w", k=1, params=params)[0].concept.title == (
        "Widget special zebra"
    )


def _term_stats(store: SQLMemoryStore) -> tuple[dict, dict]:
    with store.engine.connect() as conn:
        terms = {(r.namespace, r.term): r.df for r in conn.execute(select(TermStat.__table__))}
        sizes = {r.namespace: (r.concepts, r.terms) for r in conn.execute(select(NamespaceStat.__table__))}
    return terms, sizes


def test_incremental_index_matches_a_rebuild(store: SQLMemoryStore) -> None:
    _fill(store, "spider")
    _fill(store, "bird")
    store.add(draft("count rows per group", "merge me", cues=("tally",)), namespace="spider")
    store.record_uses(
        [(store.search("average", namespace="spider")[0].concept.id, 1.0)], task_id="t", run_id="r"
    )
    store.record_outcome(task_id="t", run_id="r", passed=False)
    store.prune(never_helped=1)
    before = _term_stats(store)
    results_before = [
        (h.concept.id, round(h.score, 9)) for h in store.search("how many per most recent", k=10)
    ]
    store.rebuild_index()
    assert _term_stats(store) == before
    assert [(h.concept.id, round(h.score, 9)) for h in store.search("how many per most recent", k=10)] == (
        results_before
    )
    # Every concept is in the index exactly once.
    with store.engine.connect() as conn:
        n = conn.scalar(select(NamespaceStat.__table__.c.concepts).where(NamespaceStat.namespace == "spider"))
        assert n == conn.scalar(text("SELECT count(*) FROM concepts WHERE namespace = 'spider'"))


# --- uses, stats ------------------------------------------------------------------------------


def test_uses_and_outcomes_update_counts(store: SQLMemoryStore) -> None:
    ids = _fill(store)
    g, latest = ids[GROUP_BY.title], ids[LATEST.title]
    assert store.record_uses([(g, 2.5), (latest, 1.0)], task_id="q1", run_id="r1") == 2
    assert store.record_outcome(task_id="q1", run_id="r1", passed=True) == 2
    assert store.record_outcome(task_id="q1", run_id="r1", passed=False) == 0  # already closed
    store.record_uses([(g, 2.0)], task_id="q2", run_id="r1")
    assert store.record_outcome(task_id="q2", run_id="r1", passed=False) == 1
    store.record_uses([(g, 2.0)], task_id="q3", run_id="r1")  # left open
    assert store.record_uses([], task_id="q4", run_id="r1") == 0
    c = store.get(g)
    assert c is not None and (c.usage_count, c.success_count) == (3, 1) and c.last_used_at is not None
    s = store.stats()
    assert (s.concepts, s.uses, s.uses_passed, s.uses_failed) == (4, 4, 2, 1)
    assert (s.never_used, s.helped) == (2, 2)
    assert s.revision == migrate.head_revision()
    d = s.to_dict()
    assert d["concepts"] == 4 and json.loads(json.dumps(d)) == d
    assert store.stats("other").concepts == 0


def test_writes_by_run_counts_inserts_and_merges_per_task(store: SQLMemoryStore) -> None:
    # A run id that LIKE would misread if it were not escaped: "%" and "_".
    run = "run_1%a"
    store.add(GROUP_BY, namespace="spider", provenance=Provenance(("t1",), (run,)))
    store.add(GROUP_BY, namespace="spider", provenance=Provenance(("t2",), (run,)))  # merges
    store.add(GROUP_BY, namespace="spider", provenance=Provenance(("t1",), ("other",)))  # merges
    store.add(LATEST, namespace="spider", provenance=Provenance(("t9",), ("other",)))
    store.add(LATEST, namespace="spider", provenance=Provenance(("t3",), (run,)))  # merges into t9's
    store.add(LATEST, namespace="elsewhere", provenance=Provenance(("t4",), (run,)))
    store.add(draft("Unrelated"), namespace="spider", provenance=Provenance(("t5",), ("run_12a",)))
    assert store.writes_by_run(run, namespace="spider") == {"t1": 1, "t2": 1, "t3": 1}
    assert store.writes_by_run(run) == {"t1": 1, "t2": 1, "t3": 1, "t4": 1}
    assert store.writes_by_run("other", namespace="spider") == {"t1": 1, "t9": 1}
    assert store.writes_by_run("never") == {}


def test_list_orders_and_filters(store: SQLMemoryStore) -> None:
    ids = _fill(store)
    store.add(GROUP_BY, namespace="bird")
    store.record_uses([(ids[NULLS.title], None)], task_id="t", run_id="r")
    assert [c.id for c in store.list(order="id")] == sorted(c.id for c in store.list(limit=100))
    assert len(store.list(namespace="spider")) == 4
    assert store.list(order="usage")[0].id == ids[NULLS.title]
    assert len(store.list(limit=2, offset=4, order="id")) == 1
    with pytest.raises(ValueError, match="order"):
        store.list(order="bogus")  # type: ignore[arg-type]


def test_embeddings_round_trip(store: SQLMemoryStore) -> None:
    import numpy as np

    ids = list(_fill(store).values())
    v = np.arange(4, dtype=np.float32) / 10
    store.set_embeddings({ids[0]: v, ids[1]: v * 2}, "m1")
    got = store.get_embeddings(ids, "m1")
    assert set(got) == {ids[0], ids[1]} and np.allclose(got[ids[1]], v * 2)
    assert store.get_embeddings(ids, "other-model") == {}


# --- export / import ---------------------------------------------------------------------------


def test_export_import_round_trip(store: SQLMemoryStore, tmp_path) -> None:
    ids = _fill(store, "spider")
    store.add(LATEST, namespace="bird")
    store.add(draft("count rows per group", "merged"), namespace="spider", provenance=Provenance(("t2",)))
    store.record_uses([(ids[GROUP_BY.title], 1.5)], task_id="q1", run_id="r1")
    store.record_outcome(task_id="q1", run_id="r1", passed=True)
    path = tmp_path / "export.json"
    assert store.export_json(path) == 5
    data = json.loads(path.read_text())
    assert data["format"] == "agentloop-memory" and len(data["concepts"]) == 5

    with SQLMemoryStore(tmp_path / "fresh.sqlite") as fresh:
        report = fresh.import_json(path)
        assert (report.inserted, report.merged, report.skipped, report.uses) == (5, 0, 0, 1)
        assert fresh.stats().concepts == store.stats().concepts == 5
        before = {c.uid: c for c in store.list(limit=100)}
        after = {c.uid: c for c in fresh.list(limit=100)}
        assert before.keys() == after.keys()
        for uid, c in before.items():
            d = after[uid]
            assert (d.title, d.cues, d.suggestion, d.parameters, d.provenance) == (
                c.title,
                c.cues,
                c.suggestion,
                c.parameters,
                c.provenance,
            )
            assert (d.version, d.usage_count, d.success_count, d.support_count) == (
                c.version,
                c.usage_count,
                c.success_count,
                c.support_count,
            )
            assert d.created_at == c.created_at
        # Importing the same file again changes nothing.
        again = fresh.import_json(path)
        assert (again.inserted, again.skipped) == (0, 5) and fresh.stats().concepts == 5
        assert fresh.stats().uses == 1
        original = store.get(ids[GROUP_BY.title])
        assert original is not None
        assert fresh.search("how many per group", namespace="spider")[0].concept.uid == original.uid


def test_export_import_into_the_same_kind_of_store(store: SQLMemoryStore, store_url: str, tmp_path) -> None:
    _fill(store, "spider")
    path = tmp_path / "export.json"
    store.export_json(path, namespace="spider")
    # Into the store itself: every uid is known, so nothing changes.
    assert store.import_json(path).skipped == 4
    # A newer version of a known concept replaces it; an unknown uid with a known title merges.
    data = json.loads(path.read_text())
    item = data["concepts"][0]
    item["version"] = 5
    item["suggestion"] = "A better suggestion about grouping."
    clone = dict(data["concepts"][1], uid=uuid.uuid4().hex, usage_count=3)
    report = store.import_items([item, clone])
    assert (report.updated, report.merged) == (1, 1)
    updated = store.get(item["uid"])
    assert updated is not None and updated.version == 5 and "better suggestion" in updated.suggestion
    assert store.search("better suggestion grouping", namespace="spider")[0].concept.uid == item["uid"]
    merged = store.get(data["concepts"][1]["uid"])
    assert merged is not None and merged.usage_count == 3 and merged.support_count == 2
    assert merged.provenance.merges[-1].reason == "import"
    assert store.stats().concepts == 4


def test_import_rejects_other_files(store: SQLMemoryStore, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(MemoryStoreError, match="not a memory export"):
        store.import_json(bad)
    bad.write_text("not json")
    with pytest.raises(MemoryStoreError, match="invalid JSON"):
        store.import_json(bad)
    bad.write_text(json.dumps({"format": "agentloop-memory", "version": 99, "concepts": []}))
    with pytest.raises(MemoryStoreError, match="version 99"):
        store.import_json(bad)
    with pytest.raises(MemoryStoreError, match="concept 1 of the memory export has no .suggestion."):
        store.import_items([{"namespace": "spider", "title": "no suggestion"}])


# --- prune ------------------------------------------------------------------------------------


def test_prune_never_helped(store: SQLMemoryStore) -> None:
    ids = _fill(store)
    g, n = ids[GROUP_BY.title], ids[NULLS.title]
    store.record_uses([(g, 1.0)], task_id="q0", run_id="r")
    store.record_outcome(task_id="q0", run_id="r", passed=True)
    for i in range(1, 4):
        store.record_uses([(g, 1.0), (n, 1.0)], task_id=f"q{i}", run_id="r")
        store.record_outcome(task_id=f"q{i}", run_id="r", passed=False)
    with pytest.raises(ValueError, match="older_than and/or never_helped"):
        store.prune()
    dry = store.prune(never_helped=3, dry_run=True)
    assert [c.id for c in dry.removed] == [n] and dry.dry_run and store.stats().concepts == 4
    assert [c.id for c in store.prune(never_helped=3).removed] == [n]
    assert store.get(n) is None and store.stats().concepts == 3
    assert store.stats().uses == 4  # the pruned concept's uses went with it
    assert all(h.concept.id != n for h in store.search("average missing known", namespace="spider"))
    assert store.prune(never_helped=1).removed == ()


def test_prune_by_age(store: SQLMemoryStore) -> None:
    ids = _fill(store, "spider")
    store.add(LATEST, namespace="bird")
    store.record_uses([(ids[LATEST.title], None)], task_id="t", run_id="r")
    later = datetime.now(UTC) + timedelta(days=30)
    # As of `later`, every concept was last updated or used 30 days ago.
    assert len(store.prune(older_than=timedelta(days=60), now=later).removed) == 0
    report = store.prune(older_than=timedelta(days=7), namespace="spider", now=later)
    assert len(report.removed) == 4 and store.stats().namespaces == {"bird": 1}
    assert store.search("most recent", namespace="spider") == []
    assert store.search("most recent", namespace="bird")


# --- concurrency ------------------------------------------------------------------------------


def _writer(url: str, worker: int, n: int, barrier, shared_titles: bool) -> None:
    store = SQLMemoryStore(url)
    try:
        barrier.wait(timeout=120)
        for i in range(n):
            # Made-up words, so no two concepts are near-duplicates unless meant to be.
            d = distinct(i if shared_titles else f"{worker}/{i}")
            store.add(
                d, namespace="stress", provenance=Provenance((f"task-{worker}-{i}",), (f"run-{worker}",))
            )
    finally:
        store.close()


def _run_writers(url: str, n: int, shared_titles: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_writer, args=(url, w, n, barrier, shared_titles)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]


def test_four_processes_writing_50_each_store_all_200(store_url: str) -> None:
    # The processes also race to create the schema: the database starts empty.
    _run_writers(store_url, 50, shared_titles=False)
    with SQLMemoryStore(store_url) as store:
        assert store.stats().concepts == 200
        rows = store.list(limit=500)
        assert len({c.uid for c in rows}) == len({c.title for c in rows}) == 200
        tasks = {t for c in rows for t in c.provenance.task_ids}
        assert tasks == {f"task-{w}-{i}" for w in range(4) for i in range(50)}
        assert all(store.search(c.title, namespace="stress", k=1)[0].concept.id == c.id for c in rows[:20])


def test_four_processes_writing_the_same_concepts_merge_them(store_url: str) -> None:
    SQLMemoryStore(store_url).close()
    _run_writers(store_url, 25, shared_titles=True)
    with SQLMemoryStore(store_url) as store:
        rows = store.list(limit=500)
        assert len(rows) == 25
        for c in rows:
            assert c.support_count == 4 and c.version == 4 and len(c.provenance.merges) == 3
            assert sorted(c.provenance.run_ids) == [f"run-{w}" for w in range(4)]


def test_threads_share_one_store(store: SQLMemoryStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> None:
        r = store.add(distinct(i), namespace="th")
        assert r.action == "inserted"
        store.record_uses([(r.concept.id, 1.0)], task_id=f"t{i}", run_id="r")
        assert store.search(r.concept.title, namespace="th")[0].concept.id == r.concept.id

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(40)))
    assert store.stats().concepts == 40 and store.stats().uses == 40


# --- schema -----------------------------------------------------------------------------------


def test_database_at_the_first_revision_upgrades(store_url: str) -> None:
    """A store written at revision 0001 (by raw SQL, as that version wrote it) opens and upgrades."""
    engine = create_engine(resolve_memory_url(store_url))
    assert migrate.upgrade(engine, "0001") == "0001"
    now = datetime(2025, 1, 1, tzinfo=UTC)
    stamp = now.replace(tzinfo=None) if engine.dialect.name == "sqlite" else now
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO concepts (uid, namespace, kind, title, title_key, situation, cues, suggestion,"
                " parameters, provenance, search_text, search_len, created_at, updated_at, version,"
                " usage_count, success_count, support_count) VALUES (:uid, 'spider', 'strategy',"
                " 'Old lesson', 'old lesson', '', :cues, 'Keep it working.', '[]', :prov,"
                " 'old lesson keep it working', 5, :t, :t, 1, 0, 0, 1)"
            ),
            {"uid": "a" * 32, "cues": '["legacy"]', "prov": '{"task_ids": ["t0"]}', "t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO term_stats (namespace, term, df) VALUES ('spider', 'old', 1), ('spider', 'lesson', 1),"
                " ('spider', 'keep', 1), ('spider', 'it', 1), ('spider', 'working', 1)"
            )
        )
        conn.execute(text("INSERT INTO namespace_stats (namespace, concepts, terms) VALUES ('spider', 1, 5)"))
    engine.dispose()
    with SQLMemoryStore(store_url) as store:
        assert store.revision == migrate.head_revision()
        c = store.get("a" * 32)
        assert c is not None and c.title == "Old lesson" and c.provenance.task_ids == ("t0",)
        assert c.created_at == now
        assert store.search("old lesson", namespace="spider")[0].concept.uid == "a" * 32
        assert store.add(draft("old lesson"), namespace="spider").action == "merged"


def test_downgrade_and_upgrade_again(store_url: str) -> None:
    from alembic import command

    with SQLMemoryStore(store_url) as store:
        store.add(GROUP_BY, namespace="spider")
        with store.engine.execution_options(agentloop_write=True).connect() as conn, conn.begin():
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        with store.engine.connect() as conn:
            assert migrate.current_revision(conn) is None
    with SQLMemoryStore(store_url) as store:
        assert store.stats().concepts == 0
        assert store.add(GROUP_BY, namespace="spider").action == "inserted"


def test_newer_schema_is_refused(store_url: str) -> None:
    SQLMemoryStore(store_url).close()
    engine = create_engine(resolve_memory_url(store_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(MemoryStoreError, match="newer agentloop"):
        SQLMemoryStore(store_url)


def test_migrated_schema_matches_the_models(store: SQLMemoryStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from agentloop.memory.models import Base

    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    not (name or "").startswith(
                        ("concepts_fts", "search_tsv", "ix_concepts_search_tsv", "alembic_version")
                    )
                ),
                "compare_type": True,
            },
        )
        assert compare_metadata(ctx, Base.metadata) == []


def test_orm_model_columns_are_all_migrated(store: SQLMemoryStore) -> None:
    with store.engine.connect() as conn:
        row = conn.execute(select(Concept.__table__)).first()
    assert row is None  # the select names every mapped column, so it would fail on a missing one
