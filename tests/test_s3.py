"""The tiers on real object storage: warm Parquet under an S3 prefix, cold Iceberg behind a
REST catalog with its files on S3, both served by SeaweedFS (``weed mini``) on loopback.

The cross-tier differential queries run against a server over that storage, routing on
(rollups built from the S3 tiers) and off (raw scans, plus a hot tail), compared with
DuckDB over a flat table of the same generated rows.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from conftest import RunningServer, load_demo, make_config, start_in_process
from differential import assert_same, parse_workload
from s3_helpers import BUCKET, Weed, closed_port

pytestmark = pytest.mark.s3

FIXTURE = Path(__file__).parent / "fixtures" / "raw_queries.sql"
QUERIES = parse_workload(FIXTURE.read_text())
# now = 2025-01-01, warm window 90d: days before 2024-10-03 are cold (Iceberg on S3).
START = dt.date(2024, 9, 20)
DAYS = 30
ROWS = 50_000
SEED = 23
HOT_START = dt.date(2024, 12, 1)
HOT_DAYS = 10
HOT_ROWS = 3_000


@pytest.fixture(scope="module")
def s3_data_dir(weed: Weed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated into the S3 tiers; the local data dir only holds tiers.json and snapshots."""

    root = tmp_path_factory.mktemp("s3data")
    cfg = make_config(root, **weed.overrides())
    load_demo(cfg, ROWS, START, DAYS, SEED)
    return root


@pytest.fixture(scope="module")
def hot_rows() -> pa.Table:
    from tierflight.demo.generate import generate_days

    return pa.concat_tables(t for _, t in generate_days(HOT_ROWS, HOT_START, HOT_DAYS, SEED + 1))


@pytest.fixture(scope="module")
def oracle(hot_rows: pa.Table) -> Iterator[Any]:
    """DuckDB over the same rows, flat: ``events`` (generated) and ``events_hot`` (+ hot tail)."""
    import duckdb
    from tierflight.core.sql import table_view_sql

    from tierflight.demo.generate import generate_days

    table = make_config(Path("unused")).table("events")
    con = duckdb.connect()
    con.register("gen_src", pa.concat_tables(t for _, t in generate_days(ROWS, START, DAYS, SEED)))
    con.register("hot_src", hot_rows)
    con.execute(f"CREATE TABLE events AS {table_view_sql(table, ['SELECT * FROM gen_src'])}")
    con.execute(
        f"CREATE TABLE events_hot AS {table_view_sql(table, ['SELECT * FROM gen_src', 'SELECT * FROM hot_src'])}"
    )
    yield con
    con.close()


def _serve(data_dir: Path, weed: Weed, **overrides: Any) -> RunningServer:
    return start_in_process(make_config(data_dir, **weed.overrides(), **overrides))


@pytest.fixture(scope="module")
def routed(s3_data_dir: Path, weed: Weed) -> Iterator[RunningServer]:
    """Routing on: rollups are built from the S3 tiers at start."""
    running = _serve(s3_data_dir, weed, **{"tiers.maintenance_interval": 0})
    yield running
    running.server.shutdown()
    running.app.close()


@pytest.fixture(scope="module")
def raw(s3_data_dir: Path, weed: Weed, hot_rows: pa.Table) -> Iterator[RunningServer]:
    """Routing off, plus a hot tail: every statement scans cold, warm and hot."""
    running = _serve(s3_data_dir, weed, **{"router.enabled": False, "tiers.maintenance_interval": 0})
    store = running.app.stores["events"]
    store.hot.append(hot_rows.cast(store.schema))
    yield running
    running.server.shutdown()
    running.app.close()


def _query(uri: str, sql: str) -> pa.Table:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def test_data_lives_on_s3(routed: RunningServer, s3_data_dir: Path) -> None:
    store = routed.app.stores["events"]
    assert store.warm_on_s3 and store.cold_on_s3
    tiers = {p.tier for p in store.partitions()}
    assert tiers == {"cold", "warm"}
    assert sum(p.rows for p in store.partitions()) == ROWS
    assert not list(s3_data_dir.rglob("*.parquet")), "no data file may be written locally"
    sources = store.sources()
    assert {s.tier for s in sources} == {"cold", "warm"}
    assert all(s.registrations for s in sources)


@pytest.mark.parametrize(("name", "sql"), QUERIES, ids=[n for n, _ in QUERIES])
def test_raw_queries_routing_on(name: str, sql: str, routed: RunningServer, oracle: Any) -> None:
    assert_same(_query(routed.uri, sql), oracle.cursor().sql(sql).to_arrow_table(), sql)


