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
# The CPU the server may still spend per second once a cancel settled: idle it spends ~0.01 s;
# a statement still running, even on a box loaded by other tests, ~0.15 s or more.
IDLE_CPU_PER_S = 0.05
# What a quarter-second of a running statement burns at the least (both DuckDB threads at work
# burn ~0.5 s; planning a statement takes milliseconds, so this is DuckDB running).
RUNNING_CPU_PER_QUARTER = 0.1


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


def cpu_over(srv: SubprocessServer, seconds: float) -> float:
    """The CPU seconds the server spends in the next ``seconds``."""
    before = cpu_seconds(srv.proc.pid)
    time.sleep(seconds)
    return cpu_seconds(srv.proc.pid) - before


def assert_stopped(srv: SubprocessServer) -> None:
    """Within ~1 s of the cancel the server is idle again, and its only slot is free.

    Polled rather than waited for: the one-second grace ends at the first quiet quarter
    second in it; the second that follows must be as quiet as an idle server."""
    grace = time.monotonic() + 1.0
    while time.monotonic() < grace and cpu_over(srv, 0.25) >= IDLE_CPU_PER_S * 0.25:
        pass
    spent = cpu_over(srv, 1.0)
    assert spent < IDLE_CPU_PER_S, f"the server spent {spent:.2f} CPU-s in the second after the cancel settled"
    with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")  # max_in_flight = 1: refused while the slot is held
        assert cur.fetchall() == [(1,)]


def busy(srv: SubprocessServer) -> None:
    """The statement really runs (DuckDB at work) before it is cancelled: polled in quarter
    seconds until one shows it, for at most 5 s."""
    deadline = time.monotonic() + 5.0
    while (spent := cpu_over(srv, 0.25)) <= RUNNING_CPU_PER_QUARTER:
        assert time.monotonic() < deadline, f"the statement did not start: {spent:.2f} CPU-s in the last quarter second"


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
