"""Result schemas of the Flight SQL metadata commands, plus the column metadata helpers.

Clients compare these schemas strictly (names, types, nullability, union type codes): the
old C++ ADBC driver rejects a GetSqlInfo result unless ``schema.Equals(...)`` holds, and the
Go driver indexes union children by position. Where the spec's prose and the reference
servers (Arrow C++ ``sql/server.cc``, Go ``flightsql/schema_ref``, Java
``FlightSqlProducer.Schemas``) disagree, the reference servers win, because they are what
clients are tested against; each such place is marked below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from tierflight.protocol import flightsql_pb2 as pb

__all__ = [
    "CATALOGS_SCHEMA",
    "CROSS_REFERENCE_SCHEMA",
    "DB_SCHEMAS_SCHEMA",
    "EXPORTED_KEYS_SCHEMA",
    "IMPORTED_KEYS_SCHEMA",
    "PRIMARY_KEYS_SCHEMA",
    "SQL_INFO_SCHEMA",
    "SQL_INFO_UNION_TYPE",
    "TABLES_SCHEMA",
    "TABLES_SCHEMA_WITH_TABLE_SCHEMA",
    "TABLE_TYPES_SCHEMA",
    "XDBC_TYPE_INFO_SCHEMA",
    "ColumnMetadataKey",
    "arrow_type_precision_scale",
    "arrow_type_to_sql_name",
    "column_metadata",
    "schema_with_column_metadata",
    "xdbc_type_info_table",
]

_utf8 = pa.utf8()

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", _utf8, nullable=False)])

DB_SCHEMAS_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", _utf8, nullable=True),
        pa.field("db_schema_name", _utf8, nullable=False),
    ]
)

TABLES_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", _utf8, nullable=True),
        pa.field("db_schema_name", _utf8, nullable=True),
        pa.field("table_name", _utf8, nullable=False),
        pa.field("table_type", _utf8, nullable=False),
    ]
)

# table_schema holds an IPC-serialized Schema (pa.Schema.serialize()).
TABLES_SCHEMA_WITH_TABLE_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), nullable=False))

TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", _utf8, nullable=False)])

# The spec's comment lists key_name before key_sequence, but C++, Go and Java all put
# key_sequence first; clients are built against those.
PRIMARY_KEYS_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", _utf8, nullable=True),
        pa.field("db_schema_name", _utf8, nullable=True),
        pa.field("table_name", _utf8, nullable=False),
        pa.field("column_name", _utf8, nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("key_name", _utf8, nullable=True),
    ]
)

_KEYS_SCHEMA = pa.schema(
    [
        pa.field("pk_catalog_name", _utf8, nullable=True),
        pa.field("pk_db_schema_name", _utf8, nullable=True),
        pa.field("pk_table_name", _utf8, nullable=False),
        pa.field("pk_column_name", _utf8, nullable=False),
        pa.field("fk_catalog_name", _utf8, nullable=True),
        pa.field("fk_db_schema_name", _utf8, nullable=True),
        pa.field("fk_table_name", _utf8, nullable=False),
        pa.field("fk_column_name", _utf8, nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("fk_key_name", _utf8, nullable=True),
        pa.field("pk_key_name", _utf8, nullable=True),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)
IMPORTED_KEYS_SCHEMA = _KEYS_SCHEMA
EXPORTED_KEYS_SCHEMA = _KEYS_SCHEMA
CROSS_REFERENCE_SCHEMA = _KEYS_SCHEMA

XDBC_TYPE_INFO_SCHEMA = pa.schema(
    [
        pa.field("type_name", _utf8, nullable=False),
        pa.field("data_type", pa.int32(), nullable=False),
        pa.field("column_size", pa.int32(), nullable=True),
        pa.field("literal_prefix", _utf8, nullable=True),
        pa.field("literal_suffix", _utf8, nullable=True),
        pa.field("create_params", pa.list_(pa.field("item", _utf8, nullable=False)), nullable=True),
        pa.field("nullable", pa.int32(), nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", pa.int32(), nullable=False),
        pa.field("unsigned_attribute", pa.bool_(), nullable=True),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_(), nullable=True),
        pa.field("local_type_name", _utf8, nullable=True),
        pa.field("minimum_scale", pa.int32(), nullable=True),
        pa.field("maximum_scale", pa.int32(), nullable=True),
        pa.field("sql_data_type", pa.int32(), nullable=False),
        pa.field("datetime_subcode", pa.int32(), nullable=True),
        pa.field("num_prec_radix", pa.int32(), nullable=True),
        pa.field("interval_precision", pa.int32(), nullable=True),
    ]
)

# Exactly C++'s SqlSchema::GetSqlInfoSchema(): the union and all its children are declared
# non-nullable (the spec's prose leaves nullability open), list children are the default
# "item" (nullable) and the map is pa.map_'s default entries/key/value layout. Type codes
# are 0..5 in this order; the Go ADBC driver reads child 3 as Int32 and checks code 3.
SQL_INFO_UNION_TYPE = pa.dense_union(
    [
        pa.field("string_value", _utf8, nullable=False),
        pa.field("bool_value", pa.bool_(), nullable=False),
        pa.field("bigint_value", pa.int64(), nullable=False),
        pa.field("int32_bitmask", pa.int32(), nullable=False),
        pa.field("string_list", pa.list_(_utf8), nullable=False),
        pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), nullable=False),
    ],
    type_codes=[0, 1, 2, 3, 4, 5],
)

SQL_INFO_SCHEMA = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field("value", SQL_INFO_UNION_TYPE, nullable=False),
    ]
)


# ---------------------------------------------------------------------------
# Column metadata (ARROW:FLIGHT:SQL:* field metadata)
# ---------------------------------------------------------------------------


class ColumnMetadataKey:
    """The field-metadata keys clients read from result and table schemas."""

    CATALOG_NAME = b"ARROW:FLIGHT:SQL:CATALOG_NAME"
    # The spec text says DB_SCHEMA_NAME, but the C++, Go and Java client libraries (and so
    # the JDBC driver and ADBC) read SCHEMA_NAME; column_metadata() writes both.
    DB_SCHEMA_NAME = b"ARROW:FLIGHT:SQL:DB_SCHEMA_NAME"
    SCHEMA_NAME = b"ARROW:FLIGHT:SQL:SCHEMA_NAME"
    TABLE_NAME = b"ARROW:FLIGHT:SQL:TABLE_NAME"
    TYPE_NAME = b"ARROW:FLIGHT:SQL:TYPE_NAME"
    PRECISION = b"ARROW:FLIGHT:SQL:PRECISION"
    SCALE = b"ARROW:FLIGHT:SQL:SCALE"
    IS_AUTO_INCREMENT = b"ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT"
    IS_CASE_SENSITIVE = b"ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE"
    IS_READ_ONLY = b"ARROW:FLIGHT:SQL:IS_READ_ONLY"
    IS_SEARCHABLE = b"ARROW:FLIGHT:SQL:IS_SEARCHABLE"
    REMARKS = b"ARROW:FLIGHT:SQL:REMARKS"


def _flag(value: bool) -> bytes:
    # Every reference client parses exactly "1" as true; "true" would read as false.
    return b"1" if value else b"0"


def column_metadata(
    field_type_name: str,
    table: str,
    schema: str,
    catalog: str,
    precision: int | None = None,
    scale: int | None = None,
    *,
    is_auto_increment: bool = False,
    is_case_sensitive: bool = False,
    is_read_only: bool = True,
    is_searchable: bool = True,
    remarks: str | None = None,
) -> dict[bytes, bytes]:
    """Build the ``ARROW:FLIGHT:SQL:*`` metadata of one result column.

    ``precision``/``scale`` are left out when None (not applicable); ``remarks`` is left out
    when None because the spec says clients must cope with it missing.
    """
    md: dict[bytes, bytes] = {
        ColumnMetadataKey.CATALOG_NAME: catalog.encode(),
        ColumnMetadataKey.DB_SCHEMA_NAME: schema.encode(),
        ColumnMetadataKey.SCHEMA_NAME: schema.encode(),
        ColumnMetadataKey.TABLE_NAME: table.encode(),
        ColumnMetadataKey.TYPE_NAME: field_type_name.encode(),
    }
    if precision is not None:
        md[ColumnMetadataKey.PRECISION] = str(precision).encode()
    if scale is not None:
        md[ColumnMetadataKey.SCALE] = str(scale).encode()
    md[ColumnMetadataKey.IS_AUTO_INCREMENT] = _flag(is_auto_increment)
    md[ColumnMetadataKey.IS_CASE_SENSITIVE] = _flag(is_case_sensitive)
    md[ColumnMetadataKey.IS_READ_ONLY] = _flag(is_read_only)
    md[ColumnMetadataKey.IS_SEARCHABLE] = _flag(is_searchable)
    if remarks is not None:
        md[ColumnMetadataKey.REMARKS] = remarks.encode()
    return md


def _is_string(dt: pa.DataType) -> bool:
    return bool(pa.types.is_string(dt) or pa.types.is_large_string(dt) or pa.types.is_string_view(dt))


def _is_binary(dt: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(dt)
        or pa.types.is_large_binary(dt)
        or pa.types.is_binary_view(dt)
        or pa.types.is_fixed_size_binary(dt)
    )


_SIMPLE_NAMES: dict[pa.DataType, str] = {
    pa.null(): "NULL",
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT",
    pa.uint16(): "USMALLINT",
    pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT",
    pa.float16(): "FLOAT",  # DuckDB widens half floats on import
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.date32(): "DATE",
    pa.date64(): "DATE",
    pa.month_day_nano_interval(): "INTERVAL",
}

# DuckDB keeps non-microsecond timestamps as distinct types with these names.
_TIMESTAMP_NAMES = {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}

_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _ident(name: str) -> str:
    if _PLAIN_IDENTIFIER.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def arrow_type_to_sql_name(dt: pa.DataType) -> str:
    """DuckDB's spelling of the SQL type an Arrow column corresponds to (for TYPE_NAME)."""
    simple = _SIMPLE_NAMES.get(dt)
    if simple is not None:
        return simple
    if _is_string(dt):
        return "VARCHAR"
    if _is_binary(dt):
        return "BLOB"
    if pa.types.is_decimal(dt):
        return f"DECIMAL({dt.precision},{dt.scale})"
    if pa.types.is_timestamp(dt):
        return "TIMESTAMP WITH TIME ZONE" if dt.tz is not None else _TIMESTAMP_NAMES[dt.unit]
    if pa.types.is_time(dt):
        return "TIME"
    if pa.types.is_duration(dt) or pa.types.is_interval(dt):
        return "INTERVAL"
    if pa.types.is_fixed_size_list(dt):
        return f"{arrow_type_to_sql_name(dt.value_type)}[{dt.list_size}]"
    if (
        pa.types.is_list(dt)
        or pa.types.is_large_list(dt)
        or pa.types.is_list_view(dt)
        or pa.types.is_large_list_view(dt)
    ):
        return f"{arrow_type_to_sql_name(dt.value_type)}[]"
    if pa.types.is_map(dt):
        return f"MAP({arrow_type_to_sql_name(dt.key_type)}, {arrow_type_to_sql_name(dt.item_type)})"
    if pa.types.is_struct(dt):
        inner = ", ".join(f"{_ident(f.name)} {arrow_type_to_sql_name(f.type)}" for f in dt)
        return f"STRUCT({inner})"
    if pa.types.is_union(dt):
        inner = ", ".join(f"{_ident(f.name)} {arrow_type_to_sql_name(f.type)}" for f in dt)
        return f"UNION({inner})"
    if pa.types.is_dictionary(dt):
        return arrow_type_to_sql_name(dt.value_type)
    if pa.types.is_run_end_encoded(dt):
        return arrow_type_to_sql_name(dt.value_type)
    if isinstance(dt, pa.BaseExtensionType):
        if dt.extension_name == "arrow.uuid":
            return "UUID"
        return arrow_type_to_sql_name(dt.storage_type)
    return str(dt).upper()


