"""The catalog clients see: a shadow DuckDB database holding only the product's tables.

The server's DuckDB database holds internal things (the rollups' ``tf_rollup`` database,
the ``tf_system`` schema, per-statement registrations) and none of the configured tables,
which the raw planner replaces by their tier sources. So DuckDB's own catalog functions
and views (``information_schema.*``, ``pg_catalog.*``, ``duckdb_tables()`` & co., ``SHOW
ALL TABLES``) must never run there. They run here instead: a separate small DuckDB
connection whose database is named ``tierflight`` like the real one and holds EMPTY
tables with exactly the user-visible shape (each configured table with its derived
columns and NOT NULL constraints in ``main``, dimension tables with their key as PRIMARY KEY
and fact tables with their references as FOREIGN KEYs, the system tables in ``system``). Nothing
internal exists in it, so no spelling can reach anything internal; what remains of
DuckDB's own built-in schemas (``system``, ``temp``, the internal views) is filtered out
of each catalog relation's rows.

The raw planner asks :meth:`ShadowCatalog.is_catalog_relation` for every table reference
it does not resolve to a configured or system table; such a reference is evaluated here
and its rows registered on the statement's cursor under a fresh name, so a statement may
mix catalog relations with table data. A statement that is itself a catalog command
(``SHOW ...`` but ``SHOW TABLES``, ``DESCRIBE``/``SUMMARIZE`` of a catalog relation) runs
here as a whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import duckdb
import pyarrow as pa
from sqlglot import exp

from tierflight.core.config import TableConfig, TableKind
from tierflight.core.errors import StatementRefused
from tierflight.core.lru import LRU
from tierflight.core.names import CATALOG, MAIN_SCHEMA, SYSTEM_SCHEMA
from tierflight.core.sql import quote_ident, quote_literal, table_view_sql
from tierflight.core.statement import DIALECT
from tierflight.engine.database import use_catalog
from tierflight.engine.duck_errors import translate

# (name, DuckDB type, nullable) of one column.
Column = tuple[str, str, bool]
# Reads the real database: DESCRIBE rows for a SQL text (engine.database.query_internal).
Describe = Callable[[str], list[tuple[object, ...]]]
# The system tables by name, each with the source of its rows (engine.database).
SystemTables = Callable[[], Mapping[str, Callable[[], pa.Table]]]

# DuckDB's catalog schemas (in its built-in ``system`` catalog, also reachable unqualified
# through the search path) and the table-function prefixes that read the catalog.
CATALOG_SCHEMAS = frozenset({"information_schema", "pg_catalog"})
CATALOG_FUNCTION_PREFIXES = ("duckdb_", "pragma_")
# Columns that name the database a catalog row belongs to: rows of other databases
# (DuckDB's built-in ``system`` and ``temp``: its internal schemas and views) are not the
# product's. Built-in functions and types (duckdb_functions(), duckdb_types(), pg_proc,
# pg_type) live in ``system`` too, and stay listed: SQL editors complete from them.
_DATABASE_COLUMNS = ("database_name", "table_catalog", "catalog_name", "constraint_catalog")
_UNFILTERED = frozenset({"duckdb_functions", "duckdb_types"})
# pg_catalog relations whose rows are not tied to a database by name.
_PG_FILTERS = {
    "pg_class": "relnamespace IN (SELECT oid FROM pg_catalog.pg_namespace)",
    "pg_attribute": "attrelid IN (SELECT oid FROM pg_catalog.pg_class"
    " WHERE relnamespace IN (SELECT oid FROM pg_catalog.pg_namespace))",
    "pg_views": "false",  # there are no user views; DuckDB lists its internal ones here
    "pg_depend": "false",
}


def _constraints(table: TableConfig, known: Mapping[str, TableConfig]) -> str:
    """A dimension's key as PRIMARY KEY, a fact table's references as FOREIGN KEYs, so that
    information_schema's constraint views report them (the tables stay empty). A reference
    whose column schema evolution widened past the key's type (tiers.evolution) is left out
    here, since DuckDB refuses a key of another type (GetImportedKeys still reports it)."""
    if table.key is not None:
        return f", PRIMARY KEY ({quote_ident(table.key)})"
    types = {c.name: c.type for c in table.columns}
    return "".join(
        f", FOREIGN KEY ({quote_ident(column)}) REFERENCES {quote_ident(target)}"
        for column, target in table.references.items()
        if target in known and types.get(column) == _key_type(known[target])
    )


def _key_type(dimension: TableConfig) -> str | None:
    return next((c.type for c in dimension.columns if c.name == dimension.key), None)


class ShadowCatalog:
    """An empty copy of the user-visible catalog, on a DuckDB connection of its own."""

    def __init__(
        self,
        tables: Mapping[str, TableConfig],
        system_tables: SystemTables,
        describe: Describe,
    ) -> None:
        self._tables = tables
        self._system_tables = system_tables
        self._describe = describe
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._built_for: tuple[str, ...] = ()
        self._views: frozenset[tuple[str, str]] = frozenset()
        # The shadow's rows never change while its system tables stay the same.
        self._results: LRU[str, pa.Table] = LRU(256)

    # -- building -------------------------------------------------------------------------

    def columns(self) -> dict[tuple[str, str], list[Column]]:
        """(schema, table) -> columns, as a client sees them."""
        out: dict[tuple[str, str], list[Column]] = {}
        for name, table in self._tables.items():
            not_null = {c.name.lower() for c in table.columns if not c.nullable}
            rows = self._describe(f"DESCRIBE SELECT * FROM ({table_view_sql(table, [])})")
            out[(MAIN_SCHEMA, name)] = [
                (str(r[0]), str(r[1]), str(r[0]).lower() not in not_null) for r in rows
            ]
        return out

    def _create_system_tables(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, source in sorted(self._system_tables().items()):
            cur = con.cursor()
            try:
                cur.register("__shadow_src", source().schema.empty_table())
                cur.execute(
                    f"CREATE TABLE {CATALOG}.{SYSTEM_SCHEMA}.{quote_ident(name)} AS SELECT * FROM __shadow_src"
                )
            finally:
                cur.close()

    def table_columns(self, schema: str, name: str) -> list[Column]:
        """The columns of one visible table as the shadow holds them (types as DuckDB names them)."""
        cur = self._connection().cursor()
        try:
            rows = cur.execute(
                "SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
                "WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index",
                [CATALOG, schema, name],
            ).fetchall()
        finally:
            cur.close()
        return [(str(c), str(t), bool(n)) for c, t, n in rows]

    def schema_changed(self) -> None:
        """A table's columns changed (ingest evolved it): rebuild the shadow on next use."""
        with self._lock:
            self._built_for = ("<schema changed>",)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        system = tuple(sorted(self._system_tables()))
        with self._lock:
            if self._con is not None and self._built_for == system:
                return self._con
            con = duckdb.connect(
                ":memory:",
                config={
                    "threads": 1,
                    "memory_limit": "256MB",
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                },
            )
            use_catalog(con)
            con.execute(f"CREATE SCHEMA {CATALOG}.{SYSTEM_SCHEMA}")
            # Dimension tables first: a fact table's FOREIGN KEY names their keys.
            ordered = sorted(
                self.columns().items(),
                key=lambda item: self._tables[item[0][1]].kind is not TableKind.DIMENSION,
            )
            for (schema, name), cols in ordered:
                body = ", ".join(f"{quote_ident(c)} {t}{'' if null else ' NOT NULL'}" for c, t, null in cols)
                con.execute(
                    f"CREATE TABLE {CATALOG}.{schema}.{quote_ident(name)} ({body}{_constraints(self._tables[name], self._tables)})"
                )
            self._create_system_tables(con)
            self._views = frozenset(
                (str(s).lower(), str(v).lower())
                for s, v in con.execute(
                    "SELECT schema_name, view_name FROM duckdb_views() WHERE internal"
                ).fetchall()
            )
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            old, self._con, self._built_for = self._con, con, system
            self._results = LRU(256)
        if old is not None:
            old.close()
        return con

    # -- what runs here -------------------------------------------------------------------

    def is_catalog_relation(self, table: exp.Table) -> bool:
        """Whether a table reference (one the names did not resolve) reads DuckDB's catalog."""
        if isinstance(table.this, exp.Anonymous):
            return str(table.this.name).lower().startswith(CATALOG_FUNCTION_PREFIXES)
        if not isinstance(table.this, exp.Identifier):
            return False
        self._connection()
        name, schema = table.name.lower(), table.db.lower()
        if schema in CATALOG_SCHEMAS:
            return (schema, name) in self._views
        if schema in ("", MAIN_SCHEMA):
            return any((s, name) in self._views for s in (MAIN_SCHEMA, "pg_catalog"))
        return False

    def relation(self, table: exp.Table) -> pa.Table:
        """The rows of one catalog relation, without those of DuckDB's built-in databases."""
        ref = table.copy()
        for arg in ("alias", "when", "joins", "pivots", "sample"):
            ref.set(arg, None)
        if isinstance(ref.this, exp.Anonymous) and not all(
            isinstance(a, exp.Literal) for a in ref.this.expressions
        ):
            raise StatementRefused(
                f"catalog function {ref.this.name}() takes constant arguments only (it is evaluated apart from the tables)"
            )
        source = ref.sql(dialect=DIALECT)
        cached = self._results.get(source)
        if cached is not None:
            return cached
        con = self._connection()
        cur = con.cursor()
        try:
            names = [c.lower() for c in cur.sql(f"SELECT * FROM {source} LIMIT 0").columns]
            name = (table.name or str(table.this.name)).lower()  # a function's name is its node's
            where = _PG_FILTERS.get(name) if table.db.lower() in ("", "pg_catalog") else None
            column = next((c for c in _DATABASE_COLUMNS if c in names), None)
            if where is None and column is not None and name not in _UNFILTERED:
                where = f"{quote_ident(column)} = {quote_literal(CATALOG)}"
            result = cur.sql(
                f"SELECT * FROM {source}" + (f" WHERE {where}" if where else "")
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise translate(exc, "catalog") from None
        finally:
            cur.close()
        self._results.put(source, result)
        return result

    def statement(self, sql: str) -> pa.Table:
        """A whole catalog command (SHOW ..., DESCRIBE of a catalog relation) run here."""
        cur = self._connection().cursor()
        try:
            return cur.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise translate(exc, "catalog") from None
        finally:
            cur.close()
