"""Bulk ingest over Flight SQL: validation, durability, freshness of raw and routed answers."""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import pyarrow as pa
import pytest

from conftest import RunningServer, load_demo, make_config, start_in_process, start_subprocess
from differential import assert_same

NOW = dt.datetime(2025, 1, 1)


def _rows(n: int, start: dt.datetime, seed: int = 0, step_s: int = 7) -> pa.Table:
    types = ["serve", "impression", "click", "purchase"]
    return pa.table(
        {
            "ts": pa.array([start + dt.timedelta(seconds=step_s * i) for i in range(n)], pa.timestamp("us")),
            "type": [types[(i + seed) % 4] for i in range(n)],
            "auction_id": [f"ing-{seed}-{i}" for i in range(n)],
            "advertiser_id": pa.array([(i * 7 + seed) % 50 for i in range(n)], pa.int32()),
            "publisher_id": pa.array([(i * 3) % 40 for i in range(n)], pa.int32()),
            "bid_price": [float(i % 13) / 4 if (i + seed) % 4 == 1 else None for i in range(n)],
            "user_id": pa.array([1000 + i % 300 for i in range(n)], pa.int64()),
            "total_price": [float(i % 97) if (i + seed) % 4 == 3 else None for i in range(n)],
            "country": [["US", "JP", "DE"][i % 3] for i in range(n)],
        }
    )


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[RunningServer]:

    cfg = make_config(tmp_path)
    load_demo(cfg, 30_000, dt.date(2024, 9, 20), 30, 3)
    running = start_in_process(make_config(tmp_path))
    yield running
    running.server.shutdown()
    running.app.close()


def _oracle(data_dir: Path, extra: list[pa.Table]) -> Any:
    import duckdb

    from tierflight.tiers.warm import live_files

    con = duckdb.connect()
    warm = data_dir / "events" / "warm"
    # Warm files as the tier lists them (a compaction may be half done), plus Iceberg's.
    files = sorted(str(p) for d in warm.glob("day=*") for p in live_files(d))
    files += sorted(str(p) for p in (data_dir / "iceberg").rglob("*.parquet"))
    con.execute(f"CREATE TABLE raw AS SELECT * FROM read_parquet({files!r}, union_by_name = true)")
    for i, t in enumerate(extra):
        con.register(f"x{i}", t)
        con.execute(f"INSERT INTO raw SELECT * FROM x{i}")
    con.execute(
        "CREATE VIEW events AS SELECT *, CAST(ts AS DATE) AS day, CAST(date_trunc('week', ts) AS DATE) AS week, "
        "date_trunc('hour', ts) AS hour, date_trunc('minute', ts) AS minute FROM raw"
    )
    return con


QUERIES = [
    "SELECT count(*), sum(bid_price), max(total_price) FROM events",
    "SELECT day, type, count(*) FROM events GROUP BY ALL ORDER BY 1, 2",
    "SELECT country, sum(bid_price) FROM events WHERE type = 'impression' GROUP BY country ORDER BY country",
    "SELECT minute, sum(bid_price) FROM events WHERE type = 'impression' AND day = DATE '2024-12-31' GROUP BY minute ORDER BY minute",
    "SELECT advertiser_id, type, count(*) FROM events GROUP BY ALL ORDER BY 3 DESC, 1, 2 LIMIT 10",
    # No rollup has publisher x country: the raw tiers answer, and their answer is reused too.
    "SELECT publisher_id, count(*) FROM events WHERE country = 'JP' AND day >= DATE '2024-12-30' GROUP BY 1 ORDER BY 1",
]


def _assert_answers(cur: Any, oracle: Any) -> None:
    """Every statement of QUERIES answers as DuckDB over the oracle's rows."""
    for sql in QUERIES:
        cur.execute(sql)
        assert_same(cur.fetch_arrow_table(), oracle.sql(sql).to_arrow_table(), sql)


