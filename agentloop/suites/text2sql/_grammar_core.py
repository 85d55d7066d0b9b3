"""The schema-independent part of the SQL grammar (see ``grammar``), in llguidance's Lark dialect."""

# The part of the grammar that does not depend on the schema. Every name, literal and
# keyword is a single lexeme; repetition uses `*` rather than recursion, which llguidance's
# Earley parser handles best.
#
# A SELECT over one table or two joinable ones gets its own copies of the expression rules
# (`query_0`, `expr_0a`, ...): a small model otherwise names a column of another table. Three
# or more tables, subqueries in FROM and ORDER BY after a compound use the unscoped copy,
# which has no bare columns. Scoped cores never match `select_multi`.
GRAMMAR_CORE = r"""
// Every lexeme takes up to 8 whitespace characters before it (_explicit_whitespace); the
// statement may end in whitespace or a ';', after which nothing may follow, so a decoder
// stops there.
start: SPACE? query (";" | SPACE)?
SPACE: /[ \t\r\n]{1,8}/

query: select_multi order_by? limit?
    | select_any (compound_op select_any)+ compound_order? limit?
    | scoped_query
compound_op: UNION ALL? | INTERSECT | EXCEPT
// After a compound, ORDER BY names a result column (bare) or an expression without bare columns.
compound_order: ORDER BY compound_ordering ("," compound_ordering)*
compound_ordering: (COLUMN | TABLE "." COLUMN | arith) (ASC | DESC)?
// Without FROM only constants: a column there is an error that a decoder would otherwise reach.
select_multi: SELECT (DISTINCT | ALL)? items from_multi where? group_by? having?
    | SELECT literal ("," literal){0,5}
// A subquery that gives one value (in an expression, or after IN) selects one column.
scalar_query: select_multi1 order_by? limit?
    | sselect_any (compound_op sselect_any)+ compound_order? limit?
    | scalar_scoped
select_multi1: SELECT (DISTINCT | ALL)? arith (AS column_alias)? from_multi where? group_by? having?
sselect_any: select_multi1 | sselect_scoped
// Two plain tables have their own scopes (query_0_2, ...); here three or more, each with an
// alias (so a table may appear twice), or one subquery alone. A table joined to a subquery is
// left out: Spider's gold never does it, and its bare columns could not be scoped, so a
// decoder used it to escape the scopes.
from_multi: FROM aliased_ref join_op aliased_ref join_constraint? (join_op aliased_ref join_constraint?)+
    | FROM subquery_ref
join_op: "," | NATURAL? (LEFT OUTER? | INNER | CROSS)? JOIN
join_constraint: ON exprw | USING "(" COLUMN ("," COLUMN)* ")"
aliased_ref: TABLE (AS ALIAS | SPACED_ALIAS)
// A subquery in FROM reads tables only, so it cannot nest another one there: a decoder whose
// column no table in FROM has would otherwise nest "JOIN (SELECT ..." to the token limit.
subquery_ref: "(" (scoped_query | select_scoped (compound_op select_scoped)+ compound_order? limit?) ")" (AS? ALIAS)?
// Spider limits by a number; an expression there let a decoder write LIMIT 'Germany'.
limit: LIMIT COUNT_NUMBER ((OFFSET | ",") COUNT_NUMBER)?
column_alias: IDENT | STRING | DQ_STRING
literal: NUMBER | STRING | NULL

CMP_OP: "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
ADD_OP: "+" | "-" | "||"
MUL_OP: "*" | "/" | "%"
// At most 10 digits before and after the point, and 100 characters in a string (Spider's
// gold has 6 and 30): a decoder otherwise writes 1000000... or '%c%c%c... to the token limit.
NUMBER: /[0-9]{1,10}(\.[0-9]{0,10})?([eE][+-]?[0-9]{1,3})?/ | /\.[0-9]{1,10}([eE][+-]?[0-9]{1,3})?/
COUNT_NUMBER: /[0-9]{1,9}/
STRING: /'([^']|''){0,100}'/
DQ_STRING: /"([^"]|""){0,100}"/
SIGN: "-" | "+"
IDENT: /[A-Za-z_][A-Za-z0-9_]{0,29}/
// At most two digits (Spider's are T1 to T9): a decoder otherwise writes "T1111..." to the
// token limit. Without AS, an alias after a table name needs whitespace: "Pets T1", not
// "PetsT1", which SQLite reads as one unknown name.
ALIAS: /[Tt][0-9]{1,2}/
SPACED_ALIAS: /[ \t\r\n]{1,8}[Tt][0-9]{1,2}/
// Two joined tables with aliases: the first in FROM takes an odd number and the second an
// even one (T1 and T2, or T3 and T4 in a subquery, as Spider's gold writes them), so that
// T1.col names a column of the first table only. With one alias rule for both, a decoder
// wrote T2.col for a column of T1's table, which SQLite rejects.
ALIAS_1: /[Tt][13579]/
ALIAS_2: /[Tt][2468]/
SPACED_ALIAS_1: /[ \t\r\n]{1,8}[Tt][13579]/
SPACED_ALIAS_2: /[ \t\r\n]{1,8}[Tt][2468]/

"""
