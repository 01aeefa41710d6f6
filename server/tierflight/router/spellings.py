"""Time expressions a rollup answers although they are not a truncation to one of its grains.

``grain_of`` (timerange.column_grain) knows truncations: ``day``, ``CAST(ts AS DATE)``,
``date_trunc('hour', ts)``. Dashboards also write parts of a time (``extract(hour FROM ts)``,
``date_part('dow', ts)``, ``hour(ts)``), coarser truncations (``date_trunc('year', ts)``),
shifted weeks (Superset's Sunday weeks: ``date_trunc('week', ts + INTERVAL 1 DAY) - INTERVAL
1 DAY``) and a day of a finer bucket (``CAST(hour AS DATE)``). Each of these is a function of
the time truncated to some grain: ``needed_grain`` names the coarsest such grain, and any
rollup whose grain derives it answers the expression exactly, by the same expression over its
bucket (dimensions.rewrite_time). Pure functions over sqlglot trees.

Only what is exact is named: ``extract(dow ...)`` needs days (a week or month bucket does not
know the weekday of its rows), ``extract(year ...)`` months (a week may span two years).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from tierflight.rollups.definition import DERIVABLE

GrainOf = Callable[[exp.Expr], str | None]

# The grain each part of a time needs (DuckDB's part names and their synonyms). ISO weeks
# (``week``, ``isoyear``, ``yearweek``) are whole Monday weeks; the rest follows the calendar.
PART_GRAIN: dict[str, str] = {
    "minute": "minute",
    "minutes": "minute",
    "hour": "hour",
    "hours": "hour",
    "day": "day",
    "days": "day",
    "dayofmonth": "day",
    "dow": "day",
    "dayofweek": "day",
    "isodow": "day",
    "weekday": "day",
    "doy": "day",
    "dayofyear": "day",
    "week": "week",
    "weeks": "week",
    "weekofyear": "week",
    "isoyear": "week",
    "yearweek": "week",
    "month": "month",
    "months": "month",
    "quarter": "month",
    "quarters": "month",
    "year": "month",
    "years": "month",
    "decade": "month",
    "century": "month",
    "millennium": "month",
}

# Part functions sqlglot parses into their own node (``hour(ts)``, ``dayofweek(ts)``, ...).
_PART_NODES: dict[type[exp.Expr], str] = {
    exp.Minute: "minute",
    exp.Hour: "hour",
    exp.Day: "day",
    exp.DayOfMonth: "day",
    exp.DayOfWeek: "day",
    exp.DayOfWeekIso: "day",
    exp.DayOfYear: "day",
    exp.Week: "week",
    exp.WeekOfYear: "week",
    exp.Month: "month",
    exp.Quarter: "month",
    exp.Year: "month",
}
# Part functions sqlglot leaves anonymous, by name.
_ANONYMOUS_PARTS = {"dow", "weekday", "isoyear", "yearweek", "decade", "century", "millennium"}
_DATE_PART = {"date_part", "datepart"}
# Truncations coarser than the grains rollups store, and the grain whose buckets they are
# unions of.
_COARSE_TRUNC = {"quarter": "month", "year": "month"}
_TRUNC_UNITS = ("minute", "hour", "day", "week", "month", "quarter", "year")
_SHIFT_UNITS = {"minute": "minute", "minutes": "minute", "hour": "hour", "hours": "hour", "day": "day", "days": "day"}
_RANK = {g: i for i, g in enumerate(("minute", "hour", "day", "week", "month"))}
_SHIFT = re.compile(r"\s*([+-]?\d+)\s*([a-z]*)\s*\Z")


def truncation_grain(node: exp.Expr, grain_of: GrainOf) -> str | None:
    """The grain ``node`` truncates the time to, also for ``CAST(<finer bucket> AS DATE)``
    (``CAST(hour AS DATE)`` is the day of ``ts``, a DATE like the day bucket)."""
    grain = grain_of(node)
    if grain is not None:
        return grain
    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.DATE:
        inner = grain_of(node.this)
        if inner in ("exact", "minute", "hour"):
            return "day"
    return None


def needed_grain(node: exp.Expr, grain_of: GrainOf) -> str | None:
    """The grain a rollup must derive to compute ``node`` from its buckets: ``"exact"`` for
    the time column itself, None when ``node`` is not a time expression the router knows."""
    grain = truncation_grain(node, grain_of)
    if grain is not None:
        return grain
    part = _part(node)
    if part is not None:
        name, arg = part
        return _of_part(PART_GRAIN.get(name), needed_grain(arg, grain_of))
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc | exp.TimeTrunc):
        return _truncation(node, grain_of)
    if isinstance(node, exp.Add | exp.Sub) and _interval_grain(node.expression) is not None:
        # A bucket moved by a constant interval is still a function of that bucket.
        inner = needed_grain(node.this, grain_of)
        return inner if inner not in (None, "exact") else None
    return None


def _part(node: exp.Expr) -> tuple[str, exp.Expr] | None:
    """(part name, argument) of an extraction of a part of a time, in any spelling."""
    if isinstance(node, exp.Extract):
        unit = node.this
        if isinstance(unit, exp.Var | exp.Literal | exp.Column | exp.Identifier):
            return unit.name.lower(), node.expression
        return None
    name = _PART_NODES.get(type(node))
    if name is not None:
        return name, node.this
    if isinstance(node, exp.Anonymous):
        fname = str(node.this).lower()
        args = node.expressions
        if fname in _ANONYMOUS_PARTS and len(args) == 1:
            return fname, args[0]
        if fname in _DATE_PART and len(args) == 2 and isinstance(args[0], exp.Literal) and args[0].is_string:
            return args[0].name.lower(), args[1]
    return None


def _of_part(part_grain: str | None, inner: str | None) -> str | None:
    """The grain a part of ``inner`` needs: the part's own grain when the inner expression
    keeps it (the time itself, or a finer bucket), else the inner expression's grain."""
    if part_grain is None or inner is None:
        return None
    if inner == "exact" or part_grain in DERIVABLE.get(inner, ()):
        return part_grain
    return inner


def _truncation(node: exp.Expr, grain_of: GrainOf) -> str | None:
    """``date_trunc(unit, x)`` that is not a plain bucket: a coarse unit (quarter, year: unions
    of months), or a time shifted by whole minutes, hours or days (Superset's Sunday weeks)."""
    unit = node.args.get("unit")
    name = (unit.name if unit is not None else "").lower()
    if name not in _TRUNC_UNITS:
        return None
    arg = node.this
    if grain_of(arg) == "exact":
        return _COARSE_TRUNC.get(name)
    if isinstance(arg, exp.Add | exp.Sub) and grain_of(arg.this) == "exact":
        shift = _interval_grain(arg.expression)
        # Shifting by whole ``shift`` units commutes with truncating to ``shift``: the
        # truncation of the shifted time is a function of the ``shift`` bucket, when the
        # unit's boundaries (after the shift) are ``shift`` boundaries.
        if shift is not None and _RANK[shift] <= _RANK.get(_COARSE_TRUNC.get(name, name), 99):
            return shift
    return None


def _interval_grain(node: exp.Expr | None) -> str | None:
    """The grain a constant interval is a whole number of (minute, hour, day), else None."""
    if not isinstance(node, exp.Interval):
        return None
    value = node.this
    if not isinstance(value, exp.Literal):
        return None
    unit = node.args.get("unit")
    text = f"{value.name} {unit.name if unit is not None else ''}".lower()
    m = _SHIFT.match(text)
    if m is None:
        return None
    return _SHIFT_UNITS.get(m.group(2))
