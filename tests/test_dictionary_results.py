"""ENUM (dictionary-encoded) results reach clients as their value type: the FlightInfo schema,
every batch and cached answers agree, through ADBC and raw pyarrow.flight."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tierflight.engine.plain import plain_reader
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.wire import pack

COUNTRIES = "'US','DE','GB','JP','BR','IN','FR','CA','AU','MX','ES','IT','NL'"
ENUM = f"ENUM({COUNTRIES})"
STATEMENTS = {
    "column": f"SELECT country::{ENUM} AS c FROM events ORDER BY ts, auction_id LIMIT 3",
    "struct": f"SELECT {{'c': country::{ENUM}}} AS c FROM events ORDER BY ts, auction_id LIMIT 3",
    "list": f"SELECT [country::{ENUM}] AS c FROM events ORDER BY ts, auction_id LIMIT 3",
    "map": f"SELECT map([country::{ENUM}], [1]) AS c FROM events ORDER BY ts, auction_id LIMIT 3",
}
PLAIN = {
    "column": pa.string(),
    "struct": pa.struct([("c", pa.string())]),
    "list": pa.list_(pa.field("c", pa.string())),
    "map": pa.map_(pa.field("key", pa.string(), nullable=False), pa.int32()),
}


def _expected(conn: Any, name: str) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute("SELECT country FROM events ORDER BY ts, auction_id LIMIT 3")
        countries = [r[0] for r in cur.fetchall()]
    wrap = {
        "column": lambda c: c,
        "struct": lambda c: {"c": c},
        "list": lambda c: [c],
        "map": lambda c: [(c, 1)],
    }[name]
    return [wrap(c) for c in countries]


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_adbc_reads_enum_results(conn: Any, name: str) -> None:
    expected = _expected(conn, name)
    for _ in range(2):  # the second answer may come from the result cache
        with conn.cursor() as cur:
            cur.execute(STATEMENTS[name])
            table = cur.fetch_arrow_table()
        assert table.schema.field("c").type == PLAIN[name]
        assert table.column("c").to_pylist() == expected


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_flight_schema_matches_batches(server: Any, conn: Any, name: str) -> None:
    expected = _expected(conn, name)
    with flight.connect(server.uri) as client:
        descriptor = flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query=STATEMENTS[name])))
        info = client.get_flight_info(descriptor)
        assert info.schema.field("c").type == PLAIN[name]
        table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema == info.schema
    assert table.column("c").to_pylist() == expected


def test_prepared_with_parameters_announces_plain_types(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT country::{ENUM} AS c FROM events WHERE country = ? LIMIT 2", parameters=("US",))
        table = cur.fetch_arrow_table()
    assert table.schema.field("c").type == pa.string()
    assert table.column("c").to_pylist() == ["US", "US"]


def test_large_enum_result_spans_batches(server: Any) -> None:
    rows = 150_000  # more than one batch (server.batch_rows = 65,536)
    sql = f"SELECT (range % 3)::VARCHAR::ENUM('0', '1', '2') AS e, range AS i FROM range({rows})"
    with flight.connect(server.uri) as client:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query=sql))))
        reader = client.do_get(info.endpoints[0].ticket)
        batches = [chunk.data for chunk in reader]
    assert len(batches) > 1
    table = pa.Table.from_batches(batches)
    assert table.schema.field("e").type == pa.string()
    assert table.num_rows == rows
    assert table.column("e").to_pylist()[:4] == ["0", "1", "2", "0"]


def test_batches_with_different_dictionaries_decode_each() -> None:
    first = pa.record_batch([pa.array(["a", "b"]).dictionary_encode()], names=["d"])
    second = pa.record_batch([pa.array(["z", "b", None]).dictionary_encode()], names=["d"])
    reader = plain_reader(pa.RecordBatchReader.from_batches(first.schema, [first, second]))
    assert reader.schema == pa.schema([("d", pa.string())])
    assert reader.read_all().column("d").to_pylist() == ["a", "b", "z", "b", None]


def test_union_of_enums_decodes() -> None:
    child = pa.array(["x", "y"]).dictionary_encode()
    union = pa.UnionArray.from_sparse(pa.array([0, 0], pa.int8()), [child], ["k"])
    batch = pa.record_batch([union], names=["u"])
    table = plain_reader(pa.RecordBatchReader.from_batches(batch.schema, [batch])).read_all()
    assert table.schema.field("u").type.field(0).type == pa.string()
    assert table.column("u").to_pylist() == ["x", "y"]