# Decimal digits of the largest value, as JDBC's getPrecision reports for integers.
_INT_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}


def arrow_type_precision_scale(dt: pa.DataType) -> tuple[int | None, int | None]:
    """(PRECISION, SCALE) metadata values for a column type; None where not applicable.

    Follows JDBC's ResultSetMetaData conventions: integers report their digit count with
    scale 0, floats their mantissa bits, temporal types their fractional-second digits.
    """
    if pa.types.is_decimal(dt):
        return dt.precision, dt.scale
    if pa.types.is_integer(dt):
        return _INT_DIGITS[dt.bit_width], 0
    if pa.types.is_float32(dt) or pa.types.is_float16(dt):
        return 24, None
    if pa.types.is_float64(dt):
        return 53, None
    if pa.types.is_timestamp(dt) or pa.types.is_time(dt):
        digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[dt.unit]
        return None, digits
    return None, None


def schema_with_column_metadata(
    schema: pa.Schema,
    *,
    table: str = "",
    db_schema: str = "",
    catalog: str = "",
    remarks: Mapping[str, str] | None = None,
) -> pa.Schema:
    """Attach ARROW:FLIGHT:SQL:* metadata to every field (existing field metadata is kept).

    For results of arbitrary queries the origin table is unknown, hence the empty defaults.
    """
    fields = []
    for field in schema:
        precision, scale = arrow_type_precision_scale(field.type)
        md = column_metadata(
            arrow_type_to_sql_name(field.type),
            table,
            db_schema,
            catalog,
            precision,
            scale,
            is_case_sensitive=_is_string(field.type),
            remarks=(remarks or {}).get(field.name),
        )
        fields.append(field.with_metadata({**(field.metadata or {}), **md}))
    return pa.schema(fields, metadata=schema.metadata)


