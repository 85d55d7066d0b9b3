"""Spider data loading, difficulty buckets and execution accuracy with the official semantics."""

from __future__ import annotations

import collections
import itertools
import json
import random
import sqlite3
from pathlib import Path

import pytest

from agentloop.evals import (
    DatasetError,
    PredictionMismatchError,
    Text2SQLExample,
    default_spider_dir,
    load_spider,
    load_text2sql,
    results_match,
    score_one,
    score_predictions,
    spider_difficulty,
)
from agentloop.evals.spider_exec import gold_order_matters, normalize_comparisons, remove_distinct
from agentloop.evals.spider_hardness import hardness_counts
from agentloop.evals.text2sql_cli import eval_command


@pytest.fixture(scope="module")
def dev() -> list[Text2SQLExample]:
    return load_text2sql()


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop" / "shop.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE person (id INTEGER, name TEXT, city TEXT, age INTEGER);
        INSERT INTO person VALUES (1, 'Ann', 'Oslo', 30), (2, 'Bob', 'Rome', 40),
                                  (3, 'Cy', 'Oslo', 50), (4, 'Di', 'Rome', 40);
        """
    )
    conn.commit()
    conn.close()
    return path


def example(db: Path, gold: str, index: int = 0) -> Text2SQLExample:
    return Text2SQLExample(index, str(index), "question?", db.stem, db, gold, spider_difficulty(gold))


def correct(db: Path, gold: str, pred: str, **kwargs: bool) -> bool:
    return score_one(example(db, gold), pred, **kwargs).correct


# ---------------------------------------------------------------- result comparison


def brute_force_match(gold: list[tuple], pred: list[tuple], order_matters: bool) -> bool:
    """The definition, by exhaustive search over column permutations."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    for perm in itertools.permutations(range(len(gold[0]))):
        permuted = [tuple(row[p] for p in perm) for row in pred]
        if permuted == gold if order_matters else collections.Counter(permuted) == collections.Counter(gold):
            return True
    return False


def test_column_permutation_is_equal() -> None:
    gold = [(1, "a", 2.5), (2, "b", 3.5)]
    assert results_match(gold, [("a", 2.5, 1), ("b", 3.5, 2)], order_matters=False)
    assert results_match(gold, [(2.5, 1, "a"), (3.5, 2, "b")], order_matters=True)
    # Same column values, but paired differently across rows: no permutation works.
    assert not results_match([(1, "a"), (2, "b")], [(1, "b"), (2, "a")], order_matters=False)


def test_rows_are_a_multiset_not_a_set() -> None:
    assert results_match([(1,), (1,), (2,)], [(2,), (1,), (1,)], order_matters=False)
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)
    assert not results_match([(1,), (2,)], [(1,), (1,), (2,)], order_matters=False)


def test_row_order_counts_only_when_asked() -> None:
    assert results_match([(1,), (2,)], [(2,), (1,)], order_matters=False)
    assert not results_match([(1,), (2,)], [(2,), (1,)], order_matters=True)


def test_empty_results_and_shapes() -> None:
    assert results_match([], [], order_matters=True)
    assert not results_match([(1,)], [], order_matters=False)
    assert not results_match([(1, 2)], [(1,)], order_matters=False)
    assert results_match([(1, 1.0)], [(1.0, 1)], order_matters=False)  # 1 == 1.0, as in Python


def test_matches_the_definition_on_random_tables() -> None:
    rng = random.Random(7)
    for _ in range(1500):
        n_rows, n_cols = rng.randint(0, 5), rng.randint(1, 4)
        gold = [tuple(rng.choice([0, 1, "x", None]) for _ in range(n_cols)) for _ in range(n_rows)]
        perm = rng.sample(range(n_cols), n_cols)
        pred = [tuple(row[p] for p in perm) for row in gold]
        if rng.random() < 0.5:
            rng.shuffle(pred)
        if pred and rng.random() < 0.5:  # perturb one cell
            r, c = rng.randrange(len(pred)), rng.randrange(n_cols)
            pred[r] = pred[r][:c] + (rng.choice([0, 1, "x", None]),) + pred[r][c + 1 :]
        for order_matters in (False, True):
            assert results_match(gold, pred, order_matters) == brute_force_match(gold, pred, order_matters)


def test_many_identical_columns_stay_fast() -> None:
    gold = [tuple([i] * 10) for i in range(50)]
    assert results_match(gold, list(reversed(gold)), order_matters=False)
    assert not results_match(gold, gold[:-1] + [tuple([0] * 9 + [49])], order_matters=False)


