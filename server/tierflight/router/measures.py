"""Rule ``measure``: each aggregate of a statement becomes a re-aggregation of a state the
rollup stores (sum of counts, sum of sums, min of mins, merged sketches), or a Reject.

Pure functions over sqlglot trees, built with sqlglot's expression builders.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from tierflight.core.statement import DIALECT
from tierflight.rollups.definition import Measure, StorageGroup
from tierflight.router.dimensions import rewrite_dimensions
from tierflight.router.facts import TableInfo
from tierflight.router.route import Rule
from tierflight.router.rules import Reject
from tierflight.router.trees import dtype, faithful_copy

_COUNT_STATE = "_count"


def stored(group: StorageGroup, kind: str, column: str | None) -> Measure | None:
    """The rollup's state of ``kind`` over ``column`` (any column when None), if it has one."""
    for m in group.measures:
        if m.kind == kind and (column is None or (m.column or "").lower() == column.lower()):
            return m
    return None


def _bigint_count(sum_expr: exp.Expr) -> exp.Expr:
    # COUNT is BIGINT and 0 over no rows; SUM of counts is HUGEINT and NULL over no rows.
    return exp.func("COALESCE", exp.cast(sum_expr, dtype("BIGINT"), copy=False), exp.Literal.number(0), copy=False)


def _column_name(e: exp.Expr | None) -> str | None:
    return e.name if isinstance(e, exp.Column) else None


