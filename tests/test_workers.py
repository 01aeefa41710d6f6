"""`tierflight serve --workers 2`: one front, a primary and a follower over one data dir.

The answers equal DuckDB over a flat copy of the rows whichever worker answers, whether the
front forwarded the statement or answered its FlightInfo itself, and whether the client
fetched the result at the endpoint's location (the worker's DoGet port) or through the
front; the DoGet ports serve only tickets the front signed, and only DoGet; ingested rows
are visible to the next statement (only the primary answers until they are flushed, then
the follower is re-admitted); a killed worker is replaced while the front keeps answering
and hands out only live locations; with auth, a user without the read permission gets no
ticket; SIGTERM stops every process and flushes.
"""

from __future__ import annotations

import contextlib
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
import pyarrow.flight as flight
import pytest

from conftest import SubprocessServer, load_demo, make_config, start_subprocess
from differential import assert_same, parse_workload
from flightsql_helpers import cmd_descriptor
from tierflight.protocol import flightsql_pb2 as pb

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

    def counters(self) -> dict[str, float]:
        """The front's call counters: statement FlightInfos it answered itself ("front") or
        forwarded ("worker"), and DoGets clients sent to it ("doget")."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        names = {
            'tierflight_front_statement_infos_total{by="front"}': "front",
            'tierflight_front_statement_infos_total{by="worker"}': "worker",
            "tierflight_front_forwarded_doget_total": "doget",
        }
        out = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in names:
                out[names[name]] = float(value)
        assert set(out) == set(names.values()), text
        return out

    def wait(self, what: str, check: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.ready()
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still {state}")
            time.sleep(0.2)


@contextlib.contextmanager
def _two_workers(root: Path, env: dict[str, str], *args: str) -> Iterator[tuple[SubprocessServer, Front, dict[str, Any]]]:
    """``serve --workers 2`` on ``root`` (no maintenance: the data state changes only when a
    test ingests), once its follower is admitted: the server, its front and that state."""
    metrics = _free_port_run(3)
    srv = start_subprocess(
        root,
        "--workers",
        "2",
        *args,
        env={"TIERFLIGHT_METRICS__PORT": str(metrics), "TIERFLIGHT_TIERS__MAINTENANCE_INTERVAL": "0s", **env},
    )
    f = Front(srv, metrics)
    try:
        state = f.wait("follower admitted after start", lambda s: s.get("eligible") == [0, 1])
        yield srv, f, state
    finally:
        if srv.proc.poll() is None:
            srv.proc.terminate()
            try:
                srv.proc.wait(60)
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait()


@pytest.fixture(scope="module")
def workers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:

    root = tmp_path_factory.mktemp("workers")
    cfg = make_config(root)
    # 2024-09-20 .. 2024-12-18: cold before 2024-10-03, warm after (now = 2025-01-01).
    load_demo(cfg, 40_000, dt.date(2024, 9, 20), 90, 5)
    return root


@pytest.fixture(scope="module")
def oracle(workers_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    from tierflight.core.sql import table_view_sql

    table = make_config(workers_dir).table("events")
    files = sorted(str(p) for p in workers_dir.rglob("*.parquet") if "trash" not in p.parts)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE events AS {table_view_sql(table, [f'SELECT * FROM read_parquet({files!r})'])}")
    yield con
    con.close()


@pytest.fixture(scope="module")
def front(workers_dir: Path, oracle: duckdb.DuckDBPyConnection) -> Iterator[Front]:
    env = {"TIERFLIGHT_INGEST__FLUSH_AGE": "2s", "TIERFLIGHT_SERVER__STATEMENT_TIMEOUT": "3s"}
    with _two_workers(workers_dir, env) as (_, f, _):
        yield f


def _query(uri: str, sql: str, params: tuple[Any, ...] | None = None) -> pa.Table:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, parameters=params)
        return cur.fetch_arrow_table()


def _info(client: flight.FlightClient, sql: str, options: flight.FlightCallOptions | None = None) -> flight.FlightInfo:
    return client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=sql)), options)


def _location(info: flight.FlightInfo) -> str:
    (endpoint,) = info.endpoints
    (location,) = endpoint.locations
    return str(location.uri.decode())


def _fetch(info: flight.FlightInfo, options: flight.FlightCallOptions | None = None) -> pa.Table:
    """The result at the endpoint's location, as a client that follows locations gets it."""
    with flight.connect(_location(info)) as worker:
        table: pa.Table = worker.do_get(info.endpoints[0].ticket, options).read_all()
    # What ADBC checks: the stream has the schema the FlightInfo announced.
    assert table.schema.equals(info.schema), (table.schema, info.schema)
    return table


