"""Parameters on the server: the parameter schema over raw Flight and ADBC, every Python type
against the flat oracle, exact decimals, one handle with many values, unbound placeholders."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_helpers import (
    adbc_status,
    assert_clean_message,
    bind_parameters,
    close_prepared,
    cmd_descriptor,
    create_prepared,
    flight_status,
    read_all,
)
from tierflight.protocol import flightsql_pb2 as pb

TYPED_SQL = (
    "SELECT count(*) AS n FROM events "
    "WHERE type = ? AND ts >= ? AND advertiser_id > ? AND bid_price > ? AND day <= ? LIMIT ?"
)
TYPED = [pa.utf8(), pa.timestamp("us"), pa.int32(), pa.float64(), pa.date32(), pa.int64()]


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[flight.FlightClient]:
    with flight.connect(server.uri) as c:
        yield c


@pytest.fixture(scope="module")
def conn(server: Any) -> Iterator[Any]:
    with fsql.connect(server.uri, autocommit=True) as c:
        yield c


@pytest.fixture()
def cur(conn: Any) -> Iterator[Any]:
    with conn.cursor() as c:
        yield c


def _prepared_rows(client: flight.FlightClient, handle: bytes) -> list[tuple[Any, ...]]:
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    return [tuple(r.values()) for r in read_all(client, client.get_flight_info(descriptor)).to_pylist()]


# -- the parameter schema ---------------------------------------------------------------------------


def test_parameter_schema_over_raw_flight(client: flight.FlightClient) -> None:
    prepared = create_prepared(client, TYPED_SQL)
    schema = pa.ipc.read_schema(pa.py_buffer(prepared.parameter_schema))
    assert schema.types == TYPED
    assert schema.names == [f"parameter_{i}" for i in range(1, 7)]
    close_prepared(client, prepared.prepared_statement_handle)


def test_parameter_schema_through_adbc(cur: Any) -> None:
    schema = cur.adbc_prepare(TYPED_SQL)
    assert schema.types == TYPED


# -- every Python type against the oracle -------------------------------------------------------------


def _cases(flat: Any) -> list[tuple[str, tuple[Any, ...]]]:
    ((day, ts, price, total),) = flat.execute(
        "SELECT min(day) + 3, min(ts) + INTERVAL 50 HOUR, median(bid_price), max(total_price) / 3 FROM events"
    ).fetchall()
    return [
        ("SELECT count(*) FROM events WHERE type = ?", ("click",)),
        ("SELECT count(*) FROM events WHERE advertiser_id > ?", (50_000,)),
        ("SELECT count(*) FROM events WHERE bid_price > ?", (float(price),)),
        ("SELECT count(*) FROM events WHERE bid_price > ?", (decimal.Decimal(repr(price)),)),
        ("SELECT count(*) FROM events WHERE total_price >= ?", (decimal.Decimal(f"{total:.2f}"),)),
        ("SELECT count(*) FROM events WHERE (advertiser_id > 50000) = ?", (True,)),
        ("SELECT type, count(*) FROM events WHERE day >= ? GROUP BY type ORDER BY type", (day,)),
        ("SELECT count(*) FROM events WHERE ts >= ? AND ts < ?", (ts, ts + dt.timedelta(days=2))),
        ("SELECT count(*) FROM events WHERE CAST(ts AS TIME) < ?", (dt.time(6, 30),)),
        ("SELECT count(*), coalesce(?, 'none') FROM events WHERE country IS NOT DISTINCT FROM ?", (None, None)),
        ("SELECT count(*) FROM events WHERE type = ? AND bid_price > ? LIMIT ?", ("impression", 0.25, 1)),
    ]


CASE_IDS = ["str", "int", "float", "decimal", "decimal-total", "bool", "date", "datetime", "time", "none", "limit"]


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_each_python_type_matches_the_oracle(cur: Any, flat: Any, case: int) -> None:
    sql, params = _cases(flat)[case]
    cur.execute(sql, params)
    got = cur.fetchall()
    assert got == flat.execute(sql, list(params)).fetchall()
    assert (got and got[0][0] != 0) or CASE_IDS[case] == "none"


def test_decimal_parameters_compare_exactly(cur: Any, flat: Any) -> None:
    # bid_price holds 4-digit decimals and total_price 2-digit ones (stored as DOUBLE): a
    # Decimal of a stored value finds exactly the rows holding it.
    ((bid, total),) = flat.execute(
        "SELECT (SELECT bid_price FROM events WHERE bid_price > 0 ORDER BY ts LIMIT 1),"
        " (SELECT total_price FROM events WHERE total_price > 0 ORDER BY ts LIMIT 1)"
    ).fetchall()
    for column, value in (("bid_price", bid), ("total_price", total)):
        sql = f"SELECT count(*) FROM events WHERE {column} = ?"
        cur.execute(sql, (decimal.Decimal(repr(value)),))
        (n,) = cur.fetchone()
        assert n > 0
        assert n == flat.execute(sql, [value]).fetchall()[0][0]
    # A Decimal carrying more digits than any double is not rounded before DuckDB compares.
    many = decimal.Decimal(repr(bid)) + decimal.Decimal("1e-25")
    sql = "SELECT count(*), ? > ? FROM events WHERE bid_price = ?"
    cur.execute(sql, (many, decimal.Decimal(repr(bid)), many))
    assert cur.fetchall() == flat.execute(sql, [many, decimal.Decimal(repr(bid)), many]).fetchall()
    assert flat.execute("SELECT ? > ?", [many, decimal.Decimal(repr(bid))]).fetchall() == [(True,)]


def test_one_prepared_statement_many_values(client: flight.FlightClient, flat: Any) -> None:
    sql = "SELECT count(*) AS n, max(advertiser_id) AS top FROM events WHERE advertiser_id < ? AND type = ?"
    prepared = create_prepared(client, sql)
    handle = prepared.prepared_statement_handle
    kinds = ["impression", "click", "purchase", "nope"]
    for i in range(100):
        values = [1_000 * i + 7, kinds[i % len(kinds)]]
        batch = pa.record_batch([pa.array([values[0]], pa.int64()), pa.array([values[1]])], names=["a", "b"])
        bind_parameters(client, handle, batch)
        assert _prepared_rows(client, handle) == flat.execute(sql, values).fetchall(), values
    close_prepared(client, handle)


# -- unbound placeholders, wrong batches ----------------------------------------------------------------


@pytest.mark.parametrize("sql", ["SELECT count(*) FROM events WHERE type = ?", "SELECT $1 AS a, $2 AS b"])
def test_statement_query_with_placeholders_refused(client: flight.FlightClient, sql: str) -> None:
    with pytest.raises(pa.ArrowException) as err:
        client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=sql)))
    assert flight_status(err.value) == "INVALID_ARGUMENT"
    assert "parameter(s) but none were bound" in str(err.value)
    assert_clean_message(str(err.value))


def test_prepared_statement_executed_unbound_refused(client: flight.FlightClient) -> None:
    prepared = create_prepared(client, "SELECT count(*) FROM events WHERE type = ? AND day = ?")
    handle = prepared.prepared_statement_handle
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    with pytest.raises(pa.ArrowException) as err:
        client.get_flight_info(descriptor)
    assert flight_status(err.value) == "INVALID_ARGUMENT"
    assert "2 parameter(s) but none were bound" in str(err.value)
    # A batch with no rows binds nothing either.
    bind_parameters(client, handle, pa.record_batch([pa.array([], pa.string()), pa.array([], pa.date32())], names=["a", "b"]))
    with pytest.raises(pa.ArrowException) as err:
        client.get_flight_info(descriptor)
    assert "none were bound" in str(err.value)
    close_prepared(client, handle)


def test_adbc_execute_unbound_refused(cur: Any) -> None:
    with pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute("SELECT count(*) FROM events WHERE type = ?")
    assert adbc_status(err.value) == "INVALID_ARGUMENT"
    assert "none were bound" in str(err.value)
    cur.execute("SELECT 1")
    assert cur.fetchall() == [(1,)]


@pytest.mark.parametrize(
    ("sql", "batch", "message"),
    [
        ("SELECT ? AS a", pa.record_batch([pa.array([1]), pa.array([2])], names=["a", "b"]), "1 parameter(s) but 2"),
        ("SELECT 1 AS a", pa.record_batch([pa.array([1])], names=["a"]), "0 parameter(s) but 1"),
        ("SELECT ? AS a", pa.record_batch([pa.array([[1, 2]])], names=["xs"]), "parameter 1 ('xs') has Arrow type list"),
        # One execution per row: a batch past the bound is refused before it is held in memory.
        ("SELECT ? AS a", pa.record_batch([pa.array(range(10_001))], names=["a"]), "at most 10000 rows"),
    ],
    ids=["too-many-columns", "values-for-none", "list-type", "too-many-rows"],
)
def test_bad_parameter_batches_refused(client: flight.FlightClient, sql: str, batch: pa.RecordBatch, message: str) -> None:
    prepared = create_prepared(client, sql)
    with pytest.raises(pa.ArrowException) as err:
        bind_parameters(client, prepared.prepared_statement_handle, batch)
    assert flight_status(err.value) == "INVALID_ARGUMENT"
    assert message in str(err.value)
    assert_clean_message(str(err.value))
    close_prepared(client, prepared.prepared_statement_handle)


def test_huge_parameter_numbers_refused(client: flight.FlightClient) -> None:
    # `$n` gives a statement n parameters: the server must not build an n-entry schema.
    for call in (
        lambda: create_prepared(client, "SELECT $70000 AS x"),
        lambda: client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query="SELECT $70000 AS x"))),
        lambda: client.get_schema(cmd_descriptor(pb.CommandStatementQuery(query="SELECT $70000 AS x"))),
    ):
        with pytest.raises(pa.ArrowException) as err:
            call()
        assert flight_status(err.value) == "INVALID_ARGUMENT"
        assert "at most 65535" in str(err.value)


def test_statement_schema_with_placeholders(client: flight.FlightClient) -> None:
    # GetSchema only describes the result: placeholders need no values for it.
    sql = "SELECT count(*) AS n, max(ts) AS last FROM events WHERE type = ?"
    schema = client.get_schema(cmd_descriptor(pb.CommandStatementQuery(query=sql))).schema
    assert schema.names == ["n", "last"]
