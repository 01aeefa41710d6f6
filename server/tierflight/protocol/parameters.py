"""The parameter schema of a prepared statement, and the checks on what a client binds.

DuckDB (2.x) reports every parameter of a prepared statement as UNKNOWN until values are
bound (it binds parameters by their values' types), so the types are inferred here from the
statement itself: a placeholder compared with an expression (``type = ?``, ``ts >= ?``,
``x BETWEEN ? AND ?``, ``x IN (?, ?)``) takes that expression's type, typed by sqlglot over
the configured tables' column types (derived columns included, asked of DuckDB once, over
empty relations: no data is scanned); ``LIMIT ?`` / ``OFFSET ?`` are BIGINT. A placeholder
with nothing to infer from (``SELECT ?``) is typed utf8: JDBC (the Arrow Flight SQL driver
builds its parameter vectors from this schema) can bind a string to it, and DuckDB casts a
string implicitly where a value of another type is needed. The schema is advisory: a client
may bind any supported Arrow type to any parameter.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from tierflight.core.config import TableConfig
from tierflight.core.errors import InvalidArgument
from tierflight.core.log import get_logger
from tierflight.core.lru import LRU
from tierflight.core.names import Kind, Names
from tierflight.core.sql import table_view_sql
from tierflight.core.statement import DIALECT, ShapeFacts, Statement
from tierflight.engine.execution import statement_hash
from tierflight.router.binding import placeholders

log = get_logger("tierflight.protocol")

UNKNOWN = pa.utf8()  # a parameter whose type cannot be inferred (see the module docstring)

_T = exp.DataType.Type
_ARROW: dict[Any, pa.DataType] = {
    _T.VARCHAR: pa.utf8(),
    _T.TEXT: pa.utf8(),
    _T.CHAR: pa.utf8(),
    _T.NVARCHAR: pa.utf8(),
    _T.BOOLEAN: pa.bool_(),
    _T.TINYINT: pa.int8(),
    _T.SMALLINT: pa.int16(),
    _T.INT: pa.int32(),
    _T.BIGINT: pa.int64(),
    _T.UTINYINT: pa.uint8(),
    _T.USMALLINT: pa.uint16(),
    _T.UINT: pa.uint32(),
    _T.UBIGINT: pa.uint64(),
    _T.FLOAT: pa.float32(),
    _T.DOUBLE: pa.float64(),
    _T.DATE: pa.date32(),
    _T.TIME: pa.time64("us"),
    _T.TIMESTAMP: pa.timestamp("us"),
    _T.TIMESTAMPNTZ: pa.timestamp("us"),
    _T.DATETIME: pa.timestamp("us"),
    _T.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    _T.TIMESTAMP_S: pa.timestamp("s"),
    _T.TIMESTAMP_MS: pa.timestamp("ms"),
    _T.TIMESTAMP_NS: pa.timestamp("ns"),
    _T.BLOB: pa.binary(),
    _T.VARBINARY: pa.binary(),
    _T.BINARY: pa.binary(),
}
# Comparisons whose placeholder operand takes the type of the other side.
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Is)


def parameter_name(index: int) -> str:
    """The field name of parameter ``index`` (0-based): clients bind by position."""
    return f"parameter_{index + 1}"


def _arrow(dtype: exp.DataType | None) -> pa.DataType | None:
    if dtype is None:
        return None
    if dtype.this == _T.DECIMAL:
        params = [int(p.name) for p in dtype.expressions if p.name.isdigit()]
        precision, scale = [*params, 18, 3][:2]
        return pa.decimal128(precision, scale) if 0 < precision <= 38 and 0 <= scale <= precision else None
    found: pa.DataType | None = _ARROW.get(dtype.this)
    return found


def _context_type(node: exp.Expr) -> exp.DataType | None:
    """The type a placeholder is compared with, or None."""
    parent = node.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if isinstance(parent, exp.Limit | exp.Offset | exp.Fetch):
        return exp.DataType.build("BIGINT")
    other: exp.Expr | None = None
    if isinstance(parent, _COMPARISONS):
        other = parent.expression if parent.this is node else parent.this
    elif isinstance(parent, exp.Between | exp.In) and parent.this is not node:
        other = parent.this
    if other is None or isinstance(other, exp.Placeholder | exp.Parameter | exp.Null):
        return None
    typed: exp.DataType | None = other.type
    return typed


_NO_PARAMETERS = pa.schema([])


class ParameterTyper:
    """Infers parameter schemas over the configured tables' column types."""

    def __init__(self, tables: Mapping[str, TableConfig], names: Names) -> None:
        self._tables = tables
        self._names = names
        self._schema: MappingSchema | None = None
        self._lock = threading.Lock()
        # By statement text: inference costs milliseconds, and dashboards prepare the same
        # statements again and again (the column types are fixed for the process's life).
        self._known: LRU[str, pa.Schema] = LRU(4096)

    def schema_changed(self) -> None:
        """A table's columns changed (ingest evolved it): infer with the new ones."""
        with self._lock:
            self._schema = None
            self._known = LRU(4096)

    def _column_types(self) -> MappingSchema:
        with self._lock:
            if self._schema is None:
                # Derived columns have the types DuckDB gives their expressions: asked once
                # of an empty typed relation per table (no files, no external access).
                con = duckdb.connect(":memory:", config={"enable_external_access": False})
                try:
                    mapping: dict[str, object] = {
                        name: {
                            row[0]: row[1]
                            for row in con.sql(f"DESCRIBE {table_view_sql(table, [])}").fetchall()
                        }
                        for name, table in self._tables.items()
                    }
                finally:
                    con.close()
                self._schema = MappingSchema(mapping, dialect=DIALECT)
            return self._schema

    def schema(self, statement: Statement) -> pa.Schema:
        if not statement.parameter_count:
            return _NO_PARAMETERS  # nothing to infer: skip the tree walk and the column types
        known = self._known.get(statement.sql)
        if known is not None:
            return known
        types: list[pa.DataType | None] = [None] * statement.parameter_count
        # Inference is best effort: whatever sqlglot cannot type stays unknown.
        with contextlib.suppress(Exception):
            self._infer(statement.tree, types)
        schema = pa.schema([pa.field(parameter_name(i), t or UNKNOWN) for i, t in enumerate(types)])
        self._known.put(statement.sql, schema)
        return schema

    def _infer(self, tree: exp.Expr, types: list[pa.DataType | None]) -> None:
        work = tree.copy()
        # Number every placeholder first (qualify may reorder nodes), and name each table
        # reference as the configured table it resolves to (core.names), so the type
        # schema finds it however the client spelled it.
        for index, node in placeholders(work):
            node.replace(exp.Placeholder(this=str(index + 1)))
        for table in list(work.find_all(exp.Table)):
            resolved = self._names.resolve(table)
            if resolved is not None and resolved.kind in (Kind.TABLE, Kind.DIMENSION):
                table.set("db", None)
                table.set("catalog", None)
                table.set("this", exp.to_identifier(resolved.name))
        schema = self._column_types()
        typed = annotate_types(
            qualify(work, schema=schema, dialect=DIALECT, validate_qualify_columns=False, identify=False),
            schema=schema,
            dialect=DIALECT,
        )
        for index, node in placeholders(typed):
            if 0 <= index < len(types) and types[index] is None:
                types[index] = _arrow(_context_type(node))


