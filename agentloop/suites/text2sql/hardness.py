"""Spider difficulty buckets (easy/medium/hard/extra) from SQL text, by the official hardness rules.

The official rules (taoyds/spider ``evaluation.py``, ``Evaluator.eval_hardness``) count components on
the output of Spider's own SQL parser. This module reads the same components from a sqlglot parse
tree, including the parser's quirks (see the comments marked "official quirk"), so that it gives
the same bucket as the official labels; ``tests/test_spider_eval.py`` checks that on the dev set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp

__all__ = ["DIFFICULTIES", "Difficulty", "HardnessCounts", "hardness_counts", "spider_difficulty"]

Difficulty = Literal["easy", "medium", "hard", "extra"]
DIFFICULTIES: tuple[Difficulty, ...] = ("easy", "medium", "hard", "extra")

# Base class of parse-tree nodes: Expr since sqlglot 30 (annotations name it; they are not evaluated).
_NODE = getattr(exp, "Expr", exp.Expression)
# The operators Spider's parser allows between two column units.
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div)


@dataclass(frozen=True, slots=True)
class HardnessCounts:
    """The three counts that decide the bucket (names follow the official code)."""

    component1: int  # WHERE, GROUP BY, ORDER BY, LIMIT, joins, ORs, LIKEs
    component2: int  # nested queries: subqueries in conditions, INTERSECT/UNION/EXCEPT
    others: int  # several aggregates, several select columns, several WHERE conditions, several GROUP BY

    @property
    def difficulty(self) -> Difficulty:
        c1, c2, co = self.component1, self.component2, self.others
        if c1 <= 1 and co == 0 and c2 == 0:
            return "easy"
        if (co <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and co < 2 and c2 == 0):
            return "medium"
        if (
            (co > 2 and c1 <= 2 and c2 == 0)
            or (2 < c1 <= 3 and co <= 2 and c2 == 0)
            or (c1 <= 1 and co == 0 and c2 <= 1)
        ):
            return "hard"
        return "extra"


def spider_difficulty(sql: str) -> Difficulty | None:
    """Bucket a SQL query by the official Spider hardness rules; ``None`` if it does not parse."""
    counts = hardness_counts(sql)
    return counts.difficulty if counts is not None else None


def hardness_counts(sql: str) -> HardnessCounts | None:
    """Count the components of the top-level query; ``None`` if sqlglot cannot parse it."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return None
    # Spider's parser keeps the left operand of a set operation as the main query and puts the
    # rest (the whole right-hand chain, with any trailing ORDER BY/LIMIT) in one nested slot.
    set_ops = 0
    node = _unwrap(tree)
    if isinstance(node, exp.SetOperation):
        set_ops = 1
        while isinstance(node, exp.SetOperation):
            node = _unwrap(node.this)
    if not isinstance(node, exp.Select):
        return None
    return _count_select(node, set_ops)


def _count_select(select: exp.Select, set_ops: int) -> HardnessCounts:
    join_conds: list[exp.Expr] = []
    joins = select.args.get("joins") or []
    for join in joins:
        on = join.args.get("on")
        if on is not None:
            join_conds.append(on)
    from_leaves, from_ors = _flatten_conditions(join_conds)
    where = select.args.get("where")
    where_leaves, where_ors = _flatten_conditions([where.this] if where is not None else [])
    having = select.args.get("having")
    having_leaves, having_ors = _flatten_conditions([having.this] if having is not None else [])
    group = select.args.get("group")
    group_items = list(group.expressions) if group is not None else []
    order = select.args.get("order")
    order_items = [o.this if isinstance(o, exp.Ordered) else o for o in order.expressions] if order else []
    has_from = _from_clause(select) is not None

    all_leaves = from_leaves + where_leaves + having_leaves
    component1 = (
        int(bool(where_leaves))
        + int(bool(group_items))
        + int(bool(order_items))
        + int(select.args.get("limit") is not None)
        + (len(joins) if has_from else 0)
        + from_ors
        + where_ors
        + having_ors
        + sum(1 for leaf in all_leaves if isinstance(_strip_not(leaf), exp.Like))
    )
    component2 = set_ops + sum(_nested_operands(leaf) for leaf in all_leaves)

    aggregates = sum(1 for item in select.expressions if _select_item_has_agg(item))
    # Official quirk: the aggregate counter looks at the first field of each WHERE condition,
    # which holds the NOT flag, so every negated WHERE condition counts as an aggregate.
    aggregates += sum(1 for leaf in where_leaves if isinstance(leaf, exp.Not))
    aggregates += sum(1 for item in group_items if isinstance(_unwrap(item), exp.AggFunc))
    aggregates += sum(_order_item_aggs(item) for item in order_items)
    # Official quirk: over HAVING it counts the AND/OR connectors and the negated conditions.
    aggregates += (len(having_leaves) - 1 if having_leaves else 0) + sum(
        1 for leaf in having_leaves if isinstance(leaf, exp.Not)
    )
    others = (
        int(aggregates > 1)
        + int(len(select.expressions) > 1)
        + int(len(where_leaves) > 1)
        + int(len(group_items) > 1)
    )
    return HardnessCounts(component1, component2, others)


