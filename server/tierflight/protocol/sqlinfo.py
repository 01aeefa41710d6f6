"""The GetSqlInfo answers of tierflight, and the builder of the GetSqlInfo result table.

Every id carries the value type the spec documents for it (``SQL_INFO_TYPES``); clients
pick the union child by that type (the Go ADBC driver, for instance, reads
FLIGHT_SQL_SERVER_TRANSACTION only from the int32 child), so a right value in the wrong
child reads as missing or crashes the client.

The values describe what a client can do *through tierflight*: a read-only, autocommit,
forward-only SQL endpoint over DuckDB. Where DuckDB could do more (DDL, transactions), the
server does not expose it and the value says no.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping, Sequence

import duckdb
import pyarrow as pa

from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.schemas import SQL_INFO_SCHEMA, SQL_INFO_UNION_TYPE

__all__ = [
    "CONVERSIONS",
    "DATETIME_FUNCTIONS",
    "NUMERIC_FUNCTIONS",
    "SERVER_NAME",
    "SQL_INFO_TYPES",
    "STRING_FUNCTIONS",
    "SYSTEM_FUNCTIONS",
    "SqlInfoType",
    "SqlInfoValue",
    "duckdb_keywords",
    "sql_info_table",
    "sql_info_values",
]

SERVER_NAME = "tierflight"

SqlInfoValue = str | bool | int | list[str] | dict[int, list[int]]


class SqlInfoType(enum.IntEnum):
    """Union child of a SqlInfo value; the number is the child's type code."""

    STRING = 0
    BOOL = 1
    BIGINT = 2
    INT32 = 3  # plain int32 ordinals and int32 bitmasks alike
    STRING_LIST = 4
    INT32_TO_INT32_LIST_MAP = 5


def _ids(*names: str) -> list[int]:
    return [pb.SqlInfo.Value(n) for n in names]


_S, _B, _I64, _I32 = SqlInfoType.STRING, SqlInfoType.BOOL, SqlInfoType.BIGINT, SqlInfoType.INT32

# The documented type of every id in the SqlInfo enum (the test checks it is complete).
SQL_INFO_TYPES: Mapping[int, SqlInfoType] = {
    **dict.fromkeys(
        _ids(
            "FLIGHT_SQL_SERVER_NAME",
            "FLIGHT_SQL_SERVER_VERSION",
            "FLIGHT_SQL_SERVER_ARROW_VERSION",
            "FLIGHT_SQL_SERVER_SUBSTRAIT_MIN_VERSION",
            "FLIGHT_SQL_SERVER_SUBSTRAIT_MAX_VERSION",
            "SQL_IDENTIFIER_QUOTE_CHAR",
            "SQL_SEARCH_STRING_ESCAPE",
            "SQL_EXTRA_NAME_CHARACTERS",
            "SQL_SCHEMA_TERM",
            "SQL_PROCEDURE_TERM",
            "SQL_CATALOG_TERM",
        ),
        _S,
    ),
    **dict.fromkeys(
        _ids(
            "FLIGHT_SQL_SERVER_READ_ONLY",
            "FLIGHT_SQL_SERVER_SQL",
            "FLIGHT_SQL_SERVER_SUBSTRAIT",
            "FLIGHT_SQL_SERVER_CANCEL",
            "FLIGHT_SQL_SERVER_BULK_INGESTION",
            "FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED",
            "SQL_DDL_CATALOG",
            "SQL_DDL_SCHEMA",
            "SQL_DDL_TABLE",
            "SQL_ALL_TABLES_ARE_SELECTABLE",
            "SQL_SUPPORTS_COLUMN_ALIASING",
            "SQL_NULL_PLUS_NULL_IS_NULL",
            "SQL_SUPPORTS_TABLE_CORRELATION_NAMES",
            "SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES",
            "SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY",
            "SQL_SUPPORTS_ORDER_BY_UNRELATED",
            "SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE",
            "SQL_SUPPORTS_NON_NULLABLE_COLUMNS",
            "SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY",
            "SQL_CATALOG_AT_START",
            "SQL_SELECT_FOR_UPDATE_SUPPORTED",
            "SQL_STORED_PROCEDURES_SUPPORTED",
            "SQL_CORRELATED_SUBQUERIES_SUPPORTED",
            "SQL_MAX_ROW_SIZE_INCLUDES_BLOBS",
            "SQL_TRANSACTIONS_SUPPORTED",
            "SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT",
            "SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED",
            "SQL_BATCH_UPDATES_SUPPORTED",
            "SQL_SAVEPOINTS_SUPPORTED",
            "SQL_NAMED_PARAMETERS_SUPPORTED",
            "SQL_LOCATORS_UPDATE_COPY",
            "SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED",
        ),
        _B,
    ),
    **dict.fromkeys(
        _ids(
            "FLIGHT_SQL_SERVER_TRANSACTION",
            "FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT",
            "FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT",
            "SQL_IDENTIFIER_CASE",
            "SQL_QUOTED_IDENTIFIER_CASE",
            "SQL_NULL_ORDERING",
            "SQL_SUPPORTED_GROUP_BY",
            "SQL_SUPPORTED_GRAMMAR",
            "SQL_ANSI92_SUPPORTED_LEVEL",
            "SQL_OUTER_JOINS_SUPPORT_LEVEL",
            "SQL_SCHEMAS_SUPPORTED_ACTIONS",
            "SQL_CATALOGS_SUPPORTED_ACTIONS",
            "SQL_SUPPORTED_POSITIONED_COMMANDS",
            "SQL_SUPPORTED_SUBQUERIES",
            "SQL_SUPPORTED_UNIONS",
            "SQL_DEFAULT_TRANSACTION_ISOLATION",
            "SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS",
            "SQL_SUPPORTED_RESULT_SET_TYPES",
            "SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_UNSPECIFIED",
            "SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_FORWARD_ONLY",
            "SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_SENSITIVE",
            "SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_INSENSITIVE",
        ),
        _I32,
    ),
    # 541..561 are int64 limits, except 556 (a bool, above).
    **{i: _I64 for i in range(pb.SQL_MAX_BINARY_LITERAL_LENGTH, pb.SQL_MAX_USERNAME_LENGTH + 1) if i != 556},
    **dict.fromkeys(
        _ids(
            "SQL_KEYWORDS",
            "SQL_NUMERIC_FUNCTIONS",
            "SQL_STRING_FUNCTIONS",
            "SQL_SYSTEM_FUNCTIONS",
            "SQL_DATETIME_FUNCTIONS",
        ),
        SqlInfoType.STRING_LIST,
    ),
    pb.SQL_SUPPORTS_CONVERT: SqlInfoType.INT32_TO_INT32_LIST_MAP,
}