def test_ingest_visible_to_next_query_raw_and_routed(fresh: RunningServer, tmp_path: Path) -> None:
    batch = _rows(2_000, dt.datetime(2024, 12, 31, 8))
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        for sql in QUERIES:  # warm the plan and result caches: they must not serve stale answers
            for _ in range(2):
                cur.execute(sql)
                cur.fetchall()
        assert fresh.app.executor.results.hits > 0
        assert cur.adbc_ingest("events", batch, mode="append") == 2_000
        oracle = _oracle(tmp_path, [batch])
        _assert_answers(cur, oracle)
    from tierflight.engine.sandbox import check_statement

    route = fresh.app.router.plan(check_statement(QUERIES[1]))
    assert route.rollup, f"ingest must keep rollups usable: {route.rejected}"


def test_flush_keeps_answers_and_moves_rows(fresh: RunningServer, tmp_path: Path) -> None:
    late = _rows(500, dt.datetime(2024, 9, 25, 1), seed=1)  # a day already in Iceberg
    recent = _rows(800, dt.datetime(2024, 12, 30, 2), seed=2)
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest("events", late, mode="append")
        cur.adbc_ingest("events", recent, mode="append")
        oracle = _oracle(tmp_path, [late, recent])
        before = {}
        for sql in QUERIES:
            cur.execute(sql)
            before[sql] = cur.fetch_arrow_table()
        fresh.app.flush_all()
        store = fresh.app.stores["events"]
        assert store.hot.rows == 0
        assert any(p.tier == "warm" and p.partition == "day=2024-12-30" for p in store.partitions())
        oracle = _oracle(tmp_path, [])  # the flushed rows are in files now
        for sql in QUERIES:
            cur.execute(sql)
            after = cur.fetch_arrow_table()
            assert_same(after, oracle.sql(sql).to_arrow_table(), sql)
            assert_same(after, before[sql], sql)
    wal = tmp_path / "events" / "wal"
    assert not list(wal.glob("*.arrow"))


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("type", None, "type is NOT NULL but row 3 is NULL"),
        ("advertiser_id", "abc", "advertiser_id"),
        ("ts", dt.datetime(2031, 1, 1), "outside the accepted range"),
    ],
)
def test_bad_batches_are_refused_whole(fresh: RunningServer, column: str, value: Any, needle: str) -> None:
    rows = _rows(10, dt.datetime(2024, 12, 31, 9))
    batch = rows.to_pylist()
    batch[3][column] = value
    table = pa.Table.from_pylist(batch, schema=rows.schema) if column != "advertiser_id" else pa.Table.from_pylist(
        [{**r, "advertiser_id": str(r["advertiser_id"])} for r in batch],
        schema=rows.schema.set(3, pa.field("advertiser_id", pa.string())),
    )
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events")
        count = cur.fetchall()[0][0]
        with pytest.raises(Exception) as err:
            cur.adbc_ingest("events", table, mode="append")
        assert needle in str(err.value) and "Traceback" not in str(err.value)
        cur.execute("SELECT count(*) FROM events")
        assert cur.fetchall()[0][0] == count


def test_missing_extra_column_unknown_table_and_modes(fresh: RunningServer) -> None:
    batch = _rows(5, dt.datetime(2024, 12, 31, 9))
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(Exception, match="missing column"):
            cur.adbc_ingest("events", batch.drop(["country"]), mode="append")
        with pytest.raises(Exception, match="unknown column"):
            cur.adbc_ingest("events", batch.append_column("x", pa.array([1] * 5)), mode="append")
        with pytest.raises(Exception, match="not configured"):
            cur.adbc_ingest("nope", batch, mode="append")
        with pytest.raises(Exception, match="only mode='append'"):
            cur.adbc_ingest("events", batch, mode="replace")
        with pytest.raises(Exception, match="only mode='append'"):
            cur.adbc_ingest("events", batch, mode="create")


