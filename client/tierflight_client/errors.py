"""Errors raised by :mod:`tierflight_client`: one class per gRPC status.

The ADBC Flight SQL driver (Go) reports a server error as one long string, e.g.::

    INVALID_ARGUMENT: [FlightSQL] invalid SQL: ... (line 1, column 7). Detail: Python
    exception: tierflight.InvalidArgument: invalid SQL: ... (InvalidArgument; Prepare)

The part users care about is the server's own message and the gRPC status in the trailing
parentheses. :func:`from_adbc_error` extracts both (the clean message also travels in the
``x-arrow-status-message-bin`` trailer, which is preferred when present);
:func:`from_flight_error` does the same for pyarrow.flight exceptions. Every error keeps the
driver's exception as ``__cause__``.

tierflight has no route for RESOURCE_EXHAUSTED through pyarrow's server, so overload arrives
as UNAVAILABLE with a message starting ``resource exhausted``; it is raised here as
:class:`ResourceExhausted`, the status the server meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TierflightClientError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_for_code",
    "flight_status_classes",
    "from_adbc_error",
    "from_flight_error",
]


class TierflightClientError(Exception):
    """Root of the client's errors.

    ``code`` is the gRPC status name (``"INVALID_ARGUMENT"``, ...), ``message`` the server's
    message without driver decoration, ``query_id`` the id an INTERNAL error names (to find
    the statement in the server log), when there is one. ``str(err)`` is ``"CODE: message"``.
    """

    code: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, *, query_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.query_id = query_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Cancelled(TierflightClientError):
    code = "CANCELLED"


class Unknown(TierflightClientError):
    code = "UNKNOWN"


class InvalidArgument(TierflightClientError):
    """Invalid SQL (the message has line and column), unknown column, bad parameter."""

    code = "INVALID_ARGUMENT"


class DeadlineExceeded(TierflightClientError):
    """The statement ran past the server's statement timeout (or the client's ``timeout``)."""

    code = "DEADLINE_EXCEEDED"


class NotFound(TierflightClientError):
    """Unknown table (or prepared statement, ticket)."""

    code = "NOT_FOUND"


class AlreadyExists(TierflightClientError):
    code = "ALREADY_EXISTS"


class PermissionDenied(TierflightClientError):
    """A refused statement (tierflight is read-only) or a user without the permission."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(TierflightClientError):
    """The server is overloaded; retry later."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(TierflightClientError):
    code = "FAILED_PRECONDITION"


class Aborted(TierflightClientError):
    code = "ABORTED"


class Unimplemented(TierflightClientError):
    """The server does not support the request (e.g. updates, transactions)."""

    code = "UNIMPLEMENTED"


class Internal(TierflightClientError):
    """A server bug; ``query_id`` names the statement in the server log."""

    code = "INTERNAL"


class Unavailable(TierflightClientError):
    """The server cannot be reached (or is shutting down)."""

    code = "UNAVAILABLE"


class Unauthenticated(TierflightClientError):
    """Missing or bad credentials."""

    code = "UNAUTHENTICATED"


_BY_CODE: dict[str, type[TierflightClientError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        Unimplemented,
        Internal,
        Unavailable,
        Unauthenticated,
    )
}
# Codes without a class of their own.
_ALIASES = {"CANCELED": "CANCELLED", "OUT_OF_RANGE": "INVALID_ARGUMENT", "DATA_LOSS": "INTERNAL"}

# ADBC status codes (adbc.h), for driver-side errors that carry no gRPC status.
_ADBC_STATUS = {
    1: "UNKNOWN",
    2: "UNIMPLEMENTED",
    3: "NOT_FOUND",
    4: "ALREADY_EXISTS",
    5: "INVALID_ARGUMENT",
    6: "FAILED_PRECONDITION",
    7: "INVALID_ARGUMENT",
    8: "FAILED_PRECONDITION",
    9: "INTERNAL",
    10: "UNAVAILABLE",
    11: "CANCELLED",
    12: "DEADLINE_EXCEEDED",
    13: "UNAUTHENTICATED",
    14: "PERMISSION_DENIED",
}

# "(InvalidArgument; Prepare)" at the end of a Go driver message: gRPC code; operation.
_GRPC_TRAILER = re.compile(r"\s*\((?P<code>[A-Za-z]+); [A-Za-z .]+\)(?:\. Vendor code: -?\d+)?\s*$")
# "INVALID_ARGUMENT: [FlightSQL] " (ADBC status, then the driver's tag).
_ADBC_PREFIX = re.compile(r"^[A-Z_]+: (?:\[FlightSQL\] )?")
# pyarrow.flight: "Flight returned unavailable error, with message: ...".
_FLIGHT_PREFIX = re.compile(r"^Flight returned [a-z ]+ error, with message: ")
# Everything pyarrow / the Go driver append after the message proper.
_SUFFIXES = (". Detail: ", ". gRPC client debug context: ", "\nDetail: ", ". Client context: ")
_QUERY_ID = re.compile(r"query id ([0-9a-f]{8,})")


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def _strip_suffixes(text: str) -> str:
    for marker in _SUFFIXES:
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    return text.strip()


def error_for_code(code: str, message: str) -> TierflightClientError:
    """The error for a gRPC status name (``"NOT_FOUND"``, ``"NotFound"``), message kept."""
    name = code if code.isupper() else _snake(code)
    name = _ALIASES.get(name, name)
    if name == "UNAVAILABLE" and message.lower().startswith("resource exhausted"):
        name = "RESOURCE_EXHAUSTED"
    match = _QUERY_ID.search(message)
    return _BY_CODE.get(name, Unknown)(message, query_id=match.group(1) if match else None)


def _trailer(details: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    for name, value in details or ():
        if name == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def from_adbc_error(exc: BaseException) -> TierflightClientError:
    """Translate an ``adbc_driver_manager.Error`` (or anything the driver raised)."""
    text = str(exc)
    trailer = _GRPC_TRAILER.search(text)
    if trailer:
        code = trailer.group("code")
        text = text[: trailer.start()]
    else:
        code = _ADBC_STATUS.get(int(getattr(exc, "status_code", 1) or 1), "UNKNOWN")
    message = _trailer(getattr(exc, "details", None), "x-arrow-status-message-bin")
    if not message:
        message = _strip_suffixes(_ADBC_PREFIX.sub("", text, count=1))
    return error_for_code(code, message.strip() or type(exc).__name__)


def flight_status_classes() -> list[tuple[type[BaseException], str]]:
    """pyarrow.flight's client exception classes with the gRPC status each stands for.

    Order matters: the Flight classes derive from ArrowException and some from each other."""
    import pyarrow as pa
    import pyarrow.flight as flight

    return [
        (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
        (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
        (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
        (flight.FlightUnavailableError, "UNAVAILABLE"),
        (flight.FlightCancelledError, "CANCELLED"),
        (flight.FlightInternalError, "INTERNAL"),
        (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
        (pa.ArrowKeyError, "NOT_FOUND"),
        (pa.ArrowInvalid, "INVALID_ARGUMENT"),
    ]


def _flight_code(exc: BaseException) -> str:
    for cls, code in flight_status_classes():
        if isinstance(exc, cls):
            return code
    return "UNKNOWN"


def from_flight_error(exc: BaseException) -> TierflightClientError:
    """Translate a pyarrow.flight client exception."""
    text = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])  # KeyError's str() quotes its argument
    message = _strip_suffixes(_FLIGHT_PREFIX.sub("", text, count=1))
    return error_for_code(_flight_code(exc), message or type(exc).__name__)
