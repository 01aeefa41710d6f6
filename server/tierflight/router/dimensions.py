"""Rewrite of what lies outside aggregates: time expressions over the rollup's bucket, other
columns kept as dimensions, and predicates on time turned into ranges over buckets.

Pure functions over sqlglot trees; each either returns the rewritten node or raises the
:class:`Reject` of the rule it breaks (``grain``, ``dimension``, ``alignment``).
"""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from tierflight.core.grains import literal_datetime, next_boundary, truncate
from tierflight.rollups.definition import DERIVABLE, StorageGroup
from tierflight.router.facts import TableInfo
from tierflight.router.route import Rule
from tierflight.router.rules import Reject
from tierflight.router.trees import AGGREGATE_NODES, bare_copy, dtype, parsed, transform_outside_aggs


def bucket_type(grain: str) -> str:
    """How the build stores each grain's bucket column (see rollups.definition.time_expr)."""
    return "DATE" if grain in ("day", "week", "month") else "TIMESTAMP"


def bucket_literal(value: dt.datetime, dated: bool) -> exp.Expr:
    """A constant of the bucket column's own type (DATE or TIMESTAMP), so zone maps apply."""
    if dated:
        return exp.cast(exp.Literal.string(value.date().isoformat()), dtype("DATE"), copy=False)
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), dtype("TIMESTAMP"), copy=False)


def bucket_range(grain: str, lo: dt.datetime | None, hi: dt.datetime | None) -> list[exp.Expr]:
    """``grain >= lo`` and ``grain < hi`` over the bucket column, in its own type."""
    dated = bucket_type(grain) == "DATE"
    out: list[exp.Expr] = []
    if lo is not None:
        out.append(exp.GTE(this=exp.column(grain), expression=bucket_literal(lo, dated)))
    if hi is not None:
        out.append(exp.LT(this=exp.column(grain), expression=bucket_literal(hi, dated)))
    return out


def _bucket(group: StorageGroup) -> exp.Expr:
    return exp.cast(exp.column(group.grain or ""), dtype("TIMESTAMP"), copy=False)


def rewrite_time(node: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """Rule ``grain``: time expressions become expressions over the rollup's bucket."""
    grain = info.grain_of(node)
    if grain is None:
        raise Reject(Rule.GRAIN, f"{node.sql(dialect='duckdb')} is not a time grain")
    if grain == "exact":
        raise Reject(Rule.GRAIN, f"{info.time_column} is used at full precision")
    if group.grain is None or grain not in DERIVABLE[group.grain]:
        have = group.grain or "no time dimension"
        raise Reject(Rule.GRAIN, f"needs {grain} buckets, rollup has {have}")
    if grain == group.grain and bucket_type(grain) == _expression_type(node, info):
        # The rollup's own bucket column, as is: no casts, so DuckDB groups and filters on
        # the plain column (and its zone maps apply).
        return exp.column(grain)
    expanded = node
    if isinstance(node, exp.Column) and node.name.lower() in info.derived:
        expanded = parsed(info.derived[node.name.lower()])
    bucket = _bucket(group)

    def swap(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Column) and n.name.lower() == info.time_column.lower():
            return bucket.copy()
        return n

    return bare_copy(expanded).transform(swap, copy=False)


def _expression_type(node: exp.Expr, info: TableInfo) -> str | None:
    """DATE or TIMESTAMP for the time-grain expressions the router recognises, else None."""
    if isinstance(node, exp.Column) and node.name.lower() in info.derived:
        return _expression_type(parsed(info.derived[node.name.lower()]), info)
    if isinstance(node, exp.Cast):
        kind = node.to.this
        if kind == exp.DataType.Type.DATE:
            return "DATE"
        if kind in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPNTZ):
            return "TIMESTAMP"
        return None
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc | exp.TimeTrunc):
        # date_trunc over a TIMESTAMP column is a TIMESTAMP in DuckDB.
        return "TIMESTAMP"
    return None