# ---------------------------------------------------------------------------
# GetXdbcTypeInfo
# ---------------------------------------------------------------------------

_NULLABLE = pb.NULLABILITY_NULLABLE
_FULL = pb.SEARCHABLE_FULL


@dataclass(frozen=True)
class _XdbcType:
    type_name: str
    data_type: int
    column_size: int | None = None
    literal_prefix: str | None = None
    literal_suffix: str | None = None
    create_params: tuple[str, ...] | None = None
    case_sensitive: bool = False
    searchable: int = _FULL
    unsigned: bool | None = None  # None: not numeric
    min_scale: int | None = None
    max_scale: int | None = None
    sql_data_type: int | None = None  # None: same as data_type
    datetime_subcode: int | None = None
    num_prec_radix: int | None = None


def _int(name: str, code: int, digits: int, unsigned: bool) -> _XdbcType:
    return _XdbcType(name, code, digits, unsigned=unsigned, min_scale=0, max_scale=0, num_prec_radix=10)


def _datetime(name: str, code: int, size: int, prefix: str, subcode: int, scale: int | None) -> _XdbcType:
    # ODBC: data_type is the concise code, sql_data_type the verbose DATETIME + subcode.
    return _XdbcType(
        name,
        code,
        size,
        prefix,
        "'",
        min_scale=scale,
        max_scale=scale,
        sql_data_type=pb.XDBC_DATETIME,
        datetime_subcode=subcode,
    )


