"""Rule ``covering``: a time filter that holds for every row of the table is no filter.

``day BETWEEN DATE '2024-01-01' AND DATE '2024-12-31'`` over a table whose rows all lie in
2024 selects every row, so a rollup without a time dimension answers it exactly: the
statement is planned without that conjunct. Whether a conjunct covers is decided from the
table's extent as the partition statistics give it (every tier, the hot tail included),
widened so that it is never narrower than the rows: partitions start at or before their
first row and end at or after their last. Only when the time column is declared NOT NULL
(a NULL time fails every comparison). The decision holds for the data of this plan only:
ingest invalidates the router's plans on every batch, and flushes and maintenance move the
data generation, so data outside the extent is planned afresh.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import sqlglot
from sqlglot import exp

from tierflight.core.grains import literal_datetime, truncate
from tierflight.core.statement import DIALECT, Statement
from tierflight.router.facts import TableInfo
from tierflight.router.route import Route
from tierflight.router.timerange import column_grain
from tierflight.router.trees import bare_copy, conjuncts, normalise_predicate
from tierflight.tiers.base import Partition

Extent = tuple[dt.datetime, dt.datetime]  # [first possible row time, last possible row time]

_LOWER = (exp.GT, exp.GTE)
_UPPER = (exp.LT, exp.LTE)


_MICRO = dt.timedelta(microseconds=1)


def extent_of(partitions: list[Partition]) -> Extent | None:
    """From the first to the last possible row time: day partitions (warm, cold) end before
    their ``end``; the hot tail's span is its first and last row."""
    held = [p for p in partitions if p.rows > 0]
    if not held:
        return None
    return min(p.start for p in held), max(p.end if p.tier == "hot" else p.end - _MICRO for p in held)


def _subject_range(subject: exp.Expr, info: TableInfo, extent: Extent) -> Extent | None:
    """The values a time expression takes over the extent (None: not a time expression)."""
    grain = column_grain(subject, info.time_column, info.grains)
    if grain is None:
        return None
    lo, hi = extent
    if grain == "exact":
        return lo, hi
    return truncate(lo, grain), truncate(hi, grain)


def covers(pred: exp.Expr, info: TableInfo, extent: Extent) -> bool:
    """Whether a WHERE conjunct is true for every row whose time lies in ``extent``."""
    pred = normalise_predicate(pred)  # constants on the right
    if isinstance(pred, exp.Between):
        span = _subject_range(pred.this, info, extent)
        low, high = literal_datetime(pred.args["low"]), literal_datetime(pred.args["high"])
        return span is not None and low is not None and high is not None and low <= span[0] and span[1] <= high
    if not isinstance(pred, _LOWER + _UPPER):
        return False
    span = _subject_range(pred.this, info, extent)
    bound = literal_datetime(pred.expression)
    if span is None or bound is None:
        return False
    if isinstance(pred, exp.GTE):
        return bound <= span[0]
    if isinstance(pred, exp.GT):
        return bound < span[0]
    if isinstance(pred, exp.LTE):
        return span[1] <= bound
    return span[1] < bound


def without_covering(statement: Statement, info: TableInfo, extent: Extent) -> tuple[Statement, int] | None:
    """The statement without its covering time conjuncts, and how many were dropped (None:
    none covers)."""
    tree = statement.tree
    if not isinstance(tree, exp.Select) or statement.parameter_count:
        return None
    kept: list[exp.Expr] = []
    dropped = 0
    for pred in conjuncts(tree.args.get("where")):
        if covers(pred, info, extent):
            dropped += 1
        else:
            kept.append(bare_copy(pred))
    if not dropped:
        return None
    stripped = bare_copy(tree)
    assert isinstance(stripped, exp.Select)
    stripped.set("where", exp.Where(this=exp.and_(*kept, copy=False)) if kept else None)
    sql = stripped.sql(dialect=DIALECT, copy=False)  # our own tree: no deep copy first
    # Parsed again from its own text: output names are read from the positions in it.
    return dataclasses.replace(statement, sql=sql, tree=sqlglot.parse_one(sql, dialect=DIALECT)), dropped


def plan_covering(
    statement: Statement,
    info: TableInfo | None,
    extent_now: Callable[[], Extent | None],
    time_not_null: bool,
    plan: Callable[[Statement], Route],
) -> Route | None:
    """A rollup's route for the statement without its covering time filter; None when no
    conjunct covers or no rollup answers it then (the statement is planned as it is)."""
    if info is None or not time_not_null or statement.tree.args.get("where") is None:
        return None  # nothing to drop: the partitions need not be listed
    extent = extent_now()
    if extent is None:
        return None
    found = without_covering(statement, info, extent)
    if found is None:
        return None
    route = plan(found[0])
    if route.rollup is None:
        return None
    note = (
        f"; time filter covers the table's whole extent [{extent[0]}, {extent[1]}] (partition statistics, "
        f"hot tail included): {found[1]} conjunct(s) dropped until data outside it arrives"
    )
    parts = tuple(dataclasses.replace(p, reason=p.reason + note) if p.rollup is not None else p for p in route.parts)
    return dataclasses.replace(route, parts=parts)
