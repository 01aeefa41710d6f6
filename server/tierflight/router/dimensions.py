"""Rewrite of what lies outside aggregates: time expressions over the rollup's bucket, other
columns kept as dimensions, and predicates on time turned into ranges over buckets.

Pure functions over sqlglot trees; each either returns the rewritten node or raises the
:class:`Reject` of the rule it breaks (``grain``, ``dimension``, ``alignment``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from sqlglot import exp

from tierflight.core.grains import literal_datetime, next_boundary, truncate
from tierflight.core.statement import DIALECT
from tierflight.rollups.definition import DERIVABLE, StorageGroup
from tierflight.router.facts import TableInfo
from tierflight.router.route import Rule
from tierflight.router.rules import Reject
from tierflight.router.trees import (
    AGGREGATE_NODES,
    bare_copy,
    conjuncts,
    dtype,
    faithful_copy,
    parsed,
    transform_outside_aggs,
)


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


_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?")


def _bucket_constant(node: exp.Expr, dated: bool) -> dt.datetime | None:
    """The value of ``DATE '...'`` (``TIMESTAMP '...'`` for a TIMESTAMP bucket): a constant
    of the bucket column's own type, spelled so that DuckDB and Python read the same
    instant; None for anything else (another type, a zone, a lenient spelling)."""
    if type(node) is not exp.Cast or not isinstance(node.this, exp.Literal) or not node.this.is_string:
        return None
    # ``TIMESTAMP '...'`` parses as TIMESTAMPNTZ: both are DuckDB's TIMESTAMP.
    want = (exp.DataType.Type.DATE,) if dated else (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPNTZ)
    if node.to.this not in want or node.to.expressions:
        return None
    text = node.this.this
    if not (_DATE_TEXT if dated else _TIMESTAMP_TEXT).fullmatch(text):
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def bounds_bucket(pred: exp.Expr, grain: str) -> bool:
    """Whether ``pred`` compares the bare bucket column of ``grain`` (what implied_sides reads
    its constants for): decided by the tree's shape, never by a constant's value."""
    column = pred.this
    if not isinstance(column, exp.Column) or column.table or column.name != grain:
        return False
    return not (isinstance(pred, exp.Between) and pred.args.get("symmetric"))


def constant_sides(pred: exp.Expr, dated: bool) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(v, w) such that ``pred``, over a bucket column, implies ``bucket >= v`` and ``bucket
    <= w``: read off its constants of the bucket's own type (Nones for anything else)."""
    if isinstance(pred, exp.Between):
        return _bucket_constant(pred.args["low"], dated), _bucket_constant(pred.args["high"], dated)
    value = _bucket_constant(pred.expression, dated) if isinstance(pred, exp.Binary) else None
    if isinstance(pred, exp.EQ):
        return value, value
    if isinstance(pred, exp.GTE | exp.GT):
        return value, None
    if isinstance(pred, exp.LTE | exp.LT):
        return None, value
    return None, None


def implied_sides(pred: exp.Expr, grain: str, dated: bool) -> tuple[dt.datetime | None, dt.datetime | None]:
    """For a conjunct on the bare bucket column with constants of its type: (v, w) such that
    it implies ``bucket >= v`` and ``bucket <= w`` (strictness folded in below), else Nones."""
    if not bounds_bucket(pred, grain):
        return None, None
    return constant_sides(pred, dated)


# What a kept conjunct says of the bucket column: implied_sides, and whether it is ``<``.
Sides = tuple[tuple[dt.datetime | None, dt.datetime | None], bool]


