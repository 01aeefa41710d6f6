"""The catalog clients see (issue 18): exactly the configured tables and the system tables.

Every catalog query a BI tool sends (information_schema, pg_catalog, duckdb_*(), SHOW ALL
TABLES), the Flight SQL metadata calls and ADBC's get_objects list the product, never the
server's internals (the rollups' database, the system tables' storage schema, per-statement
relations, DuckDB's own databases), and report NOT NULL columns as not nullable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_helpers import cmd_descriptor, read_all
from tierflight.protocol import flight_actions_pb2 as fa
from tierflight.protocol import flightsql_pb2 as pb

SYSTEM = {"partitions", "queries", "rollup_advice", "rollups", "snapshots"}
VISIBLE = {("main", "events"), ("main", "advertisers"), ("main", "publishers")} | {("system", name) for name in SYSTEM}
NOT_NULL = {"ts", "type", "auction_id"}
INTERNAL = ("tf_rollup", "tf_dimension", "tf_system", "__tf_", "memory", "information_schema", "pg_catalog")


def _rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]


def _assert_clean(rows: Any, server: Any) -> None:
    text = repr(rows)
    for word in (*INTERNAL, str(server.app.config.data_dir)):
        assert word not in text, (word, text[:500])


# -- SQL catalog queries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT table_schema, table_name FROM information_schema.tables",
        "SELECT table_schema, table_name FROM system.information_schema.tables",
        'SELECT table_schema, table_name FROM "INFORMATION_SCHEMA"."TABLES"',
        "SELECT schema_name, table_name FROM duckdb_tables()",
        "SELECT schema_name, table_name FROM duckdb_tables",
        "SELECT schema_name, table_name FROM main.duckdb_tables",
        "SELECT schemaname, tablename FROM pg_catalog.pg_tables",
        "SELECT schemaname, tablename FROM pg_tables",
        "SELECT DISTINCT table_schema, table_name FROM information_schema.columns",
        "SELECT DISTINCT schema_name, table_name FROM duckdb_columns()",
    ],
)
def test_catalog_queries_list_exactly_the_visible_tables(conn: Any, server: Any, sql: str) -> None:
    rows = _rows(conn, sql)
    assert set(rows) == VISIBLE and len(rows) == len(VISIBLE), rows


def test_show_all_tables_and_the_full_rows_hide_the_internals(conn: Any, server: Any) -> None:
    rows = _rows(conn, "SHOW ALL TABLES")
    assert {(r[0], r[1], r[2]) for r in rows} == {("tierflight", s, t) for s, t in VISIBLE}
    for sql in (
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM information_schema.columns",
        "SELECT * FROM information_schema.schemata",
        "SELECT * FROM information_schema.views",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM duckdb_columns()",
        "SELECT * FROM duckdb_schemas()",
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM duckdb_constraints()",
        "SELECT * FROM pg_catalog.pg_namespace",
        "SELECT * FROM pg_catalog.pg_class",
        "SHOW ALL TABLES",
    ):
        _assert_clean(_rows(conn, sql), server)


def test_schemas_databases_and_views(conn: Any) -> None:
    assert sorted(_rows(conn, "SELECT catalog_name, schema_name FROM information_schema.schemata")) == [
        ("tierflight", "main"),
        ("tierflight", "system"),
    ]
    assert sorted(_rows(conn, "SELECT database_name, schema_name FROM duckdb_schemas()")) == [
        ("tierflight", "main"),
        ("tierflight", "system"),
    ]
    assert _rows(conn, "SELECT database_name, path FROM duckdb_databases()") == [("tierflight", None)]
    assert _rows(conn, "SELECT count(*) FROM duckdb_views()") == [(0,)]
    assert _rows(conn, "SELECT count(*) FROM pg_catalog.pg_views") == [(0,)]
    # DuckDB's built-in functions and types stay listed (SQL editors complete from them).
    assert _rows(conn, "SELECT count(*) > 1000 FROM duckdb_functions()") == [(True,)]
    assert _rows(conn, "SELECT count(*) > 10 FROM duckdb_types()") == [(True,)]
    types = set(_rows(conn, "SELECT DISTINCT table_catalog, table_type FROM information_schema.tables"))
    assert types == {("tierflight", "BASE TABLE")}


def test_not_null_columns_are_reported_everywhere_in_sql(conn: Any, server: Any) -> None:
    events = server.app.config.tables["events"]
    expected = [(c, "NO" if c in NOT_NULL else "YES") for c in [*events.column_names, *events.derived]]
    got = _rows(
        conn,
        "SELECT column_name, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = 'events' ORDER BY ordinal_position",
    )
    assert got == expected
    got = _rows(conn, "SELECT column_name, is_nullable FROM duckdb_columns() WHERE table_name = 'events' ORDER BY column_index")
    assert got == [(c, n == "YES") for c, n in expected]
    assert sorted(_rows(conn, "SELECT name FROM pragma_table_info('events') WHERE \"notnull\"")) == sorted((c,) for c in NOT_NULL)
    # The types are the ones DuckDB binds for the table (derived columns included).
    duck = {r[0]: r[1] for r in _rows(conn, "DESCRIBE events")}
    info = dict(_rows(conn, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'"))
    assert info == duck


def test_catalog_relations_mix_with_table_data(conn: Any, flat: Any) -> None:
    rows = _rows(
        conn,
        "SELECT t.table_name, (SELECT count(*) FROM events) FROM information_schema.tables t WHERE t.table_schema = 'main'",
    )
    n = flat.sql("SELECT count(*) FROM events").fetchall()[0][0]
    assert sorted(rows) == [("advertisers", n), ("events", n), ("publishers", n)]
    # A CTE named like a catalog view is the CTE.
    assert _rows(conn, "WITH duckdb_tables AS (SELECT 1 AS x) SELECT * FROM duckdb_tables") == [(1,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM tf_rollup.main.nothing",
        "SELECT * FROM tf_system.queries",
        "SELECT * FROM pragma_table_info('tf_system.queries')",
        "SELECT * FROM pragma_table_info('tf_rollup.day_type')",
        "SELECT * FROM duckdb_tables() WHERE database_name = 'tf_rollup'",
        "SELECT * FROM tf_dimension.main.advertisers_v1_1",
        "SELECT * FROM duckdb_tables() WHERE database_name = 'tf_dimension'",
    ],
)
def test_internal_names_are_unreachable(conn: Any, server: Any, sql: str) -> None:
    try:
        rows = _rows(conn, sql)
    except adbc_driver_manager.Error as err:
        assert "does not exist" in str(err)
        return
    assert rows == []


# -- Flight SQL metadata and ADBC ---------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[flight.FlightClient]:
    with flight.connect(server.uri) as c:
        yield c


def _command(client: flight.FlightClient, cmd: Any) -> list[dict[str, Any]]:
    info = client.get_flight_info(cmd_descriptor(cmd))
    table: pa.Table = read_all(client, info)
    return table.to_pylist()


def test_flight_sql_metadata_lists_the_product(client: flight.FlightClient, server: Any) -> None:
    assert _command(client, pb.CommandGetCatalogs()) == [{"catalog_name": "tierflight"}]
    schemas = _command(client, pb.CommandGetDbSchemas())
    assert [(r["catalog_name"], r["db_schema_name"]) for r in schemas] == [("tierflight", "main"), ("tierflight", "system")]
    tables = _command(client, pb.CommandGetTables())
    assert {(r["db_schema_name"], r["table_name"]) for r in tables} == VISIBLE
    assert {r["table_type"] for r in tables if r["db_schema_name"] == "main"} == {"TABLE"}
    assert {r["table_type"] for r in tables if r["db_schema_name"] == "system"} == {"SYSTEM TABLE"}
    # Type names compare case-insensitively (sqlalchemy-adbc asks for "table").
    lower = _command(client, pb.CommandGetTables(table_types=["table"]))
    assert [r["table_name"] for r in lower] == ["advertisers", "events", "publishers"]
    _assert_clean([tables, schemas, _command(client, pb.CommandGetXdbcTypeInfo())], server)


def test_table_schema_says_not_null(client: flight.FlightClient) -> None:
    rows = _command(client, pb.CommandGetTables(include_schema=True))
    for row in rows:
        schema = pa.ipc.read_schema(pa.py_buffer(row["table_schema"]))
        nullable = {f.name: f.nullable for f in schema}
        # The same in the XDBC_* field metadata keys ADBC drivers read for GetObjects.
        assert {f.name: f.metadata[b"XDBC_IS_NULLABLE"] == b"YES" for f in schema} == nullable
        assert {f.name: f.metadata[b"XDBC_NULLABLE"] == b"1" for f in schema} == nullable
        if row["table_name"] == "events":
            assert {n for n, ok in nullable.items() if not ok} == NOT_NULL
        elif row["table_name"] in ("advertisers", "publishers"):  # a dimension table's key
            assert {n for n, ok in nullable.items() if not ok} == {row["table_name"][:-1] + "_id"}
        else:
            assert all(nullable.values())


def test_adbc_get_objects_and_table_schema(conn: Any, server: Any) -> None:
    catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
    assert [c["catalog_name"] for c in catalogs] == ["tierflight"]
    for depth in ("db_schemas", "tables", "all"):
        (catalog,) = conn.adbc_get_objects(depth=depth).read_all().to_pylist()
        _assert_clean(catalog, server)
        schemas = {s["db_schema_name"]: s for s in catalog["catalog_db_schemas"]}
        assert sorted(schemas) == ["main", "system"]
        if depth == "db_schemas":
            continue
        found = {(name, t["table_name"]) for name, s in schemas.items() for t in s["db_schema_tables"]}
        assert found == VISIBLE
    events = next(t for t in schemas["main"]["db_schema_tables"] if t["table_name"] == "events")
    columns = {c["column_name"]: c for c in events["table_columns"]}
    assert set(columns) >= NOT_NULL
    schema = conn.adbc_get_table_schema("events")
    assert {f.name for f in schema if not f.nullable} == NOT_NULL
    assert all(f.nullable for f in conn.adbc_get_table_schema("queries", db_schema_filter="system"))


# -- session options ----------------------------------------------------------------------------


def test_adbc_current_catalog_and_schema(conn: Any) -> None:
    assert conn.adbc_current_catalog == "tierflight"
    assert conn.adbc_current_db_schema == "main"
    conn.adbc_current_catalog = "tierflight"
    conn.adbc_current_db_schema = "MAIN"
    with pytest.raises(adbc_driver_manager.Error, match="invalid value"):
        conn.adbc_current_db_schema = "system"
    with pytest.raises(adbc_driver_manager.Error, match="invalid value"):
        conn.adbc_current_catalog = "tf_rollup"
    assert conn.adbc_current_db_schema == "main"


def _action(client: flight.FlightClient, kind: str, body: bytes) -> bytes:
    (result,) = list(client.do_action(flight.Action(kind, body)))
    data: bytes = result.body.to_pybytes()
    return data


def test_session_option_actions(client: flight.FlightClient) -> None:
    got = fa.GetSessionOptionsResult.FromString(_action(client, "GetSessionOptions", b""))
    assert {k: v.string_value for k, v in got.session_options.items()} == {"catalog": "tierflight", "schema": "main"}
    request = fa.SetSessionOptionsRequest()
    request.session_options["catalog"].string_value = "tierflight"
    request.session_options["schema"].string_value = "system"
    request.session_options["timezone"].string_value = "UTC"
    request.session_options["catalog2"].int64_value = 3
    result = fa.SetSessionOptionsResult.FromString(_action(client, "SetSessionOptions", request.SerializeToString()))
    errors = {k: v.value for k, v in result.errors.items()}
    invalid = fa.SetSessionOptionsResult.ErrorValue
    assert errors == {"schema": invalid.INVALID_VALUE, "timezone": invalid.INVALID_NAME, "catalog2": invalid.INVALID_NAME}
    closed = fa.CloseSessionResult.FromString(_action(client, "CloseSession", b""))
    assert closed.status == fa.CLOSE_SESSION_STATUS_CLOSED
    actions = {a.type for a in client.list_actions()}
    assert {"SetSessionOptions", "GetSessionOptions", "CloseSession"} <= actions


def test_session_option_requests_are_bounded(client: flight.FlightClient) -> None:
    request = fa.SetSessionOptionsRequest()
    for i in range(1000):
        request.session_options[f"o{i}"].string_value = "x"
    with pytest.raises(pa.ArrowInvalid, match="at most 64"):
        _action(client, "SetSessionOptions", request.SerializeToString())
    with pytest.raises(pa.ArrowInvalid, match="malformed"):
        _action(client, "GetSessionOptions", b"\xff\xff\xff")


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM day_type", "SELECT * FROM __tf_caller_queries", "SELECT * FROM temp.main.__tf_caller_queries", "SELECT * FROM pg_catalog.nope"],
)
def test_names_near_internal_ones_are_not_found_without_hints(conn: Any, server: Any, sql: str) -> None:
    with pytest.raises(adbc_driver_manager.Error, match="does not exist") as err:
        _rows(conn, sql)
    # DuckDB's "Did you mean" names come from the server's own catalog (its internals).
    text = str(err.value)
    assert "Did you mean" not in text and "tf_rollup" not in text and "pg_sequences" not in text, text


def test_a_catalog_function_of_a_column_is_refused(conn: Any) -> None:
    with pytest.raises(adbc_driver_manager.Error, match="constant arguments"):
        _rows(conn, "SELECT * FROM events, pragma_table_info(events.type)")


def test_catalog_queries_with_parameters(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = ? ORDER BY ordinal_position LIMIT 3",
            ("events", "main"),
        )
        assert cur.fetchall() == [("ts", "NO"), ("type", "NO"), ("auction_id", "NO")]
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", ("system",))
        assert [r[0] for r in cur.fetchall()] == sorted(SYSTEM)
