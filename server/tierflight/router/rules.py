"""Whether a rollup can answer a statement: one pure function per rule, run in order.

Each rule looks at a :class:`Candidate` (the statement's facts, one rollup, the clock) and
returns None to let it through or a :class:`Reject` naming itself, which EXPLAIN ROUTE
shows for the rejected candidate. The first rule that rejects decides, so the order of the
tuples below is part of what EXPLAIN ROUTE prints:

* ``STATE_RULES`` depend on the rollup's status, the hot tail and the clock: run on every
  plan, before anything else;
* ``STATEMENT_RULES`` depend only on the statement and the rollup's definition: cheap
  necessary conditions, checked before the (costlier) rewrite and remembered with it.

The rewrite (rewrite.py) has the last word: it checks each expression as it rewrites it
(an aggregate with no stored state, an unaligned bound) and raises the same ``Reject``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlglot import exp

from tierflight.core.names import Kind, Names
from tierflight.rollups.definition import DERIVABLE, StorageGroup, retention_start
from tierflight.rollups.registry import RollupState
from tierflight.router.facts import TableInfo, Target
from tierflight.router.route import Rule
from tierflight.router.trees import filter_key, walk


class Reject(Exception):
    """A rule's verdict against a candidate (returned by the rules, raised by the rewrite)."""

    def __init__(self, rule: Rule, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Candidate:
    """One rollup tried for one statement: everything a rule, the rewrite or a split reads."""

    target: Target
    state: RollupState
    now: dt.datetime
    allow_stale: bool = False  # a stale rollup may answer (the registry's setting)
    fresh: bool = True  # the rollups hold every row of the table's hot tail

    @property
    def group(self) -> StorageGroup:
        return self.state.group


RuleFn = Callable[[Candidate], Reject | None]


def kept_verdict(raised: Reject) -> Reject:
    """A caught Reject as the caches keep it: anew, without the traceback that holds every
    frame it passed through (and their candidates and trees) alive as long as the entry."""
    return Reject(raised.rule, raised.reason)


def locate_table(select: exp.Select, tables: Mapping[str, TableInfo], names: Names) -> tuple[exp.Table, TableInfo]:
    """Rule ``shape`` of the statement, before any candidate: one configured table (any
    spelling ``names`` resolves), aggregated, no joins; the reference to it and the table."""
    if select.args.get("joins") or select.args.get("laterals"):
        raise Reject(Rule.SHAPE, "joins are answered from raw tiers")
    from_ = select.args.get("from_")
    table = from_.this if from_ is not None else None
    resolved = names.resolve(table) if isinstance(table, exp.Table) else None
    if not isinstance(table, exp.Table) or resolved is None or resolved.kind is not Kind.TABLE or resolved.name not in tables:
        raise Reject(Rule.SHAPE, "not a single configured table")
    # One walk for what the checks below ask of every node (they still decide in order).
    qualified = nested = aggregated = False
    for node in walk(select):
        if isinstance(node, exp.Column):
            qualified = qualified or bool(node.args.get("db"))
        elif isinstance(node, exp.Select):
            nested = nested or node is not select
        elif isinstance(node, exp.AggFunc):
            aggregated = aggregated or not is_window_function(node)
    if qualified:
        # ``main.events.ts``: the raw planner rewrites those to the relation's alias.
        raise Reject(Rule.SHAPE, "schema-qualified column references are answered from raw tiers")
    if table.args.get("when") is not None or table.args.get("version") is not None:
        raise Reject(Rule.TIME_TRAVEL, "reads an earlier Iceberg snapshot; rollups hold the current data")
    if not select.args.get("group") and not aggregated:
        # A window aggregate alone (``sum(x) OVER ()``) runs over the raw rows.
        raise Reject(Rule.SHAPE, "no aggregation: raw rows are needed")
    if nested:
        raise Reject(Rule.SHAPE, "subqueries inside an aggregate statement are answered from raw tiers")
    return table, tables[resolved.name]


def is_window_function(node: exp.Expr) -> bool:
    """``node`` is the function a window computes, not an aggregate of the statement."""
    return isinstance(node.parent, exp.Window) and node.arg_key == "this"


# -- state rules -----------------------------------------------------------------------------


def status(c: Candidate) -> Reject | None:
    # Never one whose rows differed from the raw tiers (rollups.verify), even with allow_stale.
    if c.state.usable or (c.allow_stale and c.state.status == "stale" and not c.state.mismatches):
        return None
    return Reject(Rule.STATUS, f"rollup is {c.state.status}")


def freshness(c: Candidate) -> Reject | None:
    return None if c.fresh else Reject(Rule.FRESHNESS, "the hot tail has rows the rollup does not hold yet")


def retention(c: Candidate) -> Reject | None:
    """The statement's time range must lie inside what the rollup keeps."""
    cutoff = retention_start(c.group, c.now)
    start = c.target.time_range.start
    if cutoff is None or (start is not None and start >= cutoff):
        return None
    return Reject(Rule.RETENTION, f"the rollup keeps data from {cutoff.isoformat(sep=' ')} only")


# -- statement rules -------------------------------------------------------------------------


def grain(c: Candidate) -> Reject | None:
    """Every time grain the statement groups or filters by derives from the rollup's."""
    have = c.group.grain
    for needed in c.target.facts.grains:
        if have is None or needed not in DERIVABLE[have]:
            return Reject(Rule.GRAIN, f"needs {needed} buckets, rollup has {have or 'no time dimension'}")
    for needed in c.target.facts.range_grains:
        if have is None:
            return Reject(Rule.GRAIN, f"needs {needed} buckets, rollup has no time dimension")
    return None


def measure(c: Candidate) -> Reject | None:
    """Each aggregate of a column reads a dimension or a stored state of it."""
    dims = {d.lower() for d in c.group.dimensions}
    stored = {(m.kind, (m.column or "").lower()) for m in c.group.measures}
    for kind, name, shown in c.target.facts.aggregates:
        if name not in dims and (kind, name) not in stored:
            return Reject(Rule.MEASURE, f"{shown} is not stored")
    return None


def dimension(c: Candidate) -> Reject | None:
    """Outside aggregates, a table column is a dimension (or the time column, or in the filter)."""
    info = c.target.info
    dims = {d.lower() for d in c.group.dimensions}
    time_column = info.time_column.lower()
    filter_text = (c.group.filter or "").lower()
    for name, shown in c.target.facts.columns:
        in_filter = bool(filter_text and name in filter_text)
        if name in info.columns and name != time_column and name not in dims and not in_filter:
            return Reject(Rule.DIMENSION, f"column {shown} is not a dimension of the rollup")
    return None


def filter_implied(c: Candidate) -> Reject | None:
    """A filtered rollup holds only the rows its filter selects: the statement must say so.
    Last: the only check that generates SQL (the statement's conjuncts, once per plan)."""
    flt = c.group.filter
    if flt and filter_key(flt) not in c.target.facts.where_keys:
        return Reject(Rule.FILTER, f"the statement does not imply the rollup's filter ({flt})")
    return None


STATE_RULES: tuple[RuleFn, ...] = (status, freshness, retention)
# The statement rules that read only what a statement's shape decides (router/templates.py:
# the tree, and of the constants a WHERE compares with only whether they read as times).
SHAPE_RULES: tuple[RuleFn, ...] = (grain, measure, dimension)
FILTER_RULES: tuple[RuleFn, ...] = (filter_implied,)  # reads the conjuncts' text
STATEMENT_RULES: tuple[RuleFn, ...] = (*SHAPE_RULES, *FILTER_RULES)


def first_rejection(rules: tuple[RuleFn, ...], candidate: Candidate) -> Reject | None:
    for rule in rules:
        verdict = rule(candidate)
        if verdict is not None:
            return verdict
    return None
