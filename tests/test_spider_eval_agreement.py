"""agentloop's Text2SQL evaluator agrees with the official Spider one on perturbed gold queries.

The official evaluator (taoyds/test-suite-sql-eval, ``exec_eval.py``, default flags) cannot be
installed here, so this module holds a small reference written from its code: plain ``sqlite3``,
the official string post-processing, DISTINCT removal over the flattened tokens of the first
``sqlparse`` statement (which also drops everything after that statement), the "order by"
substring test and the official result comparison. It shares no code with ``spider_exec``.
"""

from __future__ import annotations

import collections
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
import sqlparse
from sqlglot import exp

from agentloop.suites.text2sql import Text2SQLExample, load_text2sql, score_predictions

# Both evaluators get the same limit; no perturbation of a Spider gold comes close to it.
TIMEOUT_S = 10.0
MIN_AGREEMENT = 0.999

Rows = list[tuple[Any, ...]]

# ---------------------------------------------------------------- the reference evaluator


def ref_postprocess(sql: str) -> str:
    """The official clean-up: exactly ``> =``, ``< =`` and ``! =`` with one space are closed up."""
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def ref_remove_distinct(sql: str) -> str:
    """Rebuild the first sqlparse statement from its leaf tokens, leaving out each DISTINCT (any case).

    Text after the first statement is lost on the way, exactly as in the official script. An empty
    text has no first statement; the official raises there, and such predictions are not used here.
    """
    first = sqlparse.parse(sql)[0]
    return "".join(leaf.value for leaf in first.flatten() if leaf.value.lower() != "distinct")


_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)


