"""The floor: a minimal Flight SQL server in Python (pyarrow.flight), for scale.

It answers CreatePreparedStatement, GetFlightInfo, DoGet and ClosePreparedStatement with
constants (a 1-row ``SELECT 1`` result) and does nothing else: no SQL, no engine, no
bookkeeping. What a client measures against it is what gRPC, pyarrow's Flight server and
the Python handler dispatch cost; no server built on pyarrow.flight can answer faster.
A DoGet of the ticket ``range:N`` streams a prebuilt N-row table shaped like the
large_result benchmark's (in 65,536-row batches): the transport ceiling for large results.

Run as ``python -m bench.floor [PORT]``; it prints ``floor ready at grpc://HOST:PORT``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2

from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.sqlinfo import sql_info_table


def _pack(msg: Any) -> bytes:
    out = any_pb2.Any()
    out.Pack(msg, type_url_prefix="type.googleapis.com/")
    return out.SerializeToString()


TABLE = pa.table({"1": pa.array([1], pa.int32())})
_PREPARED = _pack(
    pb.ActionCreatePreparedStatementResult(
        prepared_statement_handle=b"h", dataset_schema=TABLE.schema.serialize().to_pybytes()
    )
)


SQL_INFO = sql_info_table([])  # ADBC reads GetSqlInfo when it connects; a constant here


class FloorServer(flight.FlightServerBase):  # type: ignore[misc]
    def get_flight_info(self, context: Any, descriptor: Any) -> Any:
        command = any_pb2.Any()
        command.ParseFromString(descriptor.command)
        if command.type_url.endswith(".CommandGetSqlInfo"):
            return flight.FlightInfo(SQL_INFO.schema, descriptor, [flight.FlightEndpoint(b"i", [])], 0, -1)
        return flight.FlightInfo(TABLE.schema, descriptor, [flight.FlightEndpoint(b"t", [])], 1, -1)

    def do_get(self, context: Any, ticket: Any) -> Any:
        if ticket.ticket.startswith(b"range:"):
            return flight.RecordBatchStream(range_table(int(ticket.ticket[6:])))
        return flight.RecordBatchStream(SQL_INFO if ticket.ticket == b"i" else TABLE)

    def do_action(self, context: Any, action: Any) -> Any:
        if action.type == "CreatePreparedStatement":
            return iter([flight.Result(_PREPARED)])
        return iter([])


_RANGES: dict[int, pa.Table] = {}


def range_table(rows: int) -> pa.Table:
    """``SELECT range AS a, range * 2 AS b, range::DOUBLE AS c, range % 1000 AS d, (range * 7)::DOUBLE AS e``."""
    if rows not in _RANGES:
        import numpy as np

        a = np.arange(rows, dtype=np.int64)
        table = pa.table(
            {"a": a, "b": a * 2, "c": a.astype(np.float64), "d": a % 1000, "e": (a * 7).astype(np.float64)}
        )
        _RANGES[rows] = pa.Table.from_batches(table.to_batches(max_chunksize=65_536))
    return _RANGES[rows]


def start_in_thread(port: int = 0) -> tuple[FloorServer, str]:
    server = FloorServer(f"grpc://127.0.0.1:{port}")
    threading.Thread(target=server.serve, daemon=True, name="floor-server").start()
    return server, f"grpc://127.0.0.1:{server.port}"


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = FloorServer(f"grpc://127.0.0.1:{port}")
    print(f"floor ready at grpc://127.0.0.1:{server.port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
