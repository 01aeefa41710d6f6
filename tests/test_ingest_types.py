"""Ingest column types: the table's type or a lossless widening, anything else refused whole
(naming the column and both types); empty batches acknowledged with 0 rows and no WAL write.
Each case goes through ADBC ``adbc_ingest`` and a raw Flight DoPut."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import tierflight_client
from conftest import RunningServer, load_demo, make_config, start_in_process
from flightsql_helpers import cmd_descriptor
from test_ingest import _rows
from tierflight.protocol import flightsql_pb2 as pb

START = dt.datetime(2024, 12, 31, 9)
_serial = itertools.count()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("ingest-types")
    load_demo(make_config(root), 2_000, dt.date(2024, 12, 20), 10, 5)
    server = start_in_process(make_config(root))
    yield server
    server.server.shutdown()
    server.app.close()


def _batch(n: int = 4) -> pa.Table:
    """``n`` rows with auction ids no other call uses (so each case finds its own rows)."""
    return _rows(n, START, seed=next(_serial) + 100)


def _with(table: pa.Table, column: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


def _do_put(uri: str, table: pa.Table, batches: list[pa.RecordBatch] | None = None) -> int:
    """A raw DoPut of CommandStatementIngest: the schema, then ``batches`` (default: the table's)."""
    cmd = pb.CommandStatementIngest(
        table="events",
        table_definition_options=pb.CommandStatementIngest.TableDefinitionOptions(
            if_not_exist=pb.CommandStatementIngest.TableDefinitionOptions.TABLE_NOT_EXIST_OPTION_FAIL,
            if_exists=pb.CommandStatementIngest.TableDefinitionOptions.TABLE_EXISTS_OPTION_APPEND,
        ),
    )
    with flight.connect(uri) as client:
        writer, reader = client.do_put(cmd_descriptor(cmd), table.schema)
        for batch in table.to_batches() if batches is None else batches:
            writer.write_batch(batch)
        writer.done_writing()
        answer = reader.read()
        writer.close()
    return pb.DoPutUpdateResult.FromString(answer.to_pybytes() if answer is not None else b"").record_count


def _adbc(uri: str, table: Any) -> int:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        return int(cur.adbc_ingest("events", table, mode="append"))


INGEST: dict[str, Callable[[str, pa.Table], int]] = {"adbc": _adbc, "do_put": _do_put}


def _count(uri: str) -> int:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events")
        return int(cur.fetchall()[0][0])


def _wal(running: RunningServer) -> list[str]:
    return sorted(p.name for p in Path(running.app.config.data_dir, "events", "wal").glob("*.arrow"))


def _value(uri: str, column: str, auction_id: str) -> Any:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {column} FROM events WHERE auction_id = ?", parameters=[auction_id])
        return cur.fetchall()[0][0]


# -- refusals ----------------------------------------------------------------------------------

REFUSED: list[tuple[str, Callable[[int], pa.Array], str, str]] = [
    # (column, values for n rows, the source type and the table's type as the message names them)
    ("ts", lambda n: pa.array([str(START)] * n), "string", "timestamp[us] (TIMESTAMP)"),
    ("bid_price", lambda n: pa.array([True] * n), "bool", "double (DOUBLE)"),
    ("type", lambda n: pa.array([1] * n), "int64", "string (VARCHAR)"),
    ("advertiser_id", lambda n: pa.array([1] * n, pa.int64()), "int64", "int32 (INTEGER)"),
    ("advertiser_id", lambda n: pa.array([1] * n, pa.uint32()), "uint32", "int32 (INTEGER)"),
    ("user_id", lambda n: pa.array([1] * n, pa.uint64()), "uint64", "int64 (BIGINT)"),
    ("bid_price", lambda n: pa.array([1] * n, pa.int64()), "int64", "double (DOUBLE)"),
    ("total_price", lambda n: pa.array([decimal.Decimal("1.5")] * n), "decimal128(2, 1)", "double (DOUBLE)"),
    ("ts", lambda n: pa.array([START.date()] * n), "date32[day]", "timestamp[us] (TIMESTAMP)"),
    ("country", lambda n: pa.array([b"JP"] * n), "binary", "string (VARCHAR)"),
    ("user_id", lambda n: pa.array([1.0] * n), "double", "int64 (BIGINT)"),
]


@pytest.mark.parametrize("via", sorted(INGEST))
@pytest.mark.parametrize(("column", "values", "source", "target"), REFUSED, ids=[f"{c}-{s}" for c, _, s, _ in REFUSED])
def test_a_column_of_another_type_is_refused_whole(
    running: RunningServer, via: str, column: str, values: Callable[[int], pa.Array], source: str, target: str
) -> None:
    table = _batch()
    table = _with(table, column, values(table.num_rows))
    before, wal = _count(running.uri), _wal(running)
    with pytest.raises(Exception) as err:
        INGEST[via](running.uri, table)
    message = str(err.value)
    assert f"column {column} is {source}, but the table's column is {target}" in message, message
    assert "nothing was written" in message and "Traceback" not in message
    assert "INVALID_ARGUMENT" in message or "InvalidArgument" in message, message
    assert _count(running.uri) == before and _wal(running) == wal


@pytest.mark.parametrize("via", sorted(INGEST))
def test_nanoseconds_that_are_not_whole_microseconds_are_refused(running: RunningServer, via: str) -> None:
    table = _batch()
    ns = pa.array([int(t.timestamp()) * 10**9 + 1_000 * i + (7 if i == 2 else 0) for i, t in enumerate(table["ts"].to_pylist())])
    table = _with(table, "ts", ns.cast(pa.timestamp("ns")))
    before, wal = _count(running.uri), _wal(running)
    with pytest.raises(Exception, match=r"column ts is timestamp\[ns\], which does not convert safely .* at row 2"):
        INGEST[via](running.uri, table)
    assert _count(running.uri) == before and _wal(running) == wal


# -- lossless widenings --------------------------------------------------------------------------

ACCEPTED: list[tuple[str, Callable[[pa.Table], pa.Array | pa.ChunkedArray], Any]] = [
    # (column, the column as another type, the value the first row reads back as: None = as sent)
    ("advertiser_id", lambda t: t["advertiser_id"].cast(pa.int8()), None),
    ("advertiser_id", lambda t: t["advertiser_id"].cast(pa.int16()), None),
    ("advertiser_id", lambda t: t["advertiser_id"].cast(pa.uint16()), None),
    ("publisher_id", lambda t: t["publisher_id"].cast(pa.uint8()), None),
    ("user_id", lambda t: t["user_id"].cast(pa.int32()), None),
    ("user_id", lambda t: t["user_id"].cast(pa.uint32()), None),
    ("bid_price", lambda t: pa.array([1.5, None, 2.25, 0.5], pa.float32()), 1.5),
    ("bid_price", lambda t: pa.array([3, None, 1, 2], pa.int32()), 3.0),
    ("bid_price", lambda t: pa.array([2**32 - 1, None, 1, 2], pa.uint32()), float(2**32 - 1)),
    ("total_price", lambda t: pa.nulls(t.num_rows), None),
    ("type", lambda t: t["type"].cast(pa.large_string()), None),
    ("type", lambda t: t["type"].cast(pa.string_view()), None),
    ("type", lambda t: t["type"].combine_chunks().dictionary_encode(), None),
    ("country", lambda t: t["country"].cast(pa.dictionary(pa.int8(), pa.large_string())), None),
    ("ts", lambda t: t["ts"].cast(pa.timestamp("s")), None),
    ("ts", lambda t: t["ts"].cast(pa.timestamp("ms")), None),
    ("ts", lambda t: t["ts"].cast(pa.timestamp("ns")), None),
    # 18:00 in Tokyo is 09:00 UTC: the instant is kept, stored as UTC.
    (
        "ts",
        lambda t: pa.array(
            [dt.datetime(2024, 12, 31, 18, tzinfo=dt.timezone(dt.timedelta(hours=9)))] * t.num_rows,
            pa.timestamp("us", "Asia/Tokyo"),
        ),
        dt.datetime(2024, 12, 31, 9),
    ),
]


@pytest.mark.parametrize("via", sorted(INGEST))
@pytest.mark.parametrize(
    ("column", "convert", "expected"), ACCEPTED, ids=[f"{i}-{c}" for i, (c, _, _) in enumerate(ACCEPTED)]
)
def test_a_lossless_widening_is_accepted(
    running: RunningServer, via: str, column: str, convert: Callable[[pa.Table], Any], expected: Any
) -> None:
    table = _batch()
    sent = _with(table, column, convert(table))
    assert sent.schema.field(column).type != table.schema.field(column).type
    before = _count(running.uri)
    assert INGEST[via](running.uri, sent) == table.num_rows
    assert _count(running.uri) == before + table.num_rows
    first = table["auction_id"][0].as_py()
    want = table[column][0].as_py() if expected is None and column != "total_price" else expected
    assert _value(running.uri, column, first) == want


# -- empty batches -------------------------------------------------------------------------------


def test_do_put_with_a_schema_and_no_batches_acknowledges_0(running: RunningServer) -> None:
    before, wal = _count(running.uri), _wal(running)
    assert _do_put(running.uri, _batch(), batches=[]) == 0
    assert _count(running.uri) == before and _wal(running) == wal


def test_do_put_of_zero_length_batches_acknowledges_0(running: RunningServer) -> None:
    schema = _batch().schema
    empty = pa.RecordBatch.from_pylist([], schema=schema)
    before, wal = _count(running.uri), _wal(running)
    assert _do_put(running.uri, schema.empty_table(), batches=[empty, empty]) == 0
    assert _count(running.uri) == before and _wal(running) == wal


def test_empty_adbc_ingest_acknowledges_0_and_still_checks_types(running: RunningServer) -> None:
    schema = _batch().schema
    empty = pa.RecordBatch.from_pylist([], schema=schema)
    before, wal = _count(running.uri), _wal(running)
    assert _adbc(running.uri, empty) == 0
    assert _adbc(running.uri, pa.RecordBatchReader.from_batches(schema, [empty])) == 0
    with tierflight_client.connect(running.uri) as conn:
        assert conn.ingest("events", schema.empty_table()) == 0
        with pytest.raises(tierflight_client.InvalidArgument, match="column ts is string"):
            conn.ingest("events", schema.set(0, pa.field("ts", pa.string())).empty_table())
    bad = pa.RecordBatch.from_pylist([], schema=schema.set(0, pa.field("ts", pa.string())))
    with pytest.raises(Exception, match="column ts is string"):
        _adbc(running.uri, bad)
    assert _count(running.uri) == before and _wal(running) == wal


@pytest.mark.xfail(
    strict=True,
    reason="the ADBC Go driver sends no message at all for a stream without batches (an empty pa.Table), "
    "and Arrow's C++ Flight server refuses such a DoPut (UNKNOWN 'Stream finished before first message "
    "sent') before tierflight sees it; tierflight_client.Connection.ingest sends one empty batch instead",
)
def test_adbc_ingest_of_a_table_without_batches(running: RunningServer) -> None:
    assert _adbc(running.uri, _batch().schema.empty_table()) == 0