def _bits(*positions: int) -> int:
    # The spec's bitmasks set bit N for enum value N.
    mask = 0
    for p in positions:
        mask |= 1 << p
    return mask


# Scalar functions in JDBC's four categories that DuckDB has under these names (the tests
# check each one against duckdb_functions(), or run it for the few SQL special forms).
NUMERIC_FUNCTIONS: tuple[str, ...] = (
    "ABS", "ACOS", "ASIN", "ATAN", "ATAN2", "BIT_COUNT", "CBRT", "CEIL", "CEILING", "COS", "COT",
    "DEGREES", "EVEN", "EXP", "FACTORIAL", "FLOOR", "GAMMA", "GCD", "ISFINITE", "ISINF", "ISNAN",
    "LCM", "LGAMMA", "LN", "LOG", "LOG10", "LOG2", "MOD", "PI", "POW", "POWER", "RADIANS",
    "RANDOM", "ROUND", "SETSEED", "SIGN", "SIN", "SQRT", "TAN", "TRUNC", "XOR",
)  # fmt: skip
STRING_FUNCTIONS: tuple[str, ...] = (
    "ASCII", "CHR", "CONCAT", "CONCAT_WS", "CONTAINS", "ENDS_WITH", "FORMAT", "INSTR", "LCASE",
    "LEFT", "LENGTH", "LEVENSHTEIN", "LOWER", "LPAD", "LTRIM", "MD5", "POSITION", "PRINTF",
    "REGEXP_EXTRACT", "REGEXP_MATCHES", "REGEXP_REPLACE", "REPEAT", "REPLACE", "REVERSE", "RIGHT",
    "RPAD", "RTRIM", "SHA256", "SPLIT_PART", "STARTS_WITH", "STRING_SPLIT", "STRPOS", "SUBSTR",
    "SUBSTRING", "TRANSLATE", "TRIM", "UCASE", "UNICODE", "UPPER",
)  # fmt: skip
SYSTEM_FUNCTIONS: tuple[str, ...] = (
    "COALESCE", "CURRENT_CATALOG", "CURRENT_DATABASE", "CURRENT_SCHEMA", "CURRENT_SCHEMAS",
    "CURRENT_SETTING", "IFNULL", "NULLIF", "TYPEOF", "VERSION",
)  # fmt: skip
DATETIME_FUNCTIONS: tuple[str, ...] = (
    "AGE", "CURRENT_DATE", "CURRENT_TIMESTAMP", "DATE_ADD", "DATE_DIFF", "DATE_PART", "DATE_SUB",
    "DATE_TRUNC", "DATEDIFF", "DATEPART", "DATETRUNC", "DAY", "DAYNAME", "DAYOFMONTH", "DAYOFWEEK",
    "DAYOFYEAR", "EPOCH", "EPOCH_MS", "EXTRACT", "HOUR", "ISODOW", "ISOYEAR", "LAST_DAY",
    "MAKE_DATE", "MAKE_TIME", "MAKE_TIMESTAMP", "MICROSECOND", "MILLISECOND", "MINUTE", "MONTH",
    "MONTHNAME", "NOW", "QUARTER", "SECOND", "STRFTIME", "STRPTIME", "TIME_BUCKET", "TO_TIMESTAMP",
    "TODAY", "WEEK", "WEEKDAY", "WEEKOFYEAR", "YEAR", "YEARWEEK",
)  # fmt: skip


