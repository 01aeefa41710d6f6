"""Small answers are read whole when DuckDB has run the statement: the cursor goes at once and
the DoGet stream is pyarrow's own (no Python per batch). Answers that fill their first batch
keep streaming as before (their first byte does not wait for the rest)."""

from __future__ import annotations

from typing import Any

import pyarrow.flight as flight

from flightsql_helpers import cmd_descriptor
from tierflight.protocol import flightsql_pb2 as pb


def _parked(server: Any) -> dict[str, Any]:
    executor = server.app.executor
    with executor._lock:
        return dict(executor._pending)


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    return client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=sql)))


def test_a_small_answer_holds_no_cursor_while_parked(server: Any, flat: Any) -> None:
    sql = "SELECT country, COUNT(*) AS n FROM events GROUP BY country ORDER BY country /* small */"
    with flight.connect(server.uri) as client:
        info = _info(client, sql)
        parked = [ex for ex in _parked(server).values() if ex.client_sql == sql]
        assert parked and not parked[0].holds_cursor
        got = client.do_get(info.endpoints[0].ticket).read_all()
    want = flat.sql("SELECT country, COUNT(*) AS n FROM events GROUP BY country ORDER BY country").to_arrow_table()
    assert got.to_pylist() == want.to_pylist()


def test_an_answer_that_fills_its_first_batch_streams(server: Any) -> None:
    rows = server.app.config.server.batch_rows * 2 + 7
    sql = f"SELECT i FROM range({rows}) t(i)"
    with flight.connect(server.uri) as client:
        info = _info(client, sql)
        parked = [ex for ex in _parked(server).values() if ex.client_sql == sql]
        assert parked and parked[0].holds_cursor
        got = client.do_get(info.endpoints[0].ticket).read_all()
    assert got.num_rows == rows and got.column("i").to_pylist() == list(range(rows))


def test_empty_and_one_batch_answers(server: Any) -> None:
    with flight.connect(server.uri) as client:
        for sql, n in (("SELECT i FROM range(0) t(i)", 0), ("SELECT i FROM range(10) t(i)", 10)):
            info = _info(client, sql)
            got = client.do_get(info.endpoints[0].ticket).read_all()
            assert got.num_rows == n and got.schema.names == ["i"]


def test_a_small_answer_is_reused_from_the_result_cache(server: Any) -> None:
    sql = "SELECT type, SUM(bid_price) AS s FROM events GROUP BY type ORDER BY type /* reuse */"
    if not server.app.executor.results.enabled:
        return
    with flight.connect(server.uri) as client:
        first = client.do_get(_info(client, sql).endpoints[0].ticket).read_all()
        second = client.do_get(_info(client, sql).endpoints[0].ticket).read_all()
    assert first.equals(second)
    mine = [r for r in server.app.executor.recent if r.sql == sql]
    assert [r.reused for r in mine][-2:] == [False, True]