@pytest.mark.parametrize(("name", "sql"), QUERIES, ids=[n for n, _ in QUERIES])
def test_raw_queries_routing_off(name: str, sql: str, raw: RunningServer, oracle: Any) -> None:
    expected = oracle.cursor().sql(sql.replace("FROM events", "FROM events_hot")).to_arrow_table()
    assert_same(_query(raw.uri, sql), expected, sql)


def test_rollups_answer_over_s3(routed: RunningServer, oracle: Any) -> None:
    sql = "SELECT day, type, count(*) AS n FROM events GROUP BY day, type ORDER BY day, type"
    route = _query(routed.uri, f"EXPLAIN ROUTE {sql}").to_pylist()
    assert any(r["source"].startswith("rollup:") for r in route), route
    assert_same(_query(routed.uri, sql), oracle.cursor().sql(sql).to_arrow_table(), sql)


def test_pruning_on_s3(raw: RunningServer) -> None:
    from tierflight.engine.sandbox import check_statement

    route = raw.app.planner.plan(
        check_statement("SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2024-09-30' AND ts < TIMESTAMP '2024-10-05'")
    )
    by_tier = {p.tier: p.source for p in route.parts}
    assert set(by_tier) == {"cold", "warm"}
    assert "3 partitions" in by_tier["cold"] and "2 partitions" in by_tier["warm"]
    assert len(route.registrations) == 2


def _open_fails_in_time(cfg: Any, match: str, seconds: float = 15.0) -> None:
    """Opening the table's tiers fails with StorageUnavailable naming the service, and soon."""
    from tierflight.core.errors import StorageUnavailable

    from tierflight.tiers.store import TableStore

    began = time.monotonic()
    with pytest.raises(StorageUnavailable, match=match):
        TableStore(cfg, cfg.table("events"))
    assert time.monotonic() - began < seconds


def test_unreachable_s3_endpoint_is_named(tmp_path: Path, weed: Weed) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    cfg = make_config(tmp_path, **{**weed.overrides(), "s3.endpoint": endpoint, "s3.timeout": 2})
    _open_fails_in_time(cfg, f"S3 endpoint {endpoint}")


def test_unreachable_catalog_is_named(tmp_path: Path, weed: Weed) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    cfg = make_config(tmp_path, **{**weed.overrides(), "iceberg.uri": uri, "iceberg.timeout": 2})
    _open_fails_in_time(cfg, f"Iceberg catalog at {uri}")


