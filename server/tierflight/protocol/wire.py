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
    ("SetSessionOptions", "Set session options: catalog (tierflight) and schema (main) only"),
    ("GetSessionOptions", "The session options: catalog and schema"),
    ("healthcheck", "Report whether the server is ready"),
    ("tierflight.state", "Unflushed hot rows and the version of the files and rollup snapshots served"),
]
STATE_ACTION = "tierflight.state"


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
        raise Unsupported(f"unsupported command type {any_msg.type_url or '(empty)'!r}")
    name = any_msg.type_url[len(TYPE_PREFIX) :]
    cls = getattr(pb, name, None)
    if cls is None or not isinstance(cls, type):
        raise Unsupported(f"Flight SQL command {name} is not supported by tierflight")
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