# The DuckDB types a tierflight result can carry. Unsigned integers share the signed code:
# ODBC has no unsigned codes and flags them through unsigned_attribute instead. VARCHAR and
# BLOB are unbounded in DuckDB, so their column_size is NULL rather than a made-up limit.
_XDBC_TYPES: tuple[_XdbcType, ...] = (
    _XdbcType("BOOLEAN", pb.XDBC_BIT, 1),
    _int("TINYINT", pb.XDBC_TINYINT, 3, unsigned=False),
    _int("UTINYINT", pb.XDBC_TINYINT, 3, unsigned=True),
    _int("SMALLINT", pb.XDBC_SMALLINT, 5, unsigned=False),
    _int("USMALLINT", pb.XDBC_SMALLINT, 5, unsigned=True),
    _int("INTEGER", pb.XDBC_INTEGER, 10, unsigned=False),
    _int("UINTEGER", pb.XDBC_INTEGER, 10, unsigned=True),
    _int("BIGINT", pb.XDBC_BIGINT, 19, unsigned=False),
    _int("UBIGINT", pb.XDBC_BIGINT, 20, unsigned=True),
    # HUGEINT leaves DuckDB as decimal128(38, 0), so clients see it as an exact numeric.
    _XdbcType("HUGEINT", pb.XDBC_DECIMAL, 38, unsigned=False, min_scale=0, max_scale=0, num_prec_radix=10),
    _XdbcType(
        "DECIMAL",
        pb.XDBC_DECIMAL,
        38,
        create_params=("precision", "scale"),
        unsigned=False,
        min_scale=0,
        max_scale=38,
        num_prec_radix=10,
    ),
    _XdbcType("FLOAT", pb.XDBC_REAL, 24, unsigned=False, num_prec_radix=2),
    _XdbcType("DOUBLE", pb.XDBC_DOUBLE, 53, unsigned=False, num_prec_radix=2),
    _XdbcType("VARCHAR", pb.XDBC_VARCHAR, None, "'", "'", case_sensitive=True),
    _XdbcType("BLOB", pb.XDBC_VARBINARY, None, searchable=pb.SEARCHABLE_BASIC),
    _datetime("DATE", pb.XDBC_DATE, 10, "DATE '", pb.XDBC_SUBCODE_DATE, None),
    _datetime("TIME", pb.XDBC_TIME, 15, "TIME '", pb.XDBC_SUBCODE_TIME, 6),
    _datetime("TIMESTAMP", pb.XDBC_TIMESTAMP, 26, "TIMESTAMP '", pb.XDBC_SUBCODE_TIMESTAMP, 6),
    _datetime(
        "TIMESTAMP WITH TIME ZONE",
        pb.XDBC_TIMESTAMP,
        32,
        "TIMESTAMPTZ '",
        pb.XDBC_SUBCODE_TIMESTAMP_WITH_TIMEZONE,
        6,
    ),
    # DuckDB's INTERVAL (months, days, micros) matches none of ODBC's interval subtypes.
    _XdbcType(
        "INTERVAL",
        pb.XDBC_INTERVAL,
        None,
        "INTERVAL '",
        "'",
        sql_data_type=pb.XDBC_INTERVAL,
        datetime_subcode=pb.XDBC_SUBCODE_UNKNOWN,
    ),
)


