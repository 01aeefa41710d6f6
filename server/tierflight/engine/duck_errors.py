"""Translate DuckDB exceptions into tierflight errors with messages a client can act on."""

from __future__ import annotations

import re
import threading

import duckdb

from tierflight.core.errors import (
    Cancelled,
    InternalError,
    InvalidArgument,
    NotFound,
    Overloaded,
    SqlSyntaxError,
    StatementRefused,
    StorageUnavailable,
    TierflightError,
)

_PREFIX = re.compile(r"^[A-Za-z ]+ Error: ")
# DuckDB echoes the statement it ran around the error ("LINE 1: ..." and a caret). That
# statement is the planned one, not the client's: its positions mean nothing to the client
# and it names the server's data files, so the echo is never passed on.
_ECHO = re.compile(r"\n+LINE \d+:.*", re.DOTALL)
# DuckDB names the data file it failed on: `file "x"`, `file 'x'`, `the pattern "x"`.
_HINT = re.compile(r"\n*Did you mean [^\n]*", re.IGNORECASE)
_FILE = re.compile(r"""(?:\bfile|\bpattern)\s+["']([^"']+)["']""", re.IGNORECASE)


def _clean(exc: BaseException) -> str:
    # DuckDB messages start with "Binder Error: ..."; keep the text, drop the class echo.
    text = _ECHO.sub("", str(exc)).strip()
    return _PREFIX.sub("", text, count=1) or type(exc).__name__


def _storage_error(exc: BaseException, msg: str) -> StorageUnavailable | None:
    """A data file that is missing, truncated, corrupt or of another schema: name the file.

    DuckDB appends the statement (``LINE 1: ...``, with every file of the scan) and advice
    about ``union_by_name``; a client gets the first line only.
    """
    first = msg.strip().split("\n", 1)[0].strip()
    m = _FILE.search(first)
    if isinstance(exc, duckdb.IOException):
        if m and "No files found" in first:
            return StorageUnavailable(f"data file {m.group(1)} is missing: it was moved or deleted")
        return StorageUnavailable(f"cannot read data file: {first}")
    if (
        m
        and isinstance(exc, duckdb.Error)
        and (m.group(1).endswith(".parquet") or "parquet" in first.lower())
    ):
        return StorageUnavailable(f"cannot read data file {m.group(1)}: {first}")
    return None


def _out_of_memory(msg: str) -> Overloaded:
    # DuckDB appends advice to SET settings a client cannot change (and may name the spill
    # directory): the first line and which server setting to raise.
    first = msg.strip().split("\n", 1)[0].strip()
    if "max_temp_directory_size" in msg:
        return Overloaded(
            f"statement needs more disk to spill to than the server allows (duckdb.max_temp_directory_size): {first}"
        )
    return Overloaded(f"statement ran out of memory (duckdb.memory_limit): {first}")


def translate(exc: BaseException, query_id: str) -> TierflightError:
    if isinstance(exc, TierflightError):
        return exc
    if isinstance(exc, RecursionError):
        # Planning and generating SQL recurse per level of the statement's nesting.
        return InvalidArgument("statement nests too deeply to be planned; flatten it")
    msg = _clean(exc)
    storage = _storage_error(exc, msg)
    if storage is not None:
        return storage
    if isinstance(exc, duckdb.CatalogException):
        # DuckDB suggests names from the server's own catalog, which holds the internal
        # storage and not the configured tables: its hints are never the product's names.
        return NotFound(_HINT.sub("", msg).strip())
    if isinstance(exc, duckdb.ParserException):
        return SqlSyntaxError(msg)
    if isinstance(exc, duckdb.PermissionException):
        return StatementRefused(msg)
    if isinstance(exc, duckdb.InterruptException):
        return Cancelled("statement was cancelled")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return _out_of_memory(msg)
    if isinstance(
        exc,
        duckdb.BinderException
        | duckdb.ConversionException
        | duckdb.InvalidInputException
        | duckdb.OutOfRangeException
        | duckdb.TypeMismatchException
        | duckdb.NotImplementedException
        | duckdb.ConstraintException,
    ):
        return InvalidArgument(msg)
    return InternalError(f"internal error (query id {query_id}); the server log has the details")


# "LINE 3:  FROM x" followed by a line with a caret under the problem.
_POSITION = re.compile(r"\n\nLINE (?P<line>\d+): (?P<shown>[^\n]*)\n(?P<pad> *)\^")
_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def syntax_error(sql: str, message: str) -> SqlSyntaxError:
    """A DuckDB parser message as a SqlSyntaxError with the line and column it points at."""
    m = _POSITION.search(message)
    text = _clean(Exception(message[: m.start()] if m else message))
    if m is None:
        return SqlSyntaxError(f"invalid SQL: {text}")
    line = int(m.group("line"))
    shown = m.group("shown")
    caret = len(m.group("pad")) - len(f"LINE {line}: ")
    if shown.startswith("..."):  # DuckDB shows a window of long lines
        shown, caret = shown[3:], caret - 3
    lines = sql.splitlines() or [""]
    actual = lines[line - 1] if line <= len(lines) else ""
    offset = max(actual.find(shown.removesuffix("...")), 0)
    return SqlSyntaxError(f"invalid SQL: {text}", line, offset + max(caret, 0) + 1)


def parsed_statement_types(sql: str) -> list[str]:
    """DuckDB's statement types for ``sql`` (parsed only, never run); SqlSyntaxError if it cannot parse it."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={"enable_external_access": False})
        try:
            statements = _parser.extract_statements(sql)
        except duckdb.ParserException as exc:
            raise syntax_error(sql, str(exc)) from None
    return [str(st.type).rsplit(".", 1)[-1].upper() for st in statements]