# -- what a client binds ------------------------------------------------------------------------


def _nanoseconds(t: pa.DataType) -> bool:
    return bool((pa.types.is_timestamp(t) or pa.types.is_time(t)) and t.unit == "ns")


def _supported(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _supported(t.value_type)
    if pa.types.is_union(t):
        # Nanosecond members would be rounded to Python's microseconds unseen: not in unions.
        return all(_supported(f.type) and not _nanoseconds(f.type) for f in (t.field(i) for i in range(t.num_fields)))
    return bool(
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_timestamp(t)
    )


def _column_values(index: int, name: str, column: pa.ChunkedArray) -> list[Any]:
    t = column.type
    if not _supported(t):
        raise InvalidArgument(
            f"parameter {index + 1} ({name!r}) has Arrow type {t}, "
            "which is not supported; bind a string, integer, floating point, decimal, boolean, "
            "date, time, timestamp, binary or null value"
        )
    if _nanoseconds(t):
        # Python datetimes and times hold microseconds: refuse rather than round silently.
        micro = pa.timestamp("us", t.tz) if pa.types.is_timestamp(t) else pa.time64("us")
        truncated = pc.cast(column, micro, safe=False)
        if pc.all(pc.equal(pc.cast(truncated, t), column)).as_py() is False:
            raise InvalidArgument(
                f"parameter {index + 1} ({name!r}) is a {t} with sub-microsecond digits; "
                "tierflight binds times and timestamps with microsecond precision"
            )
        column = truncated
    values: list[Any] = column.to_pylist()
    return values


# Each row of a parameter batch is one more execution of the statement; a client sending
# millions would hold the statement's slot (and the rows in memory) for all of them.
MAX_PARAMETER_ROWS = 10_000


def read_parameters(reader: Any, expected: int, max_rows: int = MAX_PARAMETER_ROWS) -> list[tuple[Any, ...]]:
    """The parameter rows of a DoPut, read batch by batch and refused past ``max_rows``."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    for chunk in reader:
        rows += chunk.data.num_rows
        if rows > max_rows:
            raise InvalidArgument(f"a parameter batch may hold at most {max_rows} rows (one execution each)")
        batches.append(chunk.data)
    return parameter_rows(pa.Table.from_batches(batches, schema=reader.schema), expected)


def parameter_rows(data: pa.Table, expected: int) -> list[tuple[Any, ...]]:
    """Python values per parameter row; dense/sparse unions (flightsql-dbapi) are unwrapped.

    A batch with the wrong number of columns, or a column of an Arrow type that cannot be
    bound, is refused with INVALID_ARGUMENT naming the parameter and its type."""
    if data.num_columns != expected and (expected or data.num_rows):
        raise InvalidArgument(f"the statement has {expected} parameter(s) but {data.num_columns} were bound")
    columns = [_column_values(i, name, col) for i, (name, col) in enumerate(zip(data.column_names, data.columns, strict=True))]
    return [tuple(col[i] for col in columns) for i in range(data.num_rows)]


# Comparisons that are never true when one side is the NULL literal.
_NULL_NEVER_TRUE = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike)
_null_checked: LRU[str, bool] = LRU(4096)
_null_shapes: ShapeFacts[bool] = ShapeFacts()


def _compares_with_null(tree: exp.Expr) -> bool:
    return any(
        isinstance(node.this, exp.Null) or isinstance(node.expression, exp.Null)
        for node in tree.find_all(*_NULL_NEVER_TRUE)
    )


def warn_null_comparison(statement: Statement, user: str) -> bool:
    """Log (once per statement text) a statement comparing with the NULL literal: valid SQL
    that matches no row, and what a client that renders unbound parameters as NULL sends
    (flightsql-dbapi's SQLAlchemy dialect without feature-sqlalchemy-prepared-statements=on).
    The statement still runs as written; the warning is for whoever reads the server log."""
    known = _null_checked.get(statement.sql)
    if known is not None:
        return known
    found = _null_shapes.get(statement, lambda: _compares_with_null(statement.tree))
    _null_checked.put(statement.sql, found)
    if found:
        log.warning(
            "statement_compares_with_null",
            statement_hash=statement_hash(statement.sql),
            user=user,
            hint="'x = NULL' is never true (use IS NULL); a client rendering unbound parameters as NULL sends it",
        )
    return found


# As PostgreSQL: ``$n`` makes a statement have n parameters, so ``SELECT $999999999`` would
# otherwise have the server build a billion-entry schema and value list.
MAX_PARAMETERS = 65_535


def check_parameter_count(statement: Statement) -> None:
    if statement.parameter_count > MAX_PARAMETERS:
        raise InvalidArgument(
            f"the statement has {statement.parameter_count} parameters; at most {MAX_PARAMETERS} are allowed"
        )


def require_bound(statement: Statement, params: Sequence[Any] | None) -> None:
    """Every path that executes a statement with placeholders: they must have values."""
    if statement.parameter_count and not params:
        raise InvalidArgument(
            f"the statement has {statement.parameter_count} parameter(s) but none were bound; "
            "bind values (a prepared statement's DoPut) or write them into the statement"
        )


__all__ = [
    "MAX_PARAMETERS",
    "UNKNOWN",
    "ParameterTyper",
    "check_parameter_count",
    "parameter_name",
    "parameter_rows",
    "placeholders",
    "read_parameters",
    "require_bound",
    "warn_null_comparison",
]
