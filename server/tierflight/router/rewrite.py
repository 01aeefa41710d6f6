"""A statement rewritten onto a rollup: tree in, tree out.

The rewrite keeps every expression of the statement and only changes what it reads: the
table becomes the rollup, time expressions become expressions over its bucket column
(dimensions.py), each aggregate reads the matching mergeable state (measures.py), and the
statement's time range adds bounds on the bucket so DuckDB skips the rest (split.py). The
statement's tree is never changed: the rewrite works on a bare copy.
"""

from __future__ import annotations

from sqlglot import exp

from tierflight.core.names import ROLLUP_DATABASE
from tierflight.rollups.definition import StorageGroup
from tierflight.router.dimensions import (
    bucket_range,
    coarse_time_predicate,
    rewrite_dimension_node,
    time_predicate,
    unimplied_bounds,
)
from tierflight.router.facts import TableInfo, is_exact_time_bound
from tierflight.router.measures import rewrite_aggregate
from tierflight.router.route import Rule
from tierflight.router.rules import Candidate, Reject
from tierflight.router.split import slice_bounds
from tierflight.router.trees import (
    bare_copy,
    canonical,
    conjuncts,
    filter_key,
    normalise_predicate,
    transform_outside_aggs,
)


def rewrite_clause(expr: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """One clause (a SELECT expression, GROUP BY, HAVING, ORDER BY, QUALIFY, a WHERE conjunct)."""

    def visit(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Window):
            return _rewrite_window(n, info, group)
        if isinstance(n, exp.AggFunc) or (isinstance(n, exp.Filter) and isinstance(n.this, exp.AggFunc)):
            return rewrite_aggregate(n, info, group)
        if isinstance(n, exp.Subquery | exp.Select):
            raise Reject(Rule.SHAPE, "subqueries are answered from raw tiers")
        return rewrite_dimension_node(n, info, group)

    return transform_outside_aggs(expr, visit)


def _rewrite_window(window: exp.Window, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """A window function of an aggregate statement runs over its grouped rows (SQL evaluates
    windows after GROUP BY), so only what it reads is rewritten: the aggregates and grouped
    expressions among its arguments, PARTITION BY and ORDER BY (``rank() OVER (ORDER BY
    count(*) DESC)``, ``sum(count(*)) OVER (ORDER BY day)``); the window function itself
    stays, over the rewritten statement's grouped rows. locate_table has checked that the
    statement aggregates: over raw rows a window is never routed."""
    function = window.this
    if isinstance(function, exp.Filter):
        raise Reject(Rule.SHAPE, "a window function with FILTER is answered from raw tiers")
    for key, value in list(function.args.items()):
        if isinstance(value, exp.Expr):
            function.set(key, rewrite_clause(value, info, group))
        elif isinstance(value, list):
            function.set(key, [rewrite_clause(v, info, group) if isinstance(v, exp.Expr) else v for v in value])
    partition = window.args.get("partition_by")
    if partition:
        window.set("partition_by", [rewrite_clause(p, info, group) for p in partition])
    order = window.args.get("order")
    if order is not None:
        window.set("order", rewrite_clause(order, info, group))
    return window


def _rewrite_order(order: exp.Order, select: exp.Select, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """ORDER BY names a select-list alias before a column (as DuckDB binds it), when the
    alias is the whole key: the rewritten statement keeps every alias, so the name stays."""
    aliases = {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias)}
    keys = []
    for key in order.expressions:
        term = key.this if isinstance(key, exp.Ordered) else key
        if isinstance(term, exp.Column) and not term.table and term.name.lower() in aliases:
            keys.append(key)
        else:
            keys.append(rewrite_clause(key, info, group))
    order.set("expressions", keys)
    return order


def _where(select: exp.Select, c: Candidate, drop_exact: bool) -> list[exp.Expr]:
    """The rewritten WHERE conjuncts of ``select`` (the statement's own tree: read, never
    changed): the rollup's filter dropped (its rows hold only what it selects), time bounds
    over buckets, the rest over dimensions (each conjunct copied before it is rewritten)."""
    info, group = c.target.info, c.group
    key = filter_key(group.filter) if group.filter else None
    implied = False
    kept: list[exp.Expr] = []
    for pred in map(normalise_predicate, conjuncts(select.args.get("where"))):
        if key is not None and canonical(pred) == key:
            implied = True
            continue
        if drop_exact and is_exact_time_bound(pred, info):
            continue  # enforced inside the split's union
        timed = time_predicate(pred, info, group)
        if timed is None:
            timed = coarse_time_predicate(pred, info, group)
        kept.append(timed if timed is not None else rewrite_clause(bare_copy(pred), info, group))
    if key is not None and not implied:
        raise Reject(Rule.FILTER, f"the statement does not imply the rollup's filter ({group.filter})")
    return kept


def bucket_bounds(kept: list[exp.Expr], c: Candidate) -> list[exp.Expr]:
    """The time range's bounds on the bucket column: they help DuckDB skip buckets, except
    where a kept conjunct on the bucket column already says the same (then they would only
    cost a predicate each)."""
    grain = c.group.grain
    if grain is None:
        return []
    lo, hi = slice_bounds(grain, c.target.time_range)
    return bucket_range(grain, *unimplied_bounds(kept, grain, lo, hi))


def rewrite_select(c: Candidate, drop_exact: bool = False) -> exp.Select:
    """The statement over the rollup's states; ``drop_exact`` leaves the bounds on the raw
    time column out (a split applies them to the raw edges)."""
    select, kept = rewrite_parts(c, drop_exact)
    kept += bucket_bounds(kept, c)
    select.set("where", exp.Where(this=exp.and_(*kept, copy=False)) if kept else None)
    return select


def rewrite_parts(c: Candidate, drop_exact: bool = False) -> tuple[exp.Select, list[exp.Expr]]:
    """rewrite_select without the bucket bounds: the statement over the rollup's states with
    no WHERE, and its rewritten WHERE conjuncts (a rewrite template adds both itself)."""
    info, group = c.target.info, c.group
    if c.target.tree.args.get("windows"):
        # WINDOW w AS (...): its PARTITION BY / ORDER BY are not rewritten.
        raise Reject(Rule.SHAPE, "named windows are answered from raw tiers")
    # The WHERE first, from the statement's own tree: a rollup it rules out (an unaligned
    # range) costs no copy of the statement.
    kept = _where(c.target.tree, c, drop_exact)
    select = bare_copy(c.target.tree)
    assert isinstance(select, exp.Select)
    select.set("where", None)
    order = select.args.get("order")
    if isinstance(order, exp.Order):
        # Before the select list changes: the aliases are read off it.
        select.set("order", _rewrite_order(order, select, info, group))
    select.set("expressions", [rewrite_clause(e, info, group) for e in select.expressions])
    for key in ("group", "having", "qualify"):
        clause = select.args.get(key)
        if clause is not None:
            select.set(key, rewrite_clause(clause, info, group))
    rollup = exp.Table(
        this=exp.to_identifier(group.name),
        db=exp.to_identifier("main"),
        catalog=exp.to_identifier(ROLLUP_DATABASE),
        alias=exp.TableAlias(this=exp.to_identifier(c.target.alias)),
    )
    select.set("from_", exp.From(this=rollup))
    return select, kept
