"""The function check: DuckDB's own parse of a statement, every function in it allowlisted.

sqlglot's names for functions are not DuckDB's (and a function sqlglot does not know is
anonymous to it), so the names are taken from DuckDB's parser, which sees exactly what DuckDB
will bind: calls inside lambdas, macros' arguments, COLUMNS(...) expressions and table
functions in FROM included. The allowlist itself is data, in :mod:`engine.allowlist`.
"""

from __future__ import annotations

import enum
import json
import re
import threading
from typing import Any

import duckdb

from tierflight.core.errors import NotFound, StatementRefused
from tierflight.core.lru import LRU
from tierflight.engine.allowlist import (
    ALLOWED_EXPRESSION_NAMES,
    ALLOWED_SHOW,
    ALLOWED_TABLE_NAMES,
    DENIED,
    DENIED_PREFIXES,
    DENIED_VIEWS,
    SEARCH_PATH_SCHEMAS,
)
from tierflight.engine.literal_shapes import LiteralShape, literal_shape, spans_are_constants

# Characters no table name of this server has, but file names and URLs do (a replacement
# scan reads a file named as a table: FROM 'x.parquet', FROM "s3://b/k").
_PATH_CHARS = re.compile(r"[/\\:.]")

# A constant's whole JSON object (it holds no function or table): replaced by 0 before the
# document is loaded, so a 30,000-value IN list is 60 KB of JSON to load, not 5 MB. It can
# only match a whole object: '{"class"' cannot occur inside a JSON string (quotes are escaped).
_CONSTANT = re.compile(
    r'\{"class":"CONSTANT","type":"VALUE_CONSTANT","alias":"(?:[^"\\]|\\.)*",'
    r'"query_location":\d+,"query_location_length":\d+,'
    r'"literal":\{"kind":"[A-Z_]+","text":"(?:[^"\\]|\\.)*"\}\}'
)

_local = threading.local()
_database: duckdb.DuckDBPyConnection | None = None
_database_lock = threading.Lock()


def _parser() -> duckdb.DuckDBPyConnection:
    """This thread's cursor on one small DuckDB kept for parsing: a parse releases the GIL,
    and threads do not queue on a lock (a cursor is used by one thread at a time)."""
    global _database
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        with _database_lock:
            if _database is None:
                _database = duckdb.connect(":memory:", config={"enable_external_access": False, "threads": 1})
            con = _database.cursor()
        _local.con = con
    return con


class Outcome(enum.Enum):
    CHECKED = "checked"  # every function, table function and table in it is allowed
    UNPARSABLE = "unparsable"  # DuckDB cannot parse it (so cannot run it either)
    UNSERIALIZABLE = "unserializable"  # DuckDB parses it but cannot show its tree (PIVOT)


# Shapes (engine.literal_shapes) of texts checked, whose every masked literal DuckDB's parse
# proved to be a literal: any text of one of these shapes calls what that text called.
_checked_shapes: LRU[tuple[tuple[bytes, ...], bytes], bool] = LRU(4096)


def trusted(shape: LiteralShape | None) -> bool:
    """Whether every text of ``shape`` is known to pass the check."""
    return shape is not None and bool(_checked_shapes.get(shape.key))


def check_functions(sql: str, shape: LiteralShape | None = None) -> Outcome:
    """Refuse ``sql`` (StatementRefused) if it calls a function, or reads a view or file, that
    is not allowed; else say whether DuckDB's parse could be checked at all. ``shape``:
    ``sql``'s literal shape, when the caller has it already."""
    if shape is None:
        shape = literal_shape(sql)
    if trusted(shape):
        return Outcome.CHECKED
    out = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    raw: str = out[0] if out else "{}"
    doc: dict[str, Any] = json.loads(_CONSTANT.sub("0", raw))
    if doc.get("error"):
        return Outcome.UNPARSABLE if doc.get("error_type") == "parser" else Outcome.UNSERIALIZABLE
    _walk(doc.get("statements", []))
    if shape is not None and spans_are_constants(shape, raw.encode("utf-8", "surrogatepass")):
        _checked_shapes.put(shape.key, True)
    return Outcome.CHECKED


def _walk(root: Any) -> None:
    # Iterative: a deeply nested statement must not recurse here.
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            _check_table_function(str(function.get("function_name", "")))
            # Its arguments are expressions like any other (the name is checked above).
            stack.append({k: v for k, v in function.items() if k != "function_name"})
            stack.extend(v for k, v in node.items() if k != "function")
            continue
        if kind == "BASE_TABLE":
            _check_table(node)
        elif kind == "SHOW_REF" and node.get("show_type") == "SHOW_SPECIAL":
            what = str(node.get("table_name", "")).strip('"').lower()
            if what not in ALLOWED_SHOW:
                raise StatementRefused(f"SHOW {what.upper()} is not allowed on this server")
        elif "function_name" in node:
            _check_function(str(node["function_name"]))
        stack.extend(node.values())


def _check_function(name: str) -> None:
    lowered = name.lower()
    if lowered in ALLOWED_EXPRESSION_NAMES:
        return
    if lowered in DENIED or lowered.startswith(DENIED_PREFIXES):
        raise StatementRefused(f"function {name}() is not allowed in statements on this server")
    # Every function DuckDB has is allowed or denied (tests/test_sandbox_functions.py checks
    # it): a name in neither list is no function, as DuckDB itself would say.
    raise NotFound(f"function {name}() does not exist")


def _check_table_function(name: str) -> None:
    if name.lower() not in ALLOWED_TABLE_NAMES:
        raise StatementRefused(
            f"table function {name}() is not allowed in statements on this server; query the configured tables"
        )


def _check_table(node: dict[str, Any]) -> None:
    catalog = str(node.get("catalog_name") or "")
    schema = str(node.get("schema_name") or "")
    name = str(node.get("table_name") or "")
    if any(_PATH_CHARS.search(part) for part in (catalog, schema, name)):
        raise StatementRefused(
            f"reading files directly ({name!r}) is not allowed; query the configured tables"
        )
    lowered = name.lower()
    schemas = (schema.lower(),) if schema else SEARCH_PATH_SCHEMAS
    if any(f"{s}.{lowered}" in DENIED_VIEWS for s in schemas):
        raise StatementRefused(f"{name} is not allowed in statements on this server")
