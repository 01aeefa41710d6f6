"""The error hierarchy of tierflight.

Every error a client may see derives from :class:`TierflightError`; each class carries the
Flight status it maps to. The mapping to pyarrow.flight exceptions happens in exactly one
place (:func:`to_flight_error`), at the protocol boundary, so the rest of the code raises
domain errors and never imports pyarrow.flight for error handling.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNIMPLEMENTED = "unimplemented"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class TierflightError(Exception):
    """Root of all tierflight errors; ``status`` decides the Flight status code."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(TierflightError):
    """The configuration file or an override is invalid; the message names the key."""

    status = Status.INVALID_ARGUMENT


class AuthConfigError(ConfigError, ValueError):
    """Invalid auth/TLS/bind configuration; the message says how to fix it.

    A ConfigError so the CLI reports it like any other configuration problem,
    and a ValueError for callers that only know the auth module.
    """


class SqlSyntaxError(TierflightError):
    """The statement does not parse; carries the line and column of the problem."""

    status = Status.INVALID_ARGUMENT

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{message}{where}")
        self.line = line
        self.column = column


class InvalidArgument(TierflightError):
    status = Status.INVALID_ARGUMENT


class NotFound(TierflightError):
    """Unknown table, column, prepared statement or ticket."""

    status = Status.NOT_FOUND


class StatementRefused(TierflightError):
    """The statement is valid SQL but not allowed by the read-only sandbox."""

    status = Status.PERMISSION_DENIED


class PermissionDenied(TierflightError):
    status = Status.PERMISSION_DENIED


class Unauthenticated(TierflightError):
    status = Status.UNAUTHENTICATED


class StatementTimeout(TierflightError):
    status = Status.DEADLINE_EXCEEDED


class Overloaded(TierflightError):
    """Too many statements in flight; the client should retry later."""

    status = Status.RESOURCE_EXHAUSTED


class ResultTooLarge(TierflightError):
    status = Status.RESOURCE_EXHAUSTED


class IngestTooLarge(TierflightError):
    """An ingest that would hold more in memory than its configured limit."""

    status = Status.RESOURCE_EXHAUSTED


class MemoryCeilingReached(TierflightError):
    """The server's memory passed [server] memory_ceiling and this statement was stopped."""

    status = Status.RESOURCE_EXHAUSTED


class Unsupported(TierflightError):
    """A Flight SQL command or feature this server does not implement."""

    status = Status.UNIMPLEMENTED


class Cancelled(TierflightError):
    status = Status.CANCELLED


class StorageUnavailable(TierflightError):
    """A catalog, object store or data file cannot be reached or read."""

    status = Status.UNAVAILABLE


class WorkerUnavailable(TierflightError):
    """A worker process of ``serve --workers`` does not answer (it is being restarted)."""

    status = Status.UNAVAILABLE


class InternalError(TierflightError):
    """An unexpected failure; the message carries the query id that is in the server log."""

    status = Status.INTERNAL


def first_line(exc: BaseException) -> str:
    """An exception's message without the tails libraries append (SQL, links, tracebacks)."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    return line or type(exc).__name__