def _convert_map() -> dict[int, list[int]]:
    # Which CASTs DuckDB implements, grouped by JDBC type family (probed against DuckDB:
    # the tests check every pair both ways). BIT is JDBC's boolean; all the string types
    # are VARCHAR and all the binary ones BLOB in DuckDB.
    chars = ["CHAR", "LONGVARCHAR", "VARCHAR"]
    numeric = ["BIGINT", "BIT", "DECIMAL", "FLOAT", "INTEGER", "NUMERIC", "REAL", "SMALLINT", "TINYINT"]
    binary = ["BINARY", "LONGVARBINARY", "VARBINARY"]
    interval = ["INTERVAL_DAY_TIME", "INTERVAL_YEAR_MONTH"]
    everything = chars + numeric + binary + interval + ["DATE", "TIME", "TIMESTAMP"]
    targets: dict[str, list[str]] = {
        **dict.fromkeys(chars, everything),  # strings parse into anything
        **dict.fromkeys(numeric, chars + numeric),
        **dict.fromkeys(binary, chars + binary),
        **dict.fromkeys(interval, chars + interval),
        "DATE": [*chars, "DATE", "TIMESTAMP"],
        "TIME": [*chars, "TIME"],
        "TIMESTAMP": [*chars, "DATE", "TIME", "TIMESTAMP"],
    }

    def code(name: str) -> int:
        return pb.SqlSupportsConvert.Value("SQL_CONVERT_" + name)

    return {code(src): sorted(code(dst) for dst in dsts) for src, dsts in sorted(targets.items())}


CONVERSIONS: Mapping[int, list[int]] = _convert_map()


@functools.cache
def duckdb_keywords() -> tuple[str, ...]:
    """DuckDB's keyword list, upper-cased as JDBC reports keywords."""
    con = duckdb.connect(":memory:")
    try:
        rows = con.execute("SELECT DISTINCT upper(keyword_name) FROM duckdb_keywords() ORDER BY 1").fetchall()
    finally:
        con.close()
    return tuple(str(r[0]) for r in rows)