def xdbc_type_info_table(data_type: int | None = None) -> pa.Table:
    """GetXdbcTypeInfo result, optionally only rows whose data_type equals ``data_type``."""
    rows = [t for t in _XDBC_TYPES if data_type is None or t.data_type == data_type]
    rows.sort(key=lambda t: (t.data_type, t.type_name))  # the spec's required order
    numeric = [t.unsigned is not None for t in rows]
    columns = {
        "type_name": [t.type_name for t in rows],
        "data_type": [t.data_type for t in rows],
        "column_size": [t.column_size for t in rows],
        "literal_prefix": [t.literal_prefix for t in rows],
        "literal_suffix": [t.literal_suffix for t in rows],
        "create_params": [list(t.create_params) if t.create_params else None for t in rows],
        "nullable": [_NULLABLE] * len(rows),
        "case_sensitive": [t.case_sensitive for t in rows],
        "searchable": [t.searchable for t in rows],
        "unsigned_attribute": [t.unsigned for t in rows],
        "fixed_prec_scale": [False] * len(rows),
        # DuckDB has sequences but no auto-increment column type.
        "auto_increment": [False if n else None for n in numeric],
        "local_type_name": [None] * len(rows),
        "minimum_scale": [t.min_scale for t in rows],
        "maximum_scale": [t.max_scale for t in rows],
        "sql_data_type": [t.data_type if t.sql_data_type is None else t.sql_data_type for t in rows],
        "datetime_subcode": [t.datetime_subcode for t in rows],
        "num_prec_radix": [t.num_prec_radix for t in rows],
        "interval_precision": [None] * len(rows),
    }
    return pa.Table.from_pydict(columns, schema=XDBC_TYPE_INFO_SCHEMA)
