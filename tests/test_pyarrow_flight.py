"""Plain pyarrow.flight with tierflight's own Flight SQL protobuf messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from google.protobuf.message import Message

from flightsql_helpers import (
    bind_parameters,
    close_prepared,
    cmd_descriptor,
    create_prepared,
    dense_union_params,
    flight_status,
    read_all,
    stream_batches,
    wait_for,
)
from tierflight.protocol import flight_actions_pb2 as fa
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.wire import pack, unpack

MAX_MESSAGE = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[flight.FlightClient]:
    with flight.connect(server.uri) as c:
        yield c


def statement(sql: str) -> flight.FlightDescriptor:
    return cmd_descriptor(pb.CommandStatementQuery(query=sql))


def executions(server: Any, sql: str) -> list[Any]:
    return [r for r in list(server.app.executor.recent) if r.sql == sql]


def unique_sql(label: str = "q") -> str:
    return f"SELECT '{label}-{uuid.uuid4().hex}' AS tag, count(*) AS n FROM events WHERE type = 'click'"


# -- statements ----------------------------------------------------------------------------------


def test_statement_flight_info_and_do_get(client: flight.FlightClient, flat: Any) -> None:
    sql = "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type"
    info = client.get_flight_info(statement(sql))
    assert len(info.endpoints) == 1
    table = read_all(client, info)
    assert table.schema.equals(info.schema)
    assert [tuple(r.values()) for r in table.to_pylist()] == flat.execute(sql).fetchall()


def test_get_schema_matches_stream(client: flight.FlightClient) -> None:
    sql = "SELECT ts, type, bid_price, day, hour, user_id FROM events WHERE advertiser_id > 90000 LIMIT 5"
    schema = client.get_schema(statement(sql)).schema
    info = client.get_flight_info(statement(sql))
    table = read_all(client, info)
    assert schema.equals(table.schema)
    assert info.schema.equals(table.schema)
    assert schema.field("ts").type == pa.timestamp("us")
    assert schema.field("type").type == pa.utf8()
    assert schema.field("day").type == pa.date32()


def test_types_are_plain(client: flight.FlightClient) -> None:
    info = client.get_flight_info(statement("SELECT ts, type, auction_id, country, hour FROM events LIMIT 3"))
    table = read_all(client, info)
    for name in ("type", "auction_id", "country"):
        assert table.schema.field(name).type == pa.string(), name
    for name in ("ts", "hour"):
        assert table.schema.field(name).type == pa.timestamp("us"), name
        assert table.schema.field(name).type.tz is None


def test_ticket_can_be_fetched_again(client: flight.FlightClient) -> None:
    info = client.get_flight_info(statement("SELECT 40 + 2 AS answer"))
    ticket = info.endpoints[0].ticket
    assert client.do_get(ticket).read_all().to_pylist() == [{"answer": 42}]
    assert client.do_get(ticket).read_all().to_pylist() == [{"answer": 42}]


# -- metadata commands ------------------------------------------------------------------------------

METADATA_COMMANDS: dict[str, Message] = {
    "sql-info-all": pb.CommandGetSqlInfo(),
    "sql-info-some": pb.CommandGetSqlInfo(info=[pb.FLIGHT_SQL_SERVER_NAME, pb.FLIGHT_SQL_SERVER_READ_ONLY]),
    "catalogs": pb.CommandGetCatalogs(),
    "db-schemas": pb.CommandGetDbSchemas(),
    "db-schemas-pattern": pb.CommandGetDbSchemas(db_schema_filter_pattern="sys%"),
    "tables": pb.CommandGetTables(),
    "tables-with-schema": pb.CommandGetTables(include_schema=True),
    "tables-pattern": pb.CommandGetTables(table_name_filter_pattern="ev_nts", include_schema=True),
    "tables-types": pb.CommandGetTables(table_types=["SYSTEM TABLE"]),
    "table-types": pb.CommandGetTableTypes(),
    "primary-keys": pb.CommandGetPrimaryKeys(table="events"),
    "imported-keys": pb.CommandGetImportedKeys(table="events"),
    "exported-keys": pb.CommandGetExportedKeys(table="events"),
    "cross-reference": pb.CommandGetCrossReference(pk_table="events", fk_table="events"),
    "xdbc-type-info": pb.CommandGetXdbcTypeInfo(),
    "xdbc-type-info-varchar": pb.CommandGetXdbcTypeInfo(data_type=pb.XDBC_VARCHAR),
}


@pytest.mark.parametrize("name", sorted(METADATA_COMMANDS))
def test_metadata_command_schemas_agree(client: flight.FlightClient, name: str) -> None:
    descriptor = cmd_descriptor(METADATA_COMMANDS[name])
    info = client.get_flight_info(descriptor)
    schema = client.get_schema(descriptor).schema
    table = read_all(client, info)
    assert info.schema.equals(schema), name
    assert table.schema.equals(schema), name
    if info.total_records >= 0:
        assert info.total_records == table.num_rows


def _rows(client: flight.FlightClient, msg: Message) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_all(client, client.get_flight_info(cmd_descriptor(msg))).to_pylist()
    return rows


def test_get_catalogs_and_schemas(client: flight.FlightClient, server: Any) -> None:
    assert _rows(client, pb.CommandGetCatalogs()) == [{"catalog_name": server.app.catalog_name}]
    schemas = _rows(client, pb.CommandGetDbSchemas())
    assert sorted(r["db_schema_name"] for r in schemas) == ["main", "system"]
    assert [
        r["db_schema_name"] for r in _rows(client, pb.CommandGetDbSchemas(db_schema_filter_pattern="m%"))
    ] == ["main"]
    assert _rows(client, pb.CommandGetDbSchemas(catalog="elsewhere")) == []


def test_get_tables(client: flight.FlightClient, flat: Any) -> None:
    rows = _rows(client, pb.CommandGetTables())
    names = {(r["db_schema_name"], r["table_name"], r["table_type"]) for r in rows}
    assert ("main", "events", "TABLE") in names
    assert {("system", t, "SYSTEM TABLE") for t in ("partitions", "queries", "rollups")} <= names

    (events,) = _rows(client, pb.CommandGetTables(table_name_filter_pattern="ev%", include_schema=True))
    schema = pa.ipc.read_schema(pa.py_buffer(events["table_schema"]))
    assert schema.names == flat.sql("SELECT * FROM events LIMIT 0").columns
    assert schema.field("ts").type == pa.timestamp("us")
    assert schema.field("minute").type == pa.timestamp("us")
    assert schema.field("week").type == pa.date32()

    system = _rows(
        client, pb.CommandGetTables(db_schema_filter_pattern="system", table_types=["SYSTEM TABLE"])
    )
    assert sorted(r["table_name"] for r in system) == ["partitions", "queries", "rollup_advice", "rollups", "snapshots"]
    assert _rows(client, pb.CommandGetTables(table_types=["VIEW"])) == []
    assert _rows(client, pb.CommandGetTables(table_name_filter_pattern="events\\_%")) == []


def test_get_table_types_and_keys(client: flight.FlightClient) -> None:
    assert sorted(r["table_type"] for r in _rows(client, pb.CommandGetTableTypes())) == [
        "SYSTEM TABLE",
        "TABLE",
    ]
    # A fact table has no primary key and exports none; its references are its imported keys.
    assert _rows(client, pb.CommandGetPrimaryKeys(table="events")) == []
    imported = _rows(client, pb.CommandGetImportedKeys(table="events"))
    assert sorted((r["fk_column_name"], r["pk_table_name"], r["pk_column_name"]) for r in imported) == [
        ("advertiser_id", "advertisers", "advertiser_id"),
        ("publisher_id", "publishers", "publisher_id"),
    ]
    assert _rows(client, pb.CommandGetExportedKeys(table="events")) == []


def test_get_sql_info_server_name(client: flight.FlightClient) -> None:
    rows = _rows(
        client, pb.CommandGetSqlInfo(info=[pb.FLIGHT_SQL_SERVER_NAME, pb.FLIGHT_SQL_SERVER_READ_ONLY])
    )
    values = {r["info_name"]: r["value"] for r in rows}
    assert values[pb.FLIGHT_SQL_SERVER_NAME] == "tierflight"
    assert values[pb.FLIGHT_SQL_SERVER_READ_ONLY] is True


def test_get_xdbc_type_info(client: flight.FlightClient) -> None:
    everything = _rows(client, pb.CommandGetXdbcTypeInfo())
    assert {"VARCHAR", "BIGINT", "TIMESTAMP", "DATE", "DOUBLE"} <= {r["type_name"] for r in everything}
    varchar = _rows(client, pb.CommandGetXdbcTypeInfo(data_type=pb.XDBC_VARCHAR))
    assert varchar and all(r["data_type"] == pb.XDBC_VARCHAR for r in varchar)


# -- prepared statements via actions ---------------------------------------------------------------------


def test_prepared_statement_flow(client: flight.FlightClient, server: Any, flat: Any) -> None:
    sql = "SELECT count(*) AS n, min(ts) AS first FROM events WHERE type = ? AND advertiser_id > ?"
    prepared = create_prepared(client, sql)
    handle = prepared.prepared_statement_handle
    dataset_schema = pa.ipc.read_schema(pa.py_buffer(prepared.dataset_schema))
    assert dataset_schema.names == ["n", "first"]
    parameter_schema = pa.ipc.read_schema(pa.py_buffer(prepared.parameter_schema))
    assert len(parameter_schema) == 2

    params = pa.record_batch([pa.array(["impression"]), pa.array([50_000], pa.int64())], names=["a", "b"])
    assert bind_parameters(client, handle, params) == handle
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    table = read_all(client, client.get_flight_info(descriptor))
    assert table.schema.names == ["n", "first"]
    expected = flat.execute(sql, ["impression", 50_000]).fetchall()
    assert [tuple(r.values()) for r in table.to_pylist()] == expected

    # Rebinding the same handle runs it with the new values.
    bind_parameters(
        client, handle, pa.record_batch([pa.array(["click"]), pa.array([0], pa.int64())], names=["a", "b"])
    )
    table = read_all(client, client.get_flight_info(descriptor))
    assert [tuple(r.values()) for r in table.to_pylist()] == flat.execute(sql, ["click", 0]).fetchall()

    close_prepared(client, handle)
    with pytest.raises(pa.ArrowException) as err:
        client.get_flight_info(descriptor)
    assert flight_status(err.value) == "NOT_FOUND"


def test_prepared_dense_union_parameters(client: flight.FlightClient, flat: Any) -> None:
    # flightsql-dbapi wraps each parameter in a one-row dense union of int/float/str/bytes/bool.
    sql = "SELECT count(*) AS n FROM events WHERE type = ? AND bid_price > ? AND advertiser_id > ?"
    prepared = create_prepared(client, sql)
    handle = prepared.prepared_statement_handle
    params = dense_union_params(["impression", 0.5, 30_000])
    assert pa.types.is_union(params.schema.field(0).type)
    bind_parameters(client, handle, params)
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    table = read_all(client, client.get_flight_info(descriptor))
    assert table.column("n").to_pylist() == [flat.execute(sql, ["impression", 0.5, 30_000]).fetchall()[0][0]]
    close_prepared(client, handle)


def test_prepared_without_parameters(client: flight.FlightClient) -> None:
    prepared = create_prepared(client, "SELECT 6 * 7 AS answer")
    assert prepared.parameter_schema == b""
    handle = prepared.prepared_statement_handle
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    assert client.get_schema(descriptor).schema.names == ["answer"]
    for _ in range(2):  # executing a prepared statement twice works
        assert read_all(client, client.get_flight_info(descriptor)).to_pylist() == [{"answer": 42}]
    close_prepared(client, handle)


def test_prepared_unbound_parameters_refused(client: flight.FlightClient) -> None:
    prepared = create_prepared(client, "SELECT ? AS x")
    descriptor = cmd_descriptor(
        pb.CommandPreparedStatementQuery(prepared_statement_handle=prepared.prepared_statement_handle)
    )
    with pytest.raises(pa.ArrowException) as err:
        client.get_flight_info(descriptor)
    assert flight_status(err.value) == "INVALID_ARGUMENT"
    assert "bind" in str(err.value)
    with pytest.raises(pa.ArrowException) as err:
        bind_parameters(
            client,
            prepared.prepared_statement_handle,
            pa.record_batch([pa.array([1]), pa.array([2])], names=["a", "b"]),
        )
    assert flight_status(err.value) == "INVALID_ARGUMENT"
    assert "1 parameter" in str(err.value)
    close_prepared(client, prepared.prepared_statement_handle)


# -- executed exactly once, whichever path ----------------------------------------------------------------


def _assert_once(server: Any, sql: str) -> None:
    assert wait_for(lambda: len(executions(server, sql)) >= 1)
    records = executions(server, sql)
    assert [r.status for r in records] == ["ok"], records


def test_exactly_once_adbc(conn: Any, server: Any) -> None:
    sql = unique_sql("adbc")
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetch_arrow_table().num_rows == 1
    _assert_once(server, sql)


def test_exactly_once_adbc_with_parameters(conn: Any, server: Any) -> None:
    sql = unique_sql("adbc-params").replace("'click'", "?")
    with conn.cursor() as cur:
        cur.execute(sql, ("click",))
        assert len(cur.fetchall()) == 1
    _assert_once(server, sql)


def test_exactly_once_get_flight_info_do_get(client: flight.FlightClient, server: Any) -> None:
    sql = unique_sql("raw")
    assert read_all(client, client.get_flight_info(statement(sql))).num_rows == 1
    _assert_once(server, sql)


def test_exactly_once_get_schema_then_query(client: flight.FlightClient, server: Any) -> None:
    sql = unique_sql("schema-first")
    client.get_schema(statement(sql))
    assert read_all(client, client.get_flight_info(statement(sql))).num_rows == 1
    _assert_once(server, sql)


def test_exactly_once_prepared_without_parameters(client: flight.FlightClient, server: Any) -> None:
    sql = unique_sql("prepared")
    handle = create_prepared(client, sql).prepared_statement_handle
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    assert read_all(client, client.get_flight_info(descriptor)).num_rows == 1
    close_prepared(client, handle)
    _assert_once(server, sql)


def test_exactly_once_prepared_with_parameters(client: flight.FlightClient, server: Any) -> None:
    sql = unique_sql("prepared-params").replace("'click'", "?")
    handle = create_prepared(client, sql).prepared_statement_handle
    bind_parameters(client, handle, dense_union_params(["click"]))
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    assert read_all(client, client.get_flight_info(descriptor)).num_rows == 1
    close_prepared(client, handle)
    _assert_once(server, sql)


# -- large results --------------------------------------------------------------------------------------


def test_large_result_streams_in_small_batches(client: flight.FlightClient) -> None:
    rows = 60_000
    sql = f"SELECT i, repeat(chr(65 + (i % 26)::INTEGER), 1000) || i::VARCHAR AS s FROM range({rows}) t(i)"
    info = client.get_flight_info(statement(sql))
    total_rows = 0
    total_bytes = 0
    batches = 0
    for batch in stream_batches(client, info.endpoints[0].ticket):
        assert batch.nbytes < MAX_MESSAGE, f"batch of {batch.nbytes} bytes exceeds 16 MiB"
        total_rows += batch.num_rows
        total_bytes += batch.nbytes
        batches += 1
    assert total_rows == rows
    assert total_bytes > 55_000_000
    assert batches >= 4


def test_large_result_through_adbc(conn: Any) -> None:
    # ADBC's Go client refuses gRPC messages over 16 MiB; the whole result must still arrive.
    with conn.cursor() as cur:
        cur.execute("SELECT i, repeat('x', 2000) AS s FROM range(15000) t(i)")
        table = cur.fetch_arrow_table()
    assert sorted(table.column("i").to_pylist()) == list(range(15_000))
    assert set(table.column("s").to_pylist()) == {"x" * 2000}


# -- cancel, sessions, actions ---------------------------------------------------------------------------------


def _cancel(client: flight.FlightClient, info: flight.FlightInfo) -> int:
    body = fa.CancelFlightInfoRequest(info=info.serialize()).SerializeToString()
    (result,) = list(client.do_action(flight.Action("CancelFlightInfo", body)))
    answer = fa.CancelFlightInfoResult()
    answer.ParseFromString(result.body.to_pybytes())
    return int(answer.status)


def test_cancel_flight_info(client: flight.FlightClient, server: Any) -> None:
    sql = unique_sql("cancel")
    info = client.get_flight_info(statement(sql))
    assert _cancel(client, info) == fa.CANCEL_STATUS_CANCELLED
    assert wait_for(lambda: [r.status for r in executions(server, sql)] == ["cancelled"])
    # Nothing is left to cancel the second time.
    assert _cancel(client, info) == fa.CANCEL_STATUS_NOT_CANCELLABLE


def test_cancel_query_deprecated_action(client: flight.FlightClient) -> None:
    info = client.get_flight_info(statement(unique_sql("cancel-query")))
    body = pack(pb.ActionCancelQueryRequest(info=info.serialize()))
    (result,) = list(client.do_action(flight.Action("CancelQuery", body)))
    name, answer = unpack(result.body.to_pybytes())
    assert name == "ActionCancelQueryResult"
    assert answer.result == pb.ActionCancelQueryResult.CANCEL_RESULT_CANCELLED


def test_cancel_metadata_info_is_not_cancellable(client: flight.FlightClient) -> None:
    info = client.get_flight_info(cmd_descriptor(pb.CommandGetCatalogs()))
    assert _cancel(client, info) == fa.CANCEL_STATUS_NOT_CANCELLABLE


def test_close_session(client: flight.FlightClient) -> None:
    body = fa.CloseSessionRequest().SerializeToString()
    (result,) = list(client.do_action(flight.Action("CloseSession", body)))
    answer = fa.CloseSessionResult()
    answer.ParseFromString(result.body.to_pybytes())
    assert answer.status == fa.CLOSE_SESSION_STATUS_CLOSED


def test_list_actions(client: flight.FlightClient) -> None:
    names = {a.type for a in client.list_actions()}
    assert {"CreatePreparedStatement", "ClosePreparedStatement", "CancelFlightInfo", "CloseSession"} <= names


def test_healthcheck_action(client: flight.FlightClient) -> None:
    (result,) = list(client.do_action(flight.Action("healthcheck", b"")))
    assert b"ready" in result.body.to_pybytes()


def test_unimplemented_rpcs_and_actions(client: flight.FlightClient) -> None:
    with pytest.raises(pa.ArrowException) as err:
        client.do_exchange(cmd_descriptor(pb.CommandGetCatalogs()))[1].read_all()
    assert flight_status(err.value) == "UNIMPLEMENTED"
    for action in ("NoSuchAction", "BeginTransaction", "EndSavepoint"):
        with pytest.raises(pa.ArrowException) as err:
            list(client.do_action(flight.Action(action, b"")))
        assert flight_status(err.value) == "UNIMPLEMENTED", action
    for msg in (
        pb.CommandStatementUpdate(query="DELETE FROM events"),
        pb.CommandStatementSubstraitPlan(),
        pb.CommandPreparedStatementUpdate(prepared_statement_handle=b"x"),
    ):
        with pytest.raises(pa.ArrowException) as err:
            client.get_flight_info(cmd_descriptor(msg))
        assert flight_status(err.value) == "UNIMPLEMENTED", type(msg).__name__
    with pytest.raises(pa.ArrowException) as err:
        client.get_flight_info(
            cmd_descriptor(pb.CommandStatementQuery(query="SELECT 1", transaction_id=b"t"))
        )
    assert flight_status(err.value) == "UNIMPLEMENTED"
    assert "transactions" in str(err.value)