def _route_tiers(info: flight.FlightInfo) -> set[str]:
    return {part["tier"] for part in json.loads(info.app_metadata)["parts"]}


def _statement(client: flight.FlightClient, sql: str) -> tuple[pa.Table, str]:
    info = _info(client, sql)
    return _fetch(info), _location(info)


@pytest.mark.parametrize("name,sql", QUERIES + [(f"routed_{i}", q) for i, q in enumerate(ROUTED)])
def test_answers_equal_flat_copy_on_every_worker(name: str, sql: str, front: Front, oracle: Any) -> None:
    expected = oracle.cursor().sql(sql).to_arrow_table()
    # Round robin over two eligible workers: two runs land on both.
    for _ in range(2):
        assert_same(_query(front.uri, sql), expected, sql)


@pytest.mark.parametrize("name,sql", QUERIES + [(f"routed_{i}", q) for i, q in enumerate(ROUTED)])
def test_statements_the_front_answers_equal_flat_copy(name: str, sql: str, front: Front, oracle: Any) -> None:
    """CommandStatementQuery over pyarrow.flight, fetched at the endpoint's location: the
    first FlightInfo may come from a worker, the next ones from the front (it learned the
    schema and the route), and each ticket runs the statement on the worker it names."""
    expected = oracle.cursor().sql(sql).to_arrow_table()
    live = front.ready()["locations"]
    with flight.connect(front.uri) as client:
        table, _ = _statement(client, sql)
        assert_same(table, expected, sql)
        before = front.counters()
        places = set()
        for _ in range(2):
            table, place = _statement(client, sql)
            assert_same(table, expected, sql)
            places.add(place)
        after = front.counters()
    assert after["front"] - before["front"] == 2, "the front answered the repeated statements itself"
    assert after["worker"] == before["worker"]
    assert places == set(live), "round robin over both workers' DoGet ports"
    assert after["doget"] == before["doget"], "nothing was fetched through the front"


def test_adbc_fetches_results_at_the_workers_locations(front: Front, oracle: Any) -> None:
    """ADBC's Flight SQL driver fetches each endpoint from its location (a client cached per
    location); a prepared statement executed again without parameters is answered by the
    front itself; parameters and metadata still work."""
    sql = ROUTED[1]
    expected = oracle.cursor().sql(sql).to_arrow_table()
    with_params = "SELECT count(*) FROM events WHERE country = ? AND day >= ?"
    expected_params = oracle.execute(with_params, ["JP", dt.date(2024, 11, 1)]).fetchall()
    before = front.counters()
    with fsql.connect(front.uri, autocommit=True) as conn, conn.cursor() as cur:
        for _ in range(4):  # one prepared statement (ADBC keeps it while the SQL is the same)
            cur.execute(sql)
            assert_same(cur.fetch_arrow_table(), expected, sql)
        for _ in range(2):
            cur.execute(with_params, parameters=("JP", dt.date(2024, 11, 1)))
            assert cur.fetchall() == expected_params
        assert "events" in str(conn.adbc_get_objects(depth="tables").read_all().to_pylist())
    after = front.counters()
    assert after["doget"] == before["doget"], "ADBC fetched every endpoint at its location"
    # The first execution takes what CreatePreparedStatement parked; the other three need no worker.
    assert after["front"] - before["front"] == 3


