"""The Flight SQL wire format: commands packed in ``google.protobuf.Any``, and the actions
tierflight answers. Shared by the server and the ``serve --workers`` front, which decodes
just enough of a call to route it (and so imports nothing of the engine).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from tierflight.errors import InvalidArgument, Unsupported
from tierflight.protocol import flightsql_pb2 as pb

TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."

ACTIONS = [
    ("CreatePreparedStatement", "Create a prepared statement (ActionCreatePreparedStatementRequest)"),
    ("ClosePreparedStatement", "Close a prepared statement (ActionClosePreparedStatementRequest)"),
    ("CancelFlightInfo", "Cancel the execution behind a FlightInfo"),
    ("CancelQuery", "Cancel a query (deprecated Flight SQL action)"),
    ("CloseSession", "Close the client session"),
    ("healthcheck", "Report whether the server is ready"),
    ("tierflight.state", "Unflushed hot rows and the version of the files and rollup snapshots served"),
]
STATE_ACTION = "tierflight.state"


# The message classes a type URL may name: looked up in this table, never with getattr on the
# module (a URL ending in "__class__" named the module's type, whose construction failed).
_MESSAGES: dict[str, type[Message]] = {
    name: cls
    for name, cls in vars(pb).items()
    if not name.startswith("_") and isinstance(cls, type) and issubclass(cls, Message)
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
    if not any_msg.type_url.startswith(TYPE_PREFIX):
        url = any_msg.type_url if len(any_msg.type_url) <= 200 else any_msg.type_url[:200] + "..."
        raise Unsupported(f"unsupported command type {url or '(empty)'!r}")
    name = any_msg.type_url[len(TYPE_PREFIX) :]
    cls = _MESSAGES.get(name)
    if cls is None:
        shown = name if len(name) <= 100 else name[:100] + "..."
        raise Unsupported(f"Flight SQL command {shown!r} is not supported by tierflight")
    msg = cls()
    try:
        any_msg.Unpack(msg)
    except DecodeError:
        raise InvalidArgument(f"malformed {name} message") from None
    return name, msg


def encode_ticket(query_id: str, sql: str, params: list[tuple[Any, ...]] | None = None) -> bytes:
    """A statement's ticket. It carries the statement, so a ticket fetched again (or by a
    process that never saw the FlightInfo) is answered by running it again; ``query_id``
    names the execution parked for it, if any ("": none)."""
    handle = json.dumps({"q": query_id, "s": sql, "p": params}, default=str).encode()
    return pack(pb.TicketStatementQuery(statement_handle=handle))


def decode_ticket(handle: bytes) -> tuple[str, str, list[tuple[Any, ...]] | None]:
    try:
        data = json.loads(handle)
        params = data.get("p")
        return str(data["q"]), str(data["s"]), [tuple(r) for r in params] if params else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidArgument("malformed ticket: not issued by this server") from None