def rewrite_dimension_node(n: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """Rule ``dimension`` for one node outside aggregates: a time grain becomes an expression
    over the bucket; any other table column must be one of the rollup's dimensions."""
    if info.grain_of(n) is not None:
        return rewrite_time(n, info, group)
    if isinstance(n, exp.Column):
        name = n.name.lower()
        if name not in {d.lower() for d in group.dimensions} and (name in info.columns or name in info.derived):
            raise Reject(Rule.DIMENSION, f"column {n.name} is not a dimension of the rollup")
    return n


def rewrite_dimensions(expr: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """Rule ``dimension``: outside aggregates, only dimensions and time grains may appear."""

    def visit(n: exp.Expr) -> exp.Expr:
        if isinstance(n, AGGREGATE_NODES):
            return n
        return rewrite_dimension_node(n, info, group)

    return transform_outside_aggs(expr, visit)


def time_predicate(pred: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr | None:
    """Rule ``alignment``: a predicate on the raw time column is exact on buckets only when
    it is ``>=`` or ``<`` an instant aligned to the rollup's grain."""
    if not isinstance(pred, exp.GTE | exp.LT | exp.GT | exp.LTE | exp.EQ | exp.Between):
        return None
    if info.grain_of(pred.this) != "exact":
        return None
    if group.grain is None:
        raise Reject(Rule.GRAIN, "the rollup has no time dimension")
    if isinstance(pred, exp.Between):
        raise Reject(Rule.ALIGNMENT, f"BETWEEN on {info.time_column} includes its upper instant; use >= and <")
    value = literal_datetime(pred.expression)
    if value is None:
        raise Reject(Rule.ALIGNMENT, f"{pred.sql(dialect='duckdb')} does not compare with a constant")
    if not isinstance(pred, exp.GTE | exp.LT):
        raise Reject(Rule.ALIGNMENT, f"{pred.key.upper()} on {info.time_column} cannot be answered from {group.grain} buckets")
    if truncate(value, group.grain) != value:
        raise Reject(Rule.ALIGNMENT, f"{value.isoformat(sep=' ')} is not aligned to the rollup's {group.grain} grain")
    out = pred.copy()
    out.set("this", _bucket(group))
    return out


def _ceil(value: dt.datetime, grain: str) -> dt.datetime:
    return value if truncate(value, grain) == value else next_boundary(value, grain)


def _whole_buckets(pred: exp.Expr, grain: str) -> tuple[dt.datetime | None, dt.datetime | None] | None:
    """The half-open range of instants a range over ``grain`` buckets selects, or None when
    a bound is not a constant."""
    if isinstance(pred, exp.Between):
        low, high = literal_datetime(pred.args["low"]), literal_datetime(pred.args["high"])
        if low is None or high is None:
            return None
        return _ceil(low, grain), next_boundary(high, grain)
    v = literal_datetime(pred.expression)
    if v is None:
        return None
    if isinstance(pred, exp.GTE):
        return _ceil(v, grain), None
    if isinstance(pred, exp.GT):
        return next_boundary(v, grain), None
    if isinstance(pred, exp.LT):
        return None, _ceil(v, grain)
    if isinstance(pred, exp.LTE):
        return None, next_boundary(v, grain)
    if truncate(v, grain) == v:  # EQ
        return v, next_boundary(v, grain)
    return None


def coarse_time_predicate(pred: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr | None:
    """Rule ``alignment`` for a range on a finer grain than the rollup's (``day BETWEEN ...``
    on a month rollup): the rows it selects are whole buckets of that grain, so when the
    range starts and ends on the rollup's own bucket boundaries it is a range over the
    rollup's buckets; None for anything else (other rules decide)."""
    if group.grain is None or not isinstance(pred, exp.GTE | exp.GT | exp.LT | exp.LTE | exp.EQ | exp.Between):
        return None
    grain = info.grain_of(pred.this)
    if grain is None or grain == "exact" or grain in DERIVABLE[group.grain]:
        return None
    bounds = _whole_buckets(pred, grain)
    if bounds is None:
        return None
    for bound in bounds:
        if bound is not None and truncate(bound, group.grain) != bound:
            raise Reject(
                Rule.ALIGNMENT,
                f"{pred.sql(dialect='duckdb')} does not select whole {group.grain}s "
                f"({bound.isoformat(sep=' ')} is inside one)",
            )
    return exp.and_(*bucket_range(group.grain, *bounds), copy=False)
