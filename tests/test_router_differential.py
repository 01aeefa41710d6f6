"""Generated statements: tierflight's answer (routed) equals DuckDB over the flat copy.

Statements are drawn from the shapes dashboards send: dimensions and time grains, filters of
every kind (equality, IN, ranges aligned and unaligned to grains, the time column itself),
mergeable measures, ORDER BY / LIMIT. Any mismatch is a router bug: the tolerance is fixed
at a relative 1e-9 for floats (summation order) and exact for everything else.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from conftest import TEST_START
from differential import assert_same

CASES = 520
GROUPINGS = [
    [],
    ["type"],
    ["day"],
    ["day", "type"],
    ["week", "type"],
    ["hour"],
    ["country"],
    ["country", "type"],
    ["advertiser_id", "type"],
    ["publisher_id"],
    ["day", "country"],
    ["minute"],
    ["CAST(ts AS DATE)"],
    ["date_trunc('hour', ts)"],
    ["date_trunc('week', ts)"],
    ["date_trunc('month', ts)"],
]
MEASURES = [
    "count(*)",
    "count(1)",
    "count(bid_price)",
    "sum(bid_price)",
    "avg(bid_price)",
    "min(bid_price)",
    "max(total_price)",
    "sum(total_price)",
    "avg(total_price)",
    "count(*) FILTER (WHERE type = 'click')",
    "sum(CASE WHEN type = 'impression' THEN bid_price END)",
    "count(DISTINCT type)",
]
# Values in another case are other values (no rows), never a filtered rollup's value.
TYPES = ["serve", "impression", "click", "purchase", "IMPRESSION", "Click"]
COUNTRIES = ["US", "GB", "DE", "JP", "FR", "BR"]


def _day(rng: random.Random) -> dt.date:
    return TEST_START + dt.timedelta(days=rng.randrange(0, 92))


def _filters(rng: random.Random) -> list[str]:
    out = []
    if rng.random() < 0.4:
        out.append(f"type = '{rng.choice(TYPES)}'")
    if rng.random() < 0.25:
        out.append("country IN (" + ", ".join(f"'{c}'" for c in rng.sample(COUNTRIES, 2)) + ")")
    r = rng.random()
    a = _day(rng)
    b = a + dt.timedelta(days=rng.randrange(0, 20))
    if r < 0.2:
        out.append(f"day BETWEEN DATE '{a}' AND DATE '{b}'")
    elif r < 0.35:
        out.append(f"ts >= TIMESTAMP '{a}' AND ts < TIMESTAMP '{b}'")
    elif r < 0.45:
        hour = rng.randrange(0, 24)
        out.append(f"ts >= TIMESTAMP '{a} {hour:02d}:00:00' AND ts < TIMESTAMP '{b} {hour:02d}:30:00'")
    elif r < 0.55:
        out.append(f"CAST(ts AS DATE) = DATE '{a}'")
    elif r < 0.6:
        out.append(f"week >= DATE '{a - dt.timedelta(days=a.weekday())}'")
    elif r < 0.65:
        out.append(f"date_trunc('day', ts) IN (TIMESTAMP '{a}', TIMESTAMP '{b}')")
    return out


def generate(seed: int) -> str:
    rng = random.Random(seed)
    dims = rng.choice(GROUPINGS)
    measures = rng.sample(MEASURES, rng.randint(1, 3))
    cols = [f"{d} AS d{i}" for i, d in enumerate(dims)] + [f"{m} AS m{i}" for i, m in enumerate(measures)]
    sql = f"SELECT {', '.join(cols)} FROM events"
    filters = _filters(rng)
    if filters:
        sql += " WHERE " + " AND ".join(filters)
    if dims:
        sql += " GROUP BY " + (", ".join(str(i + 1) for i in range(len(dims))) if rng.random() < 0.5 else "ALL")
        if rng.random() < 0.5:
            keys = ", ".join(f"d{i}" for i in range(len(dims)))
            sql += f" ORDER BY m0 DESC NULLS LAST, {keys}"
            if rng.random() < 0.5:
                sql += f" LIMIT {rng.randint(1, 15)}"
    return sql


def test_generated_statements_match_flat(conn: Any, flat: Any, server: Any) -> None:
    routed = 0
    with conn.cursor() as cur:
        for seed in range(CASES):
            sql = generate(seed)
            cur.execute(sql)
            actual = cur.fetch_arrow_table()
            assert_same(actual, flat.sql(sql).to_arrow_table(), f"[seed {seed}] {sql}")
    from tierflight.engine.sandbox import check_statement

    for seed in range(CASES):
        if server.app.router.plan(check_statement(generate(seed))).rollup:
            routed += 1
    # Not vacuous: most generated statements must be answered by rollups.
    assert routed > CASES // 2, f"only {routed} of {CASES} statements used a rollup"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generator_is_deterministic(seed: int) -> None:
    assert generate(seed) == generate(seed)


# Days the minute rollup keeps (retention 90 days before the tests' now).
_RECENT = "day BETWEEN DATE '2024-11-01' AND DATE '2024-11-05'"


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT minute, count(*) AS n FROM events WHERE type = 'IMPRESSION' AND {_RECENT} GROUP BY minute ORDER BY minute",
        f"SELECT count(*) AS n, sum(bid_price) AS s FROM events WHERE type IN ('Impression') AND {_RECENT}",
        # The control: in the filter's own case the filtered rollup answers.
        f"SELECT minute, count(*) AS n FROM events WHERE type = 'impression' AND {_RECENT} GROUP BY minute ORDER BY minute",
    ],
)
def test_string_values_in_another_case_are_other_values(conn: Any, flat: Any, server: Any, sql: str) -> None:
    # A rollup filtered on type = 'impression' holds none of the rows of 'IMPRESSION'.
    from tierflight.engine.sandbox import check_statement

    with conn.cursor() as cur:
        cur.execute(sql)
        assert_same(cur.fetch_arrow_table(), flat.sql(sql).to_arrow_table(), sql)
    route = server.app.router.plan(check_statement(sql))
    assert (route.rollup == "minute_impressions") == ("'impression'" in sql), route.explain_table()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT type, histogram(country) AS h FROM events GROUP BY 1 ORDER BY 1",
        "SELECT type, count_star() AS n, product(1.0) AS p FROM events GROUP BY 1 ORDER BY 1",
        "SELECT country, round(entropy(type), 9) AS e, fsum(bid_price) > 0 AS spent FROM events GROUP BY 1 ORDER BY 1",
    ],
)
def test_aggregates_sqlglot_does_not_know_weigh_events(conn: Any, flat: Any, server: Any, sql: str) -> None:
    # DuckDB aggregates that parse as plain calls: over a rollup they weighed each stored group
    # once (histogram counted rollup rows), so they read the raw tiers.
    from tierflight.engine.sandbox import check_statement

    with conn.cursor() as cur:
        cur.execute(sql)
        assert_same(cur.fetch_arrow_table(), flat.sql(sql).to_arrow_table(), sql)
    assert server.app.router.plan(check_statement(sql)).rollup is None
