"""The SQLAlchemy dialect ``tierflight://`` (SQLAlchemy 1.4 and 2.x) on the ADBC Flight SQL DB-API.

``tierflight://[user:password@]host:port[/][?tls=true&tls_root_certs=PATH&tls_skip_verify=true
&token=T&timeout=SECONDS]``. Registered under the ``sqlalchemy.dialects`` entry point group, so
``create_engine("tierflight://127.0.0.1:31337")`` needs no import.

SQL is rendered in DuckDB's dialect (the server's) with ``?`` parameters: bound values travel as
typed Arrow parameters, never spliced into the text. Reflection uses the Flight SQL catalog calls
(GetObjects / GetTableSchema), not ``information_schema``: the latter shows the server's internal
storage (rollup tables, its own schemas), which clients must not see.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import sqlalchemy
from sqlalchemy import exc, types
from sqlalchemy.engine import default
from sqlalchemy.engine.url import URL
from sqlalchemy.sql import compiler

from tierflight_client.connection import adbc_db_kwargs

if TYPE_CHECKING:  # SQLAlchemy 2's typed reflection records (plain dicts at run time, and in 1.4)
    from sqlalchemy.engine.interfaces import (
        ReflectedCheckConstraint,
        ReflectedColumn,
        ReflectedForeignKeyConstraint,
        ReflectedIndex,
        ReflectedPrimaryKeyConstraint,
        ReflectedTableComment,
        ReflectedUniqueConstraint,
    )

_SA2 = int(sqlalchemy.__version__.split(".", 1)[0]) >= 2

# DuckDB's reserved keywords (duckdb_keywords() WHERE keyword_category = 'reserved'): only these
# need quotes, so columns such as day, hour and type stay bare, as the router expects them.
RESERVED_WORDS = frozenset(
    [
        "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case", "cast",
        "check", "collate", "column", "constraint", "create", "default", "deferrable", "desc", "describe", "distinct", "do", "else",
        "end", "except", "false", "fetch", "for", "foreign", "from", "group", "having", "in", "initially", "intersect",
        "into", "lambda", "lateral", "leading", "limit", "not", "null", "offset", "on", "only", "or", "order",
        "pivot", "pivot_longer", "pivot_wider", "placing", "primary", "qualify", "references", "returning", "select", "show", "some", "summarize",
        "symmetric", "table", "then", "to", "trailing", "true", "union", "unique", "unpivot", "using", "variadic", "when",
        "where", "window", "with",
    ]
)

# Table types a client may see; the `system` schema's tables are part of the contract.
_USER_TABLE_TYPES = frozenset({"TABLE", "BASE TABLE"})
_VIEW_TYPES = frozenset({"VIEW"})
_SYSTEM_SCHEMA = "system"
_SYSTEM_TABLE_TYPES = frozenset({"SYSTEM TABLE", "TABLE", "BASE TABLE", "VIEW"})

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_URL_OPTIONS = frozenset({"tls", "tls_root_certs", "tls_skip_verify", "token", "timeout"})


class DOUBLE(types.Float):  # type: ignore[type-arg]
    """DuckDB's 8-byte float (``FLOAT`` is 4 bytes in DuckDB)."""

    __visit_name__ = "DOUBLE"


class _Date(types.Date):
    def literal_processor(self, dialect: Any) -> Any:
        return lambda value: f"DATE '{value.isoformat()}'"


class _DateTime(types.DateTime):
    def literal_processor(self, dialect: Any) -> Any:
        return lambda value: f"TIMESTAMP '{value.isoformat(sep=' ')}'"


class _Time(types.Time):
    def literal_processor(self, dialect: Any) -> Any:
        return lambda value: f"TIME '{value.isoformat()}'"


class TierflightCompiler(compiler.SQLCompiler):
    def limit_clause(self, select: Any, **kw: Any) -> str:
        # The generic compiler writes LIMIT -1 for an OFFSET alone; DuckDB wants no LIMIT.
        # The values are rendered as integers at execution time (literal_execute keeps the
        # statement cache right): the server binds ``?`` in LIMIT/OFFSET out of textual order
        # (issue 18), which would swap them with the WHERE parameters.
        kw = {**kw, "literal_execute": True}
        text = ""
        if select._limit_clause is not None:
            text += "\n LIMIT " + self.process(select._limit_clause, **kw)
        if select._offset_clause is not None:
            text += "\n OFFSET " + self.process(select._offset_clause, **kw)
        return text


