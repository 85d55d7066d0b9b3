"""Spider data loading, difficulty buckets and execution accuracy with the official semantics."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import random
import sqlite3
from pathlib import Path

import pytest
import sqlparse

from agentloop.cli.eval import eval_command
from agentloop.graphs import Candidate
from agentloop.suites.text2sql import (
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
from agentloop.suites.text2sql import execution as spider_exec
from agentloop.suites.text2sql.execution import (
    first_statement,
    gold_order_matters,
    has_second_statement,
    normalize_comparisons,
    prediction_time_limit,
    remove_distinct,
)
from agentloop.suites.text2sql.hardness import hardness_counts
from agentloop.suites.text2sql.task import Text2SQLTask
from agentloop.tools.sql import SQLResult, run_sql_sync


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


# ---------------------------------------------------------------- text after the first statement


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM person; LIMIT 1",
        "SELECT 1; -- comment\nSELECT 2",
        "SELECT 1;\n/* a note */",
        "SELECT 'a;b' FROM t; DROP TABLE t",
        "SELECT [a;b] FROM t;SELECT 2",
        "  SELECT 1  ;  ",
        "SELECT 1 /* ; */ ; x",
        "; SELECT 1",
        "WITH a AS (SELECT 1; x) SELECT 1",
        "SELECT 1",
    ],
)
def test_first_statement_is_sqlparse_first_statement(sql: str) -> None:
    assert first_statement(sql) == str(sqlparse.parse(sql)[0])


def test_first_statement_of_nothing_is_empty() -> None:
    assert first_statement("") == first_statement("   ") == ""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_trailing_text_is_dropped_by_default(shop: Path) -> None:
    before = _digest(shop)
    gold = "SELECT count(*) FROM person"
    for tail in ("; LIMIT 1", "; -- comment", ";\n/* note */", "; DROP TABLE person", ";SELECT 2", "; Done."):
        result = score_one(example(shop, gold), gold + tail)
        assert result.correct and result.error is None, (tail, result)
    # The first statement is the one scored, whatever follows it.
    assert not correct(shop, gold, "SELECT 1; " + gold)
    assert correct(shop, "SELECT city FROM person", "SELECT DISTINCT city FROM person; SELECT 1")
    assert _digest(shop) == before


def test_keep_distinct_refuses_a_second_statement_like_sqlite3(shop: Path) -> None:
    gold = "SELECT count(*) FROM person"
    for tail in ("; -- comment", ";\n/* note */", ";  "):
        assert correct(shop, gold, gold + tail, keep_distinct=True), tail
    for tail in ("; LIMIT 1", "; DROP TABLE person", ";SELECT 2", ";;"):
        result = score_one(example(shop, gold), gold + tail, keep_distinct=True)
        assert not result.correct and "more than one SQL statement" in (result.error or ""), tail
    assert correct(shop, gold, "; " + gold, keep_distinct=True)  # SQLite skips empty statements


_TAILS = [
    "",
    " ",
    "\f",
    "\v",
    "-",
    "--",
    "-- x\n",
    "-- x\n;",
    "/",
    "/*",
    "/* x */",
    "/* x */ y",
    "/* a * / b",
    "*/",
    ";",
    " x",
    "\xa0",
    "-- a\r b",
    "/* x */-- y",
    "-\n-",
    "; SELECT 2",
]
_HEADS = [
    "SELECT 1;",
    "; SELECT 1;",
    "SELECT ';' ;",
    "SELECT 1 /* ; */;",
    "SELECT 'it''s;';",
    "SELECT [a;b] FROM (SELECT 1 AS [a;b]);",
    "-- c;\nSELECT 1;",
    "SELECT 1",
]


@pytest.mark.parametrize("head", _HEADS)
def test_second_statement_check_agrees_with_python_sqlite3(head: str) -> None:
    connection = sqlite3.connect(":memory:")
    for tail in _TAILS:
        try:
            connection.execute(head + tail).fetchall()
            refused = False
        except sqlite3.ProgrammingError:
            refused = True
        except sqlite3.OperationalError:  # e.g. "SELECT 1-": a syntax error, not a second statement
            continue
        assert has_second_statement(head + tail) == refused, repr(head + tail)


async def test_oracle_scores_the_first_statement() -> None:
    (singers,) = [e for e in load_text2sql() if e.index == 0]
    assert singers.gold_sql == "SELECT count(*) FROM singer"
    task = Text2SQLTask(singers, "oracle")
    right = await task.verify(Candidate(0, 0, "", "h", answer="SELECT count(*) FROM singer; LIMIT 1"))
    assert right.passed
    wrong = await task.verify(Candidate(0, 0, "", "h", answer="SELECT 1; SELECT count(*) FROM singer"))
    assert not wrong.passed


# ---------------------------------------------------------------- per-prediction time limits

RUNAWAY = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"


def test_prediction_time_limit_rule() -> None:
    assert prediction_time_limit(0.001) == 1.0  # the floor
    assert prediction_time_limit(0.2) == pytest.approx(4.0)  # 20 x the gold time
    assert prediction_time_limit(5.0) == 60.0  # capped by the timeout
    assert prediction_time_limit(0.2, 3.0) == 3.0
    assert prediction_time_limit(0.001, 0.5) == 0.5  # the cap wins over the floor
    assert prediction_time_limit(0.1, min_limit_s=0.5, factor=2) == 0.5
    assert prediction_time_limit(1.0, min_limit_s=0.5, factor=2) == 2.0


def test_runaway_prediction_is_cut_at_its_derived_limit(shop: Path) -> None:
    result = score_one(example(shop, "SELECT count(*) FROM person"), RUNAWAY, min_limit_s=0.2, timeout_s=30)
    assert not result.correct
    assert "timed out after 0.2 s" in (result.error or "")
    assert "the limit is max(0.2 s, 20 x the gold query's" in (result.error or "")


def test_timeout_caps_the_derived_limit(
    tmp_path: Path, shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = score_one(example(shop, "SELECT count(*) FROM person"), RUNAWAY, timeout_s=0.3)
    assert not result.correct and "timed out after 0.3 s" in (result.error or "")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "db_path": str(shop), "gold_sql": "SELECT 1"}))
    preds = tmp_path / "pred.sql"
    preds.write_text(RUNAWAY + "\n")
    eval_command(data, preds, as_json=True, timeout_s=0.3)
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["correct"] is False and "timed out after 0.3 s" in row["error"]


@pytest.mark.parametrize(
    ("gold_s", "cap_s", "expected_s"), [(0.5, 60.0, 10.0), (0.9, 1.0, 1.0), (0.0, 60.0, 1.0)]
)
def test_gold_time_does_not_count_against_the_prediction(
    monkeypatch: pytest.MonkeyPatch, shop: Path, gold_s: float, cap_s: float, expected_s: float
) -> None:
    calls: list[float] = []

    def run(db: Path, sql: str, *, timeout_s: float, max_rows: int | None) -> SQLResult:
        calls.append(timeout_s)
        result = run_sql_sync(db, sql, timeout_s=timeout_s, max_rows=max_rows)
        # Pretend the gold (the first query) took gold_s seconds.
        return dataclasses.replace(result, elapsed_s=gold_s) if len(calls) == 1 else result

    monkeypatch.setattr(spider_exec, "run_sql_sync", run)
    gold = "SELECT count(*) FROM person"
    assert score_one(example(shop, gold), gold, timeout_s=cap_s).correct
    # The gold ran under the cap; the prediction got the whole derived limit on its own clock.
    assert calls == [cap_s, expected_s]


def test_value_in_a_prediction_becomes_1_as_in_the_official_evaluation() -> None:
    from agentloop.suites.text2sql.execution import official_prediction_text

    assert (
        official_prediction_text("SELECT count(*) AS value FROM singer") == "SELECT count(*) AS 1 FROM singer"
    )
    assert official_prediction_text("SELECT Value FROM t") == "SELECT Value FROM t"  # case-sensitive
    example = next(e for e in load_text2sql() if e.gold_sql == "SELECT count(*) FROM singer")
    assert score_one(example, "SELECT count(*) FROM singer").correct
    wrong = score_one(example, "SELECT count(*) AS value FROM singer")
    assert not wrong.correct and wrong.error is not None


def test_a_prediction_line_is_the_text_before_its_first_tab(tmp_path: Path) -> None:
    from agentloop.suites.text2sql.execution import read_predictions

    examples = load_text2sql()[:3]
    path = tmp_path / "p.txt"
    path.write_text(
        f"SELECT count(*) FROM singer\t{examples[0].db_id}\n"
        "  SELECT 1\tSELECT 2  \n"  # the official keeps only what precedes the first tab
        "\n"
    )
    assert read_predictions(path, examples) == ["SELECT count(*) FROM singer", "SELECT 1", ""]
    path.write_text("SELECT 1\tworld_1\nSELECT 1\nSELECT 1\n")
    with pytest.raises(Exception, match="for database 'world_1'"):
        read_predictions(path, examples)
