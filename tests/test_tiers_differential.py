"""Raw queries across cold (Iceberg), warm (Parquet) and the hot tail equal one flat table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from conftest import TEST_SEED, RunningServer, make_config, start_in_process
from differential import assert_same, parse_workload

FIXTURE = Path(__file__).parent / "fixtures" / "raw_queries.sql"
QUERIES = parse_workload(FIXTURE.read_text())
HOT_START = dt.date(2024, 12, 1)
HOT_DAYS = 31


@pytest.fixture(scope="module")
def hot_rows() -> pa.Table:
    from tierflight.demo.generate import generate_days

    return pa.concat_tables(t for _, t in generate_days(20_000, HOT_START, HOT_DAYS, TEST_SEED + 1))


@pytest.fixture(scope="module")
def tiered(data_dir: Path, hot_rows: pa.Table) -> Iterator[RunningServer]:
    running = start_in_process(make_config(data_dir))
    store = running.app.stores["events"]
    store.hot.append(hot_rows.cast(store.schema))
    yield running
    running.server.shutdown()
    running.app.close()


@pytest.fixture(scope="module")
def oracle(flat: Any, hot_rows: pa.Table) -> Iterator[Any]:
    """The session's flat copy plus the hot rows, in a cursor of its own."""
    cur = flat.cursor()
    cur.register("hot_src", hot_rows)
    cur.execute(
        "CREATE TEMP TABLE events AS SELECT * FROM main.events UNION ALL "
        "SELECT *, CAST(ts AS DATE) AS day, CAST(date_trunc('week', ts) AS DATE) AS week, "
        "date_trunc('hour', ts) AS hour, date_trunc('minute', ts) AS minute FROM hot_src"
    )
    yield cur
    cur.close()


def test_fixture_covers_all_tiers(tiered: RunningServer) -> None:
    tiers = {p.tier for p in tiered.app.stores["events"].partitions()}
    assert tiers == {"cold", "warm", "hot"}


@pytest.mark.parametrize(("name", "sql"), QUERIES, ids=[n for n, _ in QUERIES])
def test_raw_query_matches_flat(name: str, sql: str, tiered: RunningServer, oracle: Any) -> None:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(tiered.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        actual = cur.fetch_arrow_table()
    expected = oracle.sql(sql).to_arrow_table()
    assert_same(actual, expected, sql)


def test_pruning_reads_only_needed_partitions(tiered: RunningServer) -> None:
    from tierflight.engine.sandbox import check_statement

    route = tiered.app.router.plan(check_statement("SELECT count(*) FROM events WHERE day = DATE '2024-10-10'"))
    assert [p.tier for p in route.parts] == ["warm"]
    assert "1 partitions" in route.parts[0].source
    route = tiered.app.router.plan(
        check_statement("SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2024-09-30' AND ts < TIMESTAMP '2024-10-05'")
    )
    by_tier = {p.tier: p.source for p in route.parts}
    assert set(by_tier) == {"cold", "warm"}
    assert "3 partitions" in by_tier["cold"] and "2 partitions" in by_tier["warm"]


def test_cold_planning_is_cached_per_snapshot(tiered: RunningServer) -> None:
    from tierflight.engine.sandbox import check_statement

    cold = tiered.app.stores["events"].cold
    statement = check_statement("SELECT count(*) FROM events WHERE day = DATE '2024-09-07'")
    tiered.app.router.plan(statement)
    planned = cold.planned
    for _ in range(3):
        tiered.app.router.plan(statement)
    assert cold.planned == planned


def test_explain_route_lists_tiers(tiered: RunningServer) -> None:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(tiered.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN ROUTE SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2024-09-30'")
        table = cur.fetch_arrow_table()
    assert table.column_names[:4] == ["tier", "source", "estimated_rows", "reason"]
    parts = [r for r in table.to_pylist() if r["tier"] != "rejected"]
    assert {r["tier"] for r in parts} == {"cold", "warm", "hot"}
    assert all(r["estimated_rows"] > 0 for r in parts)
    # The aggregate could have used a rollup but the hot tail is not merged into them here.
    rejected = [r for r in table.to_pylist() if r["tier"] == "rejected"]
    assert rejected and all("freshness" in r["reason"] for r in rejected)


def test_system_partitions(tiered: RunningServer, oracle: Any) -> None:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(tiered.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT tier, sum(rows), sum(files), count(*) FROM system.partitions GROUP BY tier ORDER BY tier")
        got = {r[0]: r[1:] for r in cur.fetchall()}
    cold_rows = oracle.execute("SELECT count(*) FROM events WHERE ts < TIMESTAMP '2024-10-03'").fetchall()[0][0]
    warm_rows = oracle.execute(
        "SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2024-10-03' AND ts < TIMESTAMP '2024-12-01'"
    ).fetchall()[0][0]
    assert got["cold"][0] == cold_rows and got["cold"][2] == 32
    assert got["warm"][0] == warm_rows and got["warm"][2] == 58
    assert got["hot"][0] == 20_000


def test_flat_has_rows_in_every_tier(oracle: duckdb.DuckDBPyConnection) -> None:
    # Guard against a vacuous differential run.
    assert oracle.execute("SELECT count(*) FROM events WHERE day < DATE '2024-10-03'").fetchall()[0][0] > 10_000
