"""The single place where tierflight errors become Flight statuses.

pyarrow.flight offers Flight error classes only for a few gRPC codes; INVALID_ARGUMENT,
NOT_FOUND and UNIMPLEMENTED come from Arrow's own status classes. RESOURCE_EXHAUSTED has no
route through pyarrow's server at all, so overload is reported as UNAVAILABLE (also
"retry later" to gRPC clients) with a message that says resource exhausted.
"""

from __future__ import annotations

import functools
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pyarrow as pa
import pyarrow.flight as flight

from tierflight.core.errors import InvalidArgument, Status, TierflightError
from tierflight.core.log import get_logger
from tierflight.engine.calls import current_call

log = get_logger("tierflight.protocol")

F = TypeVar("F", bound=Callable[..., Any])


def _named(base: type[Exception], name: str) -> type[Exception]:
    # The class name is what pyarrow prints after "Detail:", so make it read like a status.
    cls = type(name, (base,), {"__module__": "tierflight"})
    return cls


_InvalidArgument = _named(pa.ArrowInvalid, "InvalidArgument")
_NotFound = _named(pa.ArrowKeyError, "NotFound")
_Unimplemented = _named(pa.ArrowNotImplementedError, "Unimplemented")

_MAPPING: dict[Status, Callable[[str], Exception]] = {
    Status.INVALID_ARGUMENT: _InvalidArgument,
    Status.NOT_FOUND: _NotFound,
    Status.UNIMPLEMENTED: _Unimplemented,
    Status.PERMISSION_DENIED: flight.FlightUnauthorizedError,
    Status.UNAUTHENTICATED: flight.FlightUnauthenticatedError,
    Status.DEADLINE_EXCEEDED: flight.FlightTimedOutError,
    Status.RESOURCE_EXHAUSTED: lambda m: flight.FlightUnavailableError(f"resource exhausted: {m}"),
    Status.UNAVAILABLE: flight.FlightUnavailableError,
    Status.CANCELLED: flight.FlightCancelledError,
    Status.INTERNAL: flight.FlightInternalError,
}


def install_traceback_guard() -> None:
    """pyarrow appends the formatted Python traceback of a handler's exception to the status
    message it sends; with the limit at 0 only the exception's type and message remain."""
    sys.tracebacklimit = 0


def to_flight_error(exc: BaseException) -> BaseException:
    if isinstance(exc, flight.FlightError):
        return cast(BaseException, exc)
    if isinstance(exc, RecursionError):
        # Only a client's input nests without bound (a statement, a JSON ticket): the request
        # is refused, not reported as a server fault. The specific places say more.
        exc = InvalidArgument("the request nests too deeply to be processed; flatten it")
    if isinstance(exc, TierflightError):
        mapped: BaseException = _MAPPING[exc.status](exc.message)
        return mapped
    query_id = uuid.uuid4().hex
    log.error("internal_error", query_id=query_id, error=repr(exc), exc_info=exc)
    internal: BaseException = flight.FlightInternalError(
        f"internal error (query id {query_id}); the server log has the details"
    )
    return internal


def boundary(fn: F) -> F:
    """Wrap a Flight handler so every exception leaves as a Flight status, and statements it
    runs can see whether its RPC was cancelled (engine.monitor.current_call)."""

    @functools.wraps(fn)
    def wrapper(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        token = current_call.set(getattr(context, "is_cancelled", None))
        try:
            return fn(self, context, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - mapped to a Flight status and re-raised
            raise to_flight_error(exc) from None
        finally:
            current_call.reset(token)

    return wrapper  # type: ignore[return-value]


def schema_boundary(fn: F) -> F:
    """:func:`boundary` for GetSchema, whose pyarrow callback (unlike the others) does not turn
    Flight errors into their statuses: a FlightUnauthorizedError would reach the client as
    UNKNOWN. Only Arrow's own status classes survive there, so a refusal is reported as
    INVALID_ARGUMENT saying why (the contract allows either code for a refused statement)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TierflightError as exc:
            if exc.status is Status.PERMISSION_DENIED:
                raise _InvalidArgument(exc.message) from None
            raise to_flight_error(exc) from None
        except BaseException as exc:  # noqa: BLE001 - mapped to a Flight status and re-raised
            raise to_flight_error(exc) from None

    return wrapper  # type: ignore[return-value]


def guarded(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The same boundary for errors raised while a result streams."""
    try:
        yield from batches
    except GeneratorExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - mapped to a Flight status and re-raised
        raise to_flight_error(exc) from None