def test_a_client_that_ignores_locations_fetches_through_the_front(front: Front, oracle: Any) -> None:
    sql = ROUTED[0]
    expected = oracle.cursor().sql(sql).to_arrow_table()
    with flight.connect(front.uri) as client:
        for _ in range(3):
            before = front.counters()["doget"]
            info = _info(client, sql)
            assert_same(client.do_get(info.endpoints[0].ticket).read_all(), expected, sql)
            assert front.counters()["doget"] == before + 1


def test_worker_port_refuses_forged_tampered_and_expired_tickets(front: Front) -> None:
    from tierflight.protocol.tickets import TicketKey, identity
    from tierflight.protocol.wire import encode_ticket

    sql = "SELECT 42 AS answer"
    with flight.connect(front.uri) as client:
        info = _info(client, sql)
        signed_by = time.monotonic()  # the front signed it before answering
        ticket = info.endpoints[0].ticket.ticket
        with flight.connect(_location(info)) as worker:
            # The signature is the authorization: a bearer token sent along is ignored.
            bogus = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer not-a-token")])
            assert worker.do_get(flight.Ticket(ticket), bogus).read_all().to_pylist() == [{"answer": 42}]

            tampered = bytearray(ticket)
            tampered[-40] ^= 0x01  # inside the statement
            with pytest.raises(flight.FlightUnauthenticatedError, match="signature does not match"):
                worker.do_get(flight.Ticket(bytes(tampered))).read_all()
            forged = TicketKey(os.urandom(32), 60).sign(0, identity("anonymous", ["read"]), encode_ticket("", sql))
            with pytest.raises(flight.FlightUnauthenticatedError, match="signature does not match"):
                worker.do_get(flight.Ticket(forged)).read_all()
            # A ticket as a single-process server issues it: not signed at all.
            with pytest.raises(pa.ArrowInvalid, match="malformed ticket"):  # INVALID_ARGUMENT
                worker.do_get(flight.Ticket(encode_ticket("", sql))).read_all()

            # Tickets are valid for server.statement_timeout (3 s here), to the millisecond.
            time.sleep(max(0.0, signed_by + 3.1 - time.monotonic()))
            with pytest.raises(flight.FlightUnauthenticatedError, match="ticket expired"):
                worker.do_get(flight.Ticket(ticket)).read_all()
        # Through the front, the worker checks the same ticket the same way.
        with pytest.raises(flight.FlightUnauthenticatedError, match="ticket expired"):
            client.do_get(flight.Ticket(ticket)).read_all()


def test_worker_port_serves_doget_only(front: Front) -> None:
    descriptor = cmd_descriptor(pb.CommandStatementQuery(query="SELECT 1"))
    calls = {
        "GetFlightInfo": lambda w: w.get_flight_info(descriptor),
        "GetSchema": lambda w: w.get_schema(descriptor),
        "DoAction": lambda w: list(w.do_action(flight.Action("healthcheck", b""))),
        "ListActions": lambda w: w.list_actions(),
        "ListFlights": lambda w: list(w.list_flights()),
        "DoPut": lambda w: w.do_put(descriptor, pa.schema([("a", pa.int64())]))[0].close(),
    }
    for location in front.ready()["locations"]:
        with flight.connect(location) as worker:
            for rpc, call in calls.items():
                with pytest.raises(pa.ArrowNotImplementedError, match=f"{rpc}.* is not served on a worker's DoGet"):
                    call(worker)


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
        # Session options (the front answers them) and catalog queries (a worker's shadow catalog).
        assert (conn.adbc_current_catalog, conn.adbc_current_db_schema) == ("tierflight", "main")
        cur.execute("SELECT table_schema, table_name FROM information_schema.tables ORDER BY ALL")
        assert [r for r in cur.fetchall() if r[0] == "main"] == [("main", "advertisers"), ("main", "events"), ("main", "publishers")]
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


