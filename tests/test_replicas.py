"""Two servers over one data dir: the one that ingests publishes, the other picks it up."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import adbc_driver_flightsql.dbapi as fsql
import pyarrow as pa
import pytest

from conftest import load_demo, make_config, start_in_process

# Each test builds a data set (and tiers, rollups or a server) of its own.
pytestmark = pytest.mark.needs_server


def test_reader_replica_sees_published_files_and_snapshots(tmp_path: Path) -> None:

    cfg = make_config(tmp_path)
    load_demo(cfg, 20_000, dt.date(2024, 12, 1), 20, 9)
    writer = start_in_process(make_config(tmp_path))
    reader = start_in_process(make_config(tmp_path))
    try:
        batch = pa.table(
            {
                "ts": pa.array([dt.datetime(2024, 12, 31, 10) + dt.timedelta(seconds=i) for i in range(300)], pa.timestamp("us")),
                "type": ["impression"] * 300,
                "auction_id": [f"rep-{i}" for i in range(300)],
                "advertiser_id": pa.array([7] * 300, pa.int32()),
                "publisher_id": pa.array([3] * 300, pa.int32()),
                "bid_price": [1.25] * 300,
                "user_id": pa.array(range(300), pa.int64()),
                "total_price": pa.array([None] * 300, pa.float64()),
                "country": ["JP"] * 300,
            }
        )
        sql = "SELECT day, type, count(*), sum(bid_price) FROM events WHERE day >= DATE '2024-12-30' GROUP BY ALL ORDER BY 1, 2"
        with fsql.connect(writer.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_ingest("events", batch, mode="append")
            writer.app.flush_all()
            cur.execute(sql)
            expected = cur.fetchall()
        assert reader.app.rollups.reload_changed(), "the flush published new snapshots"
        with fsql.connect(reader.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            assert cur.fetchall() == expected
            cur.execute("SELECT count(*) FROM events WHERE auction_id LIKE 'rep-%'")
            assert cur.fetchall()[0][0] == 300
        from tierflight.engine.sandbox import check_statement

        assert reader.app.router.plan(check_statement(sql)).rollup, "the reader answers from the new snapshot"
    finally:
        for srv in (writer, reader):
            srv.server.shutdown()
            srv.app.close()
