"""Issue 22, part 3: the spellings dashboards write that rollups now answer, each checked
through a server against DuckDB over the flat copy (same rows, same column names), with the
route asserted; and the look-alikes that must stay raw, checked the same way.

The routing decisions themselves (rewritten SQL, every rejection) are the fixture cases of
tests/fixtures/router/routes/spellings.sql; here they meet real data.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlglot import exp

from differential import assert_same
from tierflight.rollups.definition import DERIVABLE
from tierflight.router.spellings import needed_grain
from tierflight.router.timerange import column_grain

# (statement, the rollup(s) the route reads: "raw" for none)
ROUTED: list[tuple[str, str]] = [
    # Parts of a time, from a rollup with that grain or a finer one.
    ("SELECT extract(hour FROM ts) AS hod, count(*) FROM events GROUP BY 1", "hour_type"),
    ("SELECT date_part('hour', ts) AS h, sum(bid_price) AS spend FROM events GROUP BY 1", "hour_type"),
    ("SELECT hour(ts) AS h, count(*) AS n FROM events WHERE extract(hour FROM ts) BETWEEN 9 AND 17 GROUP BY hour(ts)", "hour_type"),
    (
        "SELECT extract(dow FROM ts) AS dow, avg(bid_price) AS a FROM events "
        "WHERE day >= DATE '2024-10-01' AND day < DATE '2024-11-01' GROUP BY 1",
        "day_type",
    ),
    ("SELECT dayofweek(ts) AS d, isodow(ts) AS i, type, count(*) FROM events GROUP BY 1, 2, 3", "day_type"),
    ("SELECT extract(year FROM ts) AS y, extract(month FROM ts) AS m, count(*) FROM events GROUP BY 1, 2", "day_type"),
    ("SELECT advertiser_id, year(ts) AS y, month(ts) AS m, sum(bid_price) FROM events GROUP BY 1, 2, 3", "month_advertiser_type"),
    ("SELECT extract(week FROM ts) AS w, count(*) FROM events GROUP BY 1", "day_type"),
    # Unaligned ends: whole hours from the rollup, the edges' hour buckets from the raw tiers.
    (
        "SELECT extract(hour FROM ts) AS h, count(*), sum(bid_price) FROM events "
        "WHERE ts >= TIMESTAMP '2024-10-01 12:30:00' AND ts < TIMESTAMP '2024-10-03 08:15:00' GROUP BY 1",
        "hour_type",
    ),
    (
        "SELECT day, count(*) AS n, rank() OVER (ORDER BY count(*) DESC, day) AS r FROM events "
        "WHERE ts >= TIMESTAMP '2024-10-01 12:30:00' AND ts < TIMESTAMP '2024-10-09 08:15:00' GROUP BY day",
        "day_type",
    ),
    ("SELECT dayofweek(day) AS d, count(*) FROM events GROUP BY 1", "day_type"),
    (
        "SELECT extract(minute FROM ts) AS m, count(*) FROM events "
        "WHERE type = 'impression' AND ts >= TIMESTAMP '2024-11-01' GROUP BY 1",
        "minute_impressions",
    ),
    # Coarser truncations and a day of a finer bucket.
    ("SELECT date_trunc('year', ts) AS y, date_trunc('quarter', ts) AS q, count(*) FROM events GROUP BY 1, 2", "day_type"),
    ("SELECT advertiser_id, CAST(date_trunc('year', ts) AS DATE) AS y, count(*) FROM events GROUP BY 1, 2", "month_advertiser_type"),
    ("SELECT type, count(*) FROM events WHERE date_trunc('quarter', ts) = TIMESTAMP '2024-10-01' GROUP BY type", "day_type"),
    ("SELECT CAST(hour AS DATE) AS d, CAST(minute AS DATE) AS d2, count(*) FROM events GROUP BY 1, 2", "day_type"),
    # Superset's week variants and its time-series ORDER BY on the alias.
    (
        "SELECT date_trunc('week', ts + INTERVAL 1 DAY) - INTERVAL 1 DAY AS __timestamp, count(*) AS count FROM events "
        "GROUP BY date_trunc('week', ts + INTERVAL 1 DAY) - INTERVAL 1 DAY ORDER BY __timestamp",
        "day_type",
    ),
    ("SELECT date_trunc('week', ts + INTERVAL 1 DAY) + INTERVAL 5 DAY AS w, sum(bid_price) FROM events GROUP BY 1", "day_type"),
    ("SELECT date_trunc('week', ts) + INTERVAL 6 DAY AS w, count(*) FROM events GROUP BY 1", "day_type"),
    ("SELECT date_trunc('year', ts + INTERVAL 3 HOUR) AS y, count(*) FROM events GROUP BY 1", "hour_type"),
    (
        "SELECT date_trunc('day', ts) AS ts, count(*) AS count FROM events "
        "GROUP BY date_trunc('day', ts) ORDER BY ts LIMIT 1000",
        "day_type",
    ),
    (
        "SELECT date_trunc('hour', ts) AS ts, sum(bid_price) AS spend FROM events WHERE ts >= TIMESTAMP '2024-10-01' "
        "AND ts < TIMESTAMP '2024-10-08' GROUP BY date_trunc('hour', ts) ORDER BY ts DESC",
        "hour_type",
    ),
    # Windows over the grouped rows.
    ("SELECT type, count(*) AS n, rank() OVER (ORDER BY count(*) DESC) AS r FROM events GROUP BY type", "country_type"),
    (
        "SELECT day, sum(bid_price) AS s, sum(sum(bid_price)) OVER (ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) "
        "AS week_total FROM events WHERE day >= DATE '2024-10-01' AND day < DATE '2024-11-01' GROUP BY day ORDER BY day",
        "day_type",
    ),
    (
        "SELECT type, day, count(*) AS n, count(*) - lag(count(*)) OVER (PARTITION BY type ORDER BY day) AS delta "
        "FROM events GROUP BY type, day",
        "day_type",
    ),
    ("SELECT country, count(*) AS n, count(*) OVER () AS countries FROM events GROUP BY country", "country_type"),
    (
        "SELECT country, type, sum(bid_price) AS spend, row_number() OVER (PARTITION BY country "
        "ORDER BY count(*) DESC, type) AS rn FROM events GROUP BY country, type",
        "country_type",
    ),
    (
        "SELECT type, day, count(*) AS n FROM events GROUP BY type, day "
        "QUALIFY row_number() OVER (PARTITION BY type ORDER BY n DESC, day) = 1",
        "day_type",
    ),
    # Aggregate subqueries and CTEs routed on their own.
    ("WITH d AS (SELECT day, sum(bid_price) AS s FROM events GROUP BY day) SELECT avg(s), max(s) FROM d", "day_type"),
    ('WITH d AS (SELECT day, sum(bid_price) FROM events GROUP BY day) SELECT max("sum(bid_price)") FROM d', "day_type"),
    ("SELECT max(n) AS top FROM (SELECT type, count(*) AS n FROM events GROUP BY type) AS t", "country_type"),
    (
        "WITH a AS (SELECT day, count(*) AS n FROM events GROUP BY day), "
        "b AS (SELECT day, count(*) AS c FROM events WHERE type = 'click' GROUP BY day) "
        "SELECT a.day, b.c / a.n AS ctr FROM a JOIN b ON a.day = b.day ORDER BY a.day",
        "day_type,day_type",
    ),
    (
        "SELECT count(*) FROM events WHERE day = DATE '2024-10-05' "
        "AND bid_price > (SELECT avg(bid_price) FROM events WHERE day = DATE '2024-10-05')",
        "day_type",
    ),
    ("SELECT type, count(*) FROM events GROUP BY type UNION ALL SELECT 'all', count(*) FROM events", "country_type,country_type"),
    ("SELECT (SELECT count(*) FROM events WHERE type = 'click') AS clicks", "country_type"),
    # Inclusive ends on the last microsecond of a bucket.
    (
        "SELECT hour, count(*) FROM events WHERE ts >= TIMESTAMP '2024-10-01 00:00:00' "
        "AND ts <= TIMESTAMP '2024-10-01 11:59:59.999999' GROUP BY hour",
        "hour_type",
    ),
    (
        "SELECT type, count(*) FROM events WHERE ts BETWEEN TIMESTAMP '2024-10-01' "
        "AND TIMESTAMP '2024-10-31 23:59:59.999999' GROUP BY type",
        "day_type",
    ),
    (
        "SELECT type, count(*) FROM events WHERE ts > TIMESTAMP '2024-09-30 23:59:59.999999' "
        "AND ts < TIMESTAMP '2024-10-02' GROUP BY type",
        "day_type",
    ),
    # A filtered rollup's filter, spelled otherwise.
    ("SELECT minute, count(*) FROM events WHERE type IN ('impression') AND day = DATE '2024-11-15' GROUP BY minute", "minute_impressions"),
    ("SELECT minute, count(*) FROM events WHERE ('impression' = type) AND day = DATE '2024-11-15' GROUP BY minute", "minute_impressions"),
]

# Look-alikes a rollup cannot answer exactly: raw, and still right.
RAW: list[str] = [
    "SELECT extract(minute FROM ts) AS m, count(*) FROM events GROUP BY 1",
    "SELECT extract(second FROM ts) AS s, count(*) FROM events WHERE day = DATE '2024-10-05' GROUP BY 1",
    "SELECT advertiser_id, extract(dow FROM ts) AS dow, sum(bid_price) FROM events GROUP BY 1, 2",
    "SELECT date_trunc('week', ts + INTERVAL 90 MINUTE) AS w, count(*) FROM events GROUP BY 1",
    "SELECT date_trunc('day', ts) AS ts, count(*) FROM events WHERE day = DATE '2024-10-05' GROUP BY ts",
    "SELECT type, sum(bid_price) OVER (PARTITION BY type) AS s FROM events WHERE day = DATE '2024-10-05'",
    "SELECT k, (SELECT count(*) FROM events i WHERE i.type = x.k) AS n FROM (VALUES ('click'), ('serve')) AS x(k)",
    "SELECT k, (SELECT count(*) FROM events WHERE type = k) AS n FROM (VALUES ('click'), ('serve')) AS x(k)",
    "WITH events AS (SELECT * FROM events WHERE type = 'click'), d AS (SELECT day, count(*) AS n FROM events GROUP BY day) "
    "SELECT sum(n) FROM d",
    "SELECT minute, count(*) FROM events WHERE type IN ('impression', 'click') AND day = DATE '2024-11-15' GROUP BY minute",
    "SELECT (SELECT count(*) FROM events WHERE type = 'click')",
    "SELECT day, sum(count(*)) OVER w AS running FROM events GROUP BY day WINDOW w AS (ORDER BY day)",
]


# The raw planner names this column after the text it runs (the tier sources spliced into
# the subquery), not the statement's: a raw-planner matter, left to it; only rows compared.
RAW_NAMED_AFTER_SOURCES = "SELECT (SELECT count(*) FROM events WHERE type = 'click')"


def _check(cur: Any, flat: Any, sql: str) -> None:
    cur.execute(sql)
    actual = cur.fetch_arrow_table()
    expected = flat.sql(sql).to_arrow_table()
    if sql != RAW_NAMED_AFTER_SOURCES:
        assert actual.column_names == expected.column_names, sql
    assert_same(actual, expected, sql)


@pytest.mark.parametrize(("sql", "rollups"), ROUTED, ids=[f"routed{i}" for i in range(len(ROUTED))])
def test_spelling_is_answered_by_a_rollup_exactly(sql: str, rollups: str, server: Any, conn: Any, flat: Any) -> None:
    from tierflight.engine.sandbox import check_statement

    route = server.app.router.plan(check_statement(sql))
    assert route.rollup == rollups, f"{sql}: {route.rollup}, rejected {[(r.candidate, r.rule, r.reason) for r in route.rejected]}"
    with conn.cursor() as cur:
        _check(cur, flat, sql)


@pytest.mark.parametrize("sql", RAW, ids=[f"raw{i}" for i in range(len(RAW))])
def test_look_alike_stays_raw_and_exact(sql: str, server: Any, conn: Any, flat: Any) -> None:
    from tierflight.engine.sandbox import check_statement

    assert server.app.router.plan(check_statement(sql)).rollup is None, sql
    with conn.cursor() as cur:
        _check(cur, flat, sql)


def _grain(sql: str) -> str | None:
    import sqlglot

    node = sqlglot.parse_one(sql, read="duckdb")
    return needed_grain(node, lambda n: column_grain(n, "ts", {"day": "day", "week": "week", "hour": "hour"}))


@pytest.mark.parametrize(
    ("sql", "grain"),
    [
        ("extract(hour FROM ts)", "hour"),
        ("extract('minute' FROM ts)", "minute"),
        ("date_part('dow', ts)", "day"),
        ("dayofweek(ts)", "day"),
        ("weekday(ts)", "day"),
        ("extract(week FROM ts)", "week"),
        ("isoyear(ts)", "week"),
        ("extract(year FROM ts)", "month"),
        ("quarter(ts)", "month"),
        ("date_trunc('year', ts)", "month"),
        ("date_trunc('week', ts + INTERVAL 1 DAY) - INTERVAL 1 DAY", "day"),
        ("date_trunc('month', ts - INTERVAL '2 hours')", "hour"),
        ("extract(dow FROM hour)", "day"),
        ("extract(hour FROM day)", "day"),
        ("extract(month FROM week)", "week"),
        ("CAST(hour AS DATE)", "day"),
        ("extract(second FROM ts)", None),
        ("extract(epoch FROM ts)", None),
        ("date_trunc('week', ts + INTERVAL 1 MONTH)", None),
        ("date_trunc('hour', ts + INTERVAL 1 DAY)", None),
        ("extract(hour FROM ts + INTERVAL 1 HOUR)", None),
        ("ts + INTERVAL 1 DAY", None),
    ],
)
def test_needed_grain(sql: str, grain: str | None) -> None:
    assert _grain(sql) == grain


def test_parts_of_days_are_not_derived_from_weeks_or_months() -> None:
    """extract(dow) needs days: a week or month bucket does not know its rows' weekdays; a
    year needs months: a week may span two years."""
    assert "day" not in DERIVABLE["week"] and "day" not in DERIVABLE["month"]
    assert _grain("extract(dow FROM ts)") == "day"
    assert _grain("extract(year FROM ts)") == "month" and "month" not in DERIVABLE["week"]


def test_only_the_node_kinds_facts_ask_about_can_be_time_expressions() -> None:
    """TableInfo.needed_grain answers None at once for any other kind of node: every kind
    spellings.needed_grain reads a grain from must be among them."""
    from tierflight.router.facts import _TIME_NODES
    from tierflight.router.spellings import _PART_NODES

    assert all(issubclass(kind, _TIME_NODES) for kind in _PART_NODES)
    for kind in (exp.Column, exp.Cast, exp.TryCast, exp.TimestampTrunc, exp.DateTrunc, exp.TimeTrunc, exp.Extract, exp.Anonymous, exp.Add, exp.Sub):
        assert issubclass(kind, _TIME_NODES), kind
