"""Flight SQL filter patterns (SQL LIKE): DuckDB's LIKE as the reference, linear time,
bounded length, through GetTables / GetDbSchemas and ADBC GetObjects."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tierflight.core.errors import InvalidArgument

from flightsql_helpers import assert_clean_message, cmd_descriptor, flight_status, read_all
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.like import MAX_PATTERN_CHARS, compile_like, like

# Pattern pieces: literals (one of them outside the BMP, one a newline), wildcards and escapes.
PIECES = ["a", "b", "é", "\n", "𝄞", "%", "_", "\\%", "\\_", "\\\\", "\\a"]
VALUE_CHARS = "ab%_\\é\n𝄞"


@pytest.fixture(scope="module")
def duck() -> Iterator[Any]:
    con = duckdb.connect()
    yield con
    con.close()


def duck_like(con: Any, pattern: str, value: str) -> bool:
    result: bool = con.execute("SELECT ? LIKE ? ESCAPE '\\'", [value, pattern]).fetchone()[0]
    return result


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=10), value=st.text(VALUE_CHARS, max_size=10), data=st.data())
def test_matches_like_duckdb(duck: Any, pieces: list[str], value: str, data: Any) -> None:
    pattern = "".join(pieces)
    assert like(pattern, value) == duck_like(duck, pattern, value), (pattern, value)
    # A value built from the pattern itself (so matches are common, not only misses).
    fill = data.draw(st.text(VALUE_CHARS, max_size=3))
    built = "".join(p[-1] if p.startswith("\\") else fill if p == "%" else "x" if p == "_" else p for p in pieces)
    assert like(pattern, built) == duck_like(duck, pattern, built), (pattern, built)
    assert like(pattern, built), (pattern, built)


def test_escapes_and_edge_cases() -> None:
    assert like(None, "anything")
    assert like("", "") and not like("", "a")
    assert like("%", "") and like("%%", "x")
    assert like("a\\", "a\\") and not like("a\\", "a")  # a trailing backslash is literal
    assert like("events\\_%", "events_x") and not like("events\\_%", "eventsXx")
    assert like("ev_nts", "events") and not like("ev_nts", "evnts")
    assert like("a%b%c", "aXbYc") and not like("a%b%c", "acb")
    assert not like("ab%ba", "aba")  # the anchored ends may not overlap
    assert like("\x00%", "\x00tail")
    assert not like("A%", "a")  # case-sensitive, like the names themselves


def test_pathological_patterns_take_no_time() -> None:
    nasty = [
        "%" * 1000 + "Z",
        "%a" * 500 + "Z",
        "%_" * 500,
        ("_" * 10 + "%") * 90 + "Z",
    ]
    values = ["a" * 300, "events", "a" * 299 + "Z"[:0]]
    started = time.perf_counter()
    for pattern in nasty:
        assert len(pattern) <= MAX_PATTERN_CHARS
        for value in values:
            like(pattern, value)
    assert time.perf_counter() - started < 0.5
    assert not compile_like("%" * 1000 + "Z").matches("a" * 300)
    assert compile_like("%a" * 100).matches("a" * 300)


def test_too_long_pattern_is_refused() -> None:
    like("%" * MAX_PATTERN_CHARS, "x")
    with pytest.raises(InvalidArgument, match="table_name_filter_pattern is 1025 characters long"):
        like("%" * (MAX_PATTERN_CHARS + 1), "x", "table_name_filter_pattern")


# -- through the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[flight.FlightClient]:
    with flight.connect(server.uri) as c:
        yield c


def _names(client: flight.FlightClient, msg: Any) -> list[str]:
    rows = read_all(client, client.get_flight_info(cmd_descriptor(msg))).to_pylist()
    return [r.get("table_name") or r["db_schema_name"] for r in rows]


def test_pathological_get_tables_answers_at_once_and_select_1_goes_on(client: flight.FlightClient, conn: Any) -> None:
    latencies: list[float] = []
    stop, warm = threading.Event(), threading.Event()

    def probe() -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")  # a first statement's set-up is not what is measured
            cur.fetchall()
            warm.set()
            while not stop.is_set():
                started = time.perf_counter()
                cur.execute("SELECT 1")
                cur.fetchall()
                latencies.append(time.perf_counter() - started)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    assert warm.wait(30)
    try:
        started = time.perf_counter()
        # On a backtracking regex each of these took from 1.4 s (20 %) to 50 s (30 %).
        assert _names(client, pb.CommandGetTables(table_name_filter_pattern="%" * 30 + "Z")) == []
        assert _names(client, pb.CommandGetTables(db_schema_filter_pattern="%" * 30 + "Z")) == []
        assert _names(client, pb.CommandGetDbSchemas(db_schema_filter_pattern="%" * 30 + "Z")) == []
        assert time.perf_counter() - started < 1.0
        time.sleep(0.2)  # a few probes more
    finally:
        stop.set()
        thread.join(10)
    # Margin for a busy 2-core machine; the regex held SELECT 1 for seconds (26 s at 30 %).
    assert latencies and max(latencies) < 2.0
    assert _names(client, pb.CommandGetTables(table_name_filter_pattern="%%e%%n%t%s")) == ["events"]


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (pb.CommandGetTables(table_name_filter_pattern="%" * 1025), "table_name_filter_pattern"),
        (pb.CommandGetTables(db_schema_filter_pattern="_" * 5000), "db_schema_filter_pattern"),
        (pb.CommandGetDbSchemas(db_schema_filter_pattern="x" * 1025), "db_schema_filter_pattern"),
    ],
)
def test_too_long_pattern_is_invalid_argument(client: flight.FlightClient, msg: Any, field: str) -> None:
    with pytest.raises(pa.ArrowException) as err:
        read_all(client, client.get_flight_info(cmd_descriptor(msg)))
    assert flight_status(err.value) == "INVALID_ARGUMENT"
    assert field in str(err.value) and f"at most {MAX_PATTERN_CHARS}" in str(err.value)
    assert_clean_message(str(err.value))


def test_adbc_get_objects_with_pathological_and_long_filters(conn: Any) -> None:
    started = time.perf_counter()
    objects = conn.adbc_get_objects(depth="tables", table_name_filter="%" * 24 + "Z").read_all().to_pylist()
    assert time.perf_counter() - started < 1.0
    assert all(not s["db_schema_tables"] for c in objects for s in c["catalog_db_schemas"])
    with pytest.raises(Exception, match=f"at most {MAX_PATTERN_CHARS}") as err:
        conn.adbc_get_objects(depth="tables", table_name_filter="%" * 2000).read_all()
    assert str(err.value).startswith("INVALID_ARGUMENT")
