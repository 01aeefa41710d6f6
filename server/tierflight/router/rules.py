"""Rollup substitution rules: small pure functions over sqlglot trees.

Each rule either returns a rewritten piece or raises :class:`Reject` naming itself, which
EXPLAIN ROUTE shows for the rejected candidate. The rewrite keeps every expression of the
statement and only changes what it reads: the table becomes the rollup, the time column
becomes the rollup's time bucket (valid only for grains the bucket determines), and each
aggregate reads the matching mergeable state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import sqlglot
from sqlglot import exp

from tierflight.core.grains import literal_datetime, next_boundary, truncate
from tierflight.core.names import Kind, Names
from tierflight.rollups.definition import DERIVABLE, Measure, StorageGroup, retention_start
from tierflight.router.timerange import column_grain


def bare_copy(tree: exp.Expr) -> exp.Expr:
    """A copy of ``tree`` for rewriting and generating SQL, without the token positions and
    comments each parsed node carries: ``Expr.copy()`` deep-copies those dictionaries
    through ``copy.deepcopy``, a fifth of the planning time of a statement never seen."""
    root = tree.__class__()
    stack = [(tree, root)]
    while stack:
        source, target = stack.pop()
        for key, value in source.args.items():
            if isinstance(value, exp.Expr):
                child = value.__class__()
                stack.append((value, child))
                target.set(key, child)
            elif type(value) is list:
                items = []
                for v in value:
                    if isinstance(v, exp.Expr):
                        child = v.__class__()
                        stack.append((v, child))
                        items.append(child)
                    else:
                        items.append(v)
                target.set(key, items)
            else:
                target.args[key] = value
    return root


@lru_cache(maxsize=32)
def _dtype(name: str) -> exp.DataType:
    return exp.DataType.build(name)


def dtype(name: str) -> exp.DataType:
    """A SQL type node; building one parses the name, so parsed ones are kept and copied."""
    return _dtype(name).copy()


class Reject(Exception):
    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


@dataclass(frozen=True)
class TableInfo:
    name: str
    time_column: str
    derived: dict[str, str]  # derived column -> SQL over stored columns
    grains: dict[str, str]  # derived column -> grain
    columns: frozenset[str]
    # lower-case name -> the name as configured, for stored and derived columns: DuckDB names
    # an output column that is a plain reference after the table's column, not the query text.
    spelled: Mapping[str, str] = field(default_factory=dict)


def single_table(select: exp.Select, tables: dict[str, TableInfo], names: Names) -> tuple[exp.Table, TableInfo]:
    """Rule ``shape``: one configured table (any spelling ``names`` resolves), aggregated, no joins."""
    if select.args.get("joins") or select.args.get("laterals"):
        raise Reject("shape", "joins are answered from raw tiers")
    from_ = select.args.get("from_")
    table = from_.this if from_ is not None else None
    resolved = names.resolve(table) if isinstance(table, exp.Table) else None
    if not isinstance(table, exp.Table) or resolved is None or resolved.kind is not Kind.TABLE or resolved.name not in tables:
        raise Reject("shape", "not a single configured table")
    if any(c.args.get("db") for c in select.find_all(exp.Column)):
        # ``main.events.ts``: the raw planner rewrites those to the relation's alias.
        raise Reject("shape", "schema-qualified column references are answered from raw tiers")
    if table.args.get("when") is not None or table.args.get("version") is not None:
        raise Reject("time-travel", "reads an earlier Iceberg snapshot; rollups hold the current data")
    if not select.args.get("group") and not any(select.find_all(exp.AggFunc)):
        raise Reject("shape", "no aggregation: raw rows are needed")
    for node in select.find_all(exp.Select):
        if node is not select:
            raise Reject("shape", "subqueries inside an aggregate statement are answered from raw tiers")
    return table, tables[resolved.name]


def _bucket(group: StorageGroup) -> exp.Expr:
    return exp.cast(exp.column(group.grain or ""), dtype("TIMESTAMP"), copy=False)


def rewrite_time(node: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """Rule ``grain``: time expressions become expressions over the rollup's bucket."""
    grain = column_grain(node, info.time_column, info.grains)
    if grain is None:
        raise Reject("grain", f"{node.sql(dialect='duckdb')} is not a time grain")
    if grain == "exact":
        raise Reject("grain", f"{info.time_column} is used at full precision")
    if group.grain is None or grain not in DERIVABLE[group.grain]:
        have = group.grain or "no time dimension"
        raise Reject("grain", f"needs {grain} buckets, rollup has {have}")
    if grain == group.grain and _bucket_type(grain) == _expression_type(node, info):
        # The rollup's own bucket column, as is: no casts, so DuckDB groups and filters on
        # the plain column (and its zone maps apply).
        return exp.column(grain)
    expanded = node
    if isinstance(node, exp.Column) and node.name.lower() in info.derived:
        expanded = _parsed(info.derived[node.name.lower()])
    bucket = _bucket(group)

    def swap(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Column) and n.name.lower() == info.time_column.lower():
            return bucket.copy()
        return n

    return bare_copy(expanded).transform(swap, copy=False)


