"""The metadata commands: catalogs, schemas, tables, keys, type info and SqlInfo."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tierflight import __version__
from tierflight.core.errors import Unsupported
from tierflight.engine.sandbox import check_statement
from tierflight.protocol import schemas as S
from tierflight.protocol.like import check_length, like
from tierflight.protocol.sqlinfo import sql_info_table

TABLE_TYPES = ("TABLE", "SYSTEM TABLE")

_SCHEMAS: dict[str, pa.Schema] = {
    "CommandGetCatalogs": S.CATALOGS_SCHEMA,
    "CommandGetDbSchemas": S.DB_SCHEMAS_SCHEMA,
    "CommandGetTables": S.TABLES_SCHEMA,
    "CommandGetTableTypes": S.TABLE_TYPES_SCHEMA,
    "CommandGetPrimaryKeys": S.PRIMARY_KEYS_SCHEMA,
    "CommandGetImportedKeys": S.IMPORTED_KEYS_SCHEMA,
    "CommandGetExportedKeys": S.EXPORTED_KEYS_SCHEMA,
    "CommandGetCrossReference": S.CROSS_REFERENCE_SCHEMA,
    "CommandGetXdbcTypeInfo": S.XDBC_TYPE_INFO_SCHEMA,
    "CommandGetSqlInfo": S.SQL_INFO_SCHEMA,
}


def _opt(cmd: Any, name: str) -> str | None:
    return getattr(cmd, name) if cmd.HasField(name) else None


def _pattern(cmd: Any, name: str) -> str | None:
    """The filter pattern ``name`` of ``cmd``, refused up front when it is too long."""
    pattern = _opt(cmd, name)
    if pattern is not None:
        check_length(name, pattern)
    return pattern


def _with_nullability(field: pa.Field, nullable: bool) -> pa.Field:
    """The Arrow field's nullability, and the same as the XDBC_* keys ADBC drivers look for
    in field metadata when they build GetObjects' xdbc_nullable / xdbc_is_nullable."""
    flags = {b"XDBC_NULLABLE": b"1" if nullable else b"0", b"XDBC_IS_NULLABLE": b"YES" if nullable else b"NO"}
    return field.with_nullable(nullable).with_metadata({**(field.metadata or {}), **flags})


class Metadata:
    def __init__(self, app: Any) -> None:
        self.app = app

    def command_schema(self, name: str, cmd: Any = None) -> pa.Schema:
        if name == "CommandGetTables" and cmd is not None and cmd.include_schema:
            return S.TABLES_SCHEMA_WITH_TABLE_SCHEMA
        schema = _SCHEMAS.get(name)
        if schema is None:
            raise Unsupported(f"Flight SQL command {name} is not supported by tierflight")
        return schema

    def command_table(self, name: str, cmd: Any) -> pa.Table:
        handler = getattr(self, "_" + name, None)
        if handler is None:
            raise Unsupported(f"Flight SQL command {name} is not supported by tierflight")
        table: pa.Table = handler(cmd)
        return table

    # -- listing --------------------------------------------------------------------------

    def _entries(self) -> list[tuple[str, str, str, str]]:
        """(catalog, db_schema, table, table_type) of everything a client may query."""
        catalog = self.app.catalog_name
        entries = [(catalog, "main", name, "TABLE") for name in self.app.config.tables]
        entries += [(catalog, "system", name, "SYSTEM TABLE") for name in self.app.database.system_tables]
        return sorted(entries)

    def _CommandGetCatalogs(self, cmd: Any) -> pa.Table:
        return pa.Table.from_pylist([{"catalog_name": self.app.catalog_name}], schema=S.CATALOGS_SCHEMA)

    def _CommandGetDbSchemas(self, cmd: Any) -> pa.Table:
        catalog, pattern = _opt(cmd, "catalog"), _pattern(cmd, "db_schema_filter_pattern")
        rows = sorted({(c, s) for c, s, _, _ in self._entries() if catalog in (None, c) and like(pattern, s)})
        return pa.Table.from_pylist([{"catalog_name": c, "db_schema_name": s} for c, s in rows], schema=S.DB_SCHEMAS_SCHEMA)

    def _CommandGetTables(self, cmd: Any) -> pa.Table:
        catalog = _opt(cmd, "catalog")
        schema_pat, table_pat = _pattern(cmd, "db_schema_filter_pattern"), _pattern(cmd, "table_name_filter_pattern")
        # Type names compare case-insensitively: some clients ask for "table" (as SQLite's
        # example server reports it) where JDBC and the Flight SQL spec say "TABLE".
        types = {t.upper() for t in cmd.table_types}
        rows = [
            e
            for e in self._entries()
            if catalog in (None, e[0]) and like(schema_pat, e[1]) and like(table_pat, e[2]) and (not types or e[3] in types)
        ]
        data: dict[str, list[Any]] = {
            "catalog_name": [r[0] for r in rows],
            "db_schema_name": [r[1] for r in rows],
            "table_name": [r[2] for r in rows],
            "table_type": [r[3] for r in rows],
        }
        if not cmd.include_schema:
            return pa.Table.from_pydict(data, schema=S.TABLES_SCHEMA)
        data["table_schema"] = [self.table_schema(c, s, t).serialize().to_pybytes() for c, s, t, _ in rows]
        return pa.Table.from_pydict(data, schema=S.TABLES_SCHEMA_WITH_TABLE_SCHEMA)

    def table_schema(self, catalog: str, db_schema: str, table: str) -> pa.Schema:
        quoted = '"' + table.replace('"', '""') + '"'
        statement = check_statement(f"SELECT * FROM {db_schema}.{quoted}")
        schema = self.app.executor.schema(statement)
        # A result's fields are all nullable; the table's NOT NULL columns are not (ADBC
        # reads nullability from the Arrow field).
        nullable = {name: null for name, _, null in self.app.catalog.table_columns(db_schema, table)}
        schema = pa.schema([_with_nullability(f, nullable.get(f.name, True)) for f in schema], metadata=schema.metadata)
        return S.schema_with_column_metadata(schema, table=table, db_schema=db_schema, catalog=catalog)

    def _CommandGetTableTypes(self, cmd: Any) -> pa.Table:
        return pa.Table.from_pylist([{"table_type": t} for t in TABLE_TYPES], schema=S.TABLE_TYPES_SCHEMA)

    # Tables have no declared keys: empty results with the spec's schemas.
    def _CommandGetPrimaryKeys(self, cmd: Any) -> pa.Table:
        return S.PRIMARY_KEYS_SCHEMA.empty_table()

    def _CommandGetImportedKeys(self, cmd: Any) -> pa.Table:
        return S.IMPORTED_KEYS_SCHEMA.empty_table()

    def _CommandGetExportedKeys(self, cmd: Any) -> pa.Table:
        return S.EXPORTED_KEYS_SCHEMA.empty_table()

    def _CommandGetCrossReference(self, cmd: Any) -> pa.Table:
        return S.CROSS_REFERENCE_SCHEMA.empty_table()

    def _CommandGetXdbcTypeInfo(self, cmd: Any) -> pa.Table:
        return S.xdbc_type_info_table(cmd.data_type if cmd.HasField("data_type") else None)

    def _CommandGetSqlInfo(self, cmd: Any) -> pa.Table:
        return sql_info_table(list(cmd.info), __version__)