def _from_clause(select: exp.Select) -> exp.Expr | None:
    # sqlglot renamed the arg from "from" to "from_"; accept both so older releases work.
    return select.args.get("from_") or select.args.get("from")


def _unwrap(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren | exp.Alias):
        node = node.this
    return node


def _strip_not(node: exp.Expr) -> exp.Expr:
    return node.this if isinstance(node, exp.Not) else node


def _flatten_conditions(roots: list[exp.Expr]) -> tuple[list[exp.Expr], int]:
    """Split AND/OR trees into Spider's flat condition list (leaves in text order); also count ORs.

    Several roots (the ON clauses of several joins) are joined by AND, as the official parser does.
    """
    items: list[exp.Expr | str] = []
    for i, root in enumerate(roots):
        if i:
            items.append("and")
        stack: list[exp.Expr | str] = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, exp.Paren) and isinstance(_unwrap(node), exp.And | exp.Or):
                node = _unwrap(node)
            if isinstance(node, exp.And | exp.Or):
                stack += [node.expression, "or" if isinstance(node, exp.Or) else "and", node.this]
            else:
                items.append(node)
    leaves: list[exp.Expr] = []
    ors = 0
    swallowing = False
    for item in items:
        if isinstance(item, str):
            # Official quirk: when a condition compares against a column, Spider's value parser
            # reads on to the next AND, so the conditions joined to it by OR are lost.
            swallowing = swallowing and item == "or"
            ors += item == "or" and not swallowing
            continue
        if not swallowing:
            leaves.append(item)
            swallowing = _compares_to_column(item)
    return leaves, ors


def _compares_to_column(leaf: exp.Expr) -> bool:
    cond = _strip_not(_unwrap(leaf))
    value = cond.args.get("high") if isinstance(cond, exp.Between) else cond.args.get("expression")
    if not isinstance(value, exp.Column):
        return False
    # SQLite reads "text" as an identifier, but Spider's tokenizer reads it as a string.
    return not (value.this.args.get("quoted") and not value.table)


def _nested_operands(leaf: exp.Expr) -> int:
    """Subqueries used as the value(s) a condition compares against (not its left-hand side)."""
    cond = _strip_not(_unwrap(leaf))
    count = 0
    for key, value in cond.args.items():
        if key == "this":
            continue
        for operand in value if isinstance(value, list) else [value]:
            if isinstance(operand, _NODE) and isinstance(_unwrap(operand), exp.Subquery | exp.Query):
                count += 1
    if isinstance(cond, exp.Exists):
        count += 1
    return count


def _select_item_has_agg(item: exp.Expr) -> bool:
    # Spider records one aggregate per select item: the function the item starts with, so
    # "max(a) - min(a)" counts once and "a + max(b)" not at all.
    node = _unwrap(item)
    while isinstance(node, _ARITHMETIC):
        node = _unwrap(node.this)
    return isinstance(node, exp.AggFunc)


def _order_item_aggs(item: exp.Expr) -> int:
    # An ORDER BY value is one column unit or two joined by an arithmetic operator; each unit may
    # carry an aggregate.
    node = _unwrap(item)
    if isinstance(node, _ARITHMETIC):
        return int(isinstance(_unwrap(node.this), exp.AggFunc)) + int(
            isinstance(_unwrap(node.expression), exp.AggFunc)
        )
    return int(isinstance(node, exp.AggFunc))