class TierflightTypeCompiler(compiler.GenericTypeCompiler):
    def visit_DOUBLE(self, type_: Any, **kw: Any) -> str:
        return "DOUBLE"

    def visit_float(self, type_: Any, **kw: Any) -> str:
        return "DOUBLE"

    def visit_datetime(self, type_: Any, **kw: Any) -> str:
        return "TIMESTAMPTZ" if getattr(type_, "timezone", False) else "TIMESTAMP"

    def visit_DATETIME(self, type_: Any, **kw: Any) -> str:
        return self.visit_datetime(type_, **kw)

    def visit_TIMESTAMP(self, type_: Any, **kw: Any) -> str:
        return self.visit_datetime(type_, **kw)

    def visit_large_binary(self, type_: Any, **kw: Any) -> str:
        return "BLOB"

    def visit_uuid(self, type_: Any, **kw: Any) -> str:
        return "UUID"


class TierflightIdentifierPreparer(compiler.IdentifierPreparer):
    reserved_words = set(RESERVED_WORDS)  # noqa: RUF012 (SQLAlchemy declares it per instance)


def sqlalchemy_type(arrow_type: pa.DataType) -> Any:
    """The SQLAlchemy type for an Arrow column type (NullType for what has no counterpart)."""
    if pa.types.is_boolean(arrow_type):
        return types.BOOLEAN()
    if pa.types.is_int8(arrow_type) or pa.types.is_int16(arrow_type) or pa.types.is_uint8(arrow_type):
        return types.SMALLINT()
    if pa.types.is_int32(arrow_type) or pa.types.is_uint16(arrow_type):
        return types.INTEGER()
    if pa.types.is_integer(arrow_type):
        return types.BIGINT()
    if pa.types.is_float16(arrow_type) or pa.types.is_float32(arrow_type):
        return types.REAL()
    if pa.types.is_floating(arrow_type):
        return DOUBLE()
    if pa.types.is_decimal(arrow_type):
        return types.DECIMAL(arrow_type.precision, arrow_type.scale)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return types.VARCHAR()
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return types.LargeBinary()
    if pa.types.is_timestamp(arrow_type):
        return types.TIMESTAMP(timezone=arrow_type.tz is not None)
    if pa.types.is_date(arrow_type):
        return types.DATE()
    if pa.types.is_time(arrow_type):
        return types.TIME()
    if pa.types.is_interval(arrow_type) or pa.types.is_duration(arrow_type):
        return types.Interval()
    return types.NullType()


