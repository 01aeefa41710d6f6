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
)
from tierflight.router.facts import TableInfo, is_exact_time_bound
from tierflight.router.measures import rewrite_aggregate
from tierflight.router.route import Rule
from tierflight.router.rules import Candidate, Reject
from tierflight.router.split import slice_bounds
from tierflight.router.trees import (
    bare_copy,
    canonical,
    canonical_sql,
    conjuncts,
    normalise_predicate,
    transform_outside_aggs,
)


def rewrite_clause(expr: exp.Expr, info: TableInfo, group: StorageGroup) -> exp.Expr:
    """One clause (a SELECT expression, GROUP BY, HAVING, ORDER BY, a WHERE conjunct)."""

    def visit(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Window):
            raise Reject(Rule.SHAPE, "window functions are answered from raw tiers")
        if isinstance(n, exp.AggFunc) or (isinstance(n, exp.Filter) and isinstance(n.this, exp.AggFunc)):
            return rewrite_aggregate(n, info, group)
        if isinstance(n, exp.Subquery | exp.Select):
            raise Reject(Rule.SHAPE, "subqueries are answered from raw tiers")
        return rewrite_dimension_node(n, info, group)

    return transform_outside_aggs(expr, visit)


def _where(select: exp.Select, c: Candidate, drop_exact: bool) -> list[exp.Expr]:
    """The rewritten WHERE conjuncts: the rollup's filter dropped (its rows hold only what it
    selects), time bounds over buckets, the rest over dimensions."""
    info, group = c.target.info, c.group
    filter_key = canonical_sql(group.filter) if group.filter else None
    implied = False
    kept: list[exp.Expr] = []
    for pred in map(normalise_predicate, conjuncts(select.args.get("where"))):
        if filter_key is not None and canonical(pred) == filter_key:
            implied = True
            continue
        if drop_exact and is_exact_time_bound(pred, info):
            continue  # enforced inside the split's union
        timed = time_predicate(pred, info, group)
        if timed is None:
            timed = coarse_time_predicate(pred, info, group)
        kept.append(timed if timed is not None else rewrite_clause(pred, info, group))
    if filter_key is not None and not implied:
        raise Reject(Rule.FILTER, f"the statement does not imply the rollup's filter ({group.filter})")
    if group.grain is not None:
        kept.extend(bucket_range(group.grain, *slice_bounds(group.grain, c.target.time_range)))
    return kept


def rewrite_select(c: Candidate, drop_exact: bool = False) -> exp.Select:
    """The statement over the rollup's states; ``drop_exact`` leaves the bounds on the raw
    time column out (a split applies them to the raw edges)."""
    info, group = c.target.info, c.group
    select = bare_copy(c.target.tree)
    assert isinstance(select, exp.Select)
    if select.args.get("qualify") is not None:
        raise Reject(Rule.SHAPE, "QUALIFY is answered from raw tiers")
    kept = _where(select, c, drop_exact)
    select.set("where", exp.Where(this=exp.and_(*kept, copy=False)) if kept else None)
    select.set("expressions", [rewrite_clause(e, info, group) for e in select.expressions])
    for key in ("group", "having", "order"):
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
    return select