def sql_info_values(server_version: str) -> dict[int, SqlInfoValue]:
    """Every SqlInfo answer tierflight gives, by id.

    FLIGHT_SQL_SERVER_SUBSTRAIT_MIN/MAX_VERSION are absent: the spec wants null when
    Substrait is unsupported, and the reference union has no nullable child, so the id is
    left out instead (clients treat a missing id as unknown).
    """
    no_limit = 0  # the spec's "no limit or unknown" for every SQL_MAX_* value
    values: dict[int, SqlInfoValue] = {
        pb.FLIGHT_SQL_SERVER_NAME: SERVER_NAME,
        pb.FLIGHT_SQL_SERVER_VERSION: server_version,
        pb.FLIGHT_SQL_SERVER_ARROW_VERSION: pa.__version__,
        pb.FLIGHT_SQL_SERVER_READ_ONLY: True,
        pb.FLIGHT_SQL_SERVER_SQL: True,
        pb.FLIGHT_SQL_SERVER_SUBSTRAIT: False,
        # NONE keeps ADBC in autocommit: it only begins Flight SQL transactions otherwise.
        pb.FLIGHT_SQL_SERVER_TRANSACTION: pb.SQL_SUPPORTED_TRANSACTION_NONE,
        pb.FLIGHT_SQL_SERVER_CANCEL: True,
        pb.FLIGHT_SQL_SERVER_BULK_INGESTION: False,
        pb.FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED: False,
        pb.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: 0,
        pb.FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT: 0,
        pb.SQL_DDL_CATALOG: False,
        pb.SQL_DDL_SCHEMA: False,
        pb.SQL_DDL_TABLE: False,
        # DuckDB matches identifiers case-insensitively even when quoted, keeping their case.
        pb.SQL_IDENTIFIER_CASE: pb.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE,
        pb.SQL_IDENTIFIER_QUOTE_CHAR: '"',
        pb.SQL_QUOTED_IDENTIFIER_CASE: pb.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE,
        pb.SQL_ALL_TABLES_ARE_SELECTABLE: True,
        # DuckDB's default_null_order is NULLS LAST for both ASC and DESC.
        pb.SQL_NULL_ORDERING: pb.SQL_NULLS_SORTED_AT_END,
        pb.SQL_KEYWORDS: list(duckdb_keywords()),
        pb.SQL_NUMERIC_FUNCTIONS: list(NUMERIC_FUNCTIONS),
        pb.SQL_STRING_FUNCTIONS: list(STRING_FUNCTIONS),
        pb.SQL_SYSTEM_FUNCTIONS: list(SYSTEM_FUNCTIONS),
        pb.SQL_DATETIME_FUNCTIONS: list(DATETIME_FUNCTIONS),
        # The escape for '%'/'_' in the GetTables/GetDbSchemas filter patterns.
        pb.SQL_SEARCH_STRING_ESCAPE: "\\",
        pb.SQL_EXTRA_NAME_CHARACTERS: "",
        pb.SQL_SUPPORTS_COLUMN_ALIASING: True,
        pb.SQL_NULL_PLUS_NULL_IS_NULL: True,  # NULL || 'x' is NULL (concat() differs)
        pb.SQL_SUPPORTS_CONVERT: {k: list(v) for k, v in CONVERSIONS.items()},
        pb.SQL_SUPPORTS_TABLE_CORRELATION_NAMES: True,
        # JDBC asks whether aliases must differ from table names; DuckDB allows `t AS t`.
        pb.SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES: False,
        pb.SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY: True,
        pb.SQL_SUPPORTS_ORDER_BY_UNRELATED: True,
        pb.SQL_SUPPORTED_GROUP_BY: _bits(pb.SQL_GROUP_BY_UNRELATED, pb.SQL_GROUP_BY_BEYOND_SELECT),
        pb.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE: True,
        pb.SQL_SUPPORTS_NON_NULLABLE_COLUMNS: True,  # tables may carry NOT NULL columns
        pb.SQL_SUPPORTED_GRAMMAR: _bits(pb.SQL_MINIMUM_GRAMMAR, pb.SQL_CORE_GRAMMAR),
        # Entry level only: DuckDB lacks parts of intermediate SQL-92 (domains, among others).
        pb.SQL_ANSI92_SUPPORTED_LEVEL: _bits(pb.ANSI92_ENTRY_SQL),
        # Foreign keys without referential actions are not the full facility.
        pb.SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY: False,
        pb.SQL_OUTER_JOINS_SUPPORT_LEVEL: pb.SQL_FULL_OUTER_JOINS,
        pb.SQL_SCHEMA_TERM: "schema",
        pb.SQL_PROCEDURE_TERM: "",  # DuckDB has no stored procedures
        pb.SQL_CATALOG_TERM: "database",  # DuckDB's name for a catalog (ATTACH ... AS db)
        pb.SQL_CATALOG_AT_START: True,
        # Schema/catalog names in procedure calls, index or privilege DDL: none of these
        # statements can run through a read-only server.
        pb.SQL_SCHEMAS_SUPPORTED_ACTIONS: 0,
        pb.SQL_CATALOGS_SUPPORTED_ACTIONS: 0,
        pb.SQL_SUPPORTED_POSITIONED_COMMANDS: 0,
        pb.SQL_SELECT_FOR_UPDATE_SUPPORTED: False,
        pb.SQL_STORED_PROCEDURES_SUPPORTED: False,
        pb.SQL_SUPPORTED_SUBQUERIES: _bits(
            pb.SQL_SUBQUERIES_IN_COMPARISONS,
            pb.SQL_SUBQUERIES_IN_EXISTS,
            pb.SQL_SUBQUERIES_IN_INS,
            pb.SQL_SUBQUERIES_IN_QUANTIFIEDS,
        ),
        pb.SQL_CORRELATED_SUBQUERIES_SUPPORTED: True,
        pb.SQL_SUPPORTED_UNIONS: _bits(pb.SQL_UNION, pb.SQL_UNION_ALL),
        **{i: no_limit for i, t in SQL_INFO_TYPES.items() if t is SqlInfoType.BIGINT},
        pb.SQL_MAX_ROW_SIZE_INCLUDES_BLOBS: False,
        # With SQL_TRANSACTIONS_SUPPORTED false the spec pins the isolation level to NONE.
        pb.SQL_DEFAULT_TRANSACTION_ISOLATION: pb.SQL_TRANSACTION_NONE,
        pb.SQL_TRANSACTIONS_SUPPORTED: False,
        pb.SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS: _bits(pb.SQL_TRANSACTION_NONE),
        pb.SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT: False,
        pb.SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED: False,
        pb.SQL_SUPPORTED_RESULT_SET_TYPES: _bits(pb.SQL_RESULT_SET_TYPE_FORWARD_ONLY),
        pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_UNSPECIFIED: 0,
        pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_FORWARD_ONLY: _bits(
            pb.SQL_RESULT_SET_CONCURRENCY_READ_ONLY
        ),
        pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_SENSITIVE: 0,
        pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_INSENSITIVE: 0,
        pb.SQL_BATCH_UPDATES_SUPPORTED: False,
        pb.SQL_SAVEPOINTS_SUPPORTED: False,
        pb.SQL_NAMED_PARAMETERS_SUPPORTED: False,
        pb.SQL_LOCATORS_UPDATE_COPY: False,
        pb.SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED: False,
    }
    return dict(sorted(values.items()))


