"""A statement's shape: what a rollup must hold to answer it, without any value it names.

The advisor learns from shapes only: the table, the non-time columns the statement groups,
filters or computes by (each filter column with the kind of its predicate), the time grain
it needs, the measures it aggregates and how far back it reads. Literal values never enter
a shape; the one exception is a digest (not the text) of an equality filter, so statements
sharing one can be told apart from statements that filter on different values.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from sqlglot import exp

from tierflight.core.config import TableConfig
from tierflight.core.errors import TierflightError
from tierflight.core.grains import GRAINS, literal_datetime
from tierflight.core.names import Names
from tierflight.core.statement import DIALECT
from tierflight.router.facts import TableInfo
from tierflight.router.rules import Reject, locate_table
from tierflight.router.timerange import column_grain, derived_grains, table_time_range
from tierflight.router.trees import canonical, conjuncts, normalise_predicate

HLL_ADVICE_LG_K = 10  # the precision of DuckDB's own approx_count_distinct, at 1/4 the bytes of 12
COARSE_FIRST = ("month", "week", "day", "hour", "minute")


class FilterKind(enum.StrEnum):
    EQ = "eq"
    IN = "in"
    RANGE = "range"
    OTHER = "other"


# Slots: one per observation the query log keeps (see Observation).
@dataclass(frozen=True, slots=True)
class Shape:
    table: str
    grain: str | None  # the coarsest time grain that serves it (None: no time dimension needed)
    columns: tuple[str, ...]  # non-time columns grouped or computed by (outside WHERE), sorted
    filters: tuple[tuple[str, FilterKind], ...]  # WHERE columns and their predicate kind
    measures: tuple[str, ...]  # measure labels as the config spells them (count, sum(x), hll(x, 10))
    eq_filters: tuple[str, ...] = ()  # digests of single-value equality filters (no text)
    lookback_s: float | None = None  # how far back from now the statement reads (None: unbounded)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Every non-time column a rollup without a filter must keep."""
        return tuple(sorted({*self.columns, *(c for c, _ in self.filters)}))

    def key(self) -> tuple[Any, ...]:
        """Statements with equal keys are one group for the advisor."""
        return (self.table, self.dimensions, self.eq_filters)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "grain": self.grain,
            "columns": list(self.columns),
            "filters": [[c, k.value] for c, k in self.filters],
            "measures": list(self.measures),
            "eq_filters": list(self.eq_filters),
            "lookback_s": self.lookback_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shape:
        grain = data.get("grain")
        if grain is not None and grain not in GRAINS:
            raise ValueError(f"unknown grain {grain!r}")
        lookback = data.get("lookback_s")
        return cls(
            table=str(data["table"]),
            grain=grain,
            columns=tuple(str(c) for c in data.get("columns", ())),
            filters=tuple((str(c), FilterKind(k)) for c, k in data.get("filters", ())),
            measures=tuple(str(m) for m in data.get("measures", ())),
            eq_filters=tuple(str(d) for d in data.get("eq_filters", ())),
            lookback_s=None if lookback is None else float(lookback),
        )


def table_info(cfg: TableConfig) -> TableInfo:
    """What the router's rules know of a table (the same as Router builds)."""
    return TableInfo(
        name=cfg.name,
        time_column=cfg.time_column,
        derived={k.lower(): v for k, v in cfg.derived.items()},
        grains=derived_grains(dict(cfg.derived), cfg.time_column),
        columns=frozenset(c.lower() for c in cfg.column_names),
        spelled={**{c.lower(): c for c in cfg.column_names}, **{k.lower(): k for k in cfg.derived}},
    )


def filter_digest(pred: exp.Expr) -> str:
    """A digest standing for an equality filter: equal filters, equal digests; no text kept."""
    return hashlib.sha256(canonical(normalise_predicate(pred)).encode()).hexdigest()[:16]


class Unservable(Exception):
    """No rollup can answer the statement exactly (the reason says why)."""


_BOUNDS = (exp.GT, exp.GTE, exp.LT, exp.LTE)


def _aligned_grain(value: dt.datetime) -> str | None:
    """The coarsest grain whose bucket starts at ``value`` (None: not on a minute)."""
    for grain in COARSE_FIRST:
        from tierflight.core.grains import truncate

        if truncate(value, grain) == value:
            return grain
    return None


