"""Joined rollups: a flat join's rollup rows joined to the dimension tables once, kept per the
columns the statement reads, for the statements of that join that come again.

A flat join (router/flatten.py) reads every rollup row of its range and joins it to the
dimension tables on every call: ``spend by vertical per week`` joins each (day, advertiser,
type) row to its advertiser, though it only reads the day, the type and the vertical. Grouped
by those (its **group columns**), the same joined rows are a few hundred times fewer::

    SELECT e.day AS tf_g0, e.type AS tf_g1, a.vertical AS tf_g2, SUM(e.sum__bid_price) AS tf_m0
    FROM tf_rollup.main.day_advertiser_type AS e JOIN tf_dimension.main.advertisers_v1_1 AS a
    ON e.advertiser_id = a.advertiser_id GROUP BY 1, 2, 3

and the statement reads that table in place of the join (``SUM(e.tf_m0)`` for
``SUM(e.sum__bid_price)``, ``e.tf_g2`` for ``a.vertical``). The same answer: every column the
statement reads outside a merge is a group column, so a WHERE, GROUP BY, HAVING or ORDER BY
sees the values it saw on each joined row; each merge (``sum``, ``min``, ``max``: a sum of
sums, a min of mins) gives what it gave over the rows; ``count(DISTINCT x)`` reads group
columns only. Anything else (another aggregate, a function sqlglot does not know, a window, a
subquery, USING, an unqualified name other than an output name as a whole sort key) keeps the
flat join. ``derive`` is pure, text in and text out; the
engine (engine/joined.py) builds the table when the same join and data version come again,
and checks that the statement over it binds to the same names and types.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from tierflight.core.names import DIMENSION_DATABASE, ROLLUP_DATABASE
from tierflight.core.statement import DIALECT
from tierflight.router.trees import conjuncts

# What the statement over the joined rollup names it by: the engine puts the table's name in.
MARKER = "tf_joined_rollup_marker"

_MERGES = (exp.Sum, exp.Min, exp.Max)
# Clauses a statement may have; any other (a CTE, QUALIFY, DISTINCT ON, a named window ...)
# keeps the flat join.
_CLAUSES = frozenset(
    {"expressions", "from_", "joins", "where", "group", "having", "order", "limit", "offset"}
)
_JOIN_ARGS = frozenset({"this", "on", "using", "side", "kind"})


@dataclass(frozen=True)
class JoinedRollup:
    build: str  # the joined rows per group: its text is the table's identity (with the data version)
    outer: str  # the statement over ``MARKER``
    source: str  # the rollup table read (the engine compares row counts)


class _Keep(Exception):
    """The flat join stays."""


def derive(sql: str) -> JoinedRollup | None:
    """The joined rollup that answers the flat join ``sql``, or None."""
    if MARKER in sql.lower():
        return None  # the engine replaces the marker's text: a literal spelling it would change
    try:
        tree = sqlglot.parse_one(sql, dialect=DIALECT)
        return _derive(tree)
    except Exception:  # noqa: BLE001 - a text this cannot read keeps its join: never an error
        return None


def _table(node: exp.Expr | None, catalog: str) -> exp.Table:
    if not isinstance(node, exp.Table) or node.catalog.lower() != catalog or not node.alias:
        raise _Keep
    if any(node.args.get(k) for k in ("when", "joins", "pivots", "laterals", "sample", "hints")):
        raise _Keep
    return node


def _derive(tree: exp.Expr) -> JoinedRollup:
    if not isinstance(tree, exp.Select):
        raise _Keep
    if any(v not in (None, False, []) for k, v in tree.args.items() if k not in _CLAUSES):
        raise _Keep
    if tree.find(exp.Window, exp.Subquery, exp.Filter, exp.Star, exp.Placeholder, exp.Parameter, exp.Lambda):
        raise _Keep
    if any(s is not tree for s in tree.find_all(exp.Select)):
        raise _Keep
    if tree.find(exp.Rollup, exp.Cube, exp.GroupingSets):
        raise _Keep
    from_ = tree.args.get("from_")
    fact = _table(from_.this if from_ is not None else None, ROLLUP_DATABASE)
    joins: list[exp.Join] = tree.args.get("joins") or []
    if not joins:
        raise _Keep
    conditions: list[exp.Expr] = []
    for join in joins:
        if set(k for k, v in join.args.items() if v not in (None, False, [])) - _JOIN_ARGS:
            raise _Keep  # ASOF, NATURAL, a join method: not a plain join on keys
        side, kind = (join.args.get("side") or "").upper(), (join.args.get("kind") or "").upper()
        if (side, kind) not in {("", ""), ("", "INNER"), ("LEFT", ""), ("LEFT", "OUTER")}:
            raise _Keep
        dimension = _table(join.this, DIMENSION_DATABASE)
        if join.args.get("on") is None and not join.args.get("using"):
            if side:
                raise _Keep
            _comma_condition(tree, join, fact.alias.lower(), dimension.alias.lower())
        if join.args.get("on") is not None:
            conditions.append(join.args["on"])
    aliases = {t.alias.lower() for t in (fact, *(j.this for j in joins))}
    fact_alias = fact.alias
    outputs = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}

    def in_conditions(node: exp.Expr) -> bool:
        return any(node is c or _within(node, c) for c in conditions)

    # The measures: each merge, as written; every other aggregate must be count(DISTINCT ...).
    measures: list[exp.AggFunc] = []
    for agg in tree.find_all(exp.AggFunc):
        if any(inner is not agg for inner in agg.find_all(exp.AggFunc)):
            raise _Keep  # an aggregate inside another
        if type(agg) in _MERGES and not isinstance(agg.this, exp.Distinct):
            if any(v not in (None, False) for k, v in agg.args.items() if k != "this"):
                raise _Keep
            measures.append(agg)
        elif not (isinstance(agg, exp.Count) and isinstance(agg.this, exp.Distinct)):
            raise _Keep
    groups: dict[tuple[str, str], exp.Column] = {}
    for col in tree.find_all(exp.Column):
        if in_conditions(col) or any(_within(col, m) for m in measures):
            continue
        table = col.table.lower()
        if not table:
            # An output name, as a whole sort key (DuckDB binds it to the output first). Inside
            # an expression DuckDB binds a table's column first: over the joined rows that
            # can be a derived column (``ORDER BY tf_g1 || ''`` with an output ``tf_g1``).
            if isinstance(col.parent, exp.Ordered) and _within_order(col) and col.name.lower() in outputs:
                continue
            raise _Keep
        if table not in aliases or col.args.get("db") is not None or isinstance(col.this, exp.Star):
            raise _Keep
        groups.setdefault((table, col.name.lower()), col)
    if not groups or not measures:
        raise _Keep
    # A function sqlglot does not know may be one of DuckDB's aggregates (histogram, product,
    # fsum, entropy ...): over the joined rows it would weigh each group once.
    for func in tree.find_all(exp.Anonymous):
        if not any(_within(func, m) for m in measures):
            raise _Keep
    for agg in measures:
        for col in agg.find_all(exp.Column):
            if col.table.lower() not in aliases or col.args.get("db") is not None:
                raise _Keep

    # The build: the group columns and each distinct merge, over the statement's FROM.
    # In a canonical order: statements reading the same columns and merges share one table.
    groups = dict(sorted(groups.items()))
    names = {key: f"tf_g{i}" for i, key in enumerate(groups)}
    by_sql = {agg.sql(dialect=DIALECT): agg for agg in measures}
    merged = {text: f"tf_m{i}" for i, text in enumerate(sorted(by_sql))}  # a merge's SQL -> its column
    select = [exp.alias_(col.copy(), names[key], copy=False) for key, col in groups.items()]
    select += [exp.alias_(by_sql[text].copy(), name, copy=False) for text, name in merged.items()]
    build = exp.select(*select, copy=False).from_(fact.copy(), copy=False)
    build.set("joins", [j.copy() for j in joins])
    build.set("group", exp.Group(expressions=[exp.Literal.number(i + 1) for i in range(len(groups))]))

    # The statement over it: the same text with each group column and merge read from it.
    outer = tree.copy()
    _name_outputs(outer)
    for agg in list(outer.find_all(exp.AggFunc)):
        column = merged.get(agg.sql(dialect=DIALECT)) if type(agg) in _MERGES else None
        if column is not None:
            agg.replace(type(agg)(this=exp.column(column, table=fact_alias)))
    for col in list(outer.find_all(exp.Column)):
        name = names.get((col.table.lower(), col.name.lower()))
        if name is not None:
            col.replace(exp.column(name, table=fact_alias))
    outer.set("joins", None)
    outer.set(
        "from_",
        exp.From(
            this=exp.Table(
                this=exp.to_identifier(MARKER), alias=exp.TableAlias(this=exp.to_identifier(fact_alias))
            )
        ),
    )
    source = exp.Table(this=fact.this.copy(), db=fact.args.get("db"), catalog=fact.args.get("catalog"))
    return JoinedRollup(build.sql(dialect=DIALECT), outer.sql(dialect=DIALECT), source.sql(dialect=DIALECT))


def _comma_condition(tree: exp.Select, join: exp.Join, fact: str, dimension: str) -> None:
    """A comma join's key equality (``e.k = a.k`` in WHERE) made its ON: the same inner join,
    and the key is no group column."""
    where = tree.args.get("where")
    found = None
    for pred in conjuncts(where.this) if where is not None else []:
        if isinstance(pred, exp.EQ) and all(
            isinstance(side, exp.Column) for side in (pred.this, pred.expression)
        ) and {pred.this.table.lower(), pred.expression.table.lower()} == {fact, dimension}:
            found = pred
            break
    if found is None or where is None:
        raise _Keep
    rest = [p for p in conjuncts(where.this) if p is not found]
    tree.set("where", exp.Where(this=exp.and_(*rest, copy=False)) if rest else None)
    join.set("on", found)


def _name_outputs(select: exp.Select) -> None:
    """Each output keeps its name when what it reads is renamed: a bare column is aliased."""
    for e in list(select.expressions):
        if isinstance(e, exp.Column):
            e.replace(exp.alias_(e.copy(), e.name, quoted=True, copy=False))
        elif not isinstance(e, exp.Alias):
            raise _Keep  # DuckDB names it by its text, which changes


def _within(node: exp.Expr, ancestor: exp.Expr) -> bool:
    parent = node.parent
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent
    return False


def _within_order(col: exp.Column) -> bool:
    parent = col.parent
    while parent is not None and not isinstance(parent, exp.Select):
        if isinstance(parent, exp.Order):
            return True
        parent = parent.parent
    return False
