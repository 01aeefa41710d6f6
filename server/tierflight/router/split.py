"""Time-range arithmetic of a rollup answer, and the source of a split answer.

``slice_bounds``: the bucket range a statement's time range needs, added to a rewrite so
DuckDB's zone maps skip the rest of the rollup. ``whole_buckets``: for a range the rollup
covers only partly (unaligned ends, or what lies before its retention), the buckets
strictly inside it; ``split_source`` reads those from the rollup and the edges as the same
states computed from the raw tiers, one relation the rewritten statement re-aggregates.
All pure: datetimes and sqlglot trees in, datetimes and trees out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlglot import exp

from tierflight.core.grains import next_boundary, truncate
from tierflight.core.names import ROLLUP_DATABASE
from tierflight.rollups.build import state_expr
from tierflight.rollups.definition import StorageGroup, dimension_expr
from tierflight.router.dimensions import bucket_literal, bucket_range, bucket_type
from tierflight.router.route import Rule
from tierflight.router.rules import Reject
from tierflight.router.trees import dtype, parsed
from tierflight.tiers.base import TimeRange


def slice_bounds(grain: str, rng: TimeRange) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The buckets of ``grain`` that hold rows of ``rng``: a bucket holds rows from its start
    to the next one, so the start is truncated; a DATE bucket bound is a whole day."""
    lo = None if rng.start is None else truncate(rng.start, grain)
    hi = rng.end
    if hi is not None and bucket_type(grain) == "DATE" and hi != truncate(hi, "day"):
        hi = truncate(hi, "day") + dt.timedelta(days=1)
    return lo, hi


def whole_buckets(grain: str | None, rng: TimeRange, keep_from: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """``[a, b)``: the buckets of ``grain`` strictly inside ``rng`` that the rollup keeps
    (from ``keep_from``, its retention, on); the raw edges apply the statement's bounds."""
    if grain is None or rng.start is None or rng.end is None:
        raise Reject(Rule.ALIGNMENT, "needs a bounded time range")
    a = next_boundary(rng.start, grain)
    b = truncate(rng.end, grain)  # the statement's end bound is exact (timerange)
    if keep_from is not None:
        a = max(a, keep_from)
    if a >= b:
        raise Reject(Rule.ALIGNMENT, "no whole bucket of the rollup lies inside the range")
    return a, b


def _quoted(name: str) -> exp.Column:
    return exp.column(exp.to_identifier(name, quoted=True))


def _state_columns(group: StorageGroup) -> list[str]:
    """The rollup's columns in the order both halves of the union list them (sketches last)."""
    return [
        *group.dimensions,
        *(m.state for m in group.measures if m.kind != "hll"),
        *(m.state for m in group.measures if m.kind == "hll"),
    ]


def _rollup_half(group: StorageGroup, a: dt.datetime, b: dt.datetime) -> exp.Select:
    """The whole buckets ``[a, b)``, as stored."""
    assert group.grain is not None
    table = exp.Table(
        this=exp.to_identifier(group.name, quoted=True),
        db=exp.to_identifier("main"),
        catalog=exp.to_identifier(ROLLUP_DATABASE),
    )
    bounds = bucket_range(group.grain, a, b)
    for bound in bounds:
        bound.set("this", _quoted(group.grain))
    return exp.Select(
        expressions=[_quoted(c) for c in _state_columns(group)],
        from_=exp.From(this=table),
        where=exp.Where(this=exp.and_(*bounds, copy=False)),
    )


def _raw_half(
    group: StorageGroup, time_column: str, a: dt.datetime, b: dt.datetime, exact: Sequence[exp.Expr], body: exp.Expr
) -> exp.Select:
    """The rows outside ``[a, b)`` that the statement's exact time bounds select, reduced
    to the rollup's states per bucket (sketches are not computed here: NULL)."""
    dims = [exp.alias_(parsed(dimension_expr(d, time_column)).copy(), d, quoted=True, copy=False) for d in group.dimensions]
    states: list[exp.Expr] = []
    for m in group.measures:
        sql = state_expr(m, group.sum_digits(m.column))
        if sql is not None:
            states.append(exp.alias_(parsed(sql).copy(), m.state, quoted=True, copy=False))
    states += [
        exp.alias_(exp.cast(exp.Null(), dtype("BLOB"), copy=False), m.state, quoted=True, copy=False)
        for m in group.measures
        if m.kind == "hll"
    ]
    ts = _quoted(time_column)
    edge = exp.Paren(
        this=exp.or_(
            exp.LT(this=ts, expression=bucket_literal(a, False)),
            exp.GTE(this=ts.copy(), expression=bucket_literal(b, False)),
            copy=False,
        )
    )
    where: list[exp.Expr] = [edge, *(c.copy() for c in exact)]
    if group.filter:
        where.append(exp.Paren(this=parsed(group.filter).copy()))
    select = exp.Select(
        expressions=[*dims, *states],
        from_=exp.From(this=exp.Subquery(this=body)),
        where=exp.Where(this=exp.and_(*where, copy=False)),
    )
    if dims:
        select.set("group", exp.Group(expressions=[exp.Literal.number(i + 1) for i in range(len(dims))]))
    return select


def split_source(
    group: StorageGroup,
    time_column: str,
    bounds: tuple[dt.datetime, dt.datetime],
    exact: Sequence[exp.Expr],
    raw_sql: str,
    alias: str,
) -> exp.Subquery:
    """``(<whole buckets from the rollup> UNION ALL <raw edges as states>) AS alias``.

    ``raw_sql`` is the table's rows from the tiers that hold the range (a view over its
    sources), ``exact`` the statement's bounds on the raw time column."""
    a, b = bounds
    # The tiers' relation stays the text they wrote, one opaque leaf of the tree: its file
    # lists are long (hundreds of paths for a year), and parsing them on every plan of a
    # split cost several times the rest of planning it (the raw planner splices them too).
    body = exp.var(raw_sql)
    union = exp.Union(
        this=_rollup_half(group, a, b), expression=_raw_half(group, time_column, a, b, exact, body), distinct=False
    )
    return exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier(alias)))
