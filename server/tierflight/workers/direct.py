"""A worker's DoGet port: results go from the worker to the client without the front.

The front of ``serve --workers`` answers GetFlightInfo with an endpoint whose location is
one worker's TCP port and whose ticket it signed (see :mod:`tierflight.protocol.tickets`);
the client fetches the result there, so the statement's planning, execution and streaming
happen in the worker and the front sees one RPC per statement, not two. This server takes
DoGet of signed tickets and nothing else: no authentication runs here (a bearer token a
client sends along is ignored), the ticket's signature is the authorization.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow.flight as flight

from tierflight.core.errors import Unsupported
from tierflight.protocol.boundary import boundary, schema_boundary


def _refuse(rpc: str) -> Unsupported:
    return Unsupported(
        f"{rpc} is not served on a worker's DoGet port: it serves DoGet of tickets issued by the "
        "server's front only; send every other call to the server's address"
    )


class DirectServer(flight.FlightServerBase):  # type: ignore[misc]
    """DoGet of signed tickets, for one worker (``sql``: its Flight SQL server)."""

    def __init__(self, sql: Any, location: str, **kwargs: Any) -> None:
        super().__init__(location, **kwargs)
        self.sql = sql

    @boundary
    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        return self.sql.stream_signed(ticket.ticket, None)

    @boundary
    def get_flight_info(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor) -> Any:
        raise _refuse("GetFlightInfo")

    @schema_boundary
    def get_schema(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor) -> Any:
        raise _refuse("GetSchema")

    @boundary
    def do_put(self, context: flight.ServerCallContext, descriptor: Any, reader: Any, writer: Any) -> None:
        raise _refuse("DoPut")

    @boundary
    def do_exchange(self, context: flight.ServerCallContext, descriptor: Any, reader: Any, writer: Any) -> None:
        raise _refuse("DoExchange")

    @boundary
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[flight.Result]:
        raise _refuse(f"DoAction({action.type})")

    @boundary
    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        raise _refuse("ListActions")

    @boundary
    def list_flights(self, context: flight.ServerCallContext, criteria: bytes) -> Iterator[flight.FlightInfo]:
        raise _refuse("ListFlights")


class Servers:
    """A worker's two servers (Unix socket for the front, TCP for DoGet) as one: what the
    graceful shutdown stops (both at once: each waits for its own calls)."""

    def __init__(self, main: Any, direct: DirectServer) -> None:
        self.app = main.app
        self.main = main
        self.direct = direct

    def shutdown(self) -> None:
        other = threading.Thread(target=self.direct.shutdown, name="tierflight-direct-shutdown", daemon=True)
        other.start()
        self.main.shutdown()
        other.join()