def ref_execute(db_path: Path, sql: str, timeout_s: float = TIMEOUT_S) -> tuple[Rows | None, str | None]:
    """Run ``sql`` with ``fetchall``; text decoded with ``errors='ignore'``, as the official does."""
    connection = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    connection.text_factory = lambda data: data.decode(errors="ignore")
    deadline = time.monotonic() + timeout_s
    connection.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
    try:
        return connection.execute(_CUR_YEAR.sub("2020", sql)).fetchall(), None
    except Exception as exc:  # the official catches everything and scores it 0
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def _unorder_row(row: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(sorted(row, key=lambda v: str(v) + str(type(v))))


def _quick_reject(gold: Rows, pred: Rows, order_matters: bool) -> bool:
    """False when the rows, each with its values sorted, already differ (a necessary condition)."""
    g = [_unorder_row(r) for r in gold]
    p = [_unorder_row(r) for r in pred]
    return g == p if order_matters else set(g) == set(p)


def _consistent_permutations(allowed: list[set[int]]) -> Iterator[tuple[int, ...]]:
    """Column permutations where gold column i takes a predicted column from ``allowed[i]``.

    The official enumerates ``product(*allowed)`` and skips non-permutations, pruning ``allowed``
    with 20 sampled rows when there are more than 3 columns; pruning with every row and yielding
    only permutations gives the same verdict, deterministically and without the blow-up.
    """
    n = len(allowed)

    def extend(prefix: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        if len(prefix) == n:
            yield prefix
            return
        for j in sorted(allowed[len(prefix)]):
            if j not in prefix:
                yield from extend(prefix + (j,))

    return extend(())


def ref_result_eq(gold: Rows, pred: Rows, order_matters: bool) -> bool:
    """The official denotation comparison: bags (or lists) of rows, up to a column permutation."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    n_cols = len(gold[0])
    if len(pred[0]) != n_cols:
        return False
    if not _quick_reject(gold, pred, order_matters):
        return False
    gold_col_sets = [{row[i] for row in gold} for i in range(n_cols)]
    # Predicted column j can stand for gold column i only if all its values occur in gold column i.
    allowed = [
        {j for j in range(n_cols) if all(row[j] in gold_col_sets[i] for row in pred)} for i in range(n_cols)
    ]
    for perm in _consistent_permutations(allowed):
        permuted = [tuple(row[j] for j in perm) for row in pred]
        if order_matters:
            if permuted == gold:
                return True
        elif set(permuted) == set(gold) and collections.Counter(permuted) == collections.Counter(gold):
            return True
    return False


class ReferenceEvaluator:
    """Official exec-match verdicts (1 or 0); gold results are cached per database and query."""

    def __init__(self) -> None:
        self._gold: dict[tuple[Path, str], Rows] = {}

    def score(self, db_path: Path, gold_sql: str, pred_sql: str, keep_distinct: bool = False) -> bool:
        # evaluation.py turns every lowercase "value" of the prediction into "1" before scoring.
        pred_sql = pred_sql.replace("value", "1")
        gold_sql, pred_sql = ref_postprocess(gold_sql), ref_postprocess(pred_sql)
        if not keep_distinct:
            gold_sql, pred_sql = ref_remove_distinct(gold_sql), ref_remove_distinct(pred_sql)
        order_matters = "order by" in gold_sql.lower()
        key = (db_path, gold_sql)
        if key not in self._gold:
            rows, error = ref_execute(db_path, gold_sql)
            assert rows is not None, f"gold query failed on {db_path.name}: {gold_sql!r}: {error}"
            self._gold[key] = rows
        pred_rows, _ = ref_execute(db_path, pred_sql)
        if pred_rows is None:
            return False
        return ref_result_eq(self._gold[key], pred_rows, order_matters)


def test_reference_comparison_follows_the_official_rules() -> None:
    assert ref_result_eq([], [], order_matters=True)
    assert ref_result_eq([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=False)
    assert not ref_result_eq([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=True)
    assert not ref_result_eq([(1, "a"), (2, "b")], [(1, "b"), (2, "a")], order_matters=False)
    assert not ref_result_eq([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)  # bags
    assert not ref_result_eq([(1, 2)], [(1,)], order_matters=False)
    wide = [tuple(range(i, i + 6)) for i in range(5)]
    assert ref_result_eq(wide, [row[::-1] for row in reversed(wide)], order_matters=False)
    assert (
        ref_remove_distinct("SELECT count(DISTINCT a), 'distinct' FROM t")
        == "SELECT count( a), 'distinct' FROM t"
    )
    assert ref_postprocess("a > = 1 AND b >  = 2") == "a >= 1 AND b >  = 2"  # one space only
    # Only the first statement survives, with its ';' and the comment that follows on its line.
    assert ref_remove_distinct("SELECT DISTINCT a FROM t; LIMIT 1") == "SELECT  a FROM t; "
    assert ref_remove_distinct("SELECT a FROM t; -- why\nSELECT 2") == "SELECT a FROM t; -- why\n"


# ---------------------------------------------------------------- perturbations of the gold queries


def _leftmost_select(tree: exp.Expression) -> exp.Select | None:
    while isinstance(tree, exp.SetOperation):
        tree = tree.this
    return tree if isinstance(tree, exp.Select) else None


def _flip_order(tree: exp.Expression) -> bool:
    order = tree.args.get("order")
    if order is None:
        return False
    for ordered in order.expressions:
        # Flip NULL placement too, so the output keeps SQLite's default for the new direction.
        ordered.set("desc", not ordered.args.get("desc"))
        ordered.set("nulls_first", not ordered.args.get("nulls_first"))
    return True


def _drop_order(tree: exp.Expression) -> bool:
    if tree.args.get("order") is None:
        return False
    tree.set("order", None)
    return True


def _bump_limit(tree: exp.Expression) -> bool:
    limit = tree.args.get("limit")
    if not isinstance(limit, exp.Limit):
        return False
    value = limit.expression
    if not isinstance(value, exp.Literal) or value.is_string:
        return False
    limit.set("expression", exp.Literal.number(int(value.this) + 1))
    return True


def _drop_where(tree: exp.Expression) -> bool:
    select = _leftmost_select(tree)
    if select is None or select.args.get("where") is None:
        return False
    select.set("where", None)
    return True


def _swap_columns(tree: exp.Expression) -> bool:
    select = _leftmost_select(tree)
    if select is None or len(select.expressions) < 2:
        return False
    columns = list(select.expressions)
    columns[0], columns[1] = columns[1], columns[0]
    select.set("expressions", columns)
    return True


def _toggle_distinct(tree: exp.Expression) -> bool:
    select = _leftmost_select(tree)
    if select is None:
        return False
    select.set("distinct", None if select.args.get("distinct") else exp.Distinct())
    return True


_TREE_EDITS: dict[str, Callable[[exp.Expression], bool]] = {
    "flip_order": _flip_order,
    "drop_order": _drop_order,
    "bump_limit": _bump_limit,
    "drop_where": _drop_where,
    "swap_columns": _swap_columns,
    "toggle_distinct": _toggle_distinct,
}


def perturbations(gold: str) -> Iterator[tuple[str, str]]:
    """``(kind, sql)`` for every perturbation that applies to ``gold``, the gold itself first."""
    yield "gold", gold
    tree = sqlglot.parse_one(gold, read="sqlite")
    assert isinstance(tree, exp.Expression)
    for kind, edit in _TREE_EDITS.items():
        copy = tree.copy()
        if edit(copy):
            yield kind, copy.sql(dialect="sqlite")
    no_from = re.sub(r"\bFROM\b", "", gold, count=1, flags=re.IGNORECASE)
    if no_from != gold:
        yield "syntax_no_from", no_from
    # The ')' goes before any final ';', or it would be trailing text after the first statement.
    body = gold.rstrip().rstrip(";")
    yield "syntax_paren", re.sub(r"\(", "((", body, count=1) if "(" in body else body + " )"
    if re.search(r"[<>!]=", gold):
        yield "spaced_operator", re.sub(r"([<>!])=", r"\1 =", gold)
    for kind, tail in TRAILING.items():
        yield kind, body + tail
    yield "lead_select", "SELECT 1; " + body
    # Officially "value" becomes "1" in predictions, so this alias is a syntax error there.
    yield "value_alias", f"SELECT * FROM ({body}) AS value"


# Text after the gold's first statement: the official runs only that statement by default, while
# with --keep-distinct sqlite3 runs the whole text and refuses a second statement.
TRAILING = {
    "trail_limit": "; LIMIT 1",
    "trail_comment": "; -- comment",
    "trail_block_comment": ";\n/* the answer */",
    "trail_drop": "; DROP TABLE t",
    "trail_select": ";SELECT 2",
    "trail_prose": "; This query answers the question.",
}


@dataclass(frozen=True)
class Pair:
    example: Text2SQLExample
    kind: str
    prediction: str
    keep_distinct: bool


def build_pairs(examples: Sequence[Text2SQLExample]) -> list[Pair]:
    pairs = []
    for example in examples:
        assert example.gold_sql is not None
        for kind, sql in perturbations(example.gold_sql):
            pairs.append(Pair(example, kind, sql, keep_distinct=False))
            # DISTINCT only counts with --keep-distinct, which also runs trailing text.
            if kind in ("gold", "toggle_distinct", "lead_select", *TRAILING):
                pairs.append(Pair(example, kind, sql, keep_distinct=True))
    return pairs


def test_agreement_with_the_official_semantics_on_perturbed_gold(record_property) -> None:
    examples = load_text2sql()
    assert len(examples) == 645
    pairs = build_pairs(examples)

    ours: dict[int, bool] = {}  # pair position -> agentloop's verdict
    for keep in (False, True):
        positions = [i for i, p in enumerate(pairs) if p.keep_distinct == keep]
        report = score_predictions(
            [pairs[i].example for i in positions],
            [pairs[i].prediction for i in positions],
            keep_distinct=keep,
            timeout_s=TIMEOUT_S,
        )
        ours.update(zip(positions, (r.correct for r in report.results), strict=True))

    reference = ReferenceEvaluator()
    disagreements = []
    per_kind: collections.Counter[str] = collections.Counter()
    correct_by_kind: collections.Counter[str] = collections.Counter()
    for i, pair in enumerate(pairs):
        our_verdict = ours[i]
        example = pair.example
        assert example.gold_sql is not None
        official = reference.score(example.db_path, example.gold_sql, pair.prediction, pair.keep_distinct)
        kind = pair.kind + (" (keep_distinct)" if pair.keep_distinct else "")
        per_kind[kind] += 1
        correct_by_kind[kind] += official
        if official != our_verdict:
            disagreements.append(
                f"#{example.index} {pair.kind} keep_distinct={pair.keep_distinct}: official={official} "
                f"agentloop={our_verdict}\n  gold: {example.gold_sql}\n  pred: {pair.prediction}"
            )

    agreement = 1 - len(disagreements) / len(pairs)
    summary = (
        f"{len(pairs)} pairs, agreement {agreement:.4%}, {len(disagreements)} disagreements; "
        + ", ".join(f"{k}: {correct_by_kind[k]}/{n} correct" for k, n in sorted(per_kind.items()))
    )
    print(summary)
    record_property("agreement", summary)
    # Every kind occurs; the reference itself scores the gold 1 and a syntax error 0.
    assert set(per_kind) >= {"gold", *_TREE_EDITS, "syntax_no_from", "syntax_paren"}
    assert correct_by_kind["gold"] == per_kind["gold"]
    assert correct_by_kind["syntax_paren"] == 0
    # By default only the first statement runs, so trailing text changes nothing; with
    # keep_distinct sqlite3 accepts trailing comments and refuses a second statement.
    for kind in TRAILING:
        assert correct_by_kind[kind] == len(examples), kind
        refused = kind not in ("trail_comment", "trail_block_comment")
        assert correct_by_kind[f"{kind} (keep_distinct)"] == (0 if refused else len(examples)), kind
    assert correct_by_kind["lead_select (keep_distinct)"] == 0
    assert correct_by_kind["value_alias"] == 0
    assert agreement >= MIN_AGREEMENT, summary + "\n" + "\n".join(disagreements)
