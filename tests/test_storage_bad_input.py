"""Bad storage: corrupt, missing or mis-shaped Parquet files, an unreachable or corrupt catalog.

Each is a clear error naming the file or the service (UNAVAILABLE to a client), quickly, never
a hang, never a wrong answer, and never a traceback; statements that do not need the bad file
keep being answered. Every test owns a small data dir.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import RunningServer, start_in_process
from flightsql_helpers import adbc_status, assert_clean_message
from storage_helpers import (
    AGED,
    COLD_DAYS,
    GEN_NOW,
    LATER,
    OLD_BOUNDARY,
    YOUNG,
    build,
    config,
    oracle,
    run_cli,
    split_day,
    store_for,
    warm_dir,
    warm_file,
)
from tierflight.core.errors import StorageUnavailable

# Each test builds a data set (and tiers, rollups or a server) of its own.
pytestmark = pytest.mark.needs_server

BAD = YOUNG[3]
GOOD = YOUNG[5]
# Tier behaviour on its own: no rollups to build, every statement reads the raw tiers.
RAW_ONLY = {"router.enabled": False, "tables.events.rollups": []}


@contextmanager
def serving(data: Path, now: dt.datetime = GEN_NOW, **overrides: Any) -> Iterator[RunningServer]:
    running = start_in_process(config(data, now, **{**RAW_ONLY, **overrides}))
    try:
        yield running
    finally:
        running.server.shutdown()
        running.app.close()


def day_stats(running: RunningServer, day: dt.date) -> tuple[int, int, int]:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*), sum(user_id), count(bid_price) FROM events WHERE day = DATE '{day}'")
        row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1] or 0), int(row[2])


def query_error(running: RunningServer, sql: str) -> tuple[str, str]:
    """(gRPC status, message) of a statement that must fail."""
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        started = time.monotonic()
        with pytest.raises(Exception) as info:
            cur.execute(sql)
            cur.fetchall()
        assert time.monotonic() - started < 10
    message = str(info.value)
    assert_clean_message(message)
    return adbc_status(info.value), message


def one_day(day: dt.date) -> str:
    return f"SELECT count(*) FROM events WHERE day = DATE '{day}'"


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def scribble_footer(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(-64, os.SEEK_END)
        fh.write(b"\x00" * 64)


# -- unreadable or missing files -------------------------------------------------------------


@pytest.mark.parametrize("damage", [truncate, scribble_footer], ids=["truncated", "footer"])
def test_unreadable_warm_file_fails_only_its_day(tmp_path: Path, damage: Any) -> None:
    data = build(tmp_path / "data")
    expected = oracle(data)
    bad = warm_file(data, BAD)
    damage(bad)
    with serving(data) as running:  # the listing notes the file; start-up does not fail
        status, message = query_error(running, one_day(BAD))
        assert status == "UNAVAILABLE" and str(bad) in message
        status, message = query_error(running, "SELECT count(*) FROM events")
        assert status == "UNAVAILABLE" and str(bad) in message
        assert day_stats(running, GOOD) == expected[GOOD]
        assert day_stats(running, COLD_DAYS[1]) == expected[COLD_DAYS[1]]
        parts = {p.partition: p for p in running.app.stores["events"].partitions()}
        assert parts[f"day={BAD}"].tier == "warm"


def test_file_damaged_after_listing_names_it(tmp_path: Path) -> None:
    """Listed while good, truncated under a running server: DuckDB's read error names it."""
    data = build(tmp_path / "data")
    expected = oracle(data)
    with serving(data) as running:
        bad = warm_file(data, BAD)
        truncate(bad)
        status, message = query_error(running, one_day(BAD))
        assert status == "UNAVAILABLE" and str(bad) in message
        assert "LINE 1" not in message  # DuckDB's statement echo (every file of the scan) is cut
        assert day_stats(running, GOOD) == expected[GOOD]


def test_missing_warm_file_names_it(tmp_path: Path) -> None:
    data = build(tmp_path / "data")
    expected = oracle(data)
    with serving(data) as running:
        gone = warm_file(data, BAD)
        gone.unlink()  # deleted after the listing
        status, message = query_error(running, one_day(BAD))
        assert status == "UNAVAILABLE" and str(gone) in message and "missing" in message
        assert day_stats(running, GOOD) == expected[GOOD]