def _bucket_type(grain: str) -> str:
    """How the build stores each grain's bucket column (see rollups.definition.time_expr)."""
    return "DATE" if grain in ("day", "week", "month") else "TIMESTAMP"


def _expression_type(node: exp.Expr, info: TableInfo) -> str | None:
    """DATE or TIMESTAMP for the time-grain expressions the router recognises, else None."""
    if isinstance(node, exp.Column) and node.name.lower() in info.derived:
        return _expression_type(_parsed(info.derived[node.name.lower()]), info)
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
    grain = column_grain(n, info.time_column, info.grains)
    if grain is not None:
        return rewrite_time(n, info, group)
    if isinstance(n, exp.Column):
        name = n.name.lower()
        if name not in {d.lower() for d in group.dimensions} and (name in info.columns or name in info.derived):
            raise Reject("dimension", f"column {n.name} is not a dimension of the rollup")
    return n


def rewrite_dimensions(expr: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """Rule ``dimension``: outside aggregates, only dimensions and time grains may appear."""

    def visit(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.AggFunc | exp.Filter | exp.Window):
            return n
        return rewrite_dimension_node(n, info, group)

    return _transform_outside_aggs(expr, visit)


def _transform_outside_aggs(expr: exp.Expr, fn: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
    """Apply ``fn`` top-down, not descending into aggregates (they are rewritten separately)."""

    def walk(n: exp.Expr) -> exp.Expr:
        out = fn(n)
        if out is not n:
            return out
        if isinstance(n, exp.AggFunc | exp.Filter | exp.Window):
            return n
        for key, value in list(n.args.items()):
            if isinstance(value, exp.Expr):
                n.set(key, walk(value))
            elif isinstance(value, list):
                n.set(key, [walk(v) if isinstance(v, exp.Expr) else v for v in value])
        return n

    return walk(expr)


def time_predicate(pred: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr | None:
    """Rule ``alignment``: a predicate on the raw time column is exact on buckets only when
    it is ``>=`` or ``<`` an instant aligned to the rollup's grain."""
    if not isinstance(pred, exp.GTE | exp.LT | exp.GT | exp.LTE | exp.EQ | exp.Between):
        return None
    subject = pred.this
    if column_grain(subject, info.time_column, info.grains) != "exact":
        return None
    if group.grain is None:
        raise Reject("grain", "the rollup has no time dimension")
    if isinstance(pred, exp.Between):
        raise Reject("alignment", f"BETWEEN on {info.time_column} includes its upper instant; use >= and <")
    value = literal_datetime(pred.expression)
    if value is None:
        raise Reject("alignment", f"{pred.sql(dialect='duckdb')} does not compare with a constant")
    if not isinstance(pred, exp.GTE | exp.LT):
        raise Reject("alignment", f"{pred.key.upper()} on {info.time_column} cannot be answered from {group.grain} buckets")
    if truncate(value, group.grain) != value:
        raise Reject("alignment", f"{value.isoformat(sep=' ')} is not aligned to the rollup's {group.grain} grain")
    out = pred.copy()
    out.set("this", _bucket(group))
    return out


def bucket_literal(value: dt.datetime, dated: bool) -> exp.Expr:
    """A constant of the bucket column's own type (DATE or TIMESTAMP), so zone maps apply."""
    if dated:
        return exp.cast(exp.Literal.string(value.date().isoformat()), dtype("DATE"), copy=False)
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), dtype("TIMESTAMP"), copy=False)


def _ceil(value: dt.datetime, grain: str) -> dt.datetime:
    return value if truncate(value, grain) == value else next_boundary(value, grain)


def coarse_time_predicate(pred: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr | None:
    """Rule ``alignment`` for a range on a finer grain than the rollup's (``day BETWEEN ...``
    on a month rollup): the rows it selects are whole buckets of that grain, so when the
    range starts and ends on the rollup's own bucket boundaries it is a range over the
    rollup's buckets; None for anything else (other rules decide)."""
    if group.grain is None or not isinstance(pred, exp.GTE | exp.GT | exp.LT | exp.LTE | exp.EQ | exp.Between):
        return None
    grain = column_grain(pred.this, info.time_column, info.grains)
    if grain is None or grain == "exact" or grain in DERIVABLE[group.grain]:
        return None
    lo: dt.datetime | None = None
    hi: dt.datetime | None = None
    if isinstance(pred, exp.Between):
        low, high = literal_datetime(pred.args["low"]), literal_datetime(pred.args["high"])
        if low is None or high is None:
            return None
        lo, hi = _ceil(low, grain), next_boundary(high, grain)
    else:
        v = literal_datetime(pred.expression)
        if v is None:
            return None
        if isinstance(pred, exp.GTE):
            lo = _ceil(v, grain)
        elif isinstance(pred, exp.GT):
            lo = next_boundary(v, grain)
        elif isinstance(pred, exp.LT):
            hi = _ceil(v, grain)
        elif isinstance(pred, exp.LTE):
            hi = next_boundary(v, grain)
        elif truncate(v, grain) == v:  # EQ
            lo, hi = v, next_boundary(v, grain)
        else:
            return None
    for bound in (lo, hi):
        if bound is not None and truncate(bound, group.grain) != bound:
            raise Reject(
                "alignment",
                f"{pred.sql(dialect='duckdb')} does not select whole {group.grain}s "
                f"({bound.isoformat(sep=' ')} is inside one)",
            )
    dated = _bucket_type(group.grain) == "DATE"
    bucket = exp.column(group.grain)
    conds: list[exp.Expr] = []
    if lo is not None:
        conds.append(exp.GTE(this=bucket, expression=bucket_literal(lo, dated)))
    if hi is not None:
        conds.append(exp.LT(this=bucket.copy(), expression=bucket_literal(hi, dated)))
    return exp.and_(*conds, copy=False)


def normalise_predicate(pred: exp.Expr) -> exp.Expr:
    """Put the column on the left of a comparison with a constant (``X < ts`` → ``ts > X``)."""
    flips: dict[type[exp.Expr], type[exp.Expr]] = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}
    flip = flips.get(type(pred))
    if flip is not None and not isinstance(pred.this, exp.Column) and isinstance(pred.expression, exp.Column):
        return flip(this=pred.expression.copy(), expression=pred.this.copy())
    return pred


def conjuncts(where: exp.Expr | None) -> list[exp.Expr]:
    if where is None:
        return []
    out: list[exp.Expr] = []
    stack = [where.this if isinstance(where, exp.Where) else where]
    while stack:
        cur = stack.pop()
        if isinstance(cur, exp.And):
            stack.extend([cur.right, cur.left])
        elif isinstance(cur, exp.Paren) and isinstance(cur.this, exp.And):
            stack.append(cur.this)
        else:
            out.append(cur)
    return out


@lru_cache(maxsize=1024)
def _parsed(sql: str) -> exp.Expr:
    """Parsed once; callers copy before changing it."""
    return sqlglot.parse_one(sql, read="duckdb")


@lru_cache(maxsize=1024)
def canonical_sql(sql: str) -> str:
    return canonical(_parsed(sql))


def canonical(node: exp.Expr) -> str:
    # Lower-cased text is the comparison key; normalize=True would copy the tree first.
    return node.sql(dialect="duckdb", identify=False).lower()


def _state(group: StorageGroup, kind: str, column: str | None) -> Measure | None:
    for m in group.measures:
        if m.kind == kind and (column is None or (m.column or "").lower() == column.lower()):
            return m
    return None


def _bigint_count(sum_expr: exp.Expr) -> exp.Expr:
    # COUNT is BIGINT and 0 over no rows; SUM of counts is HUGEINT and NULL over no rows.
    return exp.func("COALESCE", exp.cast(sum_expr, dtype("BIGINT"), copy=False), exp.Literal.number(0), copy=False)


def rewrite_aggregate(node: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """Rule ``measure``: each aggregate becomes a re-aggregation of a stored state."""
    flt: exp.Where | None = None
    agg = node
    if isinstance(node, exp.Filter):
        agg, flt = node.this, node.expression
        flt = exp.Where(this=rewrite_dimensions(flt.this.copy(), info, group))
    dims = {d.lower() for d in group.dimensions}

    def wrap(e: exp.Expr) -> exp.Expr:
        return exp.Filter(this=e, expression=flt) if flt is not None else e

    def col_of(e: exp.Expr) -> str | None:
        return e.name if isinstance(e, exp.Column) else None

    count_state = exp.column("_count")
    if isinstance(agg, exp.Count):
        arg = agg.this
        if isinstance(arg, exp.Distinct):
            cols = [col_of(e) for e in arg.expressions]
            if all(c is not None and c.lower() in dims for c in cols):
                return wrap(agg.copy())
            raise Reject("measure", "COUNT(DISTINCT ...) is exact only over dimensions")
        if arg is None or isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and not arg.is_string):
            return _bigint_count(wrap(exp.Sum(this=count_state)))
        c = col_of(arg)
        if c is not None:
            m = _state(group, "count_col", c)
            if m is not None:
                return _bigint_count(wrap(exp.Sum(this=exp.column(m.state))))
            if c.lower() in dims:
                return _bigint_count(wrap(exp.Sum(this=exp.If(this=exp.Not(this=exp.Is(this=exp.column(c), expression=exp.Null())), true=count_state))))
        if isinstance(arg, exp.Case):
            return _bigint_count(wrap(exp.Sum(this=_case_over_state(arg, info, group, count_state_for_then=True))))
        raise Reject("measure", f"{agg.sql(dialect='duckdb')} has no stored count state")
    if isinstance(agg, exp.Sum):
        c = col_of(agg.this)
        if c is not None:
            m = _state(group, "sum", c)
            if m is None:
                raise Reject("measure", f"sum({c}) is not stored")
            return wrap(exp.Sum(this=exp.column(m.state)))
        if isinstance(agg.this, exp.Case):
            return wrap(exp.Sum(this=_case_over_state(agg.this, info, group, count_state_for_then=False)))
        raise Reject("measure", f"{agg.sql(dialect='duckdb')} is not a sum of a stored column")
    if isinstance(agg, exp.Min | exp.Max):
        c = col_of(agg.this)
        kind = "min" if isinstance(agg, exp.Min) else "max"
        if c is not None and c.lower() in dims:
            return wrap(agg.copy())
        m = _state(group, kind, c) if c else None
        if m is None:
            raise Reject("measure", f"{kind}({c}) is not stored")
        return wrap(type(agg)(this=exp.column(m.state)))
    if isinstance(agg, exp.Avg):
        c = col_of(agg.this)
        s, n = (_state(group, "sum", c), _state(group, "count_col", c)) if c else (None, None)
        if s is None or n is None:
            raise Reject("measure", f"avg({c}) needs sum({c}) and count({c}) states")
        return exp.Div(
            this=wrap(exp.Sum(this=exp.column(s.state))),
            expression=exp.cast(wrap(exp.Sum(this=exp.column(n.state))), dtype("DOUBLE"), copy=False),
        )
    if isinstance(agg, exp.ApproxDistinct):
        c = col_of(agg.this)
        m = _state(group, "hll", c) if c else None
        if m is None:
            raise Reject("measure", f"approx_count_distinct({c}) needs an hll({c}) state")
        est = exp.func("tf_hll_estimate", wrap(exp.func("list", exp.column(m.state), copy=False)), copy=False)
        return exp.cast(exp.func("round", est, copy=False), dtype("BIGINT"), copy=False)
    raise Reject("measure", f"{agg.key.upper()} cannot be computed from mergeable states")


def _case_over_state(case: exp.Case, info: TableInfo, group: StorageGroup, count_state_for_then: bool) -> exp.Expr:
    """``CASE WHEN <dimension predicate> THEN x END`` inside SUM/COUNT, reading states."""
    out = case.copy()
    if out.args.get("default") is not None and not isinstance(out.args["default"], exp.Null):
        raise Reject("measure", "CASE with an ELSE value inside an aggregate")
    for when in out.args.get("ifs", []):
        when.set("this", rewrite_dimensions(when.this, info, group))
        then = when.args.get("true")
        if count_state_for_then:
            if isinstance(then, exp.Literal) and not then.is_string:
                when.set("true", exp.column("_count"))
                continue
            c = then.name if isinstance(then, exp.Column) else None
            m = _state(group, "count_col", c) if c else None
            if m is None:
                raise Reject("measure", "COUNT(CASE ...) needs a constant or a counted column")
            when.set("true", exp.column(m.state))
        else:
            c = then.name if isinstance(then, exp.Column) else None
            m = _state(group, "sum", c) if c else None
            if m is None:
                raise Reject("measure", "SUM(CASE ... THEN x) needs sum(x) stored")
            when.set("true", exp.column(m.state))
    return out


def retention_ok(group: StorageGroup, start: dt.datetime | None, now: dt.datetime) -> None:
    """Rule ``retention``: the statement's time range must lie inside what the rollup keeps."""
    cutoff = retention_start(group, now)
    if cutoff is None:
        return
    if start is None or start < cutoff:
        raise Reject("retention", f"the rollup keeps data from {cutoff.isoformat(sep=' ')} only")