@pytest.mark.subprocess
def test_kill_9_loses_no_acknowledged_row(tmp_path: Path) -> None:

    cfg = make_config(tmp_path)
    load_demo(cfg, 10_000, dt.date(2024, 12, 1), 10, 5)
    # A tiny flush threshold makes flushes happen while we ingest, so kill -9 lands mid-flush too.
    env = {"TIERFLIGHT_INGEST__FLUSH_ROWS": "1500"}
    srv = start_subprocess(tmp_path, env=env)
    acked: list[pa.Table] = []
    try:
        with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
            for i in range(12):
                batch = _rows(400, dt.datetime(2024, 12, 31) + dt.timedelta(minutes=40 * i), seed=i)
                cur.adbc_ingest("events", batch, mode="append")
                acked.append(batch)
    finally:
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(10)
    srv2 = start_subprocess(tmp_path)
    try:
        with fsql.connect(srv2.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events WHERE auction_id LIKE 'ing-%'")
            assert cur.fetchall()[0][0] == 400 * len(acked)
            cur.execute("SELECT count(*), count(DISTINCT auction_id || '/' || CAST(ts AS VARCHAR)) FROM events WHERE auction_id LIKE 'ing-%'")
            total, distinct = cur.fetchall()[0]
            assert total == distinct  # nothing counted twice
            cur.execute("SELECT day, type, count(*) FROM events WHERE day = DATE '2024-12-31' GROUP BY ALL ORDER BY 1, 2")
            routed = cur.fetch_arrow_table()
        oracle = _oracle(tmp_path, [])
        hot_after_restart = oracle.sql("SELECT count(*) FROM events WHERE auction_id LIKE 'ing-%'").fetchall()[0][0]
        assert hot_after_restart <= 400 * len(acked)
    finally:
        srv2.proc.terminate()
        srv2.proc.wait(20)
    assert routed.num_rows == 4
    assert sum(routed.column(2).to_pylist()) >= 400 * len(acked)


def test_a_crash_between_flush_and_snapshot_loses_and_doubles_nothing(fresh: RunningServer, tmp_path: Path) -> None:
    """The flush published its files and moved the WAL mark, then died before rewriting the
    rollup snapshots; rows ingested after it are only in the WAL. A restart must give the
    flat answers, through rollups as well as raw."""
    from tierflight.engine.sandbox import check_statement

    flushed = _rows(800, dt.datetime(2024, 12, 30, 2), seed=4)
    later = _rows(300, dt.datetime(2024, 12, 31, 5), seed=5)
    built = fresh.app.rollups.snapshot_files()
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest("events", flushed, mode="append")

        def crash(table: str) -> None:
            raise RuntimeError("killed before the snapshots")

        fresh.app.rollups.snapshot = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="killed"):
            fresh.app.ingest_service.flush("events")
        cur.adbc_ingest("events", later, mode="append")
    fresh.server.shutdown()
    fresh.app.close()  # no flush on the way out: as after kill -9
    again = start_in_process(make_config(tmp_path))
    try:
        oracle = _oracle(tmp_path, [later])
        with fsql.connect(again.uri, autocommit=True) as conn, conn.cursor() as cur:
            _assert_answers(cur, oracle)
        assert again.app.router.plan(check_statement(QUERIES[1])).rollup, "answered from a rollup"
        assert again.app.stores["events"].hot.rows == later.num_rows
        # The flushed batch is still in the WAL: it explains the new files, so the build's
        # snapshots are used (with both batches merged in), not rebuilt.
        assert again.app.rollups.snapshot_files() == built
    finally:
        again.server.shutdown()
        again.app.close()


