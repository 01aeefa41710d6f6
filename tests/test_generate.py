"""Demo data generator: schema, determinism, funnel invariants, skew and Parquet output."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tierflight.demo.generate import (
    EVENTS_SCHEMA,
    generate_days,
    generate_to_hive,
    rows_per_day,
)

START = dt.date(2024, 1, 1)  # a Monday, so the week's shape is easy to reason about
DAYS = 7
ROWS = 200_000
SEED = 42


@pytest.fixture(scope="module")
def days() -> list[tuple[dt.date, pa.Table]]:
    return list(generate_days(ROWS, START, DAYS, SEED))


@pytest.fixture(scope="module")
def events(days: list[tuple[dt.date, pa.Table]]) -> pa.Table:
    return pa.concat_tables(t for _, t in days)


def query(events: pa.Table, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    con.register("events", events)
    return con.execute(sql).fetchall()


def scalar(events: pa.Table, sql: str) -> object:
    return query(events, sql)[0][0]


def test_schema_is_exact(days: list[tuple[dt.date, pa.Table]]) -> None:
    assert EVENTS_SCHEMA.names == [
        "ts",
        "type",
        "auction_id",
        "advertiser_id",
        "publisher_id",
        "bid_price",
        "user_id",
        "total_price",
        "country",
    ]
    assert EVENTS_SCHEMA.field("ts").type == pa.timestamp("us")  # naive: no tz
    for _, table in days:
        assert table.schema.equals(EVENTS_SCHEMA, check_metadata=True)


@pytest.mark.parametrize(("rows", "n_days"), [(ROWS, DAYS), (12_345, 5), (7, 3), (1, 1), (0, 2), (3, 10)])
def test_row_count_is_exact(rows: int, n_days: int) -> None:
    tables = list(generate_days(rows, START, n_days, SEED))
    assert [d for d, _ in tables] == [START + dt.timedelta(days=i) for i in range(n_days)]
    assert sum(t.num_rows for _, t in tables) == rows
    assert [t.num_rows for _, t in tables] == rows_per_day(rows, START, n_days)


def test_rows_per_day_follows_the_week() -> None:
    counts = rows_per_day(1_000_000, START, 14)
    assert sum(counts) == 1_000_000
    assert counts[:7] == counts[7:] or abs(counts[0] - counts[7]) <= 1
    weekdays, weekend = counts[0:5], counts[5:7]
    assert max(weekend) < 0.8 * min(weekdays)
    with pytest.raises(ValueError):
        rows_per_day(-1, START, 3)
    with pytest.raises(ValueError):
        rows_per_day(10, START, 0)


def test_deterministic_for_a_seed(days: list[tuple[dt.date, pa.Table]]) -> None:
    again = list(generate_days(ROWS, START, DAYS, SEED))
    assert all(a.equals(b) for (_, a), (_, b) in zip(days, again, strict=True))
    other = list(generate_days(ROWS, START, DAYS, SEED + 1))
    assert not any(a.equals(b) for (_, a), (_, b) in zip(days, other, strict=True))
    assert [t.num_rows for _, t in other] == [t.num_rows for _, t in days]


def test_each_day_is_sorted_and_inside_its_day(days: list[tuple[dt.date, pa.Table]]) -> None:
    for day, table in days:
        ts = table.column("ts").to_numpy()
        assert (ts[1:] >= ts[:-1]).all()
        midnight = dt.datetime.combine(day, dt.time())
        assert table.column("ts")[0].as_py() >= midnight
        assert table.column("ts")[-1].as_py() < midnight + dt.timedelta(days=1)


def test_every_auction_has_exactly_one_serve_and_an_ordered_funnel(events: pa.Table) -> None:
    bad = scalar(
        events,
        """
        WITH per AS (
            SELECT auction_id,
                   count(*) FILTER (type = 'serve') AS serves,
                   count(*) FILTER (type = 'impression') AS imps,
                   count(*) FILTER (type = 'click') AS clicks,
                   count(*) FILTER (type = 'purchase') AS buys,
                   min(ts) FILTER (type = 'serve') AS t0,
                   min(ts) FILTER (type = 'impression') AS t1,
                   min(ts) FILTER (type = 'click') AS t2,
                   min(ts) FILTER (type = 'purchase') AS t3,
                   count(DISTINCT advertiser_id) AS advs, count(DISTINCT publisher_id) AS pubs,
                   count(DISTINCT user_id) AS users, count(DISTINCT country) AS countries,
                   count(DISTINCT ts::DATE) AS dates
            FROM events GROUP BY auction_id
        )
        SELECT count(*) FROM per
        WHERE serves <> 1 OR imps > 1 OR clicks > 1 OR buys > 1
           OR (clicks = 1 AND imps = 0) OR (buys = 1 AND clicks = 0)
           OR NOT (t0 < coalesce(t1, t0 + INTERVAL 1 DAY))
           OR NOT (t1 < coalesce(t2, t1 + INTERVAL 1 DAY))
           OR NOT (t2 < coalesce(t3, t2 + INTERVAL 1 DAY))
           OR advs <> 1 OR pubs <> 1 OR users <> 1 OR countries <> 1 OR dates <> 1
        """,
    )
    assert bad == 0
    assert (
        scalar(
            events,
            "SELECT count(*) FROM events WHERE type NOT IN ('serve', 'impression', 'click', 'purchase')",
        )
        == 0
    )


def test_prices_are_set_only_where_they_belong(events: pa.Table) -> None:
    assert (
        scalar(
            events,
            """
            SELECT count(*) FROM events
            WHERE (bid_price IS NOT NULL) <> (type = 'impression')
               OR (total_price IS NOT NULL) <> (type = 'purchase')
            """,
        )
        == 0
    )
    bid_median, bid_lo, bid_hi, total_median = query(
        events,
        """
        SELECT median(bid_price), quantile_cont(bid_price, 0.1), quantile_cont(bid_price, 0.9),
               median(total_price)
        FROM events
        """,
    )[0]
    assert 0.5 < float(bid_median) < 3.0  # type: ignore[arg-type]
    assert float(bid_lo) > 0.3 and float(bid_hi) < 5.0  # type: ignore[arg-type]
    assert 10.0 < float(total_median) < 500.0  # type: ignore[arg-type]


def test_funnel_rates_are_realistic(events: pa.Table) -> None:
    serves, imps, clicks, buys = query(
        events,
        """
        SELECT count(*) FILTER (type = 'serve'), count(*) FILTER (type = 'impression'),
               count(*) FILTER (type = 'click'), count(*) FILTER (type = 'purchase')
        FROM events
        """,
    )[0]
    assert 0.72 < imps / serves < 0.78  # type: ignore[operator]
    assert 0.015 < clicks / imps < 0.045  # type: ignore[operator]
    assert 0.03 < buys / clicks < 0.15  # type: ignore[operator]


def test_auction_ids_are_uuid4_text(events: pa.Table) -> None:
    pattern = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert (
        scalar(events, f"SELECT count(*) FROM events WHERE NOT regexp_full_match(auction_id, '{pattern}')")
        == 0
    )
    assert scalar(events, "SELECT count(DISTINCT auction_id) = count(*) FROM events WHERE type = 'serve'")


def test_entities_are_skewed(events: pa.Table) -> None:
    counts = [
        int(c)  # type: ignore[call-overload]
        for (c,) in query(events, "SELECT count(*) c FROM events GROUP BY advertiser_id ORDER BY c DESC")
    ]
    assert len(counts) > 500
    assert counts[0] > 20 * counts[len(counts) // 2]
    assert int(scalar(events, "SELECT count(DISTINCT publisher_id) FROM events")) > 300  # type: ignore[call-overload]
    users = int(scalar(events, "SELECT count(DISTINCT user_id) FROM events"))  # type: ignore[call-overload]
    assert 10_000 < users < ROWS
    countries = query(events, "SELECT country, count(*) c FROM events GROUP BY 1 ORDER BY c DESC")
    assert 8 <= len(countries) <= 12
    assert countries[0][0] == "US"
    assert all(len(str(c)) == 2 and str(c).isupper() for c, _ in countries)


def test_daily_cycle_is_quiet_at_night(events: pa.Table) -> None:
    night, afternoon = query(
        events,
        """
        SELECT count(*) FILTER (hour(ts) BETWEEN 2 AND 5), count(*) FILTER (hour(ts) BETWEEN 14 AND 17)
        FROM events
        """,
    )[0]
    assert night < 0.5 * afternoon  # type: ignore[operator]


def test_generate_to_hive_matches_generate_days(days: list[tuple[dt.date, pa.Table]], tmp_path: Path) -> None:
    stats = generate_to_hive(tmp_path, ROWS, START, DAYS, SEED, progress=False)
    assert (stats.rows, stats.files) == (ROWS, DAYS)
    files = sorted(tmp_path.glob("day=*/part-0.parquet"))
    assert [f.parent.name for f in files] == [f"day={d.isoformat()}" for d, _ in days]
    assert stats.bytes == sum(f.stat().st_size for f in files)
    # Days are built on a thread pool, out of order: the rows must not depend on that.
    for (day, table), f in zip(days, files, strict=True):
        assert pq.read_table(f).equals(table), day
    rows_in_wrong_day = (
        duckdb.connect()
        .execute(
            f"SELECT count(*) FROM read_parquet('{tmp_path}/day=*/*.parquet', hive_partitioning = true) "
            "WHERE ts::DATE <> day"
        )
        .fetchall()
    )
    assert rows_in_wrong_day == [(0,)]


def test_generate_to_hive_write_day_hook(days: list[tuple[dt.date, pa.Table]], tmp_path: Path) -> None:
    seen: dict[dt.date, pa.Table] = {}
    lock = threading.Lock()

    def write_day(day: dt.date, table: pa.Table) -> int:
        with lock:  # called from the worker threads
            assert day not in seen
            seen[day] = table
        return 1

    stats = generate_to_hive(tmp_path, ROWS, START, DAYS, SEED, progress=False, write_day=write_day)
    assert (stats.rows, stats.files, stats.bytes) == (ROWS, DAYS, DAYS)
    assert not list(tmp_path.iterdir())
    assert all(seen[day].equals(table) for day, table in days)