def test_silent_catalog_times_out(tmp_path: Path, weed: Weed) -> None:
    """A catalog that accepts the connection and never answers fails within the timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        cfg = make_config(tmp_path, **{**weed.overrides(), "iceberg.uri": uri, "iceberg.timeout": 1})
        _open_fails_in_time(cfg, f"Iceberg catalog at {uri}")


def test_replicas_share_the_store_and_pick_up_published_snapshots(
    weed: Weed, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two replicas, each with its own (empty) local data dir, over one S3 bucket and REST
    catalog: the writer builds the rollups and publishes the snapshots next to the data; the
    reader loads them instead of building its own, answers the same, and after a bulk load
    and a refresh on the writer it picks up the new snapshots and the new files."""
    from tierflight.engine.sandbox import check_statement

    shared = {
        "storage.warm_uri": f"s3://{BUCKET}/replicas",
        "iceberg.namespace": "replicas",
        "storage.poll_interval": "0s",
        "tiers.maintenance_interval": 0,
    }

    def config(root: Path) -> Any:
        return make_config(root, **{**weed.overrides(), **shared})

    def load(rows: int, start: dt.date, days: int, seed: int) -> None:
        cfg = config(tmp_path_factory.mktemp("loader"))
        load_demo(cfg, rows, start, days, seed)

    load(20_000, dt.date(2024, 9, 25), 20, 31)
    writer_dir, reader_dir = tmp_path_factory.mktemp("writer"), tmp_path_factory.mktemp("reader")
    writer = start_in_process(config(writer_dir))
    reader = start_in_process(config(reader_dir))
    routed = "SELECT day, type, count(*) AS n, sum(bid_price) AS s FROM events GROUP BY ALL ORDER BY 1, 2"
    raw = "SELECT country, count(DISTINCT auction_id) FROM events WHERE day >= DATE '2024-10-01' GROUP BY 1 ORDER BY 1"
    try:
        published = writer.app.rollups.snapshot_files()
        assert all(published.values())
        assert reader.app.rollups.snapshot_files() == published, "the reader loaded the writer's snapshots"
        assert not (reader_dir / "rollups").exists() and not (writer_dir / "rollups").exists()
        for sql in (routed, raw):
            assert_same(_query(reader.uri, sql), _query(writer.uri, sql), sql)
        assert reader.app.router.plan(check_statement(routed)).rollup

        load(6_000, dt.date(2024, 10, 20), 3, 32)  # new days land in the shared store
        writer.app.rollups.build()  # the writer refreshes and publishes
        reader.app.data_state()  # what the reader's snapshot watch does every reload_interval
        refreshed = writer.app.rollups.snapshot_files()
        assert refreshed != published
        assert reader.app.rollups.snapshot_files() == refreshed
        answer = _query(reader.uri, routed)
        assert sum(answer.column("n").to_pylist()) == 26_000

        # The writer ingests (a late day, in Iceberg, and a recent one) and flushes to S3.
        from test_ingest import _rows

        late, recent = _rows(300, dt.datetime(2024, 9, 26, 3), seed=1), _rows(500, dt.datetime(2024, 10, 21, 3), seed=2)
        import adbc_driver_flightsql.dbapi as fsql

        with fsql.connect(writer.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_ingest("events", late, mode="append")
            cur.adbc_ingest("events", recent, mode="append")
        writer.app.flush_all()
        assert writer.app.stores["events"].hot.rows == 0
        assert not list(writer_dir.rglob("*.parquet")), "flushed files go to S3"
        reader.app.data_state()
        assert reader.app.rollups.snapshot_files() == writer.app.rollups.snapshot_files()
        answer = _query(reader.uri, routed)
        assert sum(answer.column("n").to_pylist()) == 26_800
        count = "SELECT count(*) FROM events WHERE auction_id LIKE 'ing-%'"
        assert _query(reader.uri, count).column(0).to_pylist() == [800]
        assert reader.app.router.plan(check_statement(routed)).rollup
        for sql in (routed, raw):
            assert_same(_query(reader.uri, sql), _query(writer.uri, sql), sql)
    finally:
        for srv in (writer, reader):
            srv.server.shutdown()
            srv.app.close()


@pytest.mark.parametrize("staged_lost", [False, True], ids=["files-written", "a-file-lost"])
def test_an_s3_flush_cut_short_is_finished_or_undone_on_restart(
    staged_lost: bool, weed: Weed, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A flush wrote its staged objects and its journal, then the process died. On restart
    the flush is published (every staged object is there) or dropped (one is missing; the
    WAL still has the rows): either way each row is counted once."""
    import adbc_driver_flightsql.dbapi as fsql

    from test_ingest import _rows

    tag = "lost" if staged_lost else "kept"
    root = tmp_path_factory.mktemp(f"s3flush-{tag}")
    overrides = {
        **weed.overrides(),
        "storage.warm_uri": f"s3://{BUCKET}/flush-{tag}",
        "iceberg.namespace": f"flush_{tag}",
        "storage.poll_interval": "0s",
        "tiers.maintenance_interval": 0,
    }
    cfg = make_config(root, **overrides)
    load_demo(cfg, 4_000, dt.date(2024, 12, 20), 5, 41)
    batch = _rows(700, dt.datetime(2024, 12, 30, 6), seed=9)
    srv = start_in_process(make_config(root, **overrides))
    try:
        with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_ingest("events", batch, mode="append")
        service = srv.app.ingest_service
        t = service.tables["events"]
        with t.lock:
            through = t.wal.last_seq
            data = t.store.hot.read(through)
        journal = service._write_files(t, data, through)  # the flush up to its journal; then it dies
        staged = [s for s, _ in journal["warm"]]
        assert staged and all(s.startswith("s3://") and t.store.object_exists(s) for s in staged)
        if staged_lost:
            t.store.delete_object(staged[0])
    finally:
        srv.server.shutdown()
        srv.app.close()
    again = start_in_process(make_config(root, **overrides))
    try:
        store = again.app.stores["events"]
        assert not any(store.object_exists(s) for s in staged), "staged objects are moved or removed"
        assert store.hot.rows == (700 if staged_lost else 0)
        count = _query(again.uri, "SELECT count(*) FROM events").column(0).to_pylist()
        assert count == [4_700]
        ours = _query(again.uri, "SELECT count(DISTINCT auction_id) FROM events WHERE auction_id LIKE 'ing-%'")
        assert ours.column(0).to_pylist() == [700]
    finally:
        again.server.shutdown()
        again.app.close()
