"""What a statement asks of a table, computed once per plan and shared by every candidate.

``TableInfo`` is the configured table (time column, derived columns and their grains);
``Target`` is one aggregate statement over one such table (its tree, the reference, the time
range it needs); ``StatementFacts`` are what the rules compare with each rollup: the time
grains it groups or filters by, its measures, the columns outside aggregates, its filters.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlglot import exp

from tierflight.core.grains import literal_datetime
from tierflight.router.spellings import needed_grain, truncation_grain
from tierflight.router.timerange import column_grain, table_time_range
from tierflight.router.trees import canonical, conjuncts, normalise_predicate
from tierflight.tiers.base import TimeRange


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
    time_type: str = "TIMESTAMP"  # the time column's DuckDB type, as configured

    @property
    def microseconds(self) -> bool:
        """The time column holds microseconds: ``ts <= v`` is ``ts < v + 1µs``."""
        return self.time_type.upper() in _MICROSECOND_TYPES

    def grain_of(self, node: exp.Expr) -> str | None:
        """The time grain ``node`` determines ("exact" for the time column), or None."""
        return column_grain(node, self.time_column, self.grains)

    def truncation_of(self, node: exp.Expr) -> str | None:
        """Like ``grain_of``, also for a day of a finer bucket (``CAST(hour AS DATE)``)."""
        return truncation_grain(node, self.grain_of)

    def needed_grain(self, node: exp.Expr) -> str | None:
        """The grain a rollup must derive to compute ``node`` (spellings.needed_grain). Asked
        of every node outside aggregates by the rewrite: other kinds are None at once."""
        if not isinstance(node, _TIME_NODES):
            return None
        return needed_grain(node, self.grain_of)


_MICROSECOND_TYPES = frozenset({"TIMESTAMP", "DATETIME", "TIMESTAMP_US", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"})
_AGG_KIND = {exp.Sum: "sum", exp.Min: "min", exp.Max: "max", exp.Avg: "sum", exp.ApproxDistinct: "hll"}
_RANGES = (exp.GTE, exp.GT, exp.LT, exp.LTE, exp.EQ)
# Nodes that may be a time expression (spellings.needed_grain): only these are asked.
_TIME_NODES = (
    exp.Column,
    exp.Cast,
    exp.TimestampTrunc,
    exp.DateTrunc,
    exp.TimeTrunc,
    exp.Extract,
    exp.Anonymous,
    exp.Add,
    exp.Sub,
    exp.Minute,
    exp.Hour,
    exp.Day,
    exp.DayOfMonth,
    exp.DayOfWeek,
    exp.DayOfWeekIso,
    exp.DayOfYear,
    exp.Week,
    exp.WeekOfYear,
    exp.Month,
    exp.Quarter,
    exp.Year,
)


@dataclass(frozen=True)
class StatementFacts:
    """What the statement rules ask of a statement, collected once per plan (not per candidate)."""

    grains: tuple[str, ...]  # time grains the statement groups or filters by, outside aggregates
    # Time grains only compared with constants in top-level WHERE conjuncts (``day BETWEEN
    # ...``): a coarser rollup answers those when the range is aligned to its buckets.
    range_grains: tuple[str, ...]
    where: tuple[exp.Expr, ...]  # the WHERE conjuncts
    aggregates: tuple[tuple[str, str, str], ...]  # (measure kind, column, function) per aggregate
    columns: tuple[tuple[str, str], ...]  # (lower-case name, name) of columns outside aggregates
    sketches: bool  # the statement estimates distinct counts (approx_count_distinct)

    @functools.cached_property
    def where_keys(self) -> frozenset[str]:
        """Canonical form of each WHERE conjunct (SQL generation: only when a filtered rollup
        gets that far)."""
        return frozenset(canonical(normalise_predicate(p)) for p in self.where)

    @classmethod
    def of(cls, tree: exp.Select, info: TableInfo) -> StatementFacts:
        grains: list[str] = []
        range_grains: list[str] = []
        aggregates: list[tuple[str, str, str]] = []
        columns: list[tuple[str, str]] = []
        sketches = False
        where = tuple(conjuncts(tree.args.get("where")))
        ranged: dict[int, str] = {}  # id of a range's subject -> its grain
        for subject in map(range_subject, where):
            grain = None if subject is None else info.grain_of(subject)
            if subject is not None and grain not in (None, "exact"):
                ranged[id(subject)] = str(grain)
        # One breadth-first walk (the order sqlglot's walk gives, so rejections name the same
        # column) that knows whether it is inside an aggregate: asking each node for its
        # ancestors cost a walk up the tree per node.
        queue: deque[tuple[exp.Expr, bool]] = deque([(tree, False)])
        while queue:
            node, in_agg = queue.popleft()
            if id(node) in ranged:
                range_grains.append(ranged[id(node)])
                continue
            if isinstance(node, exp.AggFunc):
                sketches = sketches or isinstance(node, exp.ApproxDistinct | exp.ApproxQuantile)
                kind = _AGG_KIND.get(type(node))
                if kind and isinstance(node.this, exp.Column):
                    aggregates.append((kind, node.this.name.lower(), f"{node.key}({node.this.name})"))
                in_agg = True
            elif not in_agg and isinstance(node, _TIME_NODES):
                grain = info.needed_grain(node)
                if grain not in (None, "exact"):
                    grains.append(str(grain))
                    if not isinstance(node, exp.Column):
                        continue  # what it reads is the grain it needs, nothing more
            if not in_agg and isinstance(node, exp.Column):
                columns.append((node.name.lower(), node.name))
            queue.extend((child, in_agg) for child in node.iter_expressions())
        return cls(
            tuple(dict.fromkeys(grains)),
            tuple(dict.fromkeys(range_grains)),
            where,
            tuple(aggregates),
            tuple(columns),
            sketches,
        )


def range_subject(pred: exp.Expr) -> exp.Expr | None:
    """The side of a comparison that a constant date or timestamp bounds, if that is all
    the conjunct is (its grain is checked by coarse_time_predicate in the rewrite)."""
    left: exp.Expr = pred.this
    if isinstance(pred, exp.Between):
        bounds = (pred.args.get("low"), pred.args.get("high"))
        return left if all(b is not None and literal_datetime(b) is not None for b in bounds) else None
    if isinstance(pred, _RANGES):
        right: exp.Expr = pred.expression
        if literal_datetime(right) is not None:
            return left
        if literal_datetime(left) is not None:
            return right
    return None


def is_exact_time_bound(pred: exp.Expr, info: TableInfo) -> bool:
    """A comparison on the raw time column itself (not on a grain of it)."""
    return isinstance(pred, exp.Binary | exp.Between) and info.grain_of(pred.this) == "exact"


@dataclass(frozen=True)
class Target:
    """One aggregate statement over one configured table: the context every rule, rewrite and
    split of a plan reads (instead of a statement, tree, table, info and range apiece)."""

    sql: str  # the statement's text: names its output columns, keys the rewrite cache
    tree: exp.Select  # shared with the statement cache: never changed, only copied
    table: exp.Table  # the reference to the table in ``tree``
    info: TableInfo
    # Output names fixed by the caller: a subquery routed on its own (subqueries.py), whose
    # tree's token positions refer to the whole statement rather than to ``sql``.
    names: tuple[str, ...] | None = None

    @functools.cached_property
    def time_range(self) -> TimeRange:
        return table_time_range(self.table, self.info.time_column, self.info.grains)

    @functools.cached_property
    def facts(self) -> StatementFacts:
        """Computed on first use: a candidate rejected for its state never needs them."""
        return StatementFacts.of(self.tree, self.info)

    @property
    def alias(self) -> str:
        """What the statement calls the table (the rewrite keeps it for qualified columns)."""
        return self.table.alias or self.table.name

    def exact_time_conjuncts(self) -> list[exp.Expr]:
        """The WHERE conjuncts bounding the raw time column, column on the left."""
        return [p for p in map(normalise_predicate, self.facts.where) if is_exact_time_bound(p, self.info)]
