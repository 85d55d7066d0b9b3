"""Text analysis, term selection, BM25 and near-duplicate rules of the memory (no database)."""

from __future__ import annotations

import pytest

from agentloop.memory import ConceptDraft, LexicalParams
from agentloop.memory.merge import Neighbour, dice, find_match, term_set, title_key
from agentloop.memory.retrieval import analyze, bm25_rank, choose_terms, idf, query_terms, stem


def test_analyze_folds_splits_stems_and_drops_stopwords() -> None:
    assert analyze("The Cafés' tables, and NOT the singer_id!") == [
        "cafe",
        "table",
        "and",
        "not",
        "singer",
        "id",
    ]
    assert analyze("COUNT(*) per group; 2 queries") == ["count", "per", "group", "2", "query"]
    assert analyze("") == [] and analyze("of the a") == []
    assert analyze("x" * 41 + " ok") == ["ok"]


@pytest.mark.parametrize(
    ("word", "stemmed"),
    [
        ("tables", "table"),
        ("queries", "query"),
        ("matches", "match"),
        ("boxes", "box"),
        ("classes", "class"),
        ("status", "status"),
        ("analysis", "analysis"),
        ("class", "class"),
        ("has", "has"),
        ("x86s", "x86s"),
    ],
)
def test_stem(word: str, stemmed: str) -> None:
    assert stem(word) == stemmed


def test_query_terms_are_distinct_and_capped() -> None:
    assert query_terms("singers singer SINGERS country", 10) == ["singer", "country"]
    assert query_terms(" ".join(f"w{i}" for i in range(100)), 5) == ["w0", "w1", "w2", "w3", "w4"]


def test_choose_terms_takes_the_rarest_within_budget() -> None:
    dfs = {"common": 900, "rare": 3, "mid": 40, "absent": 0, "other": 60}
    assert choose_terms(dfs, LexicalParams(budget=100)) == ["rare", "mid"]
    assert choose_terms(dfs, LexicalParams(budget=10_000, max_terms=2)) == ["rare", "mid"]
    # The rarest term is always taken, even over budget.
    assert choose_terms({"common": 900}, LexicalParams(budget=10)) == ["common"]
    assert choose_terms({"absent": 0}, LexicalParams()) == []


def test_idf_orders_terms_and_stays_positive() -> None:
    assert idf(1, 1000) > idf(10, 1000) > idf(999, 1000) > 0


def test_bm25_prefers_rare_matches_and_short_documents() -> None:
    dfs = {"rare": 1, "common": 9}
    docs = [(1, "common filler filler filler"), (2, "rare common"), (3, "common"), (4, "unrelated")]
    ranked = bm25_rank(["rare", "common"], docs, dfs, n_docs=10, avgdl=3.0, params=LexicalParams())
    assert [i for i, _ in ranked] == [2, 3, 1]
    assert bm25_rank(["nothing"], docs, dfs, 10, 3.0, LexicalParams()) == []


def test_lexical_params_are_validated() -> None:
    with pytest.raises(ValueError, match="budget"):
        LexicalParams(budget=0)


def test_title_key_normalises() -> None:
    assert title_key("Use GROUP-BY for the counts!") == title_key("use group by for counts")
    assert title_key("Count before grouping") != title_key("Grouping before count")
    assert title_key("The") == "the"


def _draft(title: str, suggestion: str, situation: str = "", cues: tuple[str, ...] = ()) -> ConceptDraft:
    return ConceptDraft(title=title, suggestion=suggestion, situation=situation, cues=cues)


def test_find_match_rules() -> None:
    d = _draft("Latest row", "order by date desc limit 1", "the question asks for the latest record")
    same_title = Neighbour(1, title_key("latest rows!"), frozenset({"x"}))
    similar = Neighbour(
        2, "other", term_set(_draft("Newest row", "order by date desc limit 1", "latest record"))
    )
    unrelated = Neighbour(3, "far", frozenset({"avg", "null"}), cosine=0.95)
    assert find_match(d, [similar, same_title]) is not None
    assert find_match(d, [similar, same_title]).reason == "title"  # type: ignore[union-attr]
    m = find_match(d, [similar, unrelated])
    assert m is not None and m.reason == "lexical" and m.concept_id == 2 and m.similarity >= 0.6
    e = find_match(d, [unrelated])
    assert e is not None and e.reason == "embedding" and e.concept_id == 3
    assert find_match(d, [Neighbour(4, "far", frozenset({"avg"}), cosine=0.5)]) is None
    assert find_match(d, [similar], threshold=0.99) is None


def test_dice() -> None:
    assert dice(frozenset("ab"), frozenset("ab")) == 1.0
    assert dice(frozenset("ab"), frozenset("cd")) == 0.0
    assert dice(frozenset(), frozenset()) == 0.0