def _flag(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise exc.ArgumentError(f"tierflight URL option {name}={value!r}: expected true or false")


_PRIMARY_KEY_SQL = (
    "SELECT k.column_name, k.constraint_name FROM information_schema.key_column_usage k "
    "JOIN information_schema.table_constraints t ON t.constraint_schema = k.constraint_schema "
    "AND t.constraint_name = k.constraint_name "
    "WHERE t.constraint_type = 'PRIMARY KEY' AND k.table_schema = ? AND k.table_name = ? ORDER BY k.ordinal_position"
)
_FOREIGN_KEYS_SQL = (
    "SELECT k.constraint_name, k.column_name, p.table_schema, p.table_name, p.column_name "
    "FROM information_schema.referential_constraints r "
    "JOIN information_schema.key_column_usage k ON k.constraint_schema = r.constraint_schema "
    "AND k.constraint_name = r.constraint_name "
    "JOIN information_schema.key_column_usage p ON p.constraint_schema = r.unique_constraint_schema "
    "AND p.constraint_name = r.unique_constraint_name AND p.ordinal_position = k.position_in_unique_constraint "
    "WHERE k.table_schema = ? AND k.table_name = ? ORDER BY k.constraint_name, k.ordinal_position"
)


def _raw(connection: Any) -> Any:
    """The ADBC DB-API connection under a SQLAlchemy connection."""
    return connection.connection.dbapi_connection


class TierflightDialect(default.DefaultDialect):
    name = "tierflight"
    driver = "adbc"
    default_paramstyle = "qmark"
    positional = True
    statement_compiler = TierflightCompiler
    type_compiler = TierflightTypeCompiler
    preparer = TierflightIdentifierPreparer
    colspecs = {types.Date: _Date, types.DateTime: _DateTime, types.Time: _Time}  # noqa: RUF012

    supports_statement_cache = True
    supports_native_boolean = True
    supports_native_decimal = True
    supports_unicode_statements = True
    supports_unicode_binds = True
    supports_schemas = True
    supports_views = True
    supports_sequences = False
    supports_alter = False
    supports_comments = False
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    supports_is_distinct_from = True
    postfetch_lastrowid = False
    # DuckDB's `/` divides integers exactly; `//` is the floor division.
    div_is_floordiv = False
    default_schema_name = "main"
    max_identifier_length = 1024

    @classmethod
    def import_dbapi(cls) -> ModuleType:
        import adbc_driver_flightsql.dbapi

        return adbc_driver_flightsql.dbapi

    def create_connect_args(self, url: URL) -> tuple[list[Any], dict[str, Any]]:
        query = {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()}
        unknown = sorted(set(query) - _URL_OPTIONS)
        if unknown:
            raise exc.ArgumentError(
                f"unknown tierflight URL option(s) {', '.join(unknown)}; known: {', '.join(sorted(_URL_OPTIONS))}"
            )
        if not url.host:
            raise exc.ArgumentError("tierflight URL needs a host: tierflight://host:port")
        tls = _flag("tls", query["tls"]) if "tls" in query else False
        try:
            timeout = float(query["timeout"]) if "timeout" in query else None
            db_kwargs = adbc_db_kwargs(
                user=url.username,
                password=url.password if url.username is not None else None,
                token=query.get("token"),
                tls_root_certs=query.get("tls_root_certs"),
                tls_skip_verify=_flag("tls_skip_verify", query["tls_skip_verify"])
                if "tls_skip_verify" in query
                else False,
                timeout=timeout,
            )
        except ValueError as error:
            raise exc.ArgumentError(f"tierflight URL: {error}") from error
        scheme = "grpc+tls" if tls else "grpc"
        uri = f"{scheme}://{url.host}:{url.port or 31337}"
        return [uri], {"db_kwargs": db_kwargs, "autocommit": True}

    # -- session: the server is read-only and has no transactions ------------------------------

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        return ()

    def _get_default_schema_name(self, connection: Any) -> str:
        return "main"

    def do_begin(self, dbapi_connection: Any) -> None:
        pass

    def do_commit(self, dbapi_connection: Any) -> None:
        pass

    def do_rollback(self, dbapi_connection: Any) -> None:
        pass

    def get_isolation_level(self, dbapi_connection: Any) -> Literal["AUTOCOMMIT"]:
        return "AUTOCOMMIT"

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return "UNAVAILABLE" in str(e)

    # -- reflection ----------------------------------------------------------------------------

    def _tables(
        self, connection: Any, schema: str | None = None, table: str | None = None, **kw: Any
    ) -> list[tuple[str, str, str]]:
        """(schema, table, kind) for every table a client may see; kind is "table" or "view".

        The GetObjects filters are LIKE patterns (``_`` matches anything), so names are matched
        exactly here as well. Kept in the inspector's ``info_cache`` (not reflection.cache: its
        generated wrapper breaks on postponed annotations under SQLAlchemy 1.4)."""
        cache = kw.get("info_cache")
        key = ("tierflight_tables", schema, table)
        if cache is not None and key in cache:
            cached: list[tuple[str, str, str]] = cache[key]
            return cached
        found = self._fetch_tables(connection, schema, table)
        if cache is not None:
            cache[key] = found
        return found

    def _fetch_tables(self, connection: Any, schema: str | None, table: str | None) -> list[tuple[str, str, str]]:
        objects = _raw(connection).adbc_get_objects(depth="tables", db_schema_filter=schema, table_name_filter=table)
        out: list[tuple[str, str, str]] = []
        for catalog in objects.read_all().to_pylist():
            for db_schema in catalog["catalog_db_schemas"] or []:
                schema_name = db_schema["db_schema_name"]
                if schema is not None and schema_name != schema:
                    continue
                for entry in db_schema["db_schema_tables"] or []:
                    name, kind = entry["table_name"], (entry["table_type"] or "").upper()
                    if table is not None and name != table:
                        continue
                    if kind in _VIEW_TYPES:
                        out.append((schema_name, name, "view"))
                    elif kind in _USER_TABLE_TYPES or (schema_name == _SYSTEM_SCHEMA and kind in _SYSTEM_TABLE_TYPES):
                        out.append((schema_name, name, "table"))
        return sorted(set(out))

    def get_schema_names(self, connection: Any, **kw: Any) -> list[str]:
        return sorted({schema for schema, _, _ in self._tables(connection, **kw)})

    def get_table_names(self, connection: Any, schema: str | None = None, **kw: Any) -> list[str]:
        schema = schema or self.default_schema_name
        return [name for _, name, kind in self._tables(connection, schema, **kw) if kind == "table"]

    def get_view_names(self, connection: Any, schema: str | None = None, **kw: Any) -> list[str]:
        schema = schema or self.default_schema_name
        return [name for _, name, kind in self._tables(connection, schema, **kw) if kind == "view"]

    def has_table(self, connection: Any, table_name: str, schema: str | None = None, **kw: Any) -> bool:
        return bool(self._tables(connection, schema or self.default_schema_name, table_name, **kw))

    def has_schema(self, connection: Any, schema_name: str, **kw: Any) -> bool:
        return schema_name in self.get_schema_names(connection, **kw)

    def get_columns(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[ReflectedColumn]:
        schema = schema or self.default_schema_name
        # Only tables GetObjects shows: GetTableSchema must not become a way around that.
        if not self._tables(connection, schema, table_name, **kw):
            raise exc.NoSuchTableError(f"{schema}.{table_name}")
        arrow_schema = _raw(connection).adbc_get_table_schema(table_name, db_schema_filter=schema)
        return [
            {
                "name": field.name,
                "type": sqlalchemy_type(field.type),
                "nullable": field.nullable,
                "default": None,
                "autoincrement": False,
                "comment": None,
            }
            for field in arrow_schema
        ]

    def _catalog_rows(self, connection: Any, sql: str, schema: str, table: str) -> list[tuple[Any, ...]]:
        """Rows of a query over information_schema about one table (bound, never spliced)."""
        cur = _raw(connection).cursor()
        try:
            cur.execute(sql, parameters=(schema, table))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def get_pk_constraint(self, connection: Any, table_name: str, schema: str | None = None, **kw: Any) -> ReflectedPrimaryKeyConstraint:
        # A dimension table's key (the server's catalog reports it as PRIMARY KEY); fact and
        # system tables have none.
        schema = schema or self.default_schema_name
        if not self._tables(connection, schema, table_name, **kw):
            raise exc.NoSuchTableError(f"{schema}.{table_name}")
        rows = self._catalog_rows(connection, _PRIMARY_KEY_SQL, schema, table_name)
        return {"constrained_columns": [r[0] for r in rows], "name": rows[0][1] if rows else None}

    def get_foreign_keys(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[ReflectedForeignKeyConstraint]:
        # A fact table's references to dimension tables.
        schema = schema or self.default_schema_name
        if not self._tables(connection, schema, table_name, **kw):
            raise exc.NoSuchTableError(f"{schema}.{table_name}")
        keys: dict[str, ReflectedForeignKeyConstraint] = {}
        for name, column, ref_schema, ref_table, ref_column in self._catalog_rows(connection, _FOREIGN_KEYS_SQL, schema, table_name):
            key = keys.setdefault(
                name,
                {
                    "name": name,
                    "constrained_columns": [],
                    "referred_schema": ref_schema,
                    "referred_table": ref_table,
                    "referred_columns": [],
                    "options": {},
                },
            )
            key["constrained_columns"].append(column)
            key["referred_columns"].append(ref_column)
        return list(keys.values())

    def get_indexes(self, connection: Any, table_name: str, schema: str | None = None, **kw: Any) -> list[ReflectedIndex]:
        return []

    def get_unique_constraints(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[ReflectedUniqueConstraint]:
        return []

    def get_check_constraints(
        self, connection: Any, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[ReflectedCheckConstraint]:
        return []

    def get_table_comment(self, connection: Any, table_name: str, schema: str | None = None, **kw: Any) -> ReflectedTableComment:
        return {"text": None}


if not _SA2:
    # SQLAlchemy 1.4 finds the DB-API module through a `dbapi` classmethod (2.x: import_dbapi).
    TierflightDialect.dbapi = classmethod(lambda cls: TierflightDialect.import_dbapi())  # type: ignore[assignment]

dialect = TierflightDialect

__all__ = ["DOUBLE", "TierflightDialect", "dialect", "sqlalchemy_type"]
