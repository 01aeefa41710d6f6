"""A client's cancel (or its gRPC deadline) stops DuckDB at every stage of a statement.

The server runs in a subprocess so its CPU time can be read from /proc: a statement that
goes on computing after its client gave up shows as CPU seconds burnt after the cancel.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as fsql
import pyarrow.flight as flight
import pytest

from conftest import SubprocessServer, start_subprocess
from flightsql_helpers import cmd_descriptor
from tierflight.protocol import flight_actions_pb2 as fa
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.wire import pack

# Minutes of work for DuckDB's two threads; the aggregate runs before its first batch.
BLOCKING = "SELECT sum(hash(i)) AS h FROM range(100000000000) t(i)"
# Streams: the first batch comes at once, then DuckDB computes for minutes while the stream
# is read (almost no further row passes the filter).
STREAMING = "SELECT i FROM range(100000000000) t(i) WHERE i < 100000 OR hash(i) % 1000000007 = 0"
# The CPU the server may still spend in the two seconds after a cancel settled: idle it
# spends ~0.02 s; a statement still running, even on a box loaded by other tests, ~0.3 s or more.
IDLE_CPU_S = 0.1


@pytest.fixture(scope="module")
def srv(data_dir: Path) -> Iterator[SubprocessServer]:
    env = {"TIERFLIGHT_SERVER__MAX_IN_FLIGHT": "1", "TIERFLIGHT_SERVER__STATEMENT_TIMEOUT": "120s"}
    running = start_subprocess(data_dir, env=env)
    yield running
    running.proc.terminate()
    running.proc.wait(10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_stopped(srv: SubprocessServer) -> None:
    """Within ~1 s of the cancel the server is idle again, and its only slot is free."""
    time.sleep(1.0)
    before = cpu_seconds(srv.proc.pid)
    time.sleep(2.0)
    spent = cpu_seconds(srv.proc.pid) - before
    assert spent < IDLE_CPU_S, f"the server spent {spent:.2f} CPU-s in the 2 s after the cancel"
    with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")  # max_in_flight = 1: refused while the slot is held
        assert cur.fetchall() == [(1,)]


def busy(srv: SubprocessServer) -> None:
    """The statement really runs (both DuckDB threads at work) before it is cancelled."""
    time.sleep(0.5)
    before = cpu_seconds(srv.proc.pid)
    time.sleep(1.0)
    assert cpu_seconds(srv.proc.pid) - before > IDLE_CPU_S


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_deadline_of_get_flight_info_stops_duckdb(srv: SubprocessServer) -> None:
    with flight.connect(srv.uri) as client, pytest.raises(flight.FlightTimedOutError):
        client.get_flight_info(
            cmd_descriptor(pb.CommandStatementQuery(query=BLOCKING)), flight.FlightCallOptions(timeout=1.5)
        )
    assert_stopped(srv)


def test_deadline_of_create_prepared_statement_stops_duckdb(srv: SubprocessServer) -> None:
    # A parameterless statement runs right away, inside CreatePreparedStatement.
    body = pack(pb.ActionCreatePreparedStatementRequest(query=BLOCKING.replace("h FROM", "h2 FROM")))
    with flight.connect(srv.uri) as client, pytest.raises(flight.FlightTimedOutError):
        list(client.do_action(flight.Action("CreatePreparedStatement", body), flight.FlightCallOptions(timeout=1.5)))
    assert_stopped(srv)


def test_adbc_cancel_stops_duckdb(srv: SubprocessServer) -> None:
    with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:

        def execute() -> None:
            cur.execute(BLOCKING.replace("h FROM", "h3 FROM"))
            cur.fetchall()

        thread, errors = in_thread(execute)
        busy(srv)
        cur.adbc_cancel()
        thread.join(10)
        assert not thread.is_alive() and errors
    assert_stopped(srv)


def test_deadline_of_do_get_stops_duckdb(srv: SubprocessServer) -> None:
    with flight.connect(srv.uri) as client:
        info = client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=STREAMING)))
        with pytest.raises(flight.FlightTimedOutError):
            client.do_get(info.endpoints[0].ticket, flight.FlightCallOptions(timeout=1.5)).read_all()
    assert_stopped(srv)


def test_cancel_flight_info_stops_a_stream(srv: SubprocessServer) -> None:
    with flight.connect(srv.uri) as client:
        info = client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=STREAMING + " AND i > -1")))

        def read() -> None:
            # Not read_all(): pyarrow turns a CANCELLED it reads there into a SIGINT of the main thread.
            reader = client.do_get(info.endpoints[0].ticket)
            while True:
                reader.read_chunk()

        thread, errors = in_thread(read)
        busy(srv)
        body = fa.CancelFlightInfoRequest(info=info.serialize()).SerializeToString()
        with flight.connect(srv.uri) as other:
            (result,) = list(other.do_action(flight.Action("CancelFlightInfo", body)))
        answer = fa.CancelFlightInfoResult()
        answer.ParseFromString(result.body.to_pybytes())
        assert answer.status == fa.CANCEL_STATUS_CANCELLED
        thread.join(10)
        assert not thread.is_alive()
        assert errors and isinstance(errors[0], flight.FlightCancelledError)
    assert_stopped(srv)