def unimplied_bounds(
    kept: list[exp.Expr], grain: str, lo: dt.datetime | None, hi: dt.datetime | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``lo`` and ``hi`` of ``bucket_range``, each None where a kept conjunct already implies
    it: ``day BETWEEN DATE '2024-03-01' AND DATE '2024-03-20'`` on a day rollup restricts
    the bucket column itself, and ``day >= ... AND day < ...`` beside it would select exactly
    the same rows while DuckDB evaluates each predicate. Only a comparison of the bare bucket
    column with a constant of its own type counts (an expression over the bucket, a bound on
    another column or grain keeps the range: it is what lets the zone maps skip)."""
    dated = bucket_type(grain) == "DATE"
    sides = ((implied_sides(c, grain, dated), isinstance(c, exp.LT)) for pred in kept for c in conjuncts(pred))
    return fold_bounds(sides, grain, lo, hi)


def fold_bounds(
    sides: Iterable[Sides], grain: str, lo: dt.datetime | None, hi: dt.datetime | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """unimplied_bounds from what each kept conjunct implies (a rewrite template computes
    those from a statement's constants without rewriting it)."""
    dated = bucket_type(grain) == "DATE"
    # What bucket_range writes: a DATE bucket's bound is its day.
    low = None if lo is None else (dt.datetime.combine(lo.date(), dt.time()) if dated else lo)
    high = None if hi is None else (dt.datetime.combine(hi.date(), dt.time()) if dated else hi)
    for (floor, ceiling), strict in sides:
        if low is None and high is None:
            break
        if low is not None and floor is not None and floor >= low:
            low = lo = None  # bucket >= floor (or > floor) >= lo
        if high is not None and ceiling is not None and (ceiling < high or (strict and ceiling <= high)):
            high = hi = None  # bucket <= ceiling < hi, or bucket < ceiling <= hi
    return lo, hi


def _bucket(group: StorageGroup) -> exp.Expr:
    return exp.cast(exp.column(group.grain or ""), dtype("TIMESTAMP"), copy=False)


def rewrite_time(node: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """Rule ``grain``: time expressions become expressions over the rollup's bucket."""
    grain = info.needed_grain(node)
    if grain is None:
        raise Reject(Rule.GRAIN, f"{node.sql(dialect=DIALECT)} is not a time grain")
    if grain == "exact":
        raise Reject(Rule.GRAIN, f"{info.time_column} is used at full precision")
    if group.grain is None or grain not in DERIVABLE[group.grain]:
        have = group.grain or "no time dimension"
        raise Reject(Rule.GRAIN, f"needs {grain} buckets, rollup has {have}")
    if grain == group.grain and info.truncation_of(node) == grain and bucket_type(grain) == _expression_type(node, info):
        # The rollup's own bucket column, as is: no casts, so DuckDB groups and filters on
        # the plain column (and its zone maps apply). Only for a truncation to that very
        # grain: ``CAST(date_trunc('year', ts) AS DATE)`` needs months but is not one.
        return exp.column(grain)
    bucket = _bucket(group)
    time_column = info.time_column.lower()

    def swap(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Column):
            name = n.name.lower()
            if name == time_column:
                return faithful_copy(bucket)
            if name in info.derived:
                # A derived column (``hour`` inside ``CAST(hour AS DATE)``) is its
                # definition over the time column, which the bucket then replaces.
                return faithful_copy(parsed(info.derived[name])).transform(swap, copy=False)
        return n

    return bare_copy(node).transform(swap, copy=False)


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
    if info.needed_grain(n) is not None:
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


_MICROSECOND = dt.timedelta(microseconds=1)


_TIME_COMPARISONS = (exp.GTE, exp.LT, exp.GT, exp.LTE, exp.EQ, exp.Between)


def exact_time_subject(pred: exp.Expr, info: TableInfo) -> bool:
    """Whether time_predicate decides ``pred`` (a comparison of the raw time column): only
    then does it read the constants compared with."""
    return isinstance(pred, _TIME_COMPARISONS) and info.grain_of(pred.this) == "exact"


def coarse_time_subject(pred: exp.Expr, info: TableInfo, group: StorageGroup) -> bool:
    """Whether coarse_time_predicate decides ``pred`` (a comparison of a grain finer than the
    rollup's and not derived from it): only then does it read the constants compared with."""
    if group.grain is None or not isinstance(pred, _TIME_COMPARISONS):
        return False
    grain = info.grain_of(pred.this)
    return grain is not None and grain != "exact" and grain not in DERIVABLE[group.grain]


def reads_constants(pred: exp.Expr, info: TableInfo, group: StorageGroup) -> bool:
    """Whether the rewrite of the WHERE conjunct ``pred`` onto ``group`` depends on the values
    of the constants it compares with (time_predicate, coarse_time_predicate); otherwise they
    are copied as they are (rewrite_clause never reads a compared constant's value)."""
    return exact_time_subject(pred, info) or coarse_time_subject(pred, info, group)


def time_predicate(pred: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr | None:
    """Rule ``alignment``: a predicate on the raw time column is exact on buckets only when
    it is ``>=`` or ``<`` an instant aligned to the rollup's grain; an inclusive bound one
    microsecond off such an instant (``<= '... 23:59:59.999999'``, ``> '... 23:59:59.999999'``,
    the time column's precision) is the same range."""
    if not exact_time_subject(pred, info):
        return None
    if group.grain is None:
        raise Reject(Rule.GRAIN, "the rollup has no time dimension")
    if isinstance(pred, exp.Between):
        low, high = literal_datetime(pred.args["low"]), literal_datetime(pred.args["high"])
        if low is None or high is None or not info.microseconds or not _aligned(low, group.grain) or not _aligned(high + _MICROSECOND, group.grain):
            raise Reject(Rule.ALIGNMENT, f"BETWEEN on {info.time_column} includes its upper instant; use >= and <")
        return exp.and_(
            exp.GTE(this=_bucket(group), expression=bucket_literal(low, False)),
            exp.LT(this=_bucket(group), expression=bucket_literal(high + _MICROSECOND, False)),
            copy=False,
        )
    value = literal_datetime(pred.expression)
    if value is None:
        raise Reject(Rule.ALIGNMENT, f"{pred.sql(dialect=DIALECT)} does not compare with a constant")
    if isinstance(pred, exp.LTE | exp.GT) and info.microseconds and _aligned(value + _MICROSECOND, group.grain):
        # ts <= v is ts < v + 1µs, ts > v is ts >= v + 1µs: TIMESTAMP holds microseconds.
        op: type[exp.Expr] = exp.LT if isinstance(pred, exp.LTE) else exp.GTE
        return op(this=_bucket(group), expression=bucket_literal(value + _MICROSECOND, False))
    if not isinstance(pred, exp.GTE | exp.LT):
        raise Reject(Rule.ALIGNMENT, f"{pred.key.upper()} on {info.time_column} cannot be answered from {group.grain} buckets")
    if not _aligned(value, group.grain):
        raise Reject(Rule.ALIGNMENT, f"{value.isoformat(sep=' ')} is not aligned to the rollup's {group.grain} grain")
    out = faithful_copy(pred)
    out.set("this", _bucket(group))
    return out


def _aligned(value: dt.datetime, grain: str) -> bool:
    return truncate(value, grain) == value


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
    if not coarse_time_subject(pred, info, group):
        return None
    grain = str(info.grain_of(pred.this))
    assert group.grain is not None
    bounds = _whole_buckets(pred, grain)
    if bounds is None:
        return None
    for bound in bounds:
        if bound is not None and truncate(bound, group.grain) != bound:
            raise Reject(
                Rule.ALIGNMENT,
                f"{pred.sql(dialect=DIALECT)} does not select whole {group.grain}s "
                f"({bound.isoformat(sep=' ')} is inside one)",
            )
    return exp.and_(*bucket_range(group.grain, *bounds), copy=False)
