"""Aggregate subqueries a rollup answers inside a statement it cannot answer as a whole.

``WITH d AS (SELECT day, sum(bid_price) AS s FROM events GROUP BY day) SELECT avg(s) FROM d``
is not one aggregate over one table, but its CTE is: the CTE is routed on its own (the same
rules and rewrite as a statement) and spliced back, and the rest of the statement runs on
DuckDB over its result, as written (other table references through the raw planner). Which
nested SELECTs qualify, and what of them must be kept, is decided here: pure functions over
the statement's tree.

Never routed: a correlated subquery (it reads the outer row: not one aggregate of the table),
a SELECT inside a recursive WITH, a SELECT whose output names matter (a CTE, a derived
table, the first branch of a set operation) when they cannot be read off its tree exactly
(outputs.output_names), since the outer statement binds them, and one inside an unaliased
select-list expression (DuckDB names that column after the subquery's text).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlglot import exp

from tierflight.router.facts import TableInfo

# The reason a route part gives for a subquery answered by a rollup (EXPLAIN ROUTE).
NESTED_REASON = "exact rewrite of a subquery onto mergeable states"


@dataclass(frozen=True)
class Nested:
    index: int  # position among the tree's SELECTs (find_all order): the same in a copy
    select: exp.Select  # in the statement's own tree (its CTE scopes resolve names)
    names_matter: bool  # the outer statement reads its output columns by name


def nested_selects(tree: exp.Expr) -> list[Nested]:
    """The SELECTs inside ``tree`` that could stand alone: CTE bodies, derived tables,
    scalar / IN / EXISTS subqueries, branches of a set operation."""
    out: list[Nested] = []
    for index, node in enumerate(tree.find_all(exp.Select)):
        if node is tree or _names_its_text(node):
            continue
        parent = node.parent
        if isinstance(parent, exp.CTE):
            with_ = parent.parent
            if isinstance(with_, exp.With) and with_.args.get("recursive"):
                continue
            out.append(Nested(index, node, not _has_columns(parent.args.get("alias"))))
        elif isinstance(parent, exp.Subquery):
            derived = parent.args.get("alias") is not None or isinstance(parent.parent, exp.From | exp.Join | exp.Lateral)
            out.append(Nested(index, node, derived and not _has_columns(parent.args.get("alias"))))
        elif isinstance(parent, exp.Exists):
            out.append(Nested(index, node, False))
        elif isinstance(parent, exp.SetOperation):
            # The first branch names the result's columns.
            out.append(Nested(index, node, node.arg_key == "this"))
    return out


def _names_its_text(select: exp.Select) -> bool:
    """Whether an output column is named after text around ``select`` (DuckDB names an
    unaliased ``(SELECT count(*) FROM events)`` after its text, which a rewrite changes)."""
    node: exp.Expr = select
    while node.parent is not None:
        if isinstance(node.parent, exp.Select) and node.arg_key == "expressions" and not isinstance(node, exp.Alias):
            return True
        node = node.parent
    return False


def _has_columns(alias: exp.Expr | None) -> bool:
    return isinstance(alias, exp.TableAlias) and bool(alias.columns)


def correlated(select: exp.Select, table: exp.Table, info: TableInfo) -> bool:
    """Whether ``select`` may read a column of an enclosing query: a column qualified by
    another relation, or an unqualified name that is neither the table's (stored or
    derived) nor an alias of its own select list."""
    own = (table.alias or table.name).lower()
    known = info.columns | info.derived.keys()
    aliases = {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias)}
    for column in select.find_all(exp.Column):
        if column.table:
            if column.table.lower() != own or column.args.get("db"):
                return True
        elif column.name.lower() not in known and column.name.lower() not in aliases:
            return True
    return False


def marker(statement_sql: str, index: int) -> str:
    """A name standing for a routed subquery in the outer statement until its SQL is
    spliced in: derived from the statement's text, so the text cannot contain it."""
    digest = hashlib.sha256(statement_sql.encode()).hexdigest()[:20]
    return f"__tf_subquery_{digest}_{index}"
