"""Superset engine spec for ``tierflight://`` (registered under ``superset.db_engine_specs``).

Superset has no spec for this dialect of its own, and without one every time-series chart
fails (``No grain spec for P1D``). The time grains are written the way the tierflight router
recognises them (``date_trunc('day', ts)`` and friends), so a chart at day, week, month, hour or
minute grain can be answered from a rollup; the others are plain DuckDB.

Import this module only inside Superset (it imports ``superset``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import types
from superset.constants import TimeGrain
from superset.db_engine_specs.base import BaseEngineSpec

# Superset parses chart SQL with sqlglot in the dialect registered for the engine; without an
# entry it falls back to the generic dialect, which misreads DuckDB syntax.
try:
    from sqlglot.dialects.dialect import Dialects
    from superset.sql import parse as _parse

    _parse.SQLGLOT_DIALECTS.setdefault("tierflight", Dialects.DUCKDB)
except (ImportError, AttributeError):  # another Superset layout: the generic dialect it is
    pass

# Superset's week variants, relative to DuckDB's ISO (Monday) weeks.
_SUNDAY_WEEK = "date_trunc('week', {col} + INTERVAL 1 DAY) - INTERVAL 1 DAY"


def _bucket(interval: str) -> str:
    # time_bucket aligns sub-day buckets to midnight (its default origin is a midnight), so
    # 5-minute buckets start at :00, :05, ... and 6-hour buckets at 00, 06, 12, 18.
    return f"time_bucket(INTERVAL '{interval}', {{col}})"


class TierflightEngineSpec(BaseEngineSpec):  # type: ignore[misc]
    engine = "tierflight"
    engine_name = "tierflight"
    default_driver = "adbc"
    drivers = {"adbc": "ADBC Flight SQL (tierflight-client)"}  # noqa: RUF012 (Superset's own class attribute)
    sqlalchemy_uri_placeholder = "tierflight://[user:password@]host:31337[?tls=true]"

    # Read-only server: no CSV upload, no DML.
    supports_file_upload = False
    allows_joins = True
    allows_subqueries = True
    allows_alias_in_select = True
    allows_alias_in_orderby = True

    _time_grain_expressions = {  # noqa: RUF012 (Superset's own class attribute)
        None: "{col}",
        TimeGrain.SECOND: "date_trunc('second', {col})",
        TimeGrain.FIVE_SECONDS: _bucket("5 seconds"),
        TimeGrain.THIRTY_SECONDS: _bucket("30 seconds"),
        TimeGrain.MINUTE: "date_trunc('minute', {col})",
        TimeGrain.FIVE_MINUTES: _bucket("5 minutes"),
        TimeGrain.TEN_MINUTES: _bucket("10 minutes"),
        TimeGrain.FIFTEEN_MINUTES: _bucket("15 minutes"),
        TimeGrain.THIRTY_MINUTES: _bucket("30 minutes"),
        TimeGrain.HALF_HOUR: _bucket("30 minutes"),
        TimeGrain.HOUR: "date_trunc('hour', {col})",
        TimeGrain.SIX_HOURS: _bucket("6 hours"),
        TimeGrain.DAY: "date_trunc('day', {col})",
        TimeGrain.WEEK: "date_trunc('week', {col})",
        TimeGrain.WEEK_STARTING_MONDAY: "date_trunc('week', {col})",
        TimeGrain.WEEK_STARTING_SUNDAY: _SUNDAY_WEEK,
        TimeGrain.WEEK_ENDING_SATURDAY: "date_trunc('week', {col} + INTERVAL 1 DAY) + INTERVAL 5 DAY",
        TimeGrain.WEEK_ENDING_SUNDAY: "date_trunc('week', {col}) + INTERVAL 6 DAY",
        TimeGrain.MONTH: "date_trunc('month', {col})",
        TimeGrain.QUARTER: "date_trunc('quarter', {col})",
        TimeGrain.QUARTER_YEAR: "date_trunc('quarter', {col})",
        TimeGrain.YEAR: "date_trunc('year', {col})",
    }

    @classmethod
    def epoch_to_dttm(cls) -> str:
        # make_timestamp(micros) is a plain TIMESTAMP (to_timestamp would give TIMESTAMPTZ).
        return "make_timestamp(CAST(round({col} * 1000000) AS BIGINT))"

    @classmethod
    def epoch_ms_to_dttm(cls) -> str:
        return "epoch_ms(CAST({col} AS BIGINT))"

    @classmethod
    def convert_dttm(cls, target_type: str, dttm: datetime, db_extra: dict[str, Any] | None = None) -> str | None:
        # CAST('...' AS TIMESTAMP): the router reads these bounds to prune tiers and check
        # that a range is aligned to a rollup's grain.
        sqla_type = cls.get_sqla_column_type(target_type)
        if isinstance(sqla_type, types.Date) and not isinstance(sqla_type, types.DateTime):
            return f"CAST('{dttm.date().isoformat()}' AS DATE)"
        if isinstance(sqla_type, types.DateTime):
            kind = "TIMESTAMPTZ" if "TIME ZONE" in target_type.upper() or target_type.upper() == "TIMESTAMPTZ" else "TIMESTAMP"
            return f"CAST('{dttm.isoformat(sep=' ', timespec='microseconds')}' AS {kind})"
        return None