def _finer(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if GRAINS.index(a) < GRAINS.index(b) else b


class _Collector:
    def __init__(self, info: TableInfo, spelled: dict[str, str]) -> None:
        self.info = info
        self.spelled = spelled
        self.grain: str | None = None
        self.columns: set[str] = set()
        self.measures: set[str] = {"count"}
        self.filters: dict[str, FilterKind] = {}
        self.eq: list[str] = []

    def name(self, col: exp.Column) -> str:
        lower = col.name.lower()
        if lower not in self.info.columns:
            if lower in self.info.derived:
                raise Unservable(f"derived column {col.name} is not a time grain")
            raise Unservable(f"{col.name} is not a column of {self.info.name}")
        return self.spelled.get(lower, col.name)

    def need_grain(self, grain: str) -> None:
        self.grain = _finer(self.grain, grain)

    def time_conjunct(self, pred: exp.Expr) -> bool:
        """A time range compared with constants: sets the grain it needs; False if not one."""
        if isinstance(pred, exp.Between):
            subject, bounds = pred.this, [pred.args.get("low"), pred.args.get("high")]
        elif isinstance(pred, (*_BOUNDS, exp.EQ)):
            if literal_datetime(pred.expression) is not None:
                subject, bounds = pred.this, [pred.expression]
            elif literal_datetime(pred.this) is not None:
                subject, bounds = pred.expression, [pred.this]
            else:
                return False
        else:
            return False
        grain = column_grain(subject, self.info.time_column, self.info.grains)
        values = [literal_datetime(b) for b in bounds if b is not None]
        if grain is None or len(values) != len(bounds) or any(v is None for v in values):
            return False
        if grain == "exact":
            # A bound on the time column itself: a rollup whose buckets start at the bound.
            if isinstance(pred, exp.Between | exp.EQ):
                raise Unservable(f"{self.info.time_column} is compared at full precision")
            aligned = [_aligned_grain(v) for v in values if v is not None]
            if any(a is None for a in aligned):
                raise Unservable(f"{self.info.time_column} is bounded below a minute")
            for a in aligned:
                self.need_grain(str(a))
        else:
            self.need_grain(grain)
        return True

    def filter_conjunct(self, pred: exp.Expr) -> None:
        pred = normalise_predicate(pred)
        cols = list(pred.find_all(exp.Column))
        subject = pred.this if isinstance(pred, exp.Binary | exp.In | exp.Between) else None
        literals_only = all(isinstance(n, exp.Literal | exp.Null | exp.Boolean) for n in _operands(pred))
        kind = FilterKind.OTHER
        if isinstance(subject, exp.Column) and len(cols) == 1 and literals_only:
            if isinstance(pred, exp.EQ):
                kind = FilterKind.EQ
                self.eq.append(filter_digest(pred))
            elif isinstance(pred, exp.In):
                kind = FilterKind.IN
            elif isinstance(pred, (*_BOUNDS, exp.Between)):
                kind = FilterKind.RANGE
        for col in cols:
            self.outside(col)
            if column_grain(col, self.info.time_column, self.info.grains) is None:
                name = self.name(col)
                previous = self.filters.get(name)
                self.filters[name] = kind if previous in (None, kind) else FilterKind.OTHER
        self.walk(pred)

    def outside(self, node: exp.Expr) -> None:
        """A node outside aggregates: a time grain, or a column that must be a dimension."""
        grain = column_grain(node, self.info.time_column, self.info.grains)
        if grain == "exact":
            raise Unservable(f"{self.info.time_column} is used at full precision")
        if grain is not None:
            self.need_grain(grain)
        elif isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            self.columns.add(self.name(node))

    def walk(self, root: exp.Expr) -> None:
        queue: deque[exp.Expr] = deque([root])
        while queue:
            node = queue.popleft()
            if isinstance(node, exp.Window):
                raise Unservable("window functions are answered from raw tiers")
            if isinstance(node, exp.Filter) and isinstance(node.this, exp.AggFunc):
                self.walk(node.expression)
                self.aggregate(node.this)
                continue
            if isinstance(node, exp.AggFunc):
                self.aggregate(node)
                continue
            if isinstance(node, exp.Column | exp.Cast | exp.TimestampTrunc | exp.DateTrunc | exp.TimeTrunc):
                grain = column_grain(node, self.info.time_column, self.info.grains)
                if grain not in (None, "exact"):
                    self.need_grain(str(grain))
                    continue
                if isinstance(node, exp.Column):
                    self.outside(node)
                    continue
            queue.extend(node.iter_expressions())

    def aggregate(self, agg: exp.Expr) -> None:
        arg = agg.this

        def column(e: exp.Expr | None) -> str:
            if not isinstance(e, exp.Column):
                raise Unservable(f"{agg.sql(dialect=DIALECT)} aggregates an expression, not a column")
            if column_grain(e, self.info.time_column, self.info.grains) is not None:
                raise Unservable(f"{agg.sql(dialect=DIALECT)} aggregates the time column")
            return self.name(e)

        if isinstance(agg, exp.Count):
            if isinstance(arg, exp.Distinct):
                for e in arg.expressions:  # exact only over dimensions
                    self.columns.add(column(e))
            elif (
                arg is None
                or isinstance(arg, exp.Star)
                or (isinstance(arg, exp.Literal) and not arg.is_string)
            ):
                self.measures.add("count")
            elif isinstance(arg, exp.Case):
                self.case(arg, count=True)
            else:
                self.measures.add(f"count({column(arg)})")
        elif isinstance(agg, exp.Sum):
            if isinstance(arg, exp.Case):
                self.case(arg, count=False)
            else:
                self.measures.add(f"sum({column(arg)})")
        elif isinstance(agg, exp.Avg):
            c = column(arg)
            self.measures.update((f"sum({c})", f"count({c})"))
        elif isinstance(agg, exp.Min | exp.Max):
            self.measures.add(f"{'min' if isinstance(agg, exp.Min) else 'max'}({column(arg)})")
        elif isinstance(agg, exp.ApproxDistinct):
            self.measures.add(f"hll({column(arg)}, {HLL_ADVICE_LG_K})")
        else:
            raise Unservable(f"{agg.key.upper()} cannot be computed from mergeable states")

    def case(self, case: exp.Case, count: bool) -> None:
        default = case.args.get("default")
        if default is not None and not isinstance(default, exp.Null):
            raise Unservable("CASE with an ELSE value inside an aggregate")
        for when in case.args.get("ifs", []):
            self.walk(when.this)
            then = when.args.get("true")
            if count and isinstance(then, exp.Literal) and not then.is_string:
                continue
            if not isinstance(then, exp.Column):
                raise Unservable("an aggregate of CASE needs a constant or a column")
            self.measures.add(f"{'count' if count else 'sum'}({self.name(then)})")


def _operands(pred: exp.Expr) -> Iterable[exp.Expr]:
    if isinstance(pred, exp.In):
        return list(pred.expressions)
    if isinstance(pred, exp.Between):
        return [pred.args["low"], pred.args["high"]]
    if isinstance(pred, exp.Binary):
        return [pred.expression]
    return [pred]


def extract(
    tree: exp.Expr,
    infos: dict[str, TableInfo],
    names: Names,
    now: dt.datetime,
    spelled: dict[str, dict[str, str]] | None = None,
) -> Shape:
    """The shape of a statement a rollup could answer; :class:`Unservable` if none could."""
    shape, start = extract_timeless(tree, infos, names, spelled)
    return with_lookback(shape, start, now)


def with_lookback(shape: Shape, start: dt.datetime | None, now: dt.datetime) -> Shape:
    """``shape`` reading from ``start`` on, seen at ``now`` (the look-back is the only part of a
    shape that changes with the clock)."""
    lookback = None if start is None else max(0.0, (now - start).total_seconds())
    return shape if lookback == shape.lookback_s else replace(shape, lookback_s=lookback)


def extract_timeless(
    tree: exp.Expr,
    infos: dict[str, TableInfo],
    names: Names,
    spelled: dict[str, dict[str, str]] | None = None,
) -> tuple[Shape, dt.datetime | None]:
    """:func:`extract` without the look-back, and the earliest time the statement reads (None:
    unbounded): both depend on the tree alone (literal bounds), so a caller can keep them per
    tree and apply the clock with :func:`with_lookback`."""
    if not isinstance(tree, exp.Select):
        raise Unservable("not a SELECT")
    try:
        table, info = locate_table(tree, infos, names)
    except Reject as r:
        raise Unservable(r.reason) from None
    except TierflightError as exc:  # a name only the server resolves (system tables)
        raise Unservable(str(exc)) from None
    if tree.args.get("qualify") is not None:
        raise Unservable("QUALIFY is answered from raw tiers")
    c = _Collector(info, (spelled or {}).get(info.name, dict(info.spelled)))
    for pred in conjuncts(tree.args.get("where")):
        if not c.time_conjunct(pred):
            c.filter_conjunct(pred)
    c.columns.clear()  # WHERE columns are filters (kept in c.filters); the rest are grouped by
    for e in tree.expressions:
        c.walk(e)
    for key in ("group", "having", "order"):
        clause = tree.args.get(key)
        if clause is not None:
            c.walk(clause)
    rng = table_time_range(table, info.time_column, info.grains)
    eq = tuple(sorted(set(c.eq))) if len(c.eq) == 1 else ()  # one shared filter at most
    shape = Shape(
        table=info.name,
        grain=c.grain,
        columns=tuple(sorted(c.columns)),
        filters=tuple(sorted(c.filters.items())),
        measures=tuple(sorted(c.measures, key=lambda m: (m != "count", m))),
        eq_filters=eq,
    )
    return shape, rng.start
