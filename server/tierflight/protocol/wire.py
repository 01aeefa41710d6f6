"""The Flight SQL wire format: commands packed in ``google.protobuf.Any``, and the actions
tierflight answers. Shared by the server and the ``serve --workers`` front, which decodes
just enough of a call to route it (and so imports nothing of the engine).
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from tierflight.core.errors import InvalidArgument
from tierflight.protocol import flightsql_pb2 as pb

TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."
# A ticket carries a statement (at most [server] max_statement_bytes) and its bound parameter
# rows; anything larger was not issued by this server. Its JSON nests three levels (a
# parameter value may be a list or struct): deeper is not ours either.
MAX_TICKET_BYTES = 64 << 20
MAX_TICKET_NESTING = 32
_SHOWN_TYPE_URL = 120  # characters of a foreign type URL quoted back in an error

ACTIONS = [
    ("CreatePreparedStatement", "Create a prepared statement (ActionCreatePreparedStatementRequest)"),
    ("ClosePreparedStatement", "Close a prepared statement (ActionClosePreparedStatementRequest)"),
    ("CancelFlightInfo", "Cancel the execution behind a FlightInfo"),
    ("CancelQuery", "Cancel a query (deprecated Flight SQL action)"),
    ("CloseSession", "Close the client session"),
    ("SetSessionOptions", "Set session options: catalog (tierflight) and schema (main) only"),
    ("GetSessionOptions", "The session options: catalog and schema"),
    ("healthcheck", "Report whether the server is ready"),
    ("tierflight.state", "Unflushed hot rows and the version of the files and rollup snapshots served"),
]
STATE_ACTION = "tierflight.state"


# Only the messages this Flight SQL protocol declares (getattr on the module would also find
# its imports and dunder attributes).
_MESSAGES: dict[str, type[Message]] = {
    name: getattr(pb, name) for name in pb.DESCRIPTOR.message_types_by_name if isinstance(getattr(pb, name, None), type)
}


def pack(msg: Message) -> bytes:
    any_msg = any_pb2.Any()
    any_msg.Pack(msg, type_url_prefix="type.googleapis.com/")
    return any_msg.SerializeToString()


def unpack(data: bytes) -> tuple[str, Any]:
    """Decode an ``Any``-wrapped Flight SQL command into (name, message)."""
    any_msg = any_pb2.Any()
    try:
        any_msg.ParseFromString(data)
    except DecodeError:
        raise InvalidArgument("the request is not a Flight SQL command (undecodable protobuf Any)") from None
    type_url = any_msg.type_url
    ours = type_url.startswith(TYPE_PREFIX)
    name = type_url[len(TYPE_PREFIX) :] if ours else ""
    cls = _MESSAGES.get(name) if ours else None
    if cls is None:
        shown = repr(type_url[:_SHOWN_TYPE_URL] + ("..." if len(type_url) > _SHOWN_TYPE_URL else "")) if type_url else "(empty)"
        raise InvalidArgument(f"unknown command type {shown}: not a Flight SQL {'message' if ours else 'command'}")
    msg = cls()
    try:
        # The type URL was matched above: what Any.Unpack would check again.
        msg.ParseFromString(any_msg.value)
    except DecodeError:
        raise InvalidArgument(f"malformed {name} message") from None
    return name, msg


# A handle without parameters is b"\x01", the query id's length (1 byte), the query id and the
# statement's UTF-8 text: no JSON to write and read on every statement. JSON handles (with
# parameter rows) start with "{".
_PLAIN = 1
_MAX_QUERY_ID = 255


def encode_ticket(query_id: str, sql: str, params: list[tuple[Any, ...]] | None = None) -> bytes:
    """A statement's ticket. It carries the statement, so a ticket fetched again (or by a
    process that never saw the FlightInfo) is answered by running it again; ``query_id``
    names the execution parked for it, if any ("": none)."""
    qid = query_id.encode()
    if params is None and len(qid) <= _MAX_QUERY_ID:
        handle = bytes((_PLAIN, len(qid))) + qid + sql.encode()
    else:
        handle = json.dumps({"q": query_id, "s": sql, "p": params}, default=str).encode()
    return pack(pb.TicketStatementQuery(statement_handle=handle))


def decode_ticket(handle: bytes, *, signed: bool = False) -> tuple[str, str, list[tuple[Any, ...]] | None]:
    """``signed``: the handle came out of a ticket whose signature was verified, so this server
    wrote it (the nesting scan, a Python loop over every byte, is for handles of unknown origin)."""
    malformed = InvalidArgument("malformed ticket: not issued by this server")
    if len(handle) > MAX_TICKET_BYTES:
        raise malformed
    if handle[:1] == bytes((_PLAIN,)):
        if len(handle) < 2 or 2 + handle[1] > len(handle):
            raise malformed
        end = 2 + handle[1]
        try:
            return handle[2:end].decode(), handle[end:].decode(), None
        except UnicodeDecodeError:
            raise malformed from None
    if not signed and _nesting(handle) > MAX_TICKET_NESTING:
        raise malformed
    try:
        data = json.loads(handle)
    except (ValueError, RecursionError):
        raise malformed from None
    if not isinstance(data, dict):
        raise malformed
    query_id, sql, params = data.get("q"), data.get("s"), data.get("p")
    if not isinstance(query_id, str) or not isinstance(sql, str):
        raise malformed
    if params is None:
        return query_id, sql, None
    if not isinstance(params, list) or not all(isinstance(row, list) for row in params):
        raise malformed
    return query_id, sql, [tuple(row) for row in params] if params else None


def _nesting(data: bytes) -> int:
    """How deeply JSON arrays and objects nest in ``data`` (strings skipped)."""
    depth = deepest = 0
    for m in _JSON_TOKENS.finditer(data):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
