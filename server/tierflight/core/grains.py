"""Time grains (truncation, the next period) and constant datetimes written in a statement.

Pure functions over datetimes and sqlglot literals: the rollups bucket by them, the router
aligns statements with them, the cold tier reads AT (TIMESTAMP => ...) with them.
"""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

GRAINS = ("minute", "hour", "day", "week", "month")


def truncate(value: dt.datetime, grain: str) -> dt.datetime:
    if grain == "minute":
        return value.replace(second=0, microsecond=0)
    if grain == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown grain {grain!r}")


def next_boundary(value: dt.datetime, grain: str) -> dt.datetime:
    """The start of the grain period after the one holding ``value``."""
    start = truncate(value, grain)
    if grain == "month":
        return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    step = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1), "week": dt.timedelta(days=7)}[grain]
    return start + step


def literal_datetime(node: exp.Expr) -> dt.datetime | None:
    """A constant date/timestamp in the query, or None if it is anything else."""
    if isinstance(node, exp.Cast | exp.TryCast):
        return literal_datetime(node.this)
    if isinstance(node, exp.Literal) and node.is_string:
        text = node.this
    elif isinstance(node, exp.TimeStrToTime | exp.TsOrDsToDate | exp.StrToTime | exp.DateStrToDate):
        return literal_datetime(node.this)
    else:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).strip().replace(" UTC", "").replace("Z", ""))
    except ValueError:
        return None
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