def test_ingest_goes_on_while_a_flush_writes(fresh: RunningServer, tmp_path: Path) -> None:
    import threading

    batches = [_rows(2000, dt.datetime(2024, 12, 31) + dt.timedelta(minutes=50 * i), seed=10 + i) for i in range(8)]
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        for b in batches[:4]:
            cur.adbc_ingest("events", b, mode="append")
        flusher = threading.Thread(target=fresh.app.flush_all)
        flusher.start()
        for b in batches[4:]:  # acknowledged while the flush writes and publishes
            cur.adbc_ingest("events", b, mode="append")
        flusher.join()
        # Whatever the flush took is in files, the rest in the hot tail: each row once.
        cur.execute("SELECT count(*), count(DISTINCT auction_id) FROM events WHERE auction_id LIKE 'ing-%'")
        assert cur.fetchall() == [(8 * 2000, 8 * 2000)]
        fresh.app.flush_all()
        oracle = _oracle(tmp_path, [])
        _assert_answers(cur, oracle)


@pytest.mark.parametrize("step", ["compute", "commit"])
def test_a_batch_whose_states_cannot_be_merged_is_kept_and_rollups_go_stale(
    fresh: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """The rows are durable before their rollup states are computed: if computing them, or
    committing them under the swap lock, fails, the ingest is still acknowledged, the rows
    are answered from the raw tiers, and the table's rollups are not used until rebuilt
    (they would miss the rows)."""
    from tierflight.engine.sandbox import check_statement
    from tierflight.rollups.registry import StagedDelta

    batch = _rows(600, dt.datetime(2024, 12, 30, 4), seed=7)
    sql = QUERIES[1]
    assert fresh.app.router.plan(check_statement(sql)).rollup

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("states unavailable")

    def broken_commit(self: StagedDelta) -> None:
        self.rollback()
        raise RuntimeError("commit failed")

    if step == "compute":
        monkeypatch.setattr(fresh.app.rollups, "compute_delta", broken)
    else:
        monkeypatch.setattr(StagedDelta, "commit", broken_commit)
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("events", batch, mode="append") == 600
        oracle = _oracle(tmp_path, [batch])
        _assert_answers(cur, oracle)
    assert fresh.app.router.plan(check_statement(sql)).rollup is None
    statuses = {s.status for s in fresh.app.rollups.all_states("events")}
    assert statuses == {"stale"}


def test_rows_merged_while_a_snapshot_compacts_are_kept(fresh: RunningServer, tmp_path: Path) -> None:
    """A snapshot compacts a rollup's rows up to a row id without blocking ingest; states
    merged meanwhile are swapped in with the compacted rows, and left out of the file, whose
    WAL sequence makes a restart merge them again."""
    first = _rows(500, dt.datetime(2024, 12, 30, 1), seed=11)
    meanwhile = _rows(400, dt.datetime(2024, 12, 31, 2), seed=12)
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest("events", first, mode="append")
    registry = fresh.app.rollups
    compact = registry._compacted
    done: list[int] = []

    def compacting(state: Any, mark: int) -> pa.Table:
        if not done:
            done.append(fresh.app.ingest_service.append("events", meanwhile))
        return compact(state, mark)

    registry._compacted = compacting  # type: ignore[method-assign]
    registry.snapshot("events")
    assert done == [400]
    oracle = _oracle(tmp_path, [first, meanwhile])
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        _assert_answers(cur, oracle)
    fresh.server.shutdown()
    fresh.app.close()
    again = start_in_process(make_config(tmp_path))
    try:
        with fsql.connect(again.uri, autocommit=True) as conn, conn.cursor() as cur:
            _assert_answers(cur, oracle)
    finally:
        again.server.shutdown()
        again.app.close()


@pytest.mark.needs_server  # a data set of its own
@pytest.mark.parametrize("wal_kept", [True, False], ids=["wal-kept", "flushed-batch-lost"])
def test_snapshots_deferred_under_sustained_ingest_lose_nothing(tmp_path: Path, wal_kept: bool) -> None:
    """A flush that leaves rows in the hot tail (ingest went on meanwhile) keeps the old
    rollup snapshots, and the WAL keeps the flushed batch they do not hold. After a crash the
    start matches the snapshots with the files through that batch and uses them as they are
    (replaying what they lack); without the batch it rebuilds them. Either way every answer
    is exact. Once the hot tail is empty, a flush snapshots at once and the WAL empties."""
    from tierflight.engine.sandbox import check_statement

    load_demo(make_config(tmp_path), 30_000, dt.date(2024, 9, 20), 30, 3)
    cfg = make_config(tmp_path, **{"ingest.snapshot_every": "1h"})
    first = _rows(500, dt.datetime(2024, 12, 30, 1), seed=21)
    meanwhile = _rows(300, dt.datetime(2024, 12, 31, 2), seed=22)
    running = start_in_process(cfg)
    service = running.app.ingest_service
    registry = running.app.rollups
    try:
        before = registry.snapshot_files()
        service.append("events", first)
        write = service._write_files

        def writing(t: Any, data: pa.Table, through: int) -> dict[str, Any]:
            service.append("events", meanwhile)  # acknowledged while the flush writes
            return write(t, data, through)

        service._write_files = writing  # type: ignore[method-assign]
        assert service.flush("events") == 500
        service._write_files = write  # type: ignore[method-assign]
        assert registry.snapshot_files() == before  # deferred: rows remain in the hot tail
        wal = service.tables["events"].wal
        # 1: flushed, kept for the snapshots that do not hold it; 2: not flushed yet.
        assert [seq for seq, _ in wal.segments()] == [1, 2]
        if not wal_kept:
            wal.segments()[0][1].unlink()
        oracle = _oracle(tmp_path, [meanwhile])
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            _assert_answers(cur, oracle)
    finally:
        running.server.shutdown()
        running.app.close()  # no flush, no snapshot: as after a crash
    again = start_in_process(cfg)
    try:
        reused = again.app.rollups.snapshot_files() == before
        assert reused == wal_kept, "snapshots explained by the kept batch are used, not rebuilt"
        assert {s.status for s in again.app.rollups.states.values()} == {"active"}
        with fsql.connect(again.uri, autocommit=True) as conn, conn.cursor() as cur:
            _assert_answers(cur, oracle)
        assert again.app.router.plan(check_statement(QUERIES[1])).rollup  # routed, not stale
        assert again.app.ingest_service.flush("events") == 300
        assert again.app.rollups.snapshot_files() != before  # hot tail empty: snapshot now
        assert again.app.ingest_service.tables["events"].wal.segments() == []
        with fsql.connect(again.uri, autocommit=True) as conn, conn.cursor() as cur:
            _assert_answers(cur, oracle)
    finally:
        again.server.shutdown()
        again.app.close()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"nice": 25}, "ingest.nice must be an integer from 0 to 19"),
        ({"nice": "low"}, "ingest.nice must be an integer from 0 to 19"),
        ({"snapshot_every": "soon"}, "ingest.snapshot_every"),
    ],
)
def test_bad_ingest_settings_are_refused_with_the_key(raw: dict[str, Any], message: str) -> None:
    from tierflight.core.config import ingest_config
    from tierflight.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        ingest_config(raw)
    assert ingest_config({"nice": 0, "snapshot_every": "0s"}).snapshot_every.total_seconds() == 0