def rewrite_aggregate(node: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """An aggregate (possibly with a FILTER clause, whose predicate is over dimensions)
    rewritten over the rollup's states."""
    flt: exp.Where | None = None
    agg = node
    if isinstance(node, exp.Filter):
        agg = node.this
        flt = exp.Where(this=rewrite_dimensions(faithful_copy(node.expression.this), info, group))

    def wrap(e: exp.Expr) -> exp.Expr:
        return exp.Filter(this=e, expression=flt) if flt is not None else e

    if isinstance(agg, exp.Count):
        return _count(agg, info, group, wrap)
    if isinstance(agg, exp.Sum):
        c = _column_name(agg.this)
        if c is not None:
            m = stored(group, "sum", c)
            if m is None:
                raise Reject(Rule.MEASURE, f"sum({c}) is not stored")
            return wrap(exp.Sum(this=exp.column(m.state)))
        if isinstance(agg.this, exp.Case):
            return wrap(exp.Sum(this=_case_over_state(agg.this, info, group, counting=False)))
        raise Reject(Rule.MEASURE, f"{agg.sql(dialect=DIALECT)} is not a sum of a stored column")
    if isinstance(agg, exp.Min | exp.Max):
        c = _column_name(agg.this)
        kind = "min" if isinstance(agg, exp.Min) else "max"
        if c is not None and c.lower() in {d.lower() for d in group.dimensions}:
            return wrap(faithful_copy(agg))
        m = stored(group, kind, c) if c else None
        if m is None:
            raise Reject(Rule.MEASURE, f"{kind}({c}) is not stored")
        return wrap(type(agg)(this=exp.column(m.state)))
    if isinstance(agg, exp.Avg):
        c = _column_name(agg.this)
        s, n = (stored(group, "sum", c), stored(group, "count_col", c)) if c else (None, None)
        if s is None or n is None:
            raise Reject(Rule.MEASURE, f"avg({c}) needs sum({c}) and count({c}) states")
        return exp.Div(
            this=wrap(exp.Sum(this=exp.column(s.state))),
            expression=exp.cast(wrap(exp.Sum(this=exp.column(n.state))), dtype("DOUBLE"), copy=False),
        )
    if isinstance(agg, exp.ApproxDistinct):
        c = _column_name(agg.this)
        m = stored(group, "hll", c) if c else None
        if m is None:
            raise Reject(Rule.MEASURE, f"approx_count_distinct({c}) needs an hll({c}) state")
        est = exp.func("tf_hll_estimate", wrap(exp.func("list", exp.column(m.state), copy=False)), copy=False)
        return exp.cast(exp.func("round", est, copy=False), dtype("BIGINT"), copy=False)
    if isinstance(agg, exp.ApproxQuantile):
        return _approx_quantile(agg, group, wrap)
    if isinstance(agg, exp.Quantile | exp.PercentileCont | exp.PercentileDisc | exp.Median):
        raise Reject(
            Rule.MEASURE,
            f"{agg.key.upper()} is exact and rollups keep quantile sketches: approx_quantile(col, q) reads quantiles(col) states",
        )
    raise Reject(Rule.MEASURE, f"{agg.key.upper()} cannot be computed from mergeable states")


def _approx_quantile(agg: exp.ApproxQuantile, group: StorageGroup, wrap: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
    """``approx_quantile(col, q)`` or ``(col, [q, ...])`` from the merged KLL sketches of a
    ``quantiles(col)`` state, cast to the column's type as DuckDB's own answer is."""
    c = _column_name(agg.this)
    m = stored(group, "quantiles", c) if c else None
    if m is None:
        raise Reject(Rule.MEASURE, f"approx_quantile({c}) needs a quantiles({c}) state")
    if agg.args.get("accuracy") is not None or agg.args.get("weight") is not None:
        raise Reject(Rule.MEASURE, "approx_quantile with an accuracy or weight is answered from raw tiers")
    q = agg.args.get("quantile")
    listed = isinstance(q, exp.Array)
    given = q.expressions if isinstance(q, exp.Array) else [q]
    values = [v for v in given if isinstance(v, exp.Literal) and not v.is_string and 0 <= float(v.this) <= 1]
    if not values or len(values) != len(given):
        raise Reject(Rule.MEASURE, "approx_quantile needs quantiles given as numbers from 0 to 1")
    states = wrap(exp.func("list", exp.column(m.state), copy=False))
    typ = group.value_type(m.column)
    if listed:
        qs = exp.cast(exp.Array(expressions=[faithful_copy(v) for v in values]), dtype("DOUBLE[]"), copy=False)
        return exp.cast(exp.func("tf_kll_quantiles", states, qs, copy=False), dtype(f"{typ}[]"), copy=False)
    one = exp.cast(faithful_copy(values[0]), dtype("DOUBLE"), copy=False)
    return exp.cast(exp.func("tf_kll_quantile", states, one, copy=False), dtype(typ), copy=False)


def _count(agg: exp.Count, info: TableInfo, group: StorageGroup, wrap: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
    arg = agg.this
    dims = {d.lower() for d in group.dimensions}
    if isinstance(arg, exp.Distinct):
        cols = [_column_name(e) for e in arg.expressions]
        if all(c is not None and c.lower() in dims for c in cols):
            return wrap(faithful_copy(agg))
        raise Reject(Rule.MEASURE, "COUNT(DISTINCT ...) is exact only over dimensions")
    if arg is None or isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and not arg.is_string):
        return _bigint_count(wrap(exp.Sum(this=exp.column(_COUNT_STATE))))
    c = _column_name(arg)
    if c is not None:
        m = stored(group, "count_col", c)
        if m is not None:
            return _bigint_count(wrap(exp.Sum(this=exp.column(m.state))))
        if c.lower() in dims:
            counted = exp.If(this=exp.Not(this=exp.Is(this=exp.column(c), expression=exp.Null())), true=exp.column(_COUNT_STATE))
            return _bigint_count(wrap(exp.Sum(this=counted)))
    if isinstance(arg, exp.Case):
        return _bigint_count(wrap(exp.Sum(this=_case_over_state(arg, info, group, counting=True))))
    raise Reject(Rule.MEASURE, f"{agg.sql(dialect=DIALECT)} has no stored count state")


def _case_over_state(case: exp.Case, info: TableInfo, group: StorageGroup, counting: bool) -> exp.Expr:
    """``CASE WHEN <dimension predicate> THEN x END`` inside SUM/COUNT, reading states."""
    out = faithful_copy(case)
    if out.args.get("default") is not None and not isinstance(out.args["default"], exp.Null):
        raise Reject(Rule.MEASURE, "CASE with an ELSE value inside an aggregate")
    for when in out.args.get("ifs", []):
        when.set("this", rewrite_dimensions(when.this, info, group))
        then = when.args.get("true")
        c = _column_name(then)
        if counting:
            if isinstance(then, exp.Literal) and not then.is_string:
                when.set("true", exp.column(_COUNT_STATE))
                continue
            m = stored(group, "count_col", c) if c else None
            if m is None:
                raise Reject(Rule.MEASURE, "COUNT(CASE ...) needs a constant or a counted column")
        else:
            m = stored(group, "sum", c) if c else None
            if m is None:
                raise Reject(Rule.MEASURE, "SUM(CASE ... THEN x) needs sum(x) stored")
        when.set("true", exp.column(m.state))
    return out
