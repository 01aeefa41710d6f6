"""A join's fact side merged into the statement: the rollup joined to the dimension tables row
by row, aggregated once.

router/joins.py answers ``SELECT a.vertical, sum(e.bid_price) FROM events e JOIN advertisers a
USING (advertiser_id) GROUP BY 1`` as an outer statement over the fact side, itself an
aggregate of a rollup by the join keys::

    SELECT a.vertical, SUM(e._m0) FROM (SELECT advertiser_id, SUM(sum__bid_price) AS _m0
    FROM tf_rollup.main.advertiser_type AS e GROUP BY advertiser_id) AS e JOIN ... GROUP BY 1

For DuckDB that is two hash aggregates, the first over every group of join keys (and fact
expressions) the filters leave: on a rollup by day, every (advertiser, day) of the range. When
the fact side is one scan of one rollup, each measure one ``sum``, ``min`` or ``max`` of a
rollup column (a partial count: ``COALESCE(CAST(SUM(x) AS BIGINT), 0)``) and the statement
merges each measure with the same function, the merge can read the rollup's rows themselves::

    SELECT a.vertical, SUM(e.sum__bid_price) FROM tf_rollup.main.advertiser_type AS e
    JOIN ... GROUP BY 1

The same answer: a sum of per-group sums is the sum of the rows (likewise min of mins, max of
maxes), a condition on dimension columns (``count(a.name)``: ``SUM(IF(a.name IS NOT NULL,
e._m0))``) is the same for every row of a group (the group's join key picks the dimension row),
and fact expressions the statement groups by are the same for every row of a group. Anything
else keeps the nested form: sketches, a split with raw edges, another merge, a fact expression
inside an aggregate other than ``count(DISTINCT ...)``, ``min`` or ``max``, or an unqualified
name the rollup's own columns could capture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from tierflight.core.names import ROLLUP_DATABASE
from tierflight.core.statement import DIALECT

_MERGES: tuple[type[exp.AggFunc], ...] = (exp.Sum, exp.Min, exp.Max)


@dataclass(frozen=True)
class Flat:
    outer: exp.Select  # the statement over ``<marker> AS <fact alias>`` and the dimensions
    table: str  # the rollup table the marker stands for


class _Keep(Exception):
    """The nested form stays."""


def _partial(node: exp.Expr) -> tuple[type[exp.AggFunc], exp.Expr]:
    """(merge, per-row value) of one fact-side measure."""
    counted = (
        isinstance(node, exp.Coalesce)
        and isinstance(node.this, exp.Cast)
        and node.this.to.is_type("bigint")
        and len(node.expressions) == 1
        and isinstance(node.expressions[0], exp.Literal)
        and node.expressions[0].this == "0"
    )
    agg = node.this.this if counted else node
    if not isinstance(agg, exp.AggFunc) or type(agg) not in _MERGES:
        raise _Keep
    if any(v not in (None, False) for k, v in agg.args.items() if k != "this"):
        raise _Keep
    value = agg.this
    if not isinstance(value, exp.Expr) or value.find(exp.AggFunc) or value.find(exp.Select) or value.find(exp.Window):
        raise _Keep
    if counted:
        if not isinstance(agg, exp.Sum):
            raise _Keep
        # Per row as per group: a partial count is 0, never NULL, and sums to the group's.
        value = exp.func("COALESCE", exp.cast(value.copy(), "BIGINT"), exp.Literal.number(0), copy=False)
    return type(agg), value


def _qualified(node: exp.Expr, alias: str) -> exp.Expr:
    """``node`` (over the rollup alone, its columns unqualified or qualified by ``alias``)
    with every column qualified: the dimension tables joined beside it may share names."""
    copy = node.copy()
    for col in copy.find_all(exp.Column):
        if col.table.lower() not in ("", alias) or col.args.get("db") is not None or isinstance(col.this, exp.Star):
            raise _Keep
        col.set("table", exp.to_identifier(alias))
    return copy


def _ancestor(col: exp.Column, kind: type[exp.Expr]) -> exp.Expr | None:
    """The nearest ancestor of ``col`` of type ``kind`` within its own SELECT."""
    node = col.parent
    while node is not None and not isinstance(node, kind):
        if isinstance(node, exp.Select):
            return None
        node = node.parent
    return node


def _enclosing_aggregate(col: exp.Column) -> exp.AggFunc | None:
    found = _ancestor(col, exp.AggFunc)
    return found if isinstance(found, exp.AggFunc) else None


def _merged_here(col: exp.Column, merge: type[exp.AggFunc]) -> bool:
    """``col`` (a partial measure) is the argument of ``merge``, or (sums only) the value of
    an ``IF(<condition>, col)`` (``CASE WHEN <condition> THEN col END``) that is."""
    parent = col.parent
    if type(parent) is merge and parent.this is col:
        return True
    if merge is not exp.Sum or not isinstance(parent, exp.If) or parent.args.get("true") is not col:
        return False
    if parent.args.get("false") is not None or parent.this.find(exp.AggFunc):
        return False
    branch: exp.Expr = parent
    if isinstance(parent.parent, exp.Case):
        case = parent.parent
        if case.this is not None or case.args.get("default") is not None or case.args.get("ifs") != [parent]:
            return False
        branch = case
    return type(branch.parent) is exp.Sum and branch.parent.this is branch


def _in_order(col: exp.Column) -> bool:
    return _ancestor(col, exp.Order) is not None


def flatten(
    outer: exp.Select,
    inner_sql: str,
    fact_alias: str,
    dimensions: Mapping[str, frozenset[str]],
    using_keys: frozenset[str],
) -> Flat | None:
    """The statement reading the rollup's rows directly, or None when the nested form stays.

    ``outer`` reads the fact side as ``(<marker>) AS <fact_alias>``; ``inner_sql`` is the
    planned fact side; ``dimensions`` are the joined dimension tables' columns by alias (lower
    case), ``using_keys`` the join keys named in USING."""
    try:
        return _flatten(outer, inner_sql, fact_alias.lower(), dimensions, using_keys)
    except _Keep:
        return None


def _flatten(
    outer: exp.Select, inner_sql: str, fact: str, dimensions: Mapping[str, frozenset[str]], using_keys: frozenset[str]
) -> Flat:
    inner = sqlglot.parse_one(inner_sql, dialect=DIALECT)
    if not isinstance(inner, exp.Select) or inner.args.get("group") is None:
        raise _Keep
    for key in ("with_", "with", "joins", "laterals", "having", "qualify", "order", "limit", "offset", "distinct", "windows"):
        if inner.args.get(key):
            raise _Keep
    from_ = inner.args.get("from_")
    table = from_.this if from_ is not None else None
    if not isinstance(table, exp.Table) or table.catalog.lower() != ROLLUP_DATABASE or table.args.get("when") is not None:
        raise _Keep
    if any(n is not inner for n in inner.find_all(exp.Select)) or inner.find(exp.Window):
        raise _Keep
    rows: dict[str, exp.Expr] = {}  # fact-side column -> its value on one rollup row (groups, keys)
    partials: dict[str, tuple[type[exp.AggFunc], exp.Expr]] = {}  # measure -> (merge, per-row value)
    for e in inner.expressions:
        if not isinstance(e, exp.Alias):
            raise _Keep
        name, body = e.alias, e.this
        if body.find(exp.AggFunc):
            merge, value = _partial(body)
            partials[name.lower()] = (merge, _qualified(value, fact))
        else:
            rows[name.lower()] = _qualified(body, fact)
    for key in using_keys:
        spelled = rows.get(key)
        if not (isinstance(spelled, exp.Column) and spelled.name.lower() == key):
            raise _Keep  # USING joins on the rollup's own column of that name
    flat = outer.copy()
    sub = flat.args["from_"].this
    if not isinstance(sub, exp.Subquery):
        raise _Keep
    _expand_grouped_aliases(flat, dimensions, using_keys)
    for agg in list(flat.find_all(exp.AggFunc)):
        reads_fact = any(c.table.lower() == fact for c in agg.find_all(exp.Column))
        if not reads_fact and not (
            isinstance(agg, exp.Min | exp.Max) or (isinstance(agg, exp.Count) and isinstance(agg.this, exp.Distinct))
        ):
            raise _Keep  # a dimension column weighed by fact rows: the nested form counts groups
    for col in list(flat.find_all(exp.Column)):
        if _in_subquery_marker(col, sub):
            continue
        table_name, name = col.table.lower(), col.name.lower()
        if table_name == fact:
            _replace_fact_column(col, name, rows, partials)
        elif not table_name:
            owners = [a for a, cols in dimensions.items() if name in cols]
            if name in using_keys:
                continue  # USING merged it: the rollup's key column and the dimension's are equal
            if len(owners) == 1:
                col.set("table", exp.to_identifier(owners[0]))
            elif not _in_order(col):
                raise _Keep  # a select-list alias outside ORDER BY: a rollup column could capture it
    marker = exp.to_identifier(sub.this.name)  # stands for the rollup table, as for the nested form
    flat.set("from_", exp.From(this=exp.Table(this=marker, alias=exp.TableAlias(this=exp.to_identifier(fact)))))
    where = inner.args.get("where")
    if where is not None:
        conditions = [_qualified(where.this, fact)]
        if flat.args.get("where") is not None:
            conditions.append(flat.args["where"].this)
        flat.set("where", exp.Where(this=exp.and_(*conditions, copy=False)))
    shown = exp.Table(this=table.this.copy(), db=table.args.get("db"), catalog=table.args.get("catalog"))
    return Flat(flat, shown.sql(dialect=DIALECT))


def _expand_grouped_aliases(flat: exp.Select, dimensions: Mapping[str, frozenset[str]], using_keys: frozenset[str]) -> None:
    """``GROUP BY wk`` naming a select-list alias (no column of that name: router/joins.py
    checked) groups by its expression: spelled out, no column of the rollup can capture it."""
    group = flat.args.get("group")
    if group is None:
        return
    aliases = {e.alias.lower(): e.this for e in flat.expressions if isinstance(e, exp.Alias)}
    taken = using_keys.union(*dimensions.values())
    for g in group.expressions:
        if isinstance(g, exp.Column) and not g.table and g.name.lower() in aliases and g.name.lower() not in taken:
            expr = aliases[g.name.lower()]
            if expr.find(exp.AggFunc):
                raise _Keep
            g.replace(expr.copy())


def _in_subquery_marker(col: exp.Column, sub: exp.Subquery) -> bool:
    node: exp.Expr | None = col
    while node is not None:
        if node is sub:
            return True
        node = node.parent
    return False


def _replace_fact_column(
    col: exp.Column, name: str, rows: Mapping[str, exp.Expr], partials: Mapping[str, tuple[type[exp.AggFunc], exp.Expr]]
) -> None:
    if name in partials:
        merge, value = partials[name]
        if not _merged_here(col, merge):
            raise _Keep
        col.replace(value.copy())
        return
    if name not in rows:
        raise _Keep
    agg = _enclosing_aggregate(col)
    if agg is not None and not (
        isinstance(agg, exp.Min | exp.Max) or (isinstance(agg, exp.Count) and isinstance(agg.this, exp.Distinct))
    ):
        raise _Keep  # a fact expression counted per group, not per row
    col.replace(rows[name].copy())
