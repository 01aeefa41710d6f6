"""The time range a query needs from one table: a pure function over the sqlglot tree.

Only the top-level AND chain of the WHERE of the SELECT that reads the table is used, and
every bound is widened to a superset (a predicate on ``day`` bounds ``ts`` by whole days),
so pruning with the result never drops a row the query could return: DuckDB still applies
the real predicate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sqlglot import exp

from tierflight.core.grains import GRAINS, literal_datetime, next_boundary, truncate
from tierflight.core.statement import DIALECT
from tierflight.tiers.base import ALL_TIME, TimeRange

_MICRO = dt.timedelta(microseconds=1)


def column_grain(node: exp.Expr, time_column: str, derived_grains: dict[str, str]) -> str | None:
    """``"exact"`` for the time column, a grain name for a truncation of it, else None."""
    if isinstance(node, exp.Column):
        name = node.name.lower()
        if name == time_column.lower():
            return "exact"
        return derived_grains.get(name)
    if isinstance(node, exp.Cast) and node.to.this in (exp.DataType.Type.DATE,):
        inner = column_grain(node.this, time_column, derived_grains)
        if inner == "exact":
            return "day"
        return inner if inner in ("day", "week", "month") else None
    if isinstance(node, exp.Cast) and node.to.this in (exp.DataType.Type.TIMESTAMP,):
        return column_grain(node.this, time_column, derived_grains)
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc | exp.TimeTrunc):
        unit = node.args.get("unit")
        unit_name = (unit.name if unit is not None else "").lower()
        if unit_name in GRAINS and column_grain(node.this, time_column, derived_grains) == "exact":
            return unit_name
    return None


def derived_grains(derived: dict[str, str] | None, time_column: str) -> dict[str, str]:
    """Which configured derived columns are truncations of the time column, and to what grain."""
    import sqlglot

    out: dict[str, str] = {}
    for name, sql in (derived or {}).items():
        grain = column_grain(sqlglot.parse_one(sql, read=DIALECT), time_column, {})
        if grain and grain != "exact":
            out[name.lower()] = grain
    return out


def _conjuncts(where: exp.Expr | None) -> Iterator[exp.Expr]:
    if where is None:
        return
    node = where.this if isinstance(where, exp.Where) else where
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, exp.And):
            stack.extend([cur.left, cur.right])
        elif isinstance(cur, exp.Paren):
            stack.append(cur.this)
        else:
            yield cur


def _bound(pred: exp.Expr, time_column: str, grains: dict[str, str], qualifier: set[str]) -> TimeRange:
    def grain_of(node: exp.Expr) -> str | None:
        cols = [node] if isinstance(node, exp.Column) else list(node.find_all(exp.Column))
        if any(c.table and c.table.lower() not in qualifier for c in cols):
            return None
        return column_grain(node, time_column, grains)

    def lower(v: dt.datetime, g: str) -> dt.datetime:
        return v if g == "exact" else truncate(v, g)

    def upper(v: dt.datetime, g: str) -> dt.datetime:
        return v + _MICRO if g == "exact" else next_boundary(v, g)

    if isinstance(pred, exp.Between):
        g = grain_of(pred.this)
        lo, hi = literal_datetime(pred.args["low"]), literal_datetime(pred.args["high"])
        if g and lo and hi:
            return TimeRange(lower(lo, g), upper(hi, g))
        return ALL_TIME
    if isinstance(pred, exp.In) and not pred.args.get("query"):
        g = grain_of(pred.this)
        values = [literal_datetime(v) for v in pred.expressions]
        if g and values and all(values):
            vs = [v for v in values if v is not None]
            return TimeRange(lower(min(vs), g), upper(max(vs), g))
        return ALL_TIME
    if isinstance(pred, exp.EQ | exp.GT | exp.GTE | exp.LT | exp.LTE):
        left, right = pred.left, pred.right
        g, v = grain_of(left), literal_datetime(right)
        op: type[exp.Expr] = type(pred)
        if g is None or v is None:
            g, v = grain_of(right), literal_datetime(left)
            flipped: dict[type[exp.Expr], type[exp.Expr]] = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE}
            op = flipped.get(op, op)
        if g is None or v is None:
            return ALL_TIME
        if op is exp.EQ:
            return TimeRange(lower(v, g), upper(v, g))
        if op in (exp.GT, exp.GTE):
            return TimeRange(lower(v, g), None)
        if op is exp.LT:
            # x < v excludes v itself: no need to widen to the next grain when v is aligned.
            return TimeRange(None, v if g == "exact" or truncate(v, g) == v else next_boundary(v, g))
        return TimeRange(None, upper(v, g))
    return ALL_TIME


def intersect(a: TimeRange, b: TimeRange) -> TimeRange:
    starts = [x for x in (a.start, b.start) if x is not None]
    ends = [x for x in (a.end, b.end) if x is not None]
    return TimeRange(max(starts) if starts else None, min(ends) if ends else None)


def is_empty(r: TimeRange) -> bool:
    return r.start is not None and r.end is not None and r.start >= r.end


def table_time_range(table: exp.Table, time_column: str, derived_grains: dict[str, str]) -> TimeRange:
    """The superset time range of ``table``'s rows that its SELECT can use."""
    select = table.find_ancestor(exp.Select)
    if select is None or _table_scope(table) is not select:
        return ALL_TIME
    qualifier = {table.name.lower()}
    if table.alias:
        qualifier = {table.alias.lower()}
    result = ALL_TIME
    for pred in _conjuncts(select.args.get("where")):
        result = intersect(result, _bound(pred, time_column, derived_grains, qualifier))
    return result


def _table_scope(table: exp.Table) -> exp.Expr | None:
    """The SELECT whose FROM/JOIN lists ``table`` directly (not through a subquery)."""
    parent = table.parent
    while parent is not None and isinstance(parent, exp.From | exp.Join):
        parent = parent.parent
    return parent if isinstance(parent, exp.Select) else None