def test_ingest_is_visible_to_statements_the_front_answers(front: Front) -> None:
    """The same through the front's own FlightInfos: an ingest makes the front forget what
    it learned and take the follower out of the rotation before the rows exist, so the
    statement after the ack, answered or forwarded by the front, sees them."""
    raw = "SELECT count(*) AS n FROM events WHERE auction_id LIKE 'wd-%'"
    routed = "SELECT count(*) AS n FROM events WHERE day = DATE '2024-12-31' AND advertiser_id = 8"
    front.wait("both workers in the rotation", lambda s: s.get("eligible") == [0, 1])
    with flight.connect(front.uri) as client:
        places = set()
        for _ in range(3):
            for sql in (raw, routed):
                table, place = _statement(client, sql)
                assert table.column(0).to_pylist() == [0]
                places.add(place)
        assert len(places) == 2, "the follower took its share before the ingest"
        assert "hot" not in _route_tiers(_info(client, raw))
        before = front.counters()
        with fsql.connect(front.uri, autocommit=True) as conn, conn.cursor() as cur:
            batch = _batch("wd", 120).set_column(3, "advertiser_id", pa.array([8] * 120, pa.int32()))
            assert cur.adbc_ingest("events", batch, mode="append") == 120
        # The route is the one the worker takes now (the hot tail's rows), not the one the
        # front learned before the ingest. Asked at once: the rows are flushed after 2 s.
        assert "hot" in _route_tiers(_info(client, raw))
        for _ in range(4):  # every statement after the ack sees the rows, whichever answers it
            for sql in (raw, routed):
                assert _statement(client, sql)[0].column(0).to_pylist() == [120]
        after = front.counters()
        assert after["front"] > before["front"], "the front answered some of them itself"
        front.wait("follower re-admitted after the flush", lambda s: s.get("eligible") == [0, 1])
        places = set()
        for _ in range(3):
            for sql in (raw, routed):
                info = _info(client, sql)
                assert _fetch(info).column(0).to_pylist() == [120]
                assert sql != raw or "hot" not in _route_tiers(info), "flushed: no hot tail in the route"
                places.add(_location(info))
        assert len(places) == 2