def _child_values(kind: SqlInfoType, values: list[SqlInfoValue]) -> list[object]:
    if kind is SqlInfoType.INT32_TO_INT32_LIST_MAP:
        # pyarrow builds map values from (key, value) pairs, not from dicts.
        return [list(v.items()) for v in values if isinstance(v, dict)]
    return list(values)


def _union_array(ids: Sequence[int], values: Mapping[int, SqlInfoValue]) -> pa.Array:
    """Dense union of the given ids' values, each in the child SQL_INFO_TYPES names."""
    children: dict[SqlInfoType, list[SqlInfoValue]] = {t: [] for t in SqlInfoType}
    type_ids: list[int] = []
    offsets: list[int] = []
    for info_id in ids:
        kind = SQL_INFO_TYPES[info_id]
        type_ids.append(int(kind))
        offsets.append(len(children[kind]))
        children[kind].append(values[info_id])
    child_arrays = [
        pa.array(_child_values(t, children[t]), type=SQL_INFO_UNION_TYPE.field(int(t)).type)
        for t in SqlInfoType
    ]
    # from_buffers keeps the declared (non-nullable) child fields; UnionArray.from_dense
    # would rebuild them as nullable and the schema would no longer match the reference.
    return pa.Array.from_buffers(
        SQL_INFO_UNION_TYPE,
        len(ids),
        [None, pa.py_buffer(bytes(type_ids)), pa.array(offsets, pa.int32()).buffers()[1]],
        children=child_arrays,
    )


@functools.lru_cache(maxsize=4)
def _full_table(server_version: str) -> tuple[pa.Table, Mapping[int, int]]:
    values = sql_info_values(server_version)
    ids = list(values)
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.uint32()), _union_array(ids, values)],
        schema=SQL_INFO_SCHEMA,
    )
    return table, {info_id: row for row, info_id in enumerate(ids)}


def _default_version() -> str:
    from tierflight import __version__

    return __version__


def sql_info_table(requested: Iterable[int], server_version: str | None = None) -> pa.Table:
    """GetSqlInfo result for ``requested`` ids (empty: every id tierflight answers).

    Rows follow the request order, duplicates collapse, and ids tierflight has no answer
    for are left out, as the spec allows.
    """
    table, row_of = _full_table(server_version if server_version is not None else _default_version())
    wanted = list(dict.fromkeys(requested))
    if not wanted:
        return table
    rows = [row_of[i] for i in wanted if i in row_of]
    return table.take(pa.array(rows, pa.int64()))
