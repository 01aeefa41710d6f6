"""The Flight SQL protocol data layer: protobuf messages, metadata schemas, SqlInfo."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol import schemas, sqlinfo
from tierflight.protocol.sqlinfo import SQL_INFO_TYPES, SqlInfoType

# ---------------------------------------------------------------------------
# Protobuf messages
# ---------------------------------------------------------------------------

SAMPLE_MESSAGES: list[Message] = [
    pb.CommandGetSqlInfo(info=[0, 8, 504]),
    pb.CommandGetXdbcTypeInfo(data_type=pb.XDBC_BIGINT),
    pb.CommandGetCatalogs(),
    pb.CommandGetDbSchemas(catalog="", db_schema_filter_pattern="ma%"),
    pb.CommandGetTables(
        catalog="c", table_name_filter_pattern="t\\_%", table_types=["TABLE"], include_schema=True
    ),
    pb.CommandGetTableTypes(),
    pb.CommandGetPrimaryKeys(catalog="c", db_schema="s", table="t"),
    pb.CommandGetExportedKeys(table="t"),
    pb.CommandGetImportedKeys(db_schema="s", table="t"),
    pb.CommandGetCrossReference(pk_table="p", fk_catalog="c", fk_table="f"),
    pb.ActionCreatePreparedStatementRequest(query="SELECT 1", transaction_id=b"tx"),
    pb.SubstraitPlan(plan=b"\x01", version="0.12.0"),
    pb.ActionCreatePreparedSubstraitPlanRequest(plan=pb.SubstraitPlan(plan=b"\x01", version="0.12.0")),
    pb.ActionCreatePreparedStatementResult(
        prepared_statement_handle=b"h", dataset_schema=b"ds", parameter_schema=b"ps"
    ),
    pb.ActionClosePreparedStatementRequest(prepared_statement_handle=b"h"),
    pb.ActionBeginTransactionRequest(),
    pb.ActionBeginTransactionResult(transaction_id=b"tx"),
    pb.ActionBeginSavepointRequest(transaction_id=b"tx", name="sp"),
    pb.ActionBeginSavepointResult(savepoint_id=b"sp"),
    pb.ActionEndTransactionRequest(
        transaction_id=b"tx", action=pb.ActionEndTransactionRequest.END_TRANSACTION_ROLLBACK
    ),
    pb.ActionEndSavepointRequest(
        savepoint_id=b"sp", action=pb.ActionEndSavepointRequest.END_SAVEPOINT_RELEASE
    ),
    pb.CommandStatementQuery(query="SELECT 1"),
    pb.CommandStatementSubstraitPlan(plan=pb.SubstraitPlan(plan=b"\x02")),
    pb.TicketStatementQuery(statement_handle=b"\x00\xff"),
    pb.CommandPreparedStatementQuery(prepared_statement_handle=b"h"),
    pb.CommandStatementUpdate(query="DELETE FROM t"),
    pb.CommandPreparedStatementUpdate(prepared_statement_handle=b"h"),
    pb.CommandStatementIngest(
        table_definition_options=pb.CommandStatementIngest.TableDefinitionOptions(
            if_not_exist=pb.CommandStatementIngest.TableDefinitionOptions.TABLE_NOT_EXIST_OPTION_CREATE,
            if_exists=pb.CommandStatementIngest.TableDefinitionOptions.TABLE_EXISTS_OPTION_APPEND,
        ),
        table="t",
        schema="s",
        temporary=True,
        options={"k": "v"},
    ),
    pb.DoPutUpdateResult(record_count=-1),
    pb.DoPutPreparedStatementResult(prepared_statement_handle=b"h2"),
    pb.ActionCancelQueryRequest(info=b"fi"),
    pb.ActionCancelQueryResult(result=pb.ActionCancelQueryResult.CANCEL_RESULT_CANCELLED),
]


@pytest.mark.parametrize("msg", SAMPLE_MESSAGES, ids=lambda m: type(m).__name__)
def test_any_round_trip(msg: Message) -> None:
    packed = any_pb2.Any()
    packed.Pack(msg)
    name = type(msg).DESCRIPTOR.name
    assert packed.type_url == f"type.googleapis.com/arrow.flight.protocol.sql.{name}"

    wire = any_pb2.Any.FromString(packed.SerializeToString())
    out = type(msg)()
    assert wire.TypeName() == f"arrow.flight.protocol.sql.{name}"
    assert wire.Unpack(out)
    assert out == msg


def _numbers(msg: type[Message]) -> dict[str, int]:
    return {f.name: f.number for f in msg.DESCRIPTOR.fields}


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (pb.CommandGetSqlInfo, {"info": 1}),
        (
            pb.CommandGetTables,
            {
                "catalog": 1,
                "db_schema_filter_pattern": 2,
                "table_name_filter_pattern": 3,
                "table_types": 4,
                "include_schema": 5,
            },
        ),
        (
            pb.CommandGetCrossReference,
            {
                "pk_catalog": 1,
                "pk_db_schema": 2,
                "pk_table": 3,
                "fk_catalog": 4,
                "fk_db_schema": 5,
                "fk_table": 6,
            },
        ),
        (
            pb.ActionCreatePreparedStatementResult,
            {"prepared_statement_handle": 1, "dataset_schema": 2, "parameter_schema": 3},
        ),
        (
            pb.CommandStatementIngest,
            {
                "table_definition_options": 1,
                "table": 2,
                "schema": 3,
                "catalog": 4,
                "temporary": 5,
                "transaction_id": 6,
                "options": 1000,
            },
        ),
        (pb.CommandStatementQuery, {"query": 1, "transaction_id": 2}),
        (pb.DoPutUpdateResult, {"record_count": 1}),
    ],
)
def test_field_numbers_match_spec(msg: type[Message], expected: dict[str, int]) -> None:
    assert _numbers(msg) == expected


def test_optional_fields_track_presence() -> None:
    # An unset catalog means "no filter", an empty one "objects without a catalog".
    assert not pb.CommandGetTables().HasField("catalog")
    assert pb.CommandGetTables(catalog="").HasField("catalog")
    assert pb.CommandGetXdbcTypeInfo().HasField("data_type") is False


def test_enum_values_match_spec() -> None:
    assert pb.SqlInfo.Value("FLIGHT_SQL_SERVER_TRANSACTION") == 8
    assert pb.SqlInfo.Value("FLIGHT_SQL_SERVER_BULK_INGESTION") == 10
    assert pb.SqlInfo.Value("FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT") == 100
    assert pb.SqlInfo.Value("SQL_DDL_CATALOG") == 500
    assert pb.SqlInfo.Value("SQL_SUPPORTS_CONVERT") == 517
    assert pb.SqlInfo.Value("SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED") == 576
    assert pb.XdbcDataType.Value("XDBC_WVARCHAR") == -9
    assert pb.XdbcDataType.Value("XDBC_TIMESTAMP") == 93
    assert pb.XdbcDatetimeSubcode.Value("XDBC_SUBCODE_TIMESTAMP_WITH_TIMEZONE") == 5
    assert pb.XdbcDatetimeSubcode.Value("XDBC_SUBCODE_INTERVAL_MINUTE_TO_SECOND") == 113
    assert pb.SqlSupportsConvert.Value("SQL_CONVERT_VARCHAR") == 19
    assert pb.UpdateDeleteRules.Value("SET_DEFAULT") == 4
    assert pb.SQL_SUPPORTED_TRANSACTION_SAVEPOINT == 2
    assert pb.ActionCancelQueryResult.CANCEL_RESULT_NOT_CANCELLABLE == 3


def test_generated_module_is_a_package_module() -> None:
    assert pb.CommandGetTables.__module__ == "tierflight.protocol.flightsql_pb2"
    assert pb.DESCRIPTOR.package == "arrow.flight.protocol.sql"


# ---------------------------------------------------------------------------
# Metadata schemas
# ---------------------------------------------------------------------------


def _shape(schema: pa.Schema) -> list[tuple[str, str, bool]]:
    return [(f.name, str(f.type), f.nullable) for f in schema]


def test_metadata_schemas() -> None:
    assert _shape(schemas.CATALOGS_SCHEMA) == [("catalog_name", "string", False)]
    assert _shape(schemas.DB_SCHEMAS_SCHEMA) == [
        ("catalog_name", "string", True),
        ("db_schema_name", "string", False),
    ]
    tables = [
        ("catalog_name", "string", True),
        ("db_schema_name", "string", True),
        ("table_name", "string", False),
        ("table_type", "string", False),
    ]
    assert _shape(schemas.TABLES_SCHEMA) == tables
    assert _shape(schemas.TABLES_SCHEMA_WITH_TABLE_SCHEMA) == [*tables, ("table_schema", "binary", False)]
    assert _shape(schemas.TABLE_TYPES_SCHEMA) == [("table_type", "string", False)]
    assert _shape(schemas.PRIMARY_KEYS_SCHEMA) == [
        ("catalog_name", "string", True),
        ("db_schema_name", "string", True),
        ("table_name", "string", False),
        ("column_name", "string", False),
        ("key_sequence", "int32", False),
        ("key_name", "string", True),
    ]
    keys = _shape(schemas.IMPORTED_KEYS_SCHEMA)
    assert [n for n, _, _ in keys] == [
        "pk_catalog_name", "pk_db_schema_name", "pk_table_name", "pk_column_name",
        "fk_catalog_name", "fk_db_schema_name", "fk_table_name", "fk_column_name",
        "key_sequence", "fk_key_name", "pk_key_name", "update_rule", "delete_rule",
    ]  # fmt: skip
    assert [n for n, _, nullable in keys if nullable] == [
        "pk_catalog_name", "pk_db_schema_name", "fk_catalog_name", "fk_db_schema_name", "fk_key_name", "pk_key_name",
    ]  # fmt: skip
    assert keys[-1] == ("delete_rule", "uint8", False)
    assert schemas.EXPORTED_KEYS_SCHEMA.equals(schemas.IMPORTED_KEYS_SCHEMA)
    assert schemas.CROSS_REFERENCE_SCHEMA.equals(schemas.IMPORTED_KEYS_SCHEMA)
    for s in (schemas.CATALOGS_SCHEMA, schemas.TABLES_SCHEMA_WITH_TABLE_SCHEMA, schemas.SQL_INFO_SCHEMA):
        # The Go driver's Schema.Equal also compares field metadata.
        assert s.metadata is None and all(f.metadata is None for f in s)


def test_xdbc_type_info_schema() -> None:
    s = schemas.XDBC_TYPE_INFO_SCHEMA
    not_null = {
        "type_name",
        "data_type",
        "nullable",
        "case_sensitive",
        "searchable",
        "fixed_prec_scale",
        "sql_data_type",
    }
    assert {f.name for f in s if not f.nullable} == not_null
    assert len(s) == 19
    create_params = s.field("create_params").type
    assert create_params.value_field.name == "item" and not create_params.value_field.nullable


def test_sql_info_schema_matches_reference() -> None:
    s = schemas.SQL_INFO_SCHEMA
    assert _shape(s)[0] == ("info_name", "uint32", False)
    value = s.field("value")
    assert value.name == "value" and not value.nullable
    union = value.type
    assert union.mode == "dense"
    assert list(union.type_codes) == [0, 1, 2, 3, 4, 5]
    assert [(f.name, f.nullable) for f in union] == [
        ("string_value", False),
        ("bool_value", False),
        ("bigint_value", False),
        ("int32_bitmask", False),
        ("string_list", False),
        ("int32_to_int32_list_map", False),
    ]
    assert union.field(4).type == pa.list_(pa.field("item", pa.utf8(), nullable=True))
    map_type = union.field(5).type
    assert map_type.key_field == pa.field("key", pa.int32(), nullable=False)
    assert map_type.item_field == pa.field("value", pa.list_(pa.int32()), nullable=True)
    assert str(union.field(5).type) == "map<int32, list<item: int32>>"


# ---------------------------------------------------------------------------
# Column metadata and type names
# ---------------------------------------------------------------------------


def test_column_metadata_keys() -> None:
    md = schemas.column_metadata("DECIMAL(10,2)", "t", "main", "db", 10, 2, remarks="money")
    assert md == {
        b"ARROW:FLIGHT:SQL:CATALOG_NAME": b"db",
        b"ARROW:FLIGHT:SQL:DB_SCHEMA_NAME": b"main",
        b"ARROW:FLIGHT:SQL:SCHEMA_NAME": b"main",
        b"ARROW:FLIGHT:SQL:TABLE_NAME": b"t",
        b"ARROW:FLIGHT:SQL:TYPE_NAME": b"DECIMAL(10,2)",
        b"ARROW:FLIGHT:SQL:PRECISION": b"10",
        b"ARROW:FLIGHT:SQL:SCALE": b"2",
        b"ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT": b"0",
        b"ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE": b"0",
        b"ARROW:FLIGHT:SQL:IS_READ_ONLY": b"1",
        b"ARROW:FLIGHT:SQL:IS_SEARCHABLE": b"1",
        b"ARROW:FLIGHT:SQL:REMARKS": b"money",
    }
    bare = schemas.column_metadata("VARCHAR", "", "", "", None, None, is_case_sensitive=True)
    assert b"ARROW:FLIGHT:SQL:PRECISION" not in bare and b"ARROW:FLIGHT:SQL:REMARKS" not in bare
    assert bare[b"ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE"] == b"1"


def test_schema_with_column_metadata() -> None:
    s = pa.schema([pa.field("a", pa.int64(), metadata={"x": "y"}), pa.field("b", pa.utf8())])
    out = schemas.schema_with_column_metadata(s, table="t", db_schema="main", catalog="db")
    assert out.names == ["a", "b"]
    assert out.field("a").metadata[b"x"] == b"y"
    assert out.field("a").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"BIGINT"
    assert out.field("a").metadata[b"ARROW:FLIGHT:SQL:PRECISION"] == b"19"
    assert out.field("b").metadata[b"ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE"] == b"1"


@pytest.mark.parametrize(
    ("arrow_type", "name"),
    [
        (pa.bool_(), "BOOLEAN"),
        (pa.int8(), "TINYINT"),
        (pa.int16(), "SMALLINT"),
        (pa.int32(), "INTEGER"),
        (pa.int64(), "BIGINT"),
        (pa.uint64(), "UBIGINT"),
        (pa.float32(), "FLOAT"),
        (pa.float64(), "DOUBLE"),
        (pa.decimal128(38, 0), "DECIMAL(38,0)"),
        (pa.utf8(), "VARCHAR"),
        (pa.large_utf8(), "VARCHAR"),
        (pa.binary(), "BLOB"),
        (pa.date32(), "DATE"),
        (pa.time64("us"), "TIME"),
        (pa.timestamp("us"), "TIMESTAMP"),
        (pa.timestamp("ns"), "TIMESTAMP_NS"),
        (pa.timestamp("us", tz="UTC"), "TIMESTAMP WITH TIME ZONE"),
        (pa.month_day_nano_interval(), "INTERVAL"),
        (pa.list_(pa.int32()), "INTEGER[]"),
        (pa.list_(pa.float64(), 3), "DOUBLE[3]"),
        (pa.struct([("a", pa.int32()), ("b c", pa.utf8())]), 'STRUCT(a INTEGER, "b c" VARCHAR)'),
        (pa.map_(pa.utf8(), pa.int64()), "MAP(VARCHAR, BIGINT)"),
        (pa.dictionary(pa.int32(), pa.utf8()), "VARCHAR"),
    ],
)
def test_arrow_type_to_sql_name(arrow_type: pa.DataType, name: str) -> None:
    assert schemas.arrow_type_to_sql_name(arrow_type) == name


def test_sql_names_agree_with_duckdb() -> None:
    # What DuckDB itself calls the types it hands out as Arrow.
    con = duckdb.connect()
    try:
        rel = con.sql(
            "SELECT 1::TINYINT a, 1::INTEGER b, 1::BIGINT c, 1.5::DOUBLE d, 1.5::FLOAT e, 'x' f, "
            "DATE '2024-01-01' g, TIMESTAMP '2024-01-01' h, now() i, [1, 2] j, 1.5::DECIMAL(10,2) k, "
            "TIME '01:02:03' l, true m, {'p': 1} n"
        )
        table = rel.to_arrow_table()
        for column, duck_type in zip(table.schema, rel.types, strict=True):
            assert schemas.arrow_type_to_sql_name(column.type) == str(duck_type), column.name
    finally:
        con.close()


def test_xdbc_type_info_table() -> None:
    table = schemas.xdbc_type_info_table(None)
    assert table.schema.equals(schemas.XDBC_TYPE_INFO_SCHEMA)
    table.validate(full=True)
    names = table.column("type_name").to_pylist()
    exposed = {"VARCHAR", "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE"}
    exposed |= {"DECIMAL", "DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "BLOB", "INTERVAL"}
    assert exposed <= set(names)
    keys = list(zip(table.column("data_type").to_pylist(), names, strict=True))
    assert keys == sorted(keys), "spec: ordered by data_type, then type_name"
    valid_types = set(pb.XdbcDataType.values())
    assert set(table.column("data_type").to_pylist()) <= valid_types
    assert set(table.column("sql_data_type").to_pylist()) <= valid_types
    rows = {r["type_name"]: r for r in table.to_pylist()}
    assert rows["HUGEINT"]["data_type"] == pb.XDBC_DECIMAL
    assert rows["TIMESTAMP WITH TIME ZONE"]["sql_data_type"] == pb.XDBC_DATETIME
    assert rows["TIMESTAMP WITH TIME ZONE"]["datetime_subcode"] == pb.XDBC_SUBCODE_TIMESTAMP_WITH_TIMEZONE
    assert rows["DATE"]["datetime_subcode"] == pb.XDBC_SUBCODE_DATE
    assert rows["VARCHAR"]["datetime_subcode"] is None
    assert rows["DECIMAL"]["create_params"] == ["precision", "scale"]


def test_xdbc_type_info_filter() -> None:
    bigints = schemas.xdbc_type_info_table(pb.XDBC_BIGINT)
    assert set(bigints.column("data_type").to_pylist()) == {pb.XDBC_BIGINT}
    assert "BIGINT" in bigints.column("type_name").to_pylist()
    empty = schemas.xdbc_type_info_table(pb.XDBC_WCHAR)
    assert empty.num_rows == 0 and empty.schema.equals(schemas.XDBC_TYPE_INFO_SCHEMA)


# ---------------------------------------------------------------------------
# SqlInfo
# ---------------------------------------------------------------------------

_PY_TYPES: dict[SqlInfoType, type] = {
    SqlInfoType.STRING: str,
    SqlInfoType.BOOL: bool,
    SqlInfoType.BIGINT: int,
    SqlInfoType.INT32: int,
    SqlInfoType.STRING_LIST: list,
    SqlInfoType.INT32_TO_INT32_LIST_MAP: dict,
}


def test_sql_info_types_cover_the_enum() -> None:
    assert set(SQL_INFO_TYPES) == set(pb.SqlInfo.values())


def test_sql_info_values_have_documented_types() -> None:
    values = sqlinfo.sql_info_values("9.9.9")
    # Everything but the Substrait versions, which must be null and so are omitted.
    assert set(values) == set(SQL_INFO_TYPES) - {
        pb.FLIGHT_SQL_SERVER_SUBSTRAIT_MIN_VERSION,
        pb.FLIGHT_SQL_SERVER_SUBSTRAIT_MAX_VERSION,
    }
    for info_id, value in values.items():
        kind = SQL_INFO_TYPES[info_id]
        assert type(value) is _PY_TYPES[kind], pb.SqlInfo.Name(info_id)
        if kind is SqlInfoType.INT32:
            assert 0 <= value < 2**31  # type: ignore[operator]
        if kind is SqlInfoType.STRING_LIST:
            assert all(isinstance(v, str) for v in value)  # type: ignore[union-attr]


def _rows(table: pa.Table) -> dict[int, tuple[int, Any]]:
    """info_name -> (union type code, python value)."""
    value_col = table.column("value").combine_chunks()
    codes = value_col.type_codes.to_pylist()
    return {
        name: (code, value)
        for name, code, value in zip(
            table.column("info_name").to_pylist(), codes, value_col.to_pylist(), strict=True
        )
    }


def test_sql_info_table_all() -> None:
    table = sqlinfo.sql_info_table([], server_version="1.2.3")
    assert table.schema.equals(schemas.SQL_INFO_SCHEMA)
    table.validate(full=True)
    rows = _rows(table)
    assert set(rows) == set(sqlinfo.sql_info_values("1.2.3"))
    for info_id, (code, _) in rows.items():
        # The union child must be the one the spec documents for the id.
        assert code == int(SQL_INFO_TYPES[info_id]), pb.SqlInfo.Name(info_id)
    assert rows[pb.FLIGHT_SQL_SERVER_NAME] == (0, "tierflight")
    assert rows[pb.FLIGHT_SQL_SERVER_VERSION] == (0, "1.2.3")
    assert rows[pb.FLIGHT_SQL_SERVER_ARROW_VERSION] == (0, pa.__version__)
    assert rows[pb.FLIGHT_SQL_SERVER_READ_ONLY] == (1, True)
    assert rows[pb.FLIGHT_SQL_SERVER_TRANSACTION] == (3, pb.SQL_SUPPORTED_TRANSACTION_NONE)
    assert rows[pb.FLIGHT_SQL_SERVER_CANCEL] == (1, True)
    assert rows[pb.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT] == (3, 0)
    assert rows[pb.SQL_IDENTIFIER_QUOTE_CHAR] == (0, '"')
    assert rows[pb.SQL_SEARCH_STRING_ESCAPE] == (0, "\\")
    assert rows[pb.SQL_TRANSACTIONS_SUPPORTED] == (1, False)
    assert rows[pb.SQL_MAX_COLUMNS_IN_SELECT] == (2, 0)
    assert "SELECT" in rows[pb.SQL_KEYWORDS][1]
    convert = dict(rows[pb.SQL_SUPPORTS_CONVERT][1])
    assert pb.SQL_CONVERT_VARCHAR in convert[pb.SQL_CONVERT_INTEGER]


def test_sql_info_table_filter() -> None:
    requested = [pb.SQL_DDL_TABLE, 99_999, pb.FLIGHT_SQL_SERVER_NAME, pb.SQL_DDL_TABLE, pb.SQL_KEYWORDS]
    table = sqlinfo.sql_info_table(requested, server_version="1.2.3")
    assert table.schema.equals(schemas.SQL_INFO_SCHEMA)
    table.validate(full=True)
    assert table.column("info_name").to_pylist() == [
        pb.SQL_DDL_TABLE,
        pb.FLIGHT_SQL_SERVER_NAME,
        pb.SQL_KEYWORDS,
    ]
    assert table.to_pylist()[1]["value"] == "tierflight"
    assert sqlinfo.sql_info_table([pb.FLIGHT_SQL_SERVER_SUBSTRAIT_MIN_VERSION], "1.2.3").num_rows == 0


def test_sql_info_ipc_round_trip() -> None:
    # What actually crosses the wire: a filtered (taken) table through IPC.
    table = sqlinfo.sql_info_table([pb.SQL_SUPPORTS_CONVERT, pb.FLIGHT_SQL_SERVER_TRANSACTION], "1.2.3")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    back = pa.ipc.open_stream(sink.getvalue()).read_all()
    assert back.schema.equals(schemas.SQL_INFO_SCHEMA)
    assert back.to_pylist() == table.to_pylist()


def test_sql_info_default_version() -> None:
    import tierflight

    rows = _rows(sqlinfo.sql_info_table([pb.FLIGHT_SQL_SERVER_VERSION]))
    assert rows[pb.FLIGHT_SQL_SERVER_VERSION] == (0, tierflight.__version__)


# --- the values are DuckDB's truth, not wishes ---------------------------------------


@pytest.fixture(scope="module")
def duck() -> Any:
    con = duckdb.connect()
    yield con
    con.close()


# SQL special forms, absent from duckdb_functions() but valid SQL.
_SPECIAL_FORMS = {
    "COALESCE": "COALESCE(NULL, 1)",
    "IFNULL": "IFNULL(NULL, 1)",
    "CURRENT_TIMESTAMP": "CURRENT_TIMESTAMP",
    "EXTRACT": "EXTRACT(year FROM DATE '2024-01-01')",
}


@pytest.mark.parametrize(
    "names",
    [
        sqlinfo.NUMERIC_FUNCTIONS,
        sqlinfo.STRING_FUNCTIONS,
        sqlinfo.SYSTEM_FUNCTIONS,
        sqlinfo.DATETIME_FUNCTIONS,
    ],
    ids=["numeric", "string", "system", "datetime"],
)
def test_listed_functions_exist_in_duckdb(duck: Any, names: tuple[str, ...]) -> None:
    known = {
        r[0].upper() for r in duck.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()
    }
    for name in names:
        if name in _SPECIAL_FORMS:
            assert duck.execute(f"SELECT ({_SPECIAL_FORMS[name]}) IS NOT NULL").fetchone() == (True,)
        else:
            assert name in known, name


_CONVERT_SAMPLES = {
    "BIGINT": ("BIGINT", "42"), "BINARY": ("BLOB", "'\\x41'"), "BIT": ("BOOLEAN", "true"),
    "CHAR": ("VARCHAR", "'1'"), "DATE": ("DATE", "'2024-01-02'"), "DECIMAL": ("DECIMAL(18,3)", "1.5"),
    "FLOAT": ("DOUBLE", "1.5"), "INTEGER": ("INTEGER", "7"), "INTERVAL_DAY_TIME": ("INTERVAL", "'1 day'"),
    "INTERVAL_YEAR_MONTH": ("INTERVAL", "'1 month'"), "LONGVARBINARY": ("BLOB", "'\\x41'"),
    "LONGVARCHAR": ("VARCHAR", "'1'"), "NUMERIC": ("DECIMAL(18,3)", "1.5"), "REAL": ("FLOAT", "1.5"),
    "SMALLINT": ("SMALLINT", "7"), "TIME": ("TIME", "'12:00:00'"),
    "TIMESTAMP": ("TIMESTAMP", "'2024-01-02 03:04:05'"), "TINYINT": ("TINYINT", "7"),
    "VARBINARY": ("BLOB", "'\\x41'"), "VARCHAR": ("VARCHAR", "'1'"),
}  # fmt: skip


def test_supports_convert_matches_duckdb_casts(duck: Any) -> None:
    assert set(_CONVERT_SAMPLES) == {
        n.removeprefix("SQL_CONVERT_") for n in pb.SqlSupportsConvert.DESCRIPTOR.values_by_name
    }
    claimed = sqlinfo.CONVERSIONS
    for src, (src_type, literal) in _CONVERT_SAMPLES.items():
        src_code = pb.SqlSupportsConvert.Value("SQL_CONVERT_" + src)
        for dst, (dst_type, _) in _CONVERT_SAMPLES.items():
            dst_code = pb.SqlSupportsConvert.Value("SQL_CONVERT_" + dst)
            try:
                duck.execute(f"SELECT CAST(CAST({literal} AS {src_type}) AS {dst_type})").fetchall()
                implemented = True
            except duckdb.Error as e:
                # Only a missing cast counts; a sample value that does not parse is fine.
                implemented = "Unimplemented type for cast" not in str(e)
            assert (dst_code in claimed.get(src_code, [])) == implemented, f"{src} -> {dst}"


def test_sql_behaviour_claims(duck: Any) -> None:
    assert duck.execute("SELECT NULL || 'a'").fetchone() == (None,)
    assert duck.execute("SELECT 'a%' LIKE 'a!%' ESCAPE '!'").fetchone() == (True,)
    duck.execute("CREATE TEMP TABLE Mixed(Col INTEGER)")
    # Identifiers, quoted or not, match regardless of case.
    assert duck.execute('SELECT "col", COL FROM "mixed"').fetchall() == []
    assert duck.execute("SELECT x FROM (VALUES (1), (NULL)) v(x) ORDER BY x DESC").fetchall()[-1] == (None,)
    assert duck.execute("SELECT x FROM (VALUES (1), (NULL)) v(x) ORDER BY x ASC").fetchall()[-1] == (None,)
    assert duck.execute("SELECT 1 FROM (SELECT 1 AS a) AS t WHERE a = ANY (SELECT 1)").fetchall() == [(1,)]
