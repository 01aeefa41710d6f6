"""Flight session options (GetSessionOptions, SetSessionOptions, CloseSession).

ADBC's ``adbc_current_catalog`` / ``adbc_current_db_schema`` read the options ``catalog`` and
``schema`` with GetSessionOptions, and setting them sends SetSessionOptions. tierflight has
one catalog (``tierflight``) and unqualified names resolve in ``main``, so every session
has the same options: the server keeps no per-session state (nothing a client could grow,
no session cookie to issue or expire). Setting an option to the value it has succeeds;
any other value, or any other option, is reported per option in the result map, as the
spec asks. Shared by the server and the ``serve --workers`` front (no engine imports).
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError, Message

from tierflight.core.errors import InvalidArgument
from tierflight.protocol import flight_actions_pb2 as fa

# The options every session has, as GetSessionOptions reports them: core.names.CATALOG
# and MAIN_SCHEMA (spelled out: the front imports nothing of the engine).
SESSION_OPTIONS: dict[str, str] = {"catalog": "tierflight", "schema": "main"}
# More options than this in one request is not a client configuring its session.
MAX_OPTIONS_PER_REQUEST = 64

_Error = fa.SetSessionOptionsResult.ErrorValue


def _parse(body: bytes, cls: Callable[[], Message], kind: str) -> Message:
    msg = cls()
    try:
        msg.ParseFromString(body)
    except DecodeError:
        raise InvalidArgument(f"malformed {kind} request") from None
    return msg


def get_session_options(body: bytes) -> bytes:
    _parse(body, fa.GetSessionOptionsRequest, "GetSessionOptions")
    result = fa.GetSessionOptionsResult()
    for name, value in SESSION_OPTIONS.items():
        result.session_options[name].string_value = value
    return result.SerializeToString()


def set_session_options(body: bytes) -> bytes:
    request = _parse(body, fa.SetSessionOptionsRequest, "SetSessionOptions")
    assert isinstance(request, fa.SetSessionOptionsRequest)
    if len(request.session_options) > MAX_OPTIONS_PER_REQUEST:
        raise InvalidArgument(f"SetSessionOptions: at most {MAX_OPTIONS_PER_REQUEST} options per request")
    result = fa.SetSessionOptionsResult()
    for name, value in request.session_options.items():
        current = SESSION_OPTIONS.get(name)
        if current is None:
            result.errors[name].value = _Error.INVALID_NAME
        elif value.WhichOneof("option_value") != "string_value" or value.string_value.lower() != current:
            # Names compare as DuckDB compares identifiers: case-insensitively.
            result.errors[name].value = _Error.INVALID_VALUE
    return result.SerializeToString()


def close_session(body: bytes) -> bytes:
    _parse(body, fa.CloseSessionRequest, "CloseSession")
    return fa.CloseSessionResult(status=fa.CLOSE_SESSION_STATUS_CLOSED).SerializeToString()


HANDLERS: dict[str, Callable[[bytes], bytes]] = {
    "SetSessionOptions": set_session_options,
    "GetSessionOptions": get_session_options,
    "CloseSession": close_session,
}
