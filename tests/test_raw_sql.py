"""The SQL the raw planner generates: only the derived columns a statement reads, and the
warm tier's day read from its partition directories (a filter on it is pruned by file)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import RunningServer
from differential import assert_same
from tierflight.engine.sandbox import check_statement
from tierflight.router.raw import derived_read

DERIVED = {
    "day": "CAST(ts AS DATE)",
    "week": "CAST(date_trunc('week', ts) AS DATE)",
    "hour": "date_trunc('hour', ts)",
    "minute": "date_trunc('minute', ts)",
}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT count(*) FROM events", set()),
        ("SELECT day, count(*) FROM events GROUP BY day", {"day"}),
        ("SELECT hour, sum(bid_price) FROM events WHERE day = DATE '2024-10-05' GROUP BY ALL", {"day", "hour"}),
        ("SELECT e.Minute FROM events AS e ORDER BY 1 LIMIT 3", {"minute"}),
        ("SELECT count(*) FROM events a JOIN events b USING (auction_id, week)", {"week"}),
        ("SELECT * FROM events LIMIT 1", None),
        ("SELECT events.* FROM events LIMIT 1", None),
        ("SELECT * EXCLUDE (minute) FROM events LIMIT 1", None),
        ("SELECT COLUMNS('d.*') FROM events LIMIT 1", None),
        ("SELECT count(*) FROM events NATURAL JOIN events", None),
        ("SELECT e FROM events AS e LIMIT 1", None),
        ("WITH x AS (SELECT * FROM events) SELECT minute FROM x LIMIT 1", None),
        ("DESCRIBE events", None),
        ("SELECT country FROM (PIVOT events ON type USING count(*)) ORDER BY 1", None),
    ],
)
def test_derived_columns_a_statement_reads(sql: str, expected: set[str] | None) -> None:
    relations = {"events", "e", "a", "b", "x"}
    got = derived_read(check_statement(sql).tree, DERIVED, relations)
    assert got == (None if expected is None else frozenset(expected))


def test_a_derived_column_keeps_the_one_it_is_defined_on() -> None:
    chained = {**DERIVED, "day_name": "dayname(day)"}
    got = derived_read(check_statement("SELECT day_name, count(*) FROM events GROUP BY 1").tree, chained, {"events"})
    assert got == frozenset({"day_name", "day"})


WARM_DAYS = (
    "SELECT day, country, count(*) AS n, sum(bid_price) AS s FROM events "
    "WHERE day BETWEEN DATE '2024-11-01' AND DATE '2024-11-07' GROUP BY ALL ORDER BY ALL"
)
ACROSS_TIERS = (
    "SELECT week, day, count(*) AS n FROM events WHERE day >= DATE '2024-09-25' AND day < DATE '2024-10-10' "
    "GROUP BY ALL ORDER BY ALL"
)


def _route(server: RunningServer, sql: str) -> Any:
    from tierflight.engine.sandbox import check_statement as check

    return server.app.router.raw.plan(check(sql))


def test_the_warm_day_comes_from_the_partition_and_answers_match(conn: Any, flat: Any, server: RunningServer) -> None:
    route = _route(server, WARM_DAYS)
    assert "hive_partitioning = true" in route.sql and "date_trunc('minute'" not in route.sql
    for sql in (WARM_DAYS, ACROSS_TIERS):
        with conn.cursor() as cur:
            cur.execute(sql)
            assert_same(cur.fetch_arrow_table(), flat.sql(sql).to_arrow_table(), sql)
    across = _route(server, ACROSS_TIERS)
    assert {p.tier for p in across.parts} >= {"cold", "warm"} and "UNION ALL BY NAME" in across.sql
    assert across.sql.count("hive_partitioning = true") == 2  # both tiers give the day: no branch computes it
    assert '"ts_day" AS "day"' in across.sql


def test_a_cold_file_outside_a_day_directory_has_its_date_computed() -> None:
    from tierflight.tiers.cold import _partition_dir

    assert _partition_dir("/data/iceberg/t/data/ts_day=2024-06-14/part.parquet") == "ts_day"
    assert _partition_dir("/data/iceberg/t/data/part.parquet") is None
    assert _partition_dir("/x=1/data/ts_day=2024-06-14/part.parquet") is None  # another key DuckDB would add


def test_a_star_keeps_the_view_and_its_column_order(conn: Any, flat: Any, server: RunningServer) -> None:
    sql = "SELECT * FROM events WHERE day = DATE '2024-11-03' ORDER BY ts, auction_id, type LIMIT 50"
    assert "hive_partitioning = true" not in _route(server, sql).sql
    with conn.cursor() as cur:
        cur.execute(sql)
        got = cur.fetch_arrow_table()
    expected = flat.sql(sql).to_arrow_table()
    assert got.schema.names == expected.schema.names
    assert_same(got, expected, sql)
