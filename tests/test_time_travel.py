"""Reading the cold tier as of an earlier Iceberg snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import adbc_driver_flightsql.dbapi as fsql
import pytest

from conftest import load_demo, make_config, start_in_process

# Each test builds a data set (and tiers, rollups or a server) of its own.
pytestmark = pytest.mark.needs_server


def test_time_travel_by_version_and_timestamp(tmp_path: Path) -> None:
    from tierflight.tiers.maintenance import demote
    from tierflight.tiers.store import TableStore

    cfg = make_config(tmp_path)
    load_demo(cfg, 20_000, dt.date(2024, 9, 25), 20, 11)
    # Ten days later, demotion adds a second snapshot with more days.
    later = make_config(tmp_path, **{"tiers.now": dt.datetime(2025, 1, 11)})
    store = TableStore(later, later.table("events"))
    first = store.cold.table().current_snapshot().snapshot_id
    demote(store)
    running = start_in_process(later)
    try:
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT snapshot_id, is_current FROM system.snapshots WHERE table_name = 'events' ORDER BY committed_at")
            snaps = cur.fetchall()
            assert len(snaps) >= 2 and snaps[-1][1] and snaps[0][0] == first
            cur.execute(f"SELECT count(*), max(day) FROM events AT (VERSION => {first})")
            old_count, old_max = cur.fetchall()[0]
            cur.execute("SELECT count(*), max(day) FROM events WHERE day < DATE '2024-10-03'")
            assert cur.fetchall()[0] == (old_count, old_max)
            cur.execute(f"SELECT count(*) FROM events AT (VERSION => {snaps[-1][0]}) WHERE day >= DATE '2024-10-03'")
            assert cur.fetchall()[0][0] > 0
            cur.execute(f"EXPLAIN ROUTE SELECT count(*) FROM events AT (VERSION => {first})")
            rows = cur.fetch_arrow_table().to_pylist()
            assert rows[0]["tier"] == "cold" and str(first) in rows[0]["source"]
            with pytest.raises(Exception, match="does not exist"):
                cur.execute("SELECT count(*) FROM events AT (VERSION => 42)")
    finally:
        running.server.shutdown()
        running.app.close()