# ---------------------------------------------------------------- query normalisation


def test_normalize_comparisons() -> None:
    assert normalize_comparisons("a > = 1 AND b < = 2 AND c ! = 3") == "a >= 1 AND b <= 2 AND c != 3"
    assert normalize_comparisons("a >  =1") == "a >=1"


def test_remove_distinct() -> None:
    assert remove_distinct("SELECT DISTINCT name FROM t").split() == ["SELECT", "name", "FROM", "t"]
    assert remove_distinct("SELECT count(DISTINCT name) FROM t").replace(" ", "") == "SELECTcount(name)FROMt"
    assert remove_distinct("SELECT 'distinct' FROM t WHERE a = \"DISTINCT\"") == (
        "SELECT 'distinct' FROM t WHERE a = \"DISTINCT\""
    )
    assert remove_distinct("SELECT a IS NOT DISTINCT FROM b") == "SELECT a IS NOT DISTINCT FROM b"
    assert "distinct" not in remove_distinct("SELECT DISTINCT 'unterminated").lower().split()


def test_order_matters_follows_the_gold_query() -> None:
    assert gold_order_matters("SELECT a FROM t ORDER BY a")
    assert gold_order_matters("SELECT a FROM t WHERE a IN (SELECT a FROM s ORDER BY a LIMIT 3)")
    assert not gold_order_matters("SELECT a FROM t WHERE b = 'order by'")


# ---------------------------------------------------------------- end to end on a purpose-built DB


def test_column_permutation_on_a_database(shop: Path) -> None:
    assert correct(shop, "SELECT name, age FROM person", "SELECT age, name FROM person")
    assert not correct(shop, "SELECT name, age FROM person", "SELECT name FROM person")


def test_duplicates_matter_on_a_database(shop: Path) -> None:
    gold = "SELECT age FROM person WHERE city = 'Rome' OR id = 3"  # 40, 40, 50
    assert not correct(shop, gold, "SELECT age FROM person WHERE age >= 40 GROUP BY age")  # 40, 50
    assert correct(shop, gold, "SELECT age FROM person WHERE age >= 40")


def test_order_counts_only_with_gold_order_by(shop: Path) -> None:
    ordered = "SELECT name FROM person ORDER BY age DESC, name"
    assert correct(shop, ordered, "SELECT name FROM person ORDER BY age DESC, name")
    assert not correct(shop, ordered, "SELECT name FROM person ORDER BY age ASC, name")
    assert correct(shop, "SELECT name FROM person", "SELECT name FROM person ORDER BY name DESC")


def test_distinct_is_removed_unless_kept(shop: Path) -> None:
    gold = "SELECT DISTINCT city FROM person"
    assert correct(shop, gold, "SELECT city FROM person")
    assert not correct(shop, gold, "SELECT city FROM person", keep_distinct=True)
    assert correct(shop, gold, "SELECT DISTINCT city FROM person", keep_distinct=True)
    # Official quirk kept on purpose: DISTINCT inside COUNT goes too.
    assert correct(shop, "SELECT count(DISTINCT city) FROM person", "SELECT count(*) FROM person")


def test_spaced_operators_are_normalised(shop: Path) -> None:
    assert correct(
        shop, "SELECT name FROM person WHERE age != 40", "SELECT name FROM person WHERE age ! = 40"
    )
    assert correct(
        shop, "SELECT name FROM person WHERE age >= 40", "SELECT name FROM person WHERE age > = 40"
    )


def test_errors_score_zero(shop: Path) -> None:
    result = score_one(example(shop, "SELECT name FROM person"), "SELECT nme FROM person")
    assert not result.correct and result.error == "no such column: nme"
    refused = score_one(example(shop, "SELECT count(*) FROM person"), "DELETE FROM person")
    assert not refused.correct and "not allowed" in (refused.error or "")
    assert score_one(example(shop, "SELECT 1"), "").error is not None
    broken_gold = score_one(example(shop, "SELECT nope FROM person"), "SELECT 1")
    assert not broken_gold.correct and (broken_gold.error or "").startswith("gold query failed")