def test_missing_cold_file_names_it(tmp_path: Path) -> None:
    data = build(tmp_path / "data")
    expected = oracle(data)
    day = COLD_DAYS[2]
    cold_dir = next((data / "iceberg").rglob(f"ts_day={day}"))
    gone = next(cold_dir.glob("*.parquet"))
    with serving(data) as running:
        gone.unlink()
        status, message = query_error(running, one_day(day))
        assert status == "UNAVAILABLE" and str(gone) in message
        assert day_stats(running, COLD_DAYS[5]) == expected[COLD_DAYS[5]]


# -- partitions with the wrong schema --------------------------------------------------------


def _write_second_file(data: Path, day: dt.date, change: Any) -> Path:
    """Split the day in two files; the second one's rows go through ``change``."""
    second = split_day(data, day, pieces=2)[1]
    changed = change(pq.read_table(second))
    second.unlink()
    bad = second.with_name("part-other.parquet")
    pq.write_table(changed, bad)
    return bad


def _retype(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("advertiser_id")
    return table.set_column(i, "advertiser_id", table.column(i).cast(pa.string()))


def _drop(table: pa.Table) -> pa.Table:
    return table.drop_columns(["bid_price"])


def _narrow(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("bid_price")
    return table.set_column(i, "bid_price", table.column(i).cast(pa.float32()))


@pytest.mark.parametrize(
    ("change", "named"),
    [(_retype, "advertiser_id"), (_drop, "bid_price"), (_narrow, "bid_price")],
    ids=["string-for-integer", "missing-column", "float-for-double"],
)
def test_partition_with_wrong_schema_names_the_file(tmp_path: Path, change: Any, named: str) -> None:
    data = build(tmp_path / "data")
    expected = oracle(data)
    bad = _write_second_file(data, BAD, change)
    with serving(data) as running:
        status, message = query_error(running, one_day(BAD))
        assert status == "UNAVAILABLE"
        assert str(bad) in message and "schema" in message and named in message
        # Never a silently different answer: the whole-table scan fails the same way.
        status, message = query_error(running, "SELECT sum(bid_price) FROM events")
        assert str(bad) in message
        assert day_stats(running, GOOD) == expected[GOOD]


def test_columns_in_another_order_are_read_by_name(tmp_path: Path) -> None:
    """Not an error: the same columns in another order, in the first file of the scan too."""
    data = build(tmp_path / "data")
    expected = oracle(data)
    first, second = split_day(data, BAD, pieces=2)
    for path in (first, second):
        table = pq.read_table(path)
        path.unlink()
        pq.write_table(table.select(list(reversed(table.column_names))), path)
    with serving(data) as running:
        assert day_stats(running, BAD) == expected[BAD]
        import adbc_driver_flightsql.dbapi as fsql

        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM events WHERE day = DATE '{BAD}' ORDER BY ts, type LIMIT 1")
            got = cur.fetch_arrow_table()
        assert got.column_names[:3] == ["ts", "type", "auction_id"]
        assert got.column("type")[0].as_py() in ("serve", "impression", "click", "purchase")


# -- maintenance meets a bad file ------------------------------------------------------------


def test_demote_stops_at_an_unreadable_file_and_changes_nothing(tmp_path: Path) -> None:
    from tierflight.tiers.maintenance import demote

    data = build(tmp_path / "data")
    bad = warm_file(data, AGED[4])
    truncate(bad)
    store = store_for(data, LATER)
    with pytest.raises(StorageUnavailable) as info:
        demote(store, settle=0)
    assert str(bad) in info.value.message
    assert store.cold_until() == OLD_BOUNDARY
    assert all(warm_dir(data, d).is_dir() for d in AGED)
    assert not (data / "events" / "trash").exists()


def test_compaction_skips_a_partition_with_an_unreadable_file(tmp_path: Path) -> None:
    from tierflight.tiers.maintenance import compact_warm

    data = build(tmp_path / "data")
    pieces = split_day(data, BAD)
    split_day(data, GOOD)
    truncate(pieces[1])
    stats = compact_warm(store_for(data), settle=0)
    assert stats.partitions == 1  # GOOD only
    assert sorted(p.name for p in warm_dir(data, BAD).glob("*.parquet")) == sorted(p.name for p in pieces)
    assert len(list(warm_dir(data, GOOD).glob("*.parquet"))) == 1


# -- catalogs --------------------------------------------------------------------------------


def test_server_with_rollups_starts_despite_an_unreadable_file(tmp_path: Path) -> None:
    """The default configuration (rollups built at start): a bad warm file fails the rollup
    build, not the server; raw statements that do not need the file are answered."""
    data = build(tmp_path / "data")
    expected = oracle(data)
    bad = warm_file(data, BAD)
    truncate(bad)
    running = start_in_process(config(data, GEN_NOW, **{"router.enabled": False}))
    try:
        assert day_stats(running, GOOD) == expected[GOOD]
        status, message = query_error(running, one_day(BAD))
        assert status == "UNAVAILABLE" and str(bad) in message
    finally:
        running.server.shutdown()
        running.app.close()


def test_unreachable_rest_catalog_fails_fast_naming_it(tmp_path: Path) -> None:
    from tierflight.app import App

    uri = "http://127.0.0.1:1"
    cfg = config(tmp_path / "data", GEN_NOW, **{"iceberg.type": "rest", "iceberg.uri": uri})
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        App(cfg)
    assert time.monotonic() - started < 5
    assert uri in info.value.message and "Iceberg catalog" in info.value.message
    assert_clean_message(info.value.message)


def test_silent_rest_catalog_times_out_naming_it(tmp_path: Path) -> None:
    """A catalog that accepts the connection and never answers: iceberg.timeout, not a hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            store_for(tmp_path / "data", GEN_NOW, **{"iceberg.type": "rest", "iceberg.uri": uri, "iceberg.timeout": "1s"})
        assert time.monotonic() - started < 5
    assert uri in info.value.message and "timed out" in info.value.message.lower()


def test_cli_reports_an_unreachable_catalog(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path / "data", "tiers", "demote", TIERFLIGHT_ICEBERG__TYPE="rest", TIERFLIGHT_ICEBERG__URI="http://127.0.0.1:1"
    )
    assert proc.returncode == 2, proc.stderr
    assert "http://127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr


def _corrupt_catalog(data: Path) -> Path:
    db = data / "catalog" / "iceberg.db"
    db.write_bytes(b"this is not a database" * 100)
    return db


def test_corrupt_sql_catalog_names_it(tmp_path: Path) -> None:
    data = build(tmp_path / "data")
    db = _corrupt_catalog(data)
    with pytest.raises(StorageUnavailable) as info:
        store_for(data)
    assert str(db) in info.value.message
    assert_clean_message(info.value.message)


def test_unreachable_s3_endpoint_names_it(tmp_path: Path) -> None:
    """The catalog answers, the object store behind the table's metadata does not."""
    data = build(tmp_path / "data")
    with sqlite3.connect(data / "catalog" / "iceberg.db") as con:
        con.execute("UPDATE iceberg_tables SET metadata_location = 's3://tierflight/iceberg/events/m.metadata.json'")
    iceberg = {
        "type": "sql",
        "namespace": "tierflight",
        "timeout": "2s",
        "s3.endpoint": "http://127.0.0.1:1",
        "s3.access-key-id": "test",
        "s3.secret-access-key": "test",
        "s3.region": "us-east-1",
    }
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        store_for(data, iceberg=iceberg)
    assert time.monotonic() - started < 10
    assert "http://127.0.0.1:1" in info.value.message and "tierflight.events" in info.value.message


def test_unavailable_catalog_skipped_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """iceberg.on_unavailable = "skip": answered from warm (and hot), and the log says so."""
    import structlog
    from structlog.testing import capture_logs

    # Loggers are cached on first use, and capture_logs does not reach a cached one: the cold
    # tier's may have logged in an earlier test (a schema evolution), so it gets a fresh one.
    monkeypatch.setattr("tierflight.tiers.cold.log", structlog.get_logger("tierflight.cold"))
    data = build(tmp_path / "data")
    expected = oracle(data)
    _corrupt_catalog(data)
    warm_rows = sum(v[0] for d, v in expected.items() if d >= OLD_BOUNDARY)
    with capture_logs() as logs, serving(data, GEN_NOW, **{"iceberg.on_unavailable": "skip"}) as running:
        assert day_stats(running, GOOD) == expected[GOOD]
        import adbc_driver_flightsql.dbapi as fsql

        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
            assert cur.fetchone() == (warm_rows,)
    events = {e["event"] for e in logs}
    assert "cold_tier_unavailable" in events and "cold_tier_skipped" in events
    skipped = next(e for e in logs if e["event"] == "cold_tier_skipped")
    assert "iceberg.db" in skipped["error"]
