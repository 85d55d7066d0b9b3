"""Schema-constrained SQL: a grammar of Spider's SQLite SELECT dialect whose names come from one database.

``schema_grammar(db)`` returns the grammar text in llguidance's Lark dialect for a database
(a ``.sqlite`` path, whose tables, views and columns are read from SQLite itself, or a
``SqlSchema``); the text is cached per schema. Names are the database's own, matched
case-insensitively, bare or quoted (``"x"``, ```x```, ``[x]``). Columns are scoped by the
tables in FROM (one table, or two that a foreign key or a shared column name links): bare
columns must be theirs, ``table.col`` / ``table.*`` only while the table has no alias, and
``T1.col`` / ``T1.*`` (aliases ``T`` and one or two digits, any case) only once it has one;
two joined tables with aliases number the first odd and the second even (``T1`` and ``T2``,
or ``T3`` and ``T4``), and each alias names its own table's columns only; three or more
tables need aliases and allow no bare column. WHERE, GROUP BY and ON take no
aggregates (a subquery there may). Keywords are case-insensitive, whitespace between lexemes
is free where SQLite needs none (``name DESC``, not ``nameDESC``), and nothing may follow the
optional final ``;`` (so a decoder stops there).

``SqlAcceptor(grammar)`` checks SQL strings against a grammar with llguidance's own
matcher, the one that constrained decoding uses: byte by byte by default, or through a
model's tokenizer (``llguidance.hf.from_tokenizer``). ``sql_accepted(db, sql)`` is the
one-call form over the cached grammar of a database.

Covered: ``SELECT [DISTINCT]``, ``*`` and ``t.*``, column aliases with ``AS``, arithmetic
and ``||``, aggregates (``count(*)``, ``count/sum/avg/min/max`` of one argument, with
``DISTINCT``), scalar functions with the argument counts SQLite takes (``abs length lower
upper typeof``: 1; ``round trim ltrim rtrim``: 1-2; ``instr ifnull nullif``: 2; ``substr
substring``: 2-3; ``replace``: 3; ``coalesce``: 2+; ``strftime``: 1+; ``date time datetime
julianday``: 0+), ``CAST``, ``CASE``, comparisons (``= == != <> < <= > >=``), ``[NOT]
LIKE``, ``[NOT] BETWEEN``, ``[NOT] IN`` (list or one-column subquery), ``IS [NOT] NULL``,
``[NOT] EXISTS``, ``AND/OR/NOT``, one-column scalar subqueries, ``FROM`` with comma joins,
``[NATURAL] [LEFT [OUTER]|INNER|CROSS] JOIN ... ON/USING`` and subqueries, ``WHERE``,
``GROUP BY``, ``HAVING``, ``ORDER BY ... ASC/DESC``, ``LIMIT n [OFFSET m | , m]``,
``UNION/INTERSECT/EXCEPT [ALL]``, single-quoted strings, double-quoted ones as a
predicate's operand (``name = "Joe"``, Spider's way of writing values), numbers and ``NULL``.

Bounded, well above Spider's gold queries (a masked small model otherwise repeats what is
allowed until the token limit): 6 predicates in an AND/OR chain, 4 operators in an
arithmetic chain, 4 WHENs, 20 values in an IN list, 6 GROUP BY and ORDER BY terms, 10
digits in a number, 100 characters in a string, 8 whitespace characters in a row; no
function, CASE or subquery inside a scalar function's or CAST's arguments or a CASE's
operand; a SELECT item, an ORDER BY term and an aggregate's argument are arithmetic, not a
predicate (``SELECT a = b`` and ``max(EXISTS ...)`` are out).

Not covered, on purpose: ``WITH``, window functions, other table aliases than
``T<digits>``, references to column aliases or to a subquery's computed columns
(``ORDER BY cnt`` after ``count(*) AS cnt``), a join that aliases one of two tables only,
a subquery whose tables have no alias naming an outer query's alias, ``LIMIT`` by an
expression, and any statement but ``SELECT``. The grammar is looser than SQLite in small
ways: with three or more tables, ``T1.col`` is checked against all of their columns, not
against the table ``T1`` names; an alias used before FROM need not be the one FROM gives
(``T3`` where FROM says ``T1``); and the two sides of a compound may select different
numbers of columns.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agentloop.errors import AgentloopError
from agentloop.suites.text2sql._grammar_core import GRAMMAR_CORE as _GRAMMAR_CORE
from agentloop.suites.text2sql.accept import MissingLlguidanceError, SqlAcceptor

__all__ = [
    "MissingLlguidanceError",
    "SqlAcceptor",
    "SqlSchema",
    "schema_grammar",
    "sql_accepted",
]

_AGGREGATES = ("count", "sum", "avg", "min", "max")
_TYPE_NAMES = (
    "integer int real text numeric float double varchar char blob boolean date datetime decimal".split()
)
# Keywords, each with whether whitespace must come before it and after it. Lexemes may
# otherwise touch, and a decoder then writes "nameDESC" or "SELECTname", which SQLite rejects;
# a keyword that follows a word needs whitespace before it, one that a word follows, after it.
_KEYWORDS: dict[str, tuple[bool, bool]] = {
    # No "after" where another keyword that needs space before it may follow (NOT IN, LEFT JOIN).
    **dict.fromkeys(["select", "distinct", "all"], (False, True)),
    # NOT is two lexemes: infix (x NOT IN ...) follows a word; prefix (WHERE NOT, IS NOT) a keyword.
    # CASE takes its operand after a SPACE (WHEN, which needs whitespace before it, may follow).
    **dict.fromkeys(["null", "exists", "cast", "count", "case"], (False, False)),
    # Prefix NOT may be followed by a name, and "NOTx" is a name to SQLite.
    "not_prefix": (False, True),
    **dict.fromkeys(
        "asc desc end in using group order natural left outer inner cross not".split(), (True, False)
    ),
    **dict.fromkeys(
        "as from where by having limit offset union intersect except join on and or like between is when "
        "then else".split(),
        (True, True),
    ),
}
_MAX_SHARING = 3  # tables that may share a column name that links two of them
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that mean something in a regex, plus the '/' that ends a Lark regex literal.
_REGEX_SPECIAL = set("\\.+*?()|[]{}^$#&-~/")


@dataclass(frozen=True, slots=True)
class SqlSchema:
    """Table names, each with its column names, in the database's own spelling, and the
    foreign-key links between tables (child, parent), which decide which joins the grammar has."""

    tables: tuple[tuple[str, tuple[str, ...]], ...]
    links: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_mapping(
        cls, tables: Mapping[str, Sequence[str]], links: Iterable[tuple[str, str]] = ()
    ) -> SqlSchema:
        return cls(tuple((name, tuple(columns)) for name, columns in tables.items()), tuple(links))

    def joinable(self) -> list[tuple[int, int]]:
        """Pairs of tables (indices, ``i <= j``) a two-table join may name: linked by a foreign
        key, or sharing a column name that at most three tables have (Spider's gold joins are
        all one or the other). A table joins itself only through a foreign key to itself."""
        index = {name.lower(): i for i, (name, _) in enumerate(self.tables)}
        pairs = {
            tuple(sorted((index[a.lower()], index[b.lower()])))
            for a, b in self.links
            if a.lower() in index and b.lower() in index
        }
        lowered = [{c.lower() for c in columns} for _, columns in self.tables]
        # A name that most tables have (other_details in 7 of 11) links nothing: each pair
        # is a scope, and scopes are what a mask costs (28 pairs there, 11 without it).
        shared = Counter(c for names in lowered for c in names)
        for i in range(len(lowered)):
            for j in range(i + 1, len(lowered)):
                if any(shared[c] <= _MAX_SHARING for c in lowered[i] & lowered[j]):
                    pairs.add((i, j))
        return sorted((i, j) for i, j in pairs if self.tables[i][1] and self.tables[j][1])

    @classmethod
    def from_sqlite(cls, db_path: str | Path) -> SqlSchema:
        """Read tables, views and their columns from a SQLite file (opened read-only)."""
        path = Path(db_path)
        if not path.is_file():
            raise AgentloopError(f"no SQLite database at {path}")
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
                )
            ]
            tables: list[tuple[str, tuple[str, ...]]] = []
            links: list[tuple[str, str]] = []
            for name in names:
                quoted = '"' + name.replace('"', '""') + '"'
                columns = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({quoted})"))
                tables.append((name, columns))
                links.extend((name, row[2]) for row in conn.execute(f"PRAGMA foreign_key_list({quoted})"))
        except sqlite3.DatabaseError as exc:
            raise AgentloopError(f"cannot read the schema of {path}: {exc}") from exc
        finally:
            conn.close()
        if not tables:
            raise AgentloopError(f"{path} has no tables")
        return cls(tuple(tables), tuple(links))


def schema_grammar(
    db: str | Path | SqlSchema,
    *,
    after_select: bool = False,
    newlines: bool = True,
    max_items: int | None = None,
) -> str:
    """The Lark grammar (llguidance dialect) of SELECT statements over one database's schema.

    ``after_select=True`` gives the continuation of a prompt that ends in the query's leading
    ``SELECT``: whitespace, then the rest of the statement (``" name FROM singer;"``), so that
    ``"SELECT" + text`` is a sentence of the full grammar. ``newlines=False`` allows only
    spaces and tabs between lexemes: a one-line query, for a completion prompt whose model
    ends its answer with a blank line (the mask then leaves it ``;`` or more SQL instead of a
    newline that the grammar would have to continue as SQL). ``max_items`` caps the
    expressions in a SELECT list (Spider's gold queries have at most 6): under the mask, a
    small model whose wanted column is refused tends to list valid columns until the token
    limit, and the cap makes it go on to FROM.
    """
    # The schema is read on every call (a fraction of a millisecond) so that a changed
    # database never gets a stale grammar; the grammar itself is cached per schema.
    schema = db if isinstance(db, SqlSchema) else SqlSchema.from_sqlite(db)
    grammar = _grammar_for_schema(schema, after_select)
    if max_items is not None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        grammar = _MORE_ITEMS.sub(rf"\1{{0,{max_items - 1}}}", grammar)
    return grammar if newlines else grammar.replace(_WHITESPACE, r"[ \t]")


# The repetition in every `items` rule (one per table scope), which max_items bounds.
_MORE_ITEMS = re.compile(r"^(items\w*: item\w* \(COMMA item\w*\))\*$", re.MULTILINE)
# Whitespace between lexemes, wherever the grammar allows it (newlines=False narrows it).
_WHITESPACE = r"[ \t\r\n]"
# Whitespace before a lexeme, or where SQLite needs some, is at most 8 characters (as in
# SPACE and SPACED_ALIAS below): a decoder otherwise writes spaces to the token limit, and
# llguidance's %ignore skips any number of runs.
_GAP, _OPTIONAL_GAP = "{1,8}", "{0,8}"
# The punctuation that rules write inline, as terminals that take the whitespace before them.
_PUNCTUATION = {"(": "LPAR", ")": "RPAR", ",": "COMMA", ".": "DOT", "*": "STAR", ";": "SEMI"}
_TERMINAL_DEF = re.compile(r"^([A-Z][A-Z0-9_]*): (.*)$")
# The continuation after a leading SELECT (schema_grammar(after_select=True)): the SELECT
# lexeme carries the whitespace after it, so the continuation must start with whitespace.
_START_RULE = 'start: SPACE? query (";" | SPACE)?\n'
_TAIL_START_RULE = 'start: SPACE query_tail (";" | SPACE)?\n'
_TAIL_RULES = """
query_tail: select_multi_tail order_by? limit?
    | select_any_tail (compound_op select_any)+ compound_order? limit?
    | scoped_tail
select_multi_tail: (DISTINCT | ALL)? items from_multi where? group_by? having?
    | literal ("," literal){0,5}
"""
# The expression rules, instantiated for the unscoped case (suffix "") and for each table
# scope ("_0" for table 0 by name, "_0a" for it under an alias, "_0_2" / "_0_2a" for a join
# of two), each twice: `{s}` may call aggregates, `{s}w` may not (WHERE, GROUP BY, ON and an
# aggregate's own arguments, where SQLite says "misuse of aggregate"; a subquery there is a
# new query and may). Few layers (the Earley items predicted at every expression start are
# most of a mask's cost): a predicate's operands are arithmetic with `+ - * / % ||` at one
# level, predicates are joined by AND/OR at one level, which accepts the same strings as
# precedence layers would. `{bare}` is the primary alternative for a bare column (empty when
# a scope has none) and `{qualified}` the scope's own ``table.col`` / ``T1.col`` alternatives.
# Lists and chains are bounded (see the module docstring): a scalar function's arguments
# (`farith`) hold only columns, literals, arithmetic and, outside `{s}w`, aggregates. A
# double-quoted string is a predicate's operand only (`operand`): anywhere else SQLite reads
# an unknown "name" as a column first.
_EXPR_RULES = """
expr{s}: NOT_PREFIX? pred{s} ((AND | OR) NOT_PREFIX? pred{s}){{0,{more_preds}}}
pred{s}: arith{s} pred_tail{s}? | EXISTS "(" query ")"
pred_tail{s}: CMP_OP operand{s}
    | NOT? LIKE operand{s}
    | NOT? BETWEEN operand{s} AND operand{s}
    | NOT? IN "(" (scalar_query | operand{s} ("," operand{s}){{0,{more_values}}})? ")"
    | IS NOT_PREFIX? arith{s}
operand{s}: arith{s} | DQ_STRING
arith{s}: SIGN? primary{s} ((ADD_OP | MUL_OP) primary{s}){{0,{more_ops}}}
primary{s}: literal{bare}
    | {qualified}
    | "(" (expr{s} | scalar_query) ")"
    | CAST "(" farith{s} AS TYPE_NAME ")"
    | CASE (SPACE farith{s})? (WHEN expr{s} THEN expr{s}){{1,{whens}}} (ELSE expr{s})? END{functions}{aggregates}
farith{s}: SIGN? fprimary{s} ((ADD_OP | MUL_OP) fprimary{s}){{0,{more_ops}}}
fprimary{s}: literal{bare}
    | {qualified}
    | "(" farith{s} ")"{flat_aggregates}
"""
_MAX_PREDICATES = 6
_MAX_OPERATORS = 4  # arithmetic operators in one chain
_MAX_WHENS = 4
_MAX_VALUES = 20  # in an IN list
_MAX_TERMS = 6  # GROUP BY and ORDER BY terms (and constants in a SELECT without FROM: {0,5})
_MAX_VARIADIC = 6  # arguments of coalesce, strftime, date, ...
# Scalar functions by the number of arguments SQLite takes (None: any number from the least).
_FUNCTION_ARITY: dict[str, tuple[int, int | None]] = {
    **dict.fromkeys("abs length lower upper typeof".split(), (1, 1)),
    **dict.fromkeys("round trim ltrim rtrim".split(), (1, 2)),
    **dict.fromkeys("instr ifnull nullif".split(), (2, 2)),
    **dict.fromkeys("substr substring".split(), (2, 3)),
    "replace": (3, 3),
    "coalesce": (2, None),
    "strftime": (1, None),
    **dict.fromkeys("date time datetime julianday".split(), (0, None)),
}
_AGGREGATE_CALLS = '\n    | COUNT "(" "*" ")"\n    | AGGREGATE "(" DISTINCT? {arg}{q}w ")"'
_CLAUSE_RULES = """
items{s}: item{s} ("," item{s})*
item{s}: "*" | star{s} | arith{s} (AS column_alias)?
where{s}: WHERE expr{s}w
group_by{s}: GROUP BY expr{s}w ("," expr{s}w){{0,{more_terms}}}
having{s}: HAVING expr{s}
order_by{s}: ORDER BY ordering{s} ("," ordering{s}){{0,{more_terms}}}
ordering{s}: arith{s} (ASC | DESC)?
"""


def _arity_groups() -> dict[tuple[int, int | None], list[str]]:
    groups: dict[tuple[int, int | None], list[str]] = {}
    for name, arity in _FUNCTION_ARITY.items():
        groups.setdefault(arity, []).append(name)
    return groups


def _function_terminals() -> list[str]:
    # Longest first, so that "substr" does not end "substring" early.
    return [
        f"FUNCTION_{least}_{most or 'N'}: /({_nocase('|'.join(sorted(names, key=len, reverse=True)))})/"
        for (least, most), names in _arity_groups().items()
    ]


def _function_calls(s: str) -> str:
    """The primary alternatives of scalar function calls in scope ``s``, one per arity."""
    calls = []
    for least, most in _arity_groups():
        arg = f"farith{s}"
        more = (most if most is not None else _MAX_VARIADIC) - max(least, 1)
        args = " ".join([arg] + [f'"," {arg}'] * (least - 1)) + (f' ("," {arg}){{0,{more}}}' if more else "")
        calls.append(f'FUNCTION_{least}_{most or "N"} "(" {f"({args})?" if least == 0 else args} ")"')
    return "".join("\n    | " + call for call in calls)


def _scoped_rules(s: str, qualified: str, bare: str) -> str:
    """The clause and expression rules of scope ``s`` (both expression variants)."""
    alt = f"\n    | {bare}" if bare else ""
    qualified = qualified.replace("|", "\n    |")
    bounds = {
        "more_preds": _MAX_PREDICATES - 1,
        "more_values": _MAX_VALUES - 1,
        "more_ops": _MAX_OPERATORS,
        "whens": _MAX_WHENS,
    }
    rules = [_CLAUSE_RULES.format(s=s, more_terms=_MAX_TERMS - 1)]
    for variant, aggregates in ((s, True), (s + "w", False)):
        rules.append(
            _EXPR_RULES.format(
                s=variant,
                qualified=qualified,
                bare=alt,
                functions=_function_calls(variant),
                aggregates=_AGGREGATE_CALLS.format(arg="arith", q=s) if aggregates else "",
                flat_aggregates=_AGGREGATE_CALLS.format(arg="farith", q=s) if aggregates else "",
                **bounds,
            )
        )
    return "".join(rules)


# A SELECT in one scope: its own items, FROM clause, WHERE, GROUP BY and HAVING.
_SCOPED_SELECT = """
query{s}: select{s} order_by{s}? limit?
select{s}: SELECT {body}
squery{s}: sselect{s} order_by{s}? limit?
sselect{s}: SELECT (DISTINCT | ALL)? arith{s} (AS column_alias)? from{s} where{s}? group_by{s}? having{s}?
"""
_SCOPED_TAIL = """
query{s}_tail: select{s}_tail order_by{s}? limit?
select{s}_tail: {body}
"""
_SCOPED_BODY = "(DISTINCT | ALL)? items{s} from{s} where{s}? group_by{s}? having{s}?"
_TABLE_ALIAS = "(AS ALIAS | SPACED_ALIAS)"


@dataclass(frozen=True, slots=True)
class _Scope:
    """The tables one SELECT reads, as grammar rules: which bare and qualified columns it may name."""

    suffix: str
    rules: list[str]


def _scope(s: str, qualifiers: Sequence[tuple[str, str]], from_clause: str, bare: str) -> _Scope:
    """A scope whose ``Q.col`` / ``Q.*`` take each (qualifier, its columns) pair."""
    qualified = " | ".join(f'{q} "." {columns}' for q, columns in qualifiers)
    stars = " | ".join(dict.fromkeys(q for q, _ in qualifiers))
    rules = [f'star{s}: ({stars}) "." "*"', f"from{s}: {from_clause}"]
    return _Scope(s, [*rules, _scoped_rules(s, qualified, bare)])


def _table_scopes(i: int) -> list[_Scope]:
    """One table, by its name (``singer.col``) or under an alias (``T1.col``; SQLite then
    knows it only by the alias): two scopes, so that each refuses the other's qualifier."""
    table, columns = f"TABLE_{i}", f"COLUMNS_{i}"
    return [
        _scope(f"_{i}", [(table, columns)], f"FROM {table}", columns),
        _scope(f"_{i}a", [("ALIAS", columns)], f"FROM {table} {_TABLE_ALIAS}", columns),
    ]


def _join_scopes(i: int, a: Sequence[str], j: int, b: Sequence[str]) -> tuple[list[str], list[_Scope]]:
    """Two tables joined (its terminals, its scopes): a bare column must be in exactly one of
    them (else SQLite calls it ambiguous); either both go by name and ``table.col`` names
    that table's columns, or both have aliases and ``T1.col`` names either's (a query that
    aliases one only is not covered; Spider's gold never does). A table joined to itself
    needs aliases, and then only ``T1.col`` names a column."""
    s, ti, tj = f"_{i}_{j}", f"TABLE_{i}", f"TABLE_{j}"
    if i == j:
        from_clause = f"FROM {ti} {_TABLE_ALIAS} join_op {ti} {_TABLE_ALIAS} join_constraint{s}?"
        constraint = f'join_constraint{s}: ON expr{s}w | USING "(" COLUMNS_{i} ("," COLUMNS_{i})* ")"'
        scope = _scope(s, [("ALIAS", f"COLUMNS_{i}")], from_clause, "")
        return [], [_Scope(s, [*scope.rules, constraint])]
    in_a, in_b = {c.lower() for c in a}, {c.lower() for c in b}
    bare = _dedupe([c for c in a if c.lower() not in in_b] + [c for c in b if c.lower() not in in_a])
    terminals = [f"UNION{s.upper()}: {_name_terminal(_dedupe([*a, *b]))}"]
    if bare:
        terminals.append(f"BARE{s.upper()}: {_name_terminal(bare)}")
    first, second = "(AS ALIAS_1 | SPACED_ALIAS_1)", "(AS ALIAS_2 | SPACED_ALIAS_2)"
    scopes = []
    for sk, pair, qualifiers in [
        (s, f"({ti} join_op {tj} | {tj} join_op {ti})", [(ti, f"COLUMNS_{i}"), (tj, f"COLUMNS_{j}")]),
        # With aliases, one scope per order: T1 qualifies the first table's columns only.
        (
            s + "a",
            f"{ti} {first} join_op {tj} {second}",
            [("ALIAS_1", f"COLUMNS_{i}"), ("ALIAS_2", f"COLUMNS_{j}")],
        ),
        (
            s + "b",
            f"{tj} {first} join_op {ti} {second}",
            [("ALIAS_1", f"COLUMNS_{j}"), ("ALIAS_2", f"COLUMNS_{i}")],
        ),
    ]:
        scope = _scope(
            sk, qualifiers, f"FROM {pair} join_constraint{sk}?", f"BARE{s.upper()}" if bare else ""
        )
        constraint = (
            f'join_constraint{sk}: ON expr{sk}w | USING "(" UNION{s.upper()} ("," UNION{s.upper()})* ")"'
        )
        scopes.append(_Scope(sk, [*scope.rules, constraint]))
    return terminals, scopes


@lru_cache(maxsize=64)
def _grammar_for_schema(schema: SqlSchema, after_select: bool = False) -> str:
    all_columns = _dedupe(col for _, columns in schema.tables for col in columns)
    if not all_columns:
        raise AgentloopError("a SQL grammar needs at least one table with columns")
    lines = [
        _GRAMMAR_CORE.replace(_START_RULE, _TAIL_START_RULE) if after_select else _GRAMMAR_CORE,
        f"AGGREGATE: /({_nocase('|'.join(_AGGREGATES))})/",
        *_function_terminals(),
        f"TYPE_NAME: /({_nocase('|'.join(_TYPE_NAMES))})/ " + r"/(\([0-9]+(,[0-9]+)?\))?/",
        f"COLUMN: {_name_terminal(all_columns)}",
        *(_keyword(word, before, after) for word, (before, after) in _KEYWORDS.items()),
        # Unscoped (three or more tables, each with an alias, a subquery in FROM, ORDER BY
        # after a compound): no bare columns, so a decoder cannot name a column that none of
        # the tables has, and only aliases qualify.
        'star: ALIAS "." "*"',
        _scoped_rules("", 'ALIAS "." COLUMN', ""),
    ]
    tables, scopes = [], []
    for i, (table, columns) in enumerate(schema.tables):
        tables.append(f"TABLE_{i}")
        lines.append(f"TABLE_{i}: {_name_terminal([table])}")
        if columns:
            lines.append(f"COLUMNS_{i}: {_name_terminal(_dedupe(columns))}")
            scopes.extend(_table_scopes(i))
    for i, j in schema.joinable():
        terminals, pair_scopes = _join_scopes(i, schema.tables[i][1], j, schema.tables[j][1])
        lines.extend(terminals)
        scopes.extend(pair_scopes)
    for scope in scopes:
        lines.extend(scope.rules)
        body = _SCOPED_BODY.format(s=scope.suffix)
        lines.append(_SCOPED_SELECT.format(s=scope.suffix, body=body))
        if after_select:
            lines.append(_SCOPED_TAIL.format(s=scope.suffix, body=body))
    lines.append(f"TABLE: {' | '.join(tables)}")
    lines.append(f"scoped_query: {' | '.join('query' + sc.suffix for sc in scopes)}")
    lines.append(f"select_scoped: {' | '.join('select' + sc.suffix for sc in scopes)}")
    lines.append("select_any: select_multi | select_scoped")
    lines.append(f"scalar_scoped: {' | '.join('squery' + sc.suffix for sc in scopes)}")
    lines.append(f"sselect_scoped: {' | '.join('sselect' + sc.suffix for sc in scopes)}")
    if after_select:
        # The same statements as `query` with their first SELECT keyword already written.
        lines.append(_TAIL_RULES)
        lines.append(f"scoped_tail: {' | '.join('query' + sc.suffix + '_tail' for sc in scopes)}")
        lines.append(
            f"select_any_tail: select_multi_tail | {' | '.join('select' + sc.suffix + '_tail' for sc in scopes)}"
        )
    return _explicit_whitespace("\n".join(lines) + "\n")


def _explicit_whitespace(grammar: str) -> str:
    """The grammar with the whitespace between lexemes bounded: every terminal takes up to 8
    whitespace characters before it (keywords that need whitespace carry 1 to 8 already), and
    the punctuation that rules write inline (``"("``) becomes such a terminal (``LPAR``)."""
    lines = []
    for line in grammar.splitlines():
        match = _TERMINAL_DEF.match(line)
        if match is None:  # a rule, a continuation line or a comment
            for text, name in _PUNCTUATION.items():
                line = line.replace(f'"{text}"', name)
        elif not re.fullmatch(r"[A-Z0-9_ |]+", match[2]) and not match[2].startswith("/" + _WHITESPACE):
            line = f"{match[1]}: /{_WHITESPACE}{_OPTIONAL_GAP}/ ({match[2]})"  # not one made of terminals
        lines.append(line)
    lines += [
        f"{name}: /{_WHITESPACE}{_OPTIONAL_GAP}{_regex_escape(text)}/" for text, name in _PUNCTUATION.items()
    ]
    return "\n".join(lines) + "\n"


def sql_accepted(db: str | Path | SqlSchema, sql: str) -> bool:
    """Whether ``sql`` matches the cached grammar of ``db`` (bytewise)."""
    return _acceptor(schema_grammar(db)).accepts(sql)


@lru_cache(maxsize=32)
def _acceptor(grammar: str) -> SqlAcceptor:
    return SqlAcceptor(grammar)


def _dedupe(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)  # SQLite names are case-insensitive
    return list(seen.values())


def _regex_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


def _nocase(pattern: str) -> str:
    """``pattern`` (regex text whose letters are literal) matching ASCII letters in either case
    and nothing else: SQLite folds ASCII only, and a regex's (?i) also matches "ſ" for "s"
    and the Kelvin sign for "k" (a decoder wrote "Aſ t", which SQLite cannot parse)."""
    return re.sub(r"[A-Za-z]", lambda m: f"[{m[0].upper()}{m[0].lower()}]", pattern)


def _keyword(word: str, before: bool, after: bool) -> str:
    space = _WHITESPACE + _GAP
    text = word.split("_")[0]
    return f"{word.upper()}: /{space if before else ''}{_nocase(text)}{space if after else ''}/"


def _name_terminal(names: Sequence[str]) -> str:
    """A terminal matching any of ``names``, case-insensitively, bare where SQLite allows it or quoted."""
    # Longest first so a name is never cut short by one of its prefixes inside the alternation.
    ordered = sorted(names, key=len, reverse=True)
    bare = [_regex_escape(n) for n in ordered if _BARE_NAME.fullmatch(n)]

    def within(quote: str) -> str:  # a quote character inside a quoted name is doubled
        return "|".join(_regex_escape(n.replace(quote, quote * 2)) for n in ordered)

    quoted = [f'"({within(chr(34))})"', f"`({within('`')})`", r"\[(" + within("]") + r")\]"]
    return f"/({_nocase('|'.join(bare + quoted))})/"
