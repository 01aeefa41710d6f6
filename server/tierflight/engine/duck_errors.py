"""Translate DuckDB exceptions into tierflight errors with messages a client can act on."""

from __future__ import annotations

import re

import duckdb

from tierflight.errors import (
    Cancelled,
    InternalError,
    InvalidArgument,
    NotFound,
    Overloaded,
    SqlSyntaxError,
    StatementRefused,
    TierflightError,
)

_PREFIX = re.compile(r"^[A-Za-z ]+ Error: ")


def _clean(exc: BaseException) -> str:
    # DuckDB messages start with "Binder Error: ..."; keep the text, drop the class echo.
    text = str(exc).strip()
    return _PREFIX.sub("", text, count=1) or type(exc).__name__


def translate(exc: BaseException, query_id: str) -> TierflightError:
    if isinstance(exc, TierflightError):
        return exc
    msg = _clean(exc)
    if isinstance(exc, duckdb.CatalogException):
        return NotFound(msg)
    if isinstance(exc, duckdb.ParserException):
        return SqlSyntaxError(msg)
    if isinstance(exc, duckdb.PermissionException):
        return StatementRefused(msg)
    if isinstance(exc, duckdb.InterruptException):
        return Cancelled("statement was cancelled")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return Overloaded(f"statement ran out of memory: {msg}")
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
