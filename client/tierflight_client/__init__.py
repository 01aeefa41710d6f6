"""tierflight_client: a small typed client for tierflight, on the ADBC Flight SQL driver.

::

    import tierflight_client

    with tierflight_client.connect("grpc://127.0.0.1:31337") as conn:
        table = conn.query("SELECT day, sum(bid_price) FROM events GROUP BY day")  # pyarrow.Table
        print(conn.last_route)  # {"tier": "hot", "rollup": "day_type", ...}
        frame = conn.query_polars("SELECT country, count(*) FROM events GROUP BY 1")
        print(conn.explain("SELECT count(*) FROM events"))

Errors are :class:`TierflightClientError` subclasses named after the gRPC status
(:class:`InvalidArgument`, :class:`NotFound`, ...), carrying the server's message and
``code``. The raw DB-API connection is ``conn.dbapi``.
"""

from __future__ import annotations

from tierflight_client.connection import Connection, IngestMode, connect
from tierflight_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TierflightClientError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "Connection",
    "DeadlineExceeded",
    "FailedPrecondition",
    "IngestMode",
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
    "connect",
]
