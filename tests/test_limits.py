"""Statement timeout and overload, on a server configured with tight limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import RunningServer, make_config, start_in_process
from flightsql_helpers import adbc_status, assert_clean_message, cmd_descriptor, flight_status, wait_for
from tierflight.protocol import flightsql_pb2 as pb

# Minutes of work for DuckDB (the aggregate runs to completion before its first batch).
SLOW = "SELECT sum(hash(i)) AS h FROM range(100000000000) t(i)"
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def limited(data_dir: Path) -> Iterator[RunningServer]:
    config = make_config(data_dir, **{"server.statement_timeout": "1s", "server.max_in_flight": 1})
    running = start_in_process(config)
    yield running
    running.server.shutdown()
    running.app.close()


def run(uri: str, sql: str) -> list[tuple[Any, ...]]:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows


def test_statement_timeout_adbc(limited: RunningServer) -> None:
    started = time.monotonic()
    with pytest.raises(adbc_driver_manager.Error) as err:
        run(limited.uri, SLOW)
    elapsed = time.monotonic() - started
    assert adbc_status(err.value) == "DEADLINE_EXCEEDED"
    assert "statement_timeout" in str(err.value)
    assert_clean_message(str(err.value))
    assert TIMEOUT_S * 0.9 <= elapsed < 15  # the statement alone would run for minutes
    assert run(limited.uri, "SELECT 1") == [(1,)]
    assert wait_for(
        lambda: any(r.sql == SLOW and r.status == "deadline_exceeded" for r in list(limited.app.executor.recent))
    )


def test_statement_timeout_flight(limited: RunningServer) -> None:
    with flight.connect(limited.uri) as client:
        descriptor = cmd_descriptor(pb.CommandStatementQuery(query=SLOW.replace("h FROM", "h2 FROM")))
        with pytest.raises(pa.ArrowException) as err:
            info = client.get_flight_info(descriptor)
            client.do_get(info.endpoints[0].ticket).read_all()
        assert flight_status(err.value) == "DEADLINE_EXCEEDED"
        info = client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query="SELECT 2 AS two")))
        assert client.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"two": 2}]


def test_overload(limited: RunningServer) -> None:
    """With max_in_flight = 1, a second statement while one runs is refused as overload.

    pyarrow's server cannot send RESOURCE_EXHAUSTED, so the status is UNAVAILABLE (retry later)
    and the message says resource exhausted.
    """
    slow_error: list[BaseException] = []

    def slow() -> None:
        try:
            run(limited.uri, SLOW.replace("h FROM", "h3 FROM"))
        except BaseException as exc:
            slow_error.append(exc)

    probe = fsql.connect(limited.uri, autocommit=True)  # connected before: only the query races
    flight_probe = flight.connect(limited.uri)
    thread = threading.Thread(target=slow)
    thread.start()
    try:
        # The slow statement holds the only slot while DuckDB works on it.
        assert wait_for(lambda: limited.app.executor.in_flight() == 1, timeout=TIMEOUT_S * 0.8)
        with probe.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELECT 1")
        assert adbc_status(err.value) == "UNAVAILABLE"
        assert "resource exhausted" in str(err.value)
        assert "max_in_flight" in str(err.value)
        assert_clean_message(str(err.value))
        with pytest.raises(flight.FlightUnavailableError, match="resource exhausted"):
            flight_probe.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query="SELECT 2")))
    finally:
        thread.join(30)
        probe.close()
        flight_probe.close()
    assert slow_error and adbc_status(slow_error[0]) == "DEADLINE_EXCEEDED"
    # The slot came back: the server answers again.
    assert run(limited.uri, "SELECT 3") == [(3,)]


def test_abandoned_stream_returns_its_slot(limited: RunningServer) -> None:
    """A client that stops reading mid-stream must not keep the only in-flight slot."""
    sql = "SELECT i, repeat('x', 1000) AS s FROM range(300000) t(i)"
    with flight.connect(limited.uri) as client:
        info = client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=sql)))
        reader = client.do_get(info.endpoints[0].ticket)
        assert reader.read_chunk().data.num_rows > 0
        reader.cancel()
    assert wait_for(
        lambda: any(r.sql == sql and r.status == "cancelled" for r in list(limited.app.executor.recent))
    )
    assert run(limited.uri, "SELECT 4") == [(4,)]
