"""Helpers shared by the client tests: status codes from each client, raw Flight SQL calls.

Three ways of reading the gRPC status a client saw:

* ADBC (Go driver) ends its messages with ``(<GrpcCode>; <Operation>)``.
* pyarrow.flight raises one exception class per status.
* :class:`RawGrpc` speaks the Flight service over plain grpcio with hand-encoded protobuf,
  so garbage can be sent and the exact status code read back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2
from google.protobuf.message import Message

from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.wire import pack, unpack
from tierflight_client.errors import flight_status_classes

# -- status codes -------------------------------------------------------------------------

_ADBC_CODE = re.compile(r"\((?P<code>[A-Za-z]+); [A-Za-z ]+\)")


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


def adbc_status(exc: BaseException) -> str:
    """The gRPC status (e.g. ``INVALID_ARGUMENT``) behind an ADBC Flight SQL error."""
    matches = _ADBC_CODE.findall(str(exc))
    assert matches, f"no gRPC status in ADBC error: {exc}"
    return _snake(matches[-1])


# The same table the client library translates exceptions with.
_FLIGHT_CLASSES = flight_status_classes()


def flight_status(exc: BaseException) -> str:
    """The gRPC status behind a pyarrow.flight client exception."""
    for cls, code in _FLIGHT_CLASSES:
        if isinstance(exc, cls):
            return code
    raise AssertionError(f"unexpected exception type {type(exc).__name__}: {exc}")


def assert_clean_message(message: str) -> None:
    assert "Traceback" not in message, message
    assert 'File "' not in message, message


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- Flight SQL over pyarrow.flight ---------------------------------------------------------


def cmd_descriptor(msg: Message) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(pack(msg))


def any_bytes(type_url: str, value: bytes = b"") -> bytes:
    return any_pb2.Any(type_url=type_url, value=value).SerializeToString()


def read_all(client: flight.FlightClient, info: flight.FlightInfo) -> pa.Table:
    tables = [client.do_get(ep.ticket).read_all() for ep in info.endpoints]
    assert tables, "FlightInfo without endpoints"
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def create_prepared(client: flight.FlightClient, sql: str) -> Any:
    body = pack(pb.ActionCreatePreparedStatementRequest(query=sql))
    results = list(client.do_action(flight.Action("CreatePreparedStatement", body)))
    assert len(results) == 1
    name, result = unpack(results[0].body.to_pybytes())
    assert name == "ActionCreatePreparedStatementResult"
    return result


def close_prepared(client: flight.FlightClient, handle: bytes) -> None:
    body = pack(pb.ActionClosePreparedStatementRequest(prepared_statement_handle=handle))
    assert list(client.do_action(flight.Action("ClosePreparedStatement", body))) == []


def bind_parameters(client: flight.FlightClient, handle: bytes, params: pa.RecordBatch) -> bytes:
    """DoPut the parameter batch; returns the handle the server answers with."""
    descriptor = cmd_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    writer, reader = client.do_put(descriptor, params.schema)
    writer.write_batch(params)
    writer.done_writing()
    answer = reader.read()
    writer.close()
    assert answer is not None, "DoPut of parameters returned no DoPutPreparedStatementResult"
    result = pb.DoPutPreparedStatementResult()
    result.ParseFromString(answer.to_pybytes())
    return bytes(result.prepared_statement_handle)


def dense_union_params(values: Iterable[Any]) -> pa.RecordBatch:
    """One parameter row the way flightsql-dbapi sends it: a dense union per parameter."""
    kinds: list[tuple[type, pa.DataType]] = [
        (int, pa.int64()),
        (float, pa.float64()),
        (str, pa.utf8()),
        (bytes, pa.binary()),
        (bool, pa.bool_()),
    ]
    columns = []
    for value in values:
        type_id = next(i for i, (t, _) in enumerate(kinds) if type(value) is t)
        children = [
            pa.array([value] if i == type_id else [], type=arrow) for i, (_, arrow) in enumerate(kinds)
        ]
        columns.append(
            pa.UnionArray.from_dense(pa.array([type_id], pa.int8()), pa.array([0], pa.int32()), children)
        )
    return pa.RecordBatch.from_arrays(columns, names=[f"param_{i}" for i in range(len(columns))])


# -- the Flight service over raw gRPC ------------------------------------------------------------

SERVICE = "/arrow.flight.protocol.FlightService/"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def descriptor_bytes(
    *, cmd: bytes | None = None, path: list[str] | None = None, kind: int | None = None
) -> bytes:
    """A serialized FlightDescriptor (type = 1 PATH, 2 CMD)."""
    if kind is None:
        kind = 1 if path is not None else 2
    out = _varint(1 << 3 | 0) + _varint(kind)
    if cmd is not None:
        out += _field(2, cmd)
    for part in path or []:
        out += _field(3, part.encode())
    return out


def ticket_bytes(ticket: bytes) -> bytes:
    return _field(1, ticket)


def action_bytes(kind: str, body: bytes = b"") -> bytes:
    return _field(1, kind.encode()) + _field(2, body)


def flight_data_bytes(descriptor: bytes) -> bytes:
    """A FlightData carrying only a descriptor (the first message of DoPut/DoExchange)."""
    return _field(1, descriptor)


def _identity(data: bytes) -> bytes:
    return data


class RawGrpc:
    """Calls Flight RPCs with arbitrary request bytes and reports the exact status code."""

    def __init__(self, uri: str) -> None:
        self.channel = grpc.insecure_channel(uri.removeprefix("grpc://"))

    def close(self) -> None:
        self.channel.close()

    def _call(self, kind: str, method: str, request: Any) -> list[bytes]:
        factory = getattr(self.channel, kind)
        rpc = factory(SERVICE + method, request_serializer=_identity, response_deserializer=_identity)
        if kind == "unary_unary":
            return [rpc(request, timeout=30)]
        if kind == "stream_stream":
            return list(rpc(iter(request), timeout=30))
        return list(rpc(request, timeout=30))

    def status(self, method: str, request: bytes | list[bytes]) -> tuple[str, str]:
        """(status code name, details) of one call; ``("OK", "")`` when it succeeds."""
        kind = {
            "GetFlightInfo": "unary_unary",
            "PollFlightInfo": "unary_unary",
            "GetSchema": "unary_unary",
            "DoGet": "unary_stream",
            "DoAction": "unary_stream",
            "ListFlights": "unary_stream",
            "ListActions": "unary_stream",
            "DoPut": "stream_stream",
            "DoExchange": "stream_stream",
            "Handshake": "stream_stream",
        }[method]
        try:
            self._call(kind, method, request)
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""
        return "OK", ""


def stream_batches(client: flight.FlightClient, ticket: flight.Ticket) -> Iterator[pa.RecordBatch]:
    reader = client.do_get(ticket)
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return
        yield chunk.data