def test_grown_rollups_are_compacted_in_memory_and_answers_stay_exact(
    fresh: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tierflight.rollups import registry

    monkeypatch.setattr(registry, "COMPACT_MIN_ROWS", 100)
    rollups = fresh.app.rollups
    state = rollups.states["advertiser_type"]
    meta_file = state.meta.file if state.meta else None
    before = state.rows
    # ~100 advertiser x type states a batch: 40 batches outgrow the rows it was built with.
    batches = [_rows(200, dt.datetime(2024, 12, 31, 1, m), seed=m) for m in range(40)]
    appended = sum(len(set(zip(b["advertiser_id"].to_pylist(), b["type"].to_pylist(), strict=True))) for b in batches)
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest("events", batches[0], mode="append")
        marks = {name: s.current_watermark for name, s in rollups.states.items()}
        for b in batches[1:]:
            cur.adbc_ingest("events", b, mode="append")
        # Merged-in rows were folded into the installed ones: fewer rows than appended.
        stored = rollups.database.query_internal(f"SELECT count(*) FROM {state.qualified}")[0][0]
        assert stored == state.rows < before + appended
        assert state.rows - state.installed_rows < max(state.installed_rows, 100)
        # In memory only: the snapshot on disk is the one it had, and the watermark still
        # covers every batch.
        assert (state.meta.file if state.meta else None) == meta_file
        assert state.current_watermark is not None and state.current_watermark >= marks["advertiser_type"]
        _assert_answers(cur, _oracle(tmp_path, batches))
    # A snapshot after in-memory compactions holds every merged row.
    rollups.snapshot("events")
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        _assert_answers(cur, _oracle(tmp_path, batches))


def test_a_flush_writes_each_day_sorted_whatever_order_rows_came_in(fresh: RunningServer, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    # Three days, interleaved and backwards within each batch; one day already in Iceberg.
    parts = [_rows(300, dt.datetime(2024, 12, d, 5), seed=d, step_s=-60) for d in (30, 28, 29)]
    parts.append(_rows(200, dt.datetime(2024, 9, 27, 3), seed=9, step_s=-30))
    mixed = pa.concat_tables(parts).take(pa.array([(i * 7919) % 1100 for i in range(1100)]))
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest("events", mixed, mode="append")
        fresh.app.flush_all()
        _assert_answers(cur, _oracle(tmp_path, []))
    for day, n in (("2024-12-28", 300), ("2024-12-29", 300), ("2024-12-30", 300)):
        files = list((tmp_path / "events" / "warm" / f"day={day}").glob("part-wal-*.parquet"))
        assert len(files) == 1, day
        ts = pq.read_table(files[0], columns=["ts"])["ts"].to_pylist()
        assert len(ts) == n and ts == sorted(ts) and {t.date().isoformat() for t in ts} == {day}
    cold = [p for p in (tmp_path / "iceberg").rglob("part-wal-*.parquet")]
    assert len(cold) == 1
    ts = pq.read_table(cold[0], columns=["ts"])["ts"].to_pylist()
    assert len(ts) == 200 and ts == sorted(ts)


def test_a_rollup_merge_failing_at_start_leaves_it_stale_not_the_server_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying the WAL into the rollups at start: a merge DuckDB refuses (a damaged snapshot,
    a bug) marks those rollups stale and the server starts; answers stay exact from the raw
    tiers and the hot tail."""
    import duckdb

    from tierflight.rollups.registry import RollupRegistry

    load_demo(make_config(tmp_path), 3_000, dt.date(2024, 9, 20), 30, 5)
    cfg = make_config(tmp_path, **{"ingest.snapshot_every": "1h"})
    batch = _rows(300, dt.datetime(2024, 12, 30, 1), seed=31)
    running = start_in_process(cfg)
    try:
        running.app.ingest_service.append("events", batch)
    finally:
        running.server.shutdown()
        running.app.close()  # no flush: the batch is only in the WAL, as after a crash

    def refused(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise duckdb.ConversionException("Conversion Error: a merge that cannot be done")

    monkeypatch.setattr(RollupRegistry, "compute_delta", refused)
    again = start_in_process(cfg)
    try:
        assert {s.status for s in again.app.rollups.states.values()} == {"stale"}
        oracle = _oracle(tmp_path, [batch])
        with fsql.connect(again.uri, autocommit=True) as conn, conn.cursor() as cur:
            _assert_answers(cur, oracle)
    finally:
        again.server.shutdown()
        again.app.close()
