"""Superset 6.1 with the tierflight engine spec and dialect, against a subprocess server.

Superset pins SQLAlchemy 1.4, pandas 2.1 and pyarrow 18, so it lives in its own venv (Makefile:
.venv-superset, with ./client[superset] installed); `make test` points TIERFLIGHT_SUPERSET_PYTHON
at it. The script (tests/clients/superset_client.py) lets Superset's own code generate the SQL of
a time-series chart at every time grain and of a table chart; here the answers are checked
against DuckDB over the same rows, with each grain's buckets written independently (epoch
arithmetic, day-of-week offsets) rather than with the engine spec's expressions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import SubprocessServer

CLIENT = Path(__file__).parent / "clients" / "superset_client.py"
SINCE, UNTIL = "2024-10-01 00:00:00", "2024-10-15 00:00:00"

pytestmark = pytest.mark.subprocess


def _seconds(n: int) -> str:
    return f"make_timestamp(epoch_us(ts) // {n * 1_000_000} * {n * 1_000_000})"


_MONDAY = "CAST(ts AS DATE) - CAST(isodow(ts) - 1 AS INTEGER)"
_SUNDAY = "CAST(ts AS DATE) - CAST(dayofweek(ts) AS INTEGER)"
ORACLE_BUCKETS = {
    "PT1S": _seconds(1),
    "PT5S": _seconds(5),
    "PT30S": _seconds(30),
    "PT1M": _seconds(60),
    "PT5M": _seconds(300),
    "PT10M": _seconds(600),
    "PT15M": _seconds(900),
    "PT30M": _seconds(1800),
    "PT0.5H": _seconds(1800),
    "PT1H": _seconds(3600),
    "PT6H": _seconds(6 * 3600),
    "P1D": "CAST(ts AS DATE)",
    "P1W": _MONDAY,
    "1969-12-29T00:00:00Z/P1W": _MONDAY,
    "1969-12-28T00:00:00Z/P1W": _SUNDAY,
    "P1W/1970-01-03T00:00:00Z": f"{_SUNDAY} + 6",
    "P1W/1970-01-04T00:00:00Z": f"{_MONDAY} + 6",
    "P1M": "make_date(year(ts), month(ts), 1)",
    "P3M": "make_date(year(ts), (quarter(ts) - 1) * 3 + 1, 1)",
    "P0.25Y": "make_date(year(ts), (quarter(ts) - 1) * 3 + 1, 1)",
    "P1Y": "make_date(year(ts), 1, 1)",
}


@pytest.fixture(scope="module")
def superset_result(subprocess_server: SubprocessServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = os.environ.get("TIERFLIGHT_SUPERSET_PYTHON")
    if not python:
        pytest.skip("TIERFLIGHT_SUPERSET_PYTHON is not set (run `make test`, which creates .venv-superset)")
    host, port = subprocess_server.uri.removeprefix("grpc://").rsplit(":", 1)
    workdir = tmp_path_factory.mktemp("superset")
    proc = subprocess.run([python, str(CLIENT), host, port, str(workdir)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Superset prints a line about its configuration before the JSON.
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(a, float) or isinstance(b, float):
        return b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return dt.datetime.combine(value, dt.time()).isoformat()


def test_engine_spec_is_found(superset_result: dict[str, Any]) -> None:
    out = superset_result
    assert out["engine_spec"] == "TierflightEngineSpec"
    assert out["spec_by_backend"] == "TierflightEngineSpec"
    # Superset parses the chart SQL as DuckDB's, not in its generic dialect.
    assert out["sqlglot_dialect"].lower().endswith("duckdb")
    # Every grain Superset offers has an expression (no "No grain spec for P1D").
    assert set(out["superset_grains"]) <= set(out["grains"])
    assert set(ORACLE_BUCKETS) == set(out["superset_grains"])


def test_superset_reflection(superset_result: dict[str, Any]) -> None:
    out = superset_result
    assert out["schemas"] == ["main", "system"]
    assert out["tables"] == ["advertisers", "events", "publishers"]
    columns = out["columns"]
    assert columns["ts"] == ["TIMESTAMP", True]
    assert columns["day"] == ["DATE", True]
    assert columns["bid_price"] == ["DOUBLE", False]
    assert columns["advertiser_id"] == ["INTEGER", False]
    assert columns["type"] == ["VARCHAR", False]


@pytest.mark.parametrize("grain", sorted(ORACLE_BUCKETS))
def test_timeseries_chart_at_every_grain(superset_result: dict[str, Any], flat: Any, grain: str) -> None:
    chart = superset_result["timeseries"][grain]
    assert chart["status"] == "success", chart["error"]
    assert "FROM main.events" in chart["sql"]
    expected = flat.execute(
        f"SELECT {ORACLE_BUCKETS[grain]} AS bucket, count(*), sum(bid_price) FROM events "
        f"WHERE ts >= TIMESTAMP '{SINCE}' AND ts < TIMESTAMP '{UNTIL}' AND type = 'impression' "
        "GROUP BY bucket ORDER BY bucket"
    ).fetchall()
    got = sorted(chart["rows"])  # ordered by count, as the chart asks; buckets are unique
    assert [row[0] for row in got] == [_iso(row[0]) for row in expected]
    assert [row[1] for row in got] == [row[1] for row in expected]
    assert all(_same(g[2], e[2]) for g, e in zip(got, expected, strict=True))


def test_day_grain_sql_is_what_the_router_recognises(superset_result: dict[str, Any]) -> None:
    sql = superset_result["timeseries"]["P1D"]["sql"]
    assert "date_trunc('day', ts)" in sql
    assert "ts >= CAST('2024-10-01 00:00:00.000000' AS TIMESTAMP)" in sql


@pytest.mark.parametrize(
    ("grain", "rollup"),
    [("PT1M", "minute_impressions"), ("PT1H", "hour_type"), ("P1D", "day_type"), ("P1W", "day_type"),
     ("P1W/1970-01-04T00:00:00Z", "day_type"), ("P1M", "day_type"),
     # Sunday weeks (the week shifted by a day), weeks ending Saturday, quarters and years.
     ("1969-12-28T00:00:00Z/P1W", "day_type"), ("P1W/1970-01-03T00:00:00Z", "day_type"),
     ("P3M", "day_type"), ("P0.25Y", "day_type"), ("P1Y", "day_type")],
)  # fmt: skip
def test_chart_sql_is_answered_from_rollups(
    superset_result: dict[str, Any], subprocess_server: SubprocessServer, grain: str, rollup: str
) -> None:
    """The engine spec's grain expressions are the router's spellings: these charts read rollups."""
    import tierflight_client

    with tierflight_client.connect(subprocess_server.uri) as conn:
        conn.query(superset_result["timeseries"][grain]["sql"])
        assert conn.last_route is not None and conn.last_route.get("rollup") == rollup, conn.last_route


def test_table_chart_with_filters(superset_result: dict[str, Any], flat: Any) -> None:
    chart = superset_result["table"]
    assert chart["status"] == "success", chart["error"]
    expected = flat.execute(
        "SELECT country, type, count(*) AS n, sum(bid_price) FROM events "
        f"WHERE ts >= TIMESTAMP '{SINCE}' AND ts < TIMESTAMP '{UNTIL}' AND type IN ('impression', 'click') "
        "AND advertiser_id > 100 AND country IS NOT NULL AND publisher_id <> 3 GROUP BY country, type"
    ).fetchall()
    by_key = {(c, t): (n, s) for c, t, n, s in expected}
    got = chart["rows"]
    assert len(got) == min(20, len(expected))
    # ORDER BY n DESC LIMIT 20: ties at the cut may pick either row, the counts may not differ.
    assert [row[2] for row in got] == sorted((n for n, _ in by_key.values()), reverse=True)[: len(got)]
    for country, kind, n, bids in got:
        assert by_key[(country, kind)][0] == n
        assert _same(bids, by_key[(country, kind)][1])


def test_dialect_under_sqlalchemy_14_and_pandas_21(superset_result: dict[str, Any], flat: Any) -> None:
    assert superset_result["sqlalchemy_version"].startswith("1.4.")
    expected = flat.execute(
        "SELECT count(*) FROM events WHERE type = 'click' AND day >= DATE '2024-10-01'"
    ).fetchall()[0][0]
    assert superset_result["read_sql"] == [{"type": "click", "n": expected}]