# Before the tests that kill a follower and stop the module's servers.
def test_a_dimension_replace_is_served_by_every_worker(front: Front) -> None:
    """A replace goes to the primary; every statement after the ack sees the new rows, and the
    follower, which loads the version the primary wrote, is admitted again serving them."""
    sql = "SELECT a.vertical, count(*) AS n FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY 1"
    with fsql.connect(front.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT advertiser_id FROM advertisers")
        ids = [r[0] for r in cur.fetchall()]
        # Rows ingested by earlier tests may name advertisers the table does not have.
        cur.execute("SELECT count(*) FROM events WHERE advertiser_id IN (SELECT advertiser_id FROM advertisers)")
        total = cur.fetchall()[0][0]
        for label in ("first", "second"):
            rows = pa.table({"advertiser_id": pa.array(ids, pa.int32()), "name": [str(i) for i in ids], "vertical": [label] * len(ids)})
            assert cur.adbc_ingest("advertisers", rows, mode="replace") == len(ids)
            for _ in range(4):  # whichever worker answers
                cur.execute(sql)
                assert cur.fetchall() == [(label, total)]
    front.wait("follower re-admitted after the replace", lambda s: s.get("eligible") == [0, 1])
    for _ in range(4):
        assert _query(front.uri, sql).to_pylist() == [{"vertical": "second", "n": total}]


def test_the_load_tester_follows_locations(front: Front) -> None:
    from tierflight.loadtest import LoadTestConfig, parse_workload, run_loadtest

    workload = parse_workload(
        "-- name: routed\n" + ROUTED[0] + ";\n\n-- name: raw\n"
        "SELECT ts, type FROM events WHERE day = DATE '2024-10-15' AND country = 'JP' ORDER BY ts LIMIT 5;\n"
    )
    before = front.counters()
    result = run_loadtest(LoadTestConfig(front.uri, tuple(workload), concurrency=2, processes=1, max_statements=40))
    s = result.figures["summary"]
    assert s["ok"] == 40 and s["errors"] == 0
    after = front.counters()
    assert after["doget"] == before["doget"], "every result was fetched at its worker's DoGet port"
    assert after["front"] - before["front"] >= 36, "the front answered all but the first of each statement"


def test_a_killed_follower_is_replaced(front: Front) -> None:
    pid = front.ready()["pids"][1]
    sql = "SELECT count(*) FROM events"
    expected = _query(front.uri, sql).column(0).to_pylist()
    os.kill(pid, signal.SIGKILL)
    for _ in range(6):  # the dead follower's share goes to the primary meanwhile
        assert _query(front.uri, sql).column(0).to_pylist() == expected
    # Once the front has seen the exit, no endpoint names the dead worker's port.
    front.wait("the front noticed the exit", lambda s: 1 not in s.get("eligible", [1]) or s["pids"][1] != pid)
    with flight.connect(front.uri) as client:
        for _ in range(6):
            info = _info(client, sql)
            assert _fetch(info).column(0).to_pylist() == expected
            live = front.ready()["locations"]
            assert _location(info) in live, (info, live)
    state = front.wait(
        "the follower restarted and re-admitted",
        lambda s: s.get("status") == "ready" and s.get("eligible") == [0, 1] and s["pids"][1] != pid,
    )
    assert state["pids"][1] != pid and state["locations"][1] is not None
    with flight.connect(front.uri) as client:
        places = {_statement(client, sql)[1] for _ in range(2)}
    assert places == set(state["locations"]), "the new follower takes statements at its own port"


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


# -- with users ------------------------------------------------------------------------------

ITERATIONS = 1_000  # the hash format matters here, not its cost


@pytest.fixture(scope="module")
def auth_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    from tierflight.protocol.auth import hash_password

    root = tmp_path_factory.mktemp("workers-auth")
    load_demo(make_config(root), 5_000, dt.date(2024, 11, 1), 30, 3)
    users = ",".join(
        [
            f"alice:{hash_password('alice-pw', ITERATIONS)}:read",
            f"bob:{hash_password('bob-pw', ITERATIONS)}:read",
            f"loader:{hash_password('loader-pw', ITERATIONS)}:ingest",
        ]
    )
    with _two_workers(root, {"TIERFLIGHT_USERS": users}) as (_, f, _):
        yield f


def _login(client: flight.FlightClient, user: str, password: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[client.authenticate_basic_token(user, password)])


def test_with_auth_only_a_reader_gets_a_ticket(auth_front: Front) -> None:
    sql = "SELECT country, count(*) AS n FROM events GROUP BY country ORDER BY 2 DESC, 1"
    with flight.connect(auth_front.uri) as client:
        alice = _login(client, "alice", "alice-pw")
        expected = None
        for _ in range(3):  # forwarded once, then answered by the front
            info = _info(client, sql, alice)
            # At the worker's port the signature is the authorization: no credentials needed.
            table = _fetch(info)
            expected = expected or table.to_pylist()
            assert table.to_pylist() == expected and expected
        assert auth_front.counters()["front"] >= 2

        loader = _login(client, "loader", "loader-pw")
        for query in (sql, "SELECT 7 AS n"):  # one the front knows, one it must forward
            with pytest.raises(flight.FlightUnauthorizedError, match="lacks the 'read' permission"):
                _info(client, query, loader)
        with pytest.raises(flight.FlightUnauthenticatedError):
            _info(client, sql)  # no credentials: refused at the front
        # A client that ignores locations: its credentials are checked by the front as well.
        info = _info(client, sql, alice)
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(info.endpoints[0].ticket).read_all()
        assert client.do_get(info.endpoints[0].ticket, alice).read_all().to_pylist() == expected


def test_with_auth_a_ticket_is_fetched_and_cancelled_only_by_its_user(auth_front: Front) -> None:
    from tierflight.protocol import flight_actions_pb2 as fa

    def cancel(client: flight.FlightClient, info: flight.FlightInfo, options: flight.FlightCallOptions) -> int:
        body = fa.CancelFlightInfoRequest(info=info.serialize()).SerializeToString()
        (result,) = list(client.do_action(flight.Action("CancelFlightInfo", body), options))
        answer = fa.CancelFlightInfoResult()
        answer.ParseFromString(result.body.to_pybytes())
        return int(answer.status)

    tag = os.urandom(8).hex()
    with flight.connect(auth_front.uri) as client:
        alice, bob = _login(client, "alice", "alice-pw"), _login(client, "bob", "bob-pw")
        loader = _login(client, "loader", "loader-pw")
        info = _info(client, f"SELECT '{tag}' AS t", alice)
        # Through the front (a client that ignores locations), with another user's session.
        with pytest.raises(flight.FlightUnauthorizedError, match="issued to another user"):
            client.do_get(info.endpoints[0].ticket, bob).read_all()
        for other in (bob, loader):
            with pytest.raises(flight.FlightUnauthorizedError, match="started by another user"):
                cancel(client, info, other)
        assert client.do_get(info.endpoints[0].ticket, alice).read_all().to_pylist() == [{"t": tag}]
        assert cancel(client, _info(client, f"SELECT '{tag}' AS again", alice), alice) == fa.CANCEL_STATUS_CANCELLED


def test_with_auth_adbc_follows_locations_with_its_session(auth_front: Front) -> None:
    sql = "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY 1"
    before = auth_front.counters()
    kwargs = {"username": "alice", "password": "alice-pw"}
    with fsql.connect(auth_front.uri, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
        answers = []
        for _ in range(3):
            cur.execute(sql)
            answers.append(cur.fetchall())
        assert answers[0] == answers[1] == answers[2]
        assert sum(n for _, n in answers[0]) == 5_000
    loader = {"username": "loader", "password": "loader-pw"}
    with pytest.raises(fsql.Error, match="read"), fsql.connect(
        auth_front.uri, db_kwargs=loader, autocommit=True
    ) as conn, conn.cursor() as cur:
        cur.execute(sql)
    after = auth_front.counters()
    assert after["doget"] == before["doget"], "ADBC fetched at the locations (its bearer is ignored there)"
    assert after["front"] - before["front"] == 2


def test_tls_an_advertised_host_and_fixed_worker_ports(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With TLS the DoGet ports serve the front's certificate; --advertise names the host in
    the locations (here the certificate's DNS name), --worker-ports their ports; ADBC and the
    load tester verify it."""
    import shutil

    import tierflight_client
    from conftest import self_signed_cert
    from tierflight.loadtest import LoadTestConfig, parse_workload, run_loadtest

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    root = tmp_path_factory.mktemp("workers-tls")
    load_demo(make_config(root), 3_000, dt.date(2024, 11, 1), 10, 4)
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    ports = _free_port_run(2)
    env = {"TIERFLIGHT_SERVER__TLS_CERT": str(cert), "TIERFLIGHT_SERVER__TLS_KEY": str(key)}
    with _two_workers(root, env, "--advertise", "localhost", "--worker-ports", str(ports)) as (srv, front, state):
        assert srv.uri.startswith("grpc+tls://")
        assert state["locations"] == [f"grpc+tls://localhost:{ports}", f"grpc+tls://localhost:{ports + 1}"]
        sql = "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type"
        with tierflight_client.connect(srv.uri, tls_root_certs=cert) as conn:
            answers = [conn.query(sql).to_pylist() for _ in range(3)]
        assert answers[0] == answers[1] == answers[2] and sum(r["n"] for r in answers[0]) == 3_000
        before = front.counters()
        statements = tuple(parse_workload(f"-- name: types\n{sql};"))
        config = LoadTestConfig(srv.uri, statements, concurrency=2, processes=1, max_statements=10, tls_root_certs=cert)
        result = run_loadtest(config)
        assert result.figures["summary"]["ok"] == 10, result.figures["errors"]
        after = front.counters()
        assert after["doget"] == before["doget"] and after["front"] - before["front"] >= 9
        # Without the CA, the worker's port refuses the handshake like the front's does.
        with flight.connect(state["locations"][0]) as worker, pytest.raises(flight.FlightUnavailableError):
            worker.do_get(flight.Ticket(b"x"), flight.FlightCallOptions(timeout=10)).read_all()
