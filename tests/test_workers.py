"""`tierflight serve --workers 2`: one front, a primary and a follower over one data dir.

The answers through the front equal DuckDB over a flat copy of the rows whichever worker
answers; ingested rows are visible to the next statement (only the primary answers until
they are flushed, then the follower is re-admitted); a killed worker is replaced while the
front keeps answering; SIGTERM stops every process and flushes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import duckdb
import pyarrow as pa
import pytest

from conftest import SubprocessServer, load_demo, make_config, start_subprocess
from differential import assert_same, parse_workload

pytestmark = pytest.mark.subprocess

FIXTURE = Path(__file__).parent / "fixtures" / "raw_queries.sql"
QUERIES = parse_workload(FIXTURE.read_text())
ROUTED = [
    "SELECT day, type, count(*) AS n, sum(bid_price) AS spend FROM events "
    "WHERE day >= DATE '2024-12-01' GROUP BY ALL ORDER BY 1, 2",
    "SELECT country, count(*) FROM events GROUP BY country ORDER BY 2 DESC, 1",
]


def _free_port_run(n: int) -> int:
    """A port p with p .. p+n-1 free (the front's metrics port, then one per worker)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65535:
            continue
        try:
            for p in range(base, base + n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


class Front:
    def __init__(self, srv: SubprocessServer, metrics: int) -> None:
        self.srv = srv
        self.uri = srv.uri
        self.metrics = metrics

    def ready(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/readyz", timeout=5) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def wait(self, what: str, check: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.ready()
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still {state}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def workers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:

    root = tmp_path_factory.mktemp("workers")
    cfg = make_config(root)
    # 2024-09-20 .. 2024-12-18: cold before 2024-10-03, warm after (now = 2025-01-01).
    load_demo(cfg, 40_000, dt.date(2024, 9, 20), 90, 5)
    return root


@pytest.fixture(scope="module")
def oracle(workers_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    from tierflight.engine.database import table_view_sql

    table = make_config(workers_dir).table("events")
    files = sorted(str(p) for p in workers_dir.rglob("*.parquet") if "trash" not in p.parts)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE events AS {table_view_sql(table, [f'SELECT * FROM read_parquet({files!r})'])}")
    yield con
    con.close()


@pytest.fixture(scope="module")
def front(workers_dir: Path, oracle: duckdb.DuckDBPyConnection) -> Iterator[Front]:
    metrics = _free_port_run(3)
    srv = start_subprocess(
        workers_dir,
        "--workers",
        "2",
        env={
            "TIERFLIGHT_METRICS__PORT": str(metrics),
            "TIERFLIGHT_INGEST__FLUSH_AGE": "2s",
            "TIERFLIGHT_SERVER__STATEMENT_TIMEOUT": "3s",
        },
    )
    f = Front(srv, metrics)
    try:
        f.wait("follower admitted after start", lambda s: s.get("eligible") == [0, 1])
        yield f
    finally:
        if srv.proc.poll() is None:
            srv.proc.terminate()
            try:
                srv.proc.wait(60)
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait()


def _query(uri: str, sql: str, params: tuple[Any, ...] | None = None) -> pa.Table:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, parameters=params)
        return cur.fetch_arrow_table()


@pytest.mark.parametrize("name,sql", QUERIES + [(f"routed_{i}", q) for i, q in enumerate(ROUTED)])
def test_answers_equal_flat_copy_on_every_worker(name: str, sql: str, front: Front, oracle: Any) -> None:
    expected = oracle.cursor().sql(sql).to_arrow_table()
    # Round robin over two eligible workers: two runs land on both.
    for _ in range(2):
        assert_same(_query(front.uri, sql), expected, sql)


def test_parameters_metadata_and_errors_through_the_front(front: Front, oracle: Any) -> None:
    sql = "SELECT count(*) FROM events WHERE country = ? AND day >= ?"
    expected = oracle.execute(sql, ["JP", dt.date(2024, 11, 1)]).fetchall()
    with fsql.connect(front.uri, autocommit=True) as conn, conn.cursor() as cur:
        for _ in range(3):  # one prepared statement, several executions, on whichever worker
            cur.execute(sql, parameters=("JP", dt.date(2024, 11, 1)))
            assert cur.fetchall() == expected
        objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
        tables = [t["table_name"] for c in objects for s in c["catalog_db_schemas"] or [] for t in s["db_schema_tables"] or []]
        assert "events" in tables
        assert conn.adbc_get_table_schema("events").names[0] == "ts"
        with pytest.raises(fsql.ProgrammingError, match="nope") as info:
            cur.execute("SELECT * FROM nope")
        assert str(info.value).count("Detail:") <= 1, "the worker's error is relayed once, not nested"
        with pytest.raises(fsql.Error, match="read-only"):
            cur.execute("CREATE TABLE x AS SELECT 1")


def test_worker_statuses_reach_the_client_unchanged(front: Front) -> None:
    """The front relays a worker's status: a statement past server.statement_timeout is
    DEADLINE_EXCEEDED, a refused one stays a refusal, a bad handle is NOT_FOUND."""
    from flightsql_helpers import adbc_status

    with fsql.connect(front.uri, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(fsql.Error) as slow:
            cur.execute("SELECT sum(hash(i)) AS h FROM range(100000000000) t(i)")
        assert adbc_status(slow.value) == "DEADLINE_EXCEEDED"
        with pytest.raises(fsql.Error) as refused:
            cur.execute("SELECT * FROM read_csv('/etc/passwd')")
        assert adbc_status(refused.value) in ("INVALID_ARGUMENT", "PERMISSION_DENIED")
        cur.execute("SELECT 1")  # the worker that timed out answers again
        assert cur.fetchall() == [(1,)]
    import pyarrow.flight as flight

    from flightsql_helpers import cmd_descriptor
    from tierflight.protocol import flightsql_pb2 as pb

    with flight.connect(front.uri) as client:
        stale = pb.CommandPreparedStatementQuery(prepared_statement_handle=b"not-a-handle")
        with pytest.raises(KeyError, match="unknown or closed prepared statement"):  # NOT_FOUND
            client.get_flight_info(cmd_descriptor(stale))


def _batch(prefix: str, n: int) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([dt.datetime(2024, 12, 31, 10) + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
            "type": ["impression"] * n,
            "auction_id": [f"{prefix}-{i}" for i in range(n)],
            "advertiser_id": pa.array([7] * n, pa.int32()),
            "publisher_id": pa.array([3] * n, pa.int32()),
            "bid_price": [1.25] * n,
            "user_id": pa.array(range(n), pa.int64()),
            "total_price": pa.array([None] * n, pa.float64()),
            "country": ["JP"] * n,
        }
    )


def test_ingest_is_visible_at_once_and_the_follower_comes_back_after_the_flush(front: Front) -> None:
    routed = "SELECT day, count(*) AS n FROM events WHERE day = DATE '2024-12-31' GROUP BY ALL"
    raw = "SELECT count(*) FROM events WHERE auction_id LIKE 'wk-%'"
    with fsql.connect(front.uri, autocommit=True) as conn, conn.cursor() as cur:
        # Statements prepared before the ingest (ADBC keeps one per cursor while the SQL is
        # the same; round robin puts one of the two on the follower) run after it too.
        held = [conn.cursor(), conn.cursor()]
        for c in held:
            c.execute(raw)
            assert c.fetchall() == [(0,)]
        assert cur.adbc_ingest("events", _batch("wk", 250), mode="append") == 250
        # Until the rows are flushed (flush_age = 2s) only the primary has them. Asked at
        # once: on a busy machine the statements below can outlast the flush age.
        assert front.ready()["eligible"] == [0]
        for c in held:
            c.execute(raw)
            assert c.fetchall() == [(250,)]
            c.close()
        for _ in range(4):  # every statement after the ack sees the rows, whichever it hits
            cur.execute(raw)
            assert cur.fetchall() == [(250,)]
            cur.execute(routed)
            assert cur.fetchall() == [(dt.date(2024, 12, 31), 250)]
    # flush_age = 2s: the primary flushes, the follower loads what it published.
    front.wait("follower re-admitted after the flush", lambda s: s.get("eligible") == [0, 1])
    for _ in range(4):
        assert _query(front.uri, raw).column(0).to_pylist() == [250]
        assert _query(front.uri, routed).column(1).to_pylist() == [250]


def test_a_killed_follower_is_replaced(front: Front) -> None:
    pid = front.ready()["pids"][1]
    os.kill(pid, signal.SIGKILL)
    sql = "SELECT count(*) FROM events"
    expected = _query(front.uri, sql).column(0).to_pylist()
    for _ in range(6):  # the dead follower's share goes to the primary meanwhile
        assert _query(front.uri, sql).column(0).to_pylist() == expected
    state = front.wait(
        "the follower restarted and re-admitted",
        lambda s: s.get("status") == "ready" and s.get("eligible") == [0, 1] and s["pids"][1] != pid,
    )
    assert state["pids"][1] != pid


def test_sigterm_stops_every_process_and_flushes(front: Front, workers_dir: Path) -> None:
    with fsql.connect(front.uri, autocommit=True) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("events", _batch("last", 40), mode="append") == 40
    pids = front.ready()["pids"]
    front.srv.proc.send_signal(signal.SIGTERM)
    assert front.srv.proc.wait(60) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    wal = workers_dir / "events" / "wal"
    assert not list(wal.glob("*.arrow")), "the primary flushed the WAL on shutdown"
    files = [str(p) for p in workers_dir.rglob("*.parquet") if "trash" not in p.parts]
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r}) WHERE auction_id LIKE 'last-%'").fetchall()
    assert n == [(40,)]