def test_score_predictions_counts_and_progress(shop: Path) -> None:
    examples = [example(shop, "SELECT count(*) FROM person", i) for i in range(5)]
    seen: list[tuple[int, int]] = []
    report = score_predictions(
        examples,
        ["SELECT count(*) FROM person", "SELECT 4", "SELECT 5", "SELECT bad", "SELECT count(id) FROM person"],
        max_workers=2,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert report.execution_accuracy == pytest.approx(3 / 5)
    assert [r.correct for r in report.results] == [True, True, False, False, True]
    assert [r.index for r in report.results] == list(range(5))
    assert sorted(seen) == [(i, 5) for i in range(1, 6)]
    with pytest.raises(PredictionMismatchError, match="got 4 predictions for 5 examples"):
        score_predictions(examples, ["SELECT 1"] * 4)


# ---------------------------------------------------------------- the packaged Spider data


def test_packaged_data_loads(dev: list[Text2SQLExample]) -> None:
    assert len(dev) == 645
    assert len({e.db_id for e in dev}) == 19 and "wta_1" not in {e.db_id for e in dev}
    assert [e.index for e in dev] == list(range(645))
    assert all(e.db_path.is_file() and e.gold_sql for e in dev)
    assert (default_spider_dir() / "ATTRIBUTION.md").is_file()


def test_gold_scores_correct_against_itself(dev: list[Text2SQLExample]) -> None:
    report = score_predictions(dev, [e.gold_sql or "" for e in dev])
    failures = [r for r in report.results if not r.correct]
    assert failures == []
    assert report.execution_accuracy == 1.0


@pytest.mark.parametrize(
    ("sql", "difficulty"),
    [
        ("SELECT count(*) FROM singer", "easy"),
        ("SELECT name FROM singer WHERE age > 20", "easy"),
        ("SELECT name, country FROM singer WHERE age > 20", "medium"),
        ("SELECT count(*), max(age) FROM singer", "medium"),
        ("SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 ON T1.id = T2.id GROUP BY T2.name", "medium"),
        ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", "hard"),
        (
            "SELECT name FROM singer WHERE country = 'a' INTERSECT SELECT name FROM singer WHERE country = 'b'",
            "hard",
        ),
        (
            "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.sid "
            "WHERE T2.year > 2014 GROUP BY T1.name ORDER BY count(*) DESC LIMIT 1",
            "extra",
        ),
        ("SELECT name FROM singer WHERE id NOT IN (SELECT sid FROM concert) ORDER BY age LIMIT 3", "extra"),
    ],
)
def test_difficulty_of_known_queries(sql: str, difficulty: str) -> None:
    assert spider_difficulty(sql) == difficulty


def test_unparseable_sql_has_no_difficulty() -> None:
    assert spider_difficulty("SELECT FROM WHERE (") is None


# The official rules applied to the parser output stored in dev.json's "sql" field: an
# independent reference for the sqlglot-based counts (LIKE is index 9 of Spider's WHERE_OPS).
def _reference_counts(sql: dict) -> tuple[int, int, int]:
    conds = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    nested = sum(isinstance(c[3], dict) + isinstance(c[4], dict) for c in conds)
    nested += sum(sql[k] is not None for k in ("intersect", "union", "except"))
    connectors = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    comp1 = (
        (len(sql["where"]) > 0)
        + (len(sql["groupBy"]) > 0)
        + (len(sql["orderBy"]) > 0)
        + (sql["limit"] is not None)
        + max(len(sql["from"]["table_units"]) - 1, 0)
        + connectors.count("or")
        + sum(c[1] == 9 for c in conds)
    )
    aggs = sum(u[0] != 0 for u in sql["select"][1]) + sum(c[0] != 0 for c in sql["where"][::2])
    aggs += sum(u[0] != 0 for u in sql["groupBy"]) + sum(u[0] != 0 for u in sql["having"])
    if sql["orderBy"]:
        aggs += sum(unit[0] != 0 for v in sql["orderBy"][1] for unit in (v[1], v[2]) if unit)
    others = (aggs > 1) + (len(sql["select"][1]) > 1) + (len(sql["where"]) > 1) + (len(sql["groupBy"]) > 1)
    return comp1, nested, others


def test_difficulty_agrees_with_the_official_parse() -> None:
    records = json.loads((default_spider_dir() / "dev.json").read_text())
    mismatched = []
    for i, record in enumerate(records):
        counts = hardness_counts(record["query"])
        assert counts is not None, record["query"]
        if (counts.component1, counts.component2, counts.others) != _reference_counts(record["sql"]):
            mismatched.append(i)
    assert mismatched == []


def test_difficulty_distribution_is_close_to_published(dev: list[Text2SQLExample]) -> None:
    counts: collections.Counter[str | None] = collections.Counter(e.difficulty for e in dev)
    assert counts == {"easy": 148, "medium": 287, "hard": 108, "extra": 102}
    # Published full dev (1,034): 248 easy, 446 medium, 174 hard, 166 extra.
    published = {"easy": 248 / 1034, "medium": 446 / 1034, "hard": 174 / 1034, "extra": 166 / 1034}
    for level, share in published.items():
        assert abs(counts[level] / len(dev) - share) < 0.03


# ---------------------------------------------------------------- loading errors and other formats


def test_jsonl_format(tmp_path: Path, shop: Path) -> None:
    data = tmp_path / "custom.jsonl"
    lines = [
        {
            "question": "How many people?",
            "db_path": "shop/shop.sqlite",
            "gold_sql": "SELECT count(*) FROM person",
        },
        {"question": "Names?", "db_path": str(shop), "id": "q2"},
    ]
    data.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    first, second = load_text2sql(data)
    assert (first.index, first.id, first.db_id, first.db_path, first.difficulty) == (
        0,
        "0",
        "shop",
        shop,
        "easy",
    )
    assert (second.id, second.gold_sql, second.difficulty) == ("q2", None, None)
    with pytest.raises(PredictionMismatchError, match="no gold SQL"):
        score_predictions([first, second], ["SELECT 1", "SELECT 1"])


def test_clear_errors_for_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dev\.json"):
        load_spider(tmp_path)
    (tmp_path / "dev.json").write_text(json.dumps([{"db_id": "shop", "question": "q", "query": "SELECT 1"}]))
    with pytest.raises(DatasetError, match="database folder not found"):
        load_spider(tmp_path)
    (tmp_path / "database").mkdir()
    with pytest.raises(
        DatasetError, match=r"missing under .*: shop; each needs database/<db_id>/<db_id>\.sqlite"
    ):
        load_text2sql(tmp_path / "dev.json")
    with pytest.raises(DatasetError, match="dataset not found"):
        load_text2sql(tmp_path / "nope")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "db_path": "missing.sqlite"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: database file not found"):
        load_text2sql(bad)
    bad.write_text('{"db_path": "x"}\n')
    with pytest.raises(DatasetError, match="missing or empty field 'question'"):
        load_text2sql(bad)


def test_official_layout_from_a_directory(tmp_path: Path, shop: Path) -> None:
    (tmp_path / "database").mkdir()
    shop.parent.rename(tmp_path / "database" / "shop")
    records = [{"db_id": "shop", "question": "How many?", "query": "SELECT count(*) FROM person"}]
    (tmp_path / "my_split.json").write_text(json.dumps(records))
    (only,) = load_text2sql(tmp_path / "my_split.json")
    assert (only.id, only.db_path) == ("my_split-0", tmp_path / "database" / "shop" / "shop.sqlite")


# ---------------------------------------------------------------- the command function


def test_eval_command_json(tmp_path: Path, shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    rows = [{"question": "q", "db_path": str(shop), "gold_sql": "SELECT count(*) FROM person"}] * 3
    data.write_text("\n".join(json.dumps(r) for r in rows))
    preds = tmp_path / "pred.sql"
    preds.write_text("SELECT count(*) FROM person\tshop\nSELECT nme FROM person\n\n\n")
    with pytest.raises(
        PredictionMismatchError,
        match=r"has 4 lines \(the last 2 of them blank\) but the dataset has 3 examples",
    ):
        eval_command(data, preds, keep_distinct=False, as_json=True)

    preds.write_text("SELECT count(*) FROM person\tshop\nSELECT nme FROM person\n\n")
    eval_command(data, preds, keep_distinct=False, as_json=True)
    out = json.loads(capsys.readouterr().out)
    assert out["execution_accuracy"] == pytest.approx(1 / 3)
    assert out["results"][0] == {"index": 0, "db_id": "shop", "correct": True, "error": None}
    assert out["results"][1]["error"] == "no such column: nme"
    assert out["results"][2]["correct"] is False

    preds.write_text("SELECT 4\tother_db\nSELECT 4\nSELECT 4\n")
    with pytest.raises(PredictionMismatchError, match="for database 'other_db' but example 0 uses 'shop'"):
        eval_command(data, preds, keep_distinct=False, as_json=True)


def test_eval_command_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dev: list[Text2SQLExample]
) -> None:
    preds = tmp_path / "gold.sql"
    preds.write_text("\n".join(f"{e.gold_sql}\t{e.db_id}" for e in dev) + "\n")
    report = eval_command(None, preds, keep_distinct=False, as_json=False)
    assert report.execution_accuracy == 1.0
    out = capsys.readouterr().out
    for word in ("easy", "medium", "hard", "extra", "all", "645", "1.000"):
        assert word in out
