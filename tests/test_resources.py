"""What a hostile or vanished client can hold: slots, memory, spill disk.

* a reader that stops reading (or never fetches) must not keep its in-flight slot past
  server.statement_timeout;
* the process' memory stays under server.memory_ceiling (the newest statement is cancelled
  with RESOURCE_EXHAUSTED, the server lives on and gives the memory back);
* spill stays under duckdb.max_temp_directory_size;
* one function call cannot build a multi-GB value (repeat, lpad, rpad are capped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pyarrow.flight as flight
import pytest

from conftest import RunningServer, SubprocessServer, make_config, start_in_process, start_subprocess
from flightsql_helpers import adbc_status, assert_clean_message, cmd_descriptor, wait_for
from tierflight.core.errors import ConfigError
from tierflight.engine.guards import MAX_BUILT_VALUE
from tierflight.protocol import flightsql_pb2 as pb

TIMEOUT_S = 2.0
# Megabytes of rows: far more than gRPC buffers for a reader that does not read.
LARGE = "SELECT i, repeat('x', 1000) AS s FROM range(5000000) t(i)"


def run(uri: str, sql: str) -> list[tuple[Any, ...]]:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows


@pytest.fixture(scope="module")
def tight(data_dir: Path) -> Iterator[RunningServer]:
    config = make_config(data_dir, **{"server.statement_timeout": f"{TIMEOUT_S:g}s", "server.max_in_flight": 2})
    running = start_in_process(config)
    yield running
    running.server.shutdown()
    running.app.close()


def test_readers_that_stop_reading_give_their_slots_back(tight: RunningServer) -> None:
    """Two readers read one batch each and stop (the readers stay alive, the calls open), a
    third gets a FlightInfo and never fetches it: after the statement timeout the slots are
    free again, the two streams are logged as timed out and the unfetched result as expired."""
    clients = [flight.connect(tight.uri) for _ in range(3)]
    readers = []
    try:
        sqls = [f"{LARGE} -- reader {n}" for n in range(3)]
        started = time.monotonic()
        # Parked until fetched: it holds no slot, but its cursor until it expires.
        clients[2].get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=sqls[2])))
        for client, sql in zip(clients[:2], sqls[:2], strict=True):
            info = client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=sql)))
            reader = client.do_get(info.endpoints[0].ticket)
            assert reader.read_chunk().data.num_rows > 0
            readers.append(reader)
        # Both slots are held by the stalled streams meanwhile.
        with pytest.raises(adbc_driver_manager.Error) as err:
            run(tight.uri, "SELECT 1")
        assert "max_in_flight" in str(err.value)
        assert wait_for(lambda: tight.app.executor.in_flight() == 0, timeout=TIMEOUT_S + 3)
        assert time.monotonic() - started < TIMEOUT_S + 3
        assert run(tight.uri, "SELECT 2 AS two") == [(2,)]

        def status(sql: str) -> str | None:
            return next((r.status for r in list(tight.app.executor.recent) if r.sql == sql), None)

        assert wait_for(
            lambda: [status(sql) for sql in sqls] == ["deadline_exceeded", "deadline_exceeded", "expired"],
            timeout=TIMEOUT_S + 3,
        )
    finally:
        for reader in readers:
            reader.cancel()
        for client in clients:
            client.close()


def test_values_built_in_one_call_are_capped(server: RunningServer) -> None:
    for sql in (
        "SELECT length(repeat('x', 300000000))",
        "SELECT length(repeat(repeat('x', 20000), 20000))",
        "SELECT length('x'.repeat(300000000))",
        "SELECT length(lpad('x', 300000000, 'y'))",
        "SELECT length(rpad('x', 300000000, 'y'))",
        "SELECT octet_length(repeat('ab'::BLOB, 300000000))",
        "SELECT len(range(300000000))",
        "SELECT len(range(-5, 300000000))",
        "SELECT len(range(0, 600000000, 2))",
        "SELECT len(generate_series(300000000))",
        "SELECT len(list_resize([1], 300000000))",
        "SELECT len(array_resize([1], 300000000, 0))",
    ):
        with pytest.raises(adbc_driver_manager.Error) as err:
            run(server.uri, sql)
        assert adbc_status(err.value) == "INVALID_ARGUMENT", sql
        assert f"at most {MAX_BUILT_VALUE}" in str(err.value)
        assert_clean_message(str(err.value))
    with pytest.raises(adbc_driver_manager.Error) as err:
        run(server.uri, "SELECT length(system.main.repeat('x', 300000000))")
    assert "qualified name" in str(err.value)
    # Under the cap the functions answer as DuckDB's own.
    assert run(
        server.uri,
        "SELECT repeat('ab', 3), repeat([1, 2], 2), repeat('ab'::BLOB, 2), lpad('x', 4, 'ab'), rpad('x', 3, 'y'),"
        " length(repeat('é', 1000)), repeat('x', -1), repeat('x', NULL)",
    ) == [("ababab", [1, 2, 1, 2], b"abab", "abax", "xyy", 1000, "", None)]
    assert run(
        server.uri,
        "SELECT range(3), range(2, 4), range(10, 0, -4), generate_series(2), generate_series(1, 5, 2),"
        " list_resize([1], 3), array_resize([1], 2, 9), len(range(TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-03',"
        " INTERVAL 1 DAY)), (SELECT count(*) FROM range(5)), (SELECT count(*) FROM generate_series(1, 5))",
    ) == [([0, 1, 2], [2, 3], [10, 6, 2], [0, 1, 2], [1, 3, 5], [1, None, None], [1, 9], 2, 5, 5)]


def test_spill_is_capped(data_dir: Path, tmp_path: Path) -> None:
    config = make_config(
        data_dir,
        **{
            "duckdb.memory_limit": "200MB",
            "duckdb.max_temp_directory_size": "32MB",
            "duckdb.temp_directory": str(tmp_path / "spill"),
        },
    )
    running = start_in_process(config)
    try:
        with pytest.raises(adbc_driver_manager.Error) as err:
            run(running.uri, "SELECT count(*) FROM (SELECT i % 40000000 AS k, count(*) FROM range(80000000) t(i) GROUP BY k)")
        message = str(err.value)
        assert "resource exhausted" in message and "duckdb.max_temp_directory_size" in message
        assert str(tmp_path) not in message  # no server path reaches the client
        assert_clean_message(message)
        assert run(running.uri, "SELECT 3") == [(3,)]
    finally:
        running.server.shutdown()
        running.app.close()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


def test_memory_ceiling_cancels_the_statement_and_the_server_lives(data_dir: Path) -> None:
    """DuckDB's memory_limit is set far above the ceiling (as if the memory were spent where
    DuckDB does not count it): the ceiling alone must hold the process' memory."""
    ceiling = 700 << 20
    env = {
        "TIERFLIGHT_SERVER__MEMORY_CEILING": str(ceiling),
        "TIERFLIGHT_DUCKDB__MEMORY_LIMIT": "6GB",
        "TIERFLIGHT_DUCKDB__THREADS": "1",
    }
    srv: SubprocessServer = start_subprocess(data_dir, env=env)
    pid = srv.proc.pid
    try:
        assert _status_kb(pid, "VmRSS:") < ceiling - (200 << 20)
        # A hash table of 100M groups: ~3 GB if nothing stopped it.
        heavy = "SELECT count(*) FROM (SELECT i, count(*) FROM range(100000000) t(i) GROUP BY i)"
        latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            with fsql.connect(srv.uri, autocommit=True) as conn:
                while not done.is_set():
                    t = time.perf_counter()
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchall()
                    latencies.append(time.perf_counter() - t)
                    time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            with pytest.raises(adbc_driver_manager.Error) as err:
                run(srv.uri, heavy)
        finally:
            done.set()
            prober.join(30)
        message = str(err.value)
        assert "resource exhausted" in message and "memory ceiling (700.0 MiB" in message, message
        assert_clean_message(message)
        # Sampled every 20 ms: the peak passes the ceiling by what one sample interval allows.
        assert _status_kb(pid, "VmHWM:") < ceiling + (300 << 20)
        assert run(srv.uri, "SELECT 4") == [(4,)]
        assert latencies and max(latencies) < 2.0
        # The memory went back (trimmed once the statement was gone). DuckDB's allocator
        # (jemalloc) returns freed pages over its decay time (~10 s), not at once.
        assert wait_for(lambda: _status_kb(pid, "VmRSS:") < ceiling, timeout=20)
    finally:
        srv.proc.terminate()
        srv.proc.wait(10)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("50%", 0.5), ("2GB", 2 << 30), (0, 0), (0.25, 0.25), ("100%", 1.0)],
)
def test_memory_ceiling_setting(tmp_path: Path, value: object, expected: float) -> None:
    assert make_config(tmp_path, **{"server.memory_ceiling": value}).server.memory_ceiling == expected


@pytest.mark.parametrize("value", ["150%", "0%", "lots"])
def test_memory_ceiling_setting_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.memory_ceiling"):
        make_config(tmp_path, **{"server.memory_ceiling": value})
