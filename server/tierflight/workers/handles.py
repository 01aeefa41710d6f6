"""Prepared statements as the front sees them.

A client may keep a prepared statement for a long time (ADBC reuses one per cursor while
the SQL does not change) and execute it after an ingest, when the follower that prepared
it no longer has every row. So the front hands out its own handles and remembers, per
handle, the SQL and the last parameter batch: an execution on a worker that is no longer
eligible re-prepares the statement on the primary first. Executions of a statement without
parameters after its first need no worker's handle at all: the front answers them like a
CommandStatementQuery (see front.FrontServer._statement_info).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import pyarrow as pa

from tierflight.core.errors import NotFound

MAX_HANDLES = 10_000


@dataclass
class FrontStatement:
    sql: str
    worker: int
    inner: bytes  # the worker's handle
    params: pa.Table | None = None
    parameters: bool = False  # it has parameters (its answer depends on the values bound)
    # Its first execution (parked by the worker when it was prepared) has been taken: later
    # executions without parameters may be answered by the front itself.
    consumed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class FrontStatements:
    def __init__(self, limit: int = MAX_HANDLES) -> None:
        self._items: OrderedDict[bytes, FrontStatement] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def add(self, statement: FrontStatement) -> bytes:
        handle = secrets.token_bytes(16)
        with self._lock:
            self._items[handle] = statement
            # Clients that never close leak nothing: the oldest are forgotten (the worker
            # bounds its own table the same way).
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        return handle

    def get(self, handle: bytes) -> FrontStatement:
        with self._lock:
            item = self._items.get(handle)
            if item is not None:
                self._items.move_to_end(handle)
        if item is None:
            raise NotFound("unknown or closed prepared statement handle; prepare the statement again")
        return item

    def pop(self, handle: bytes) -> FrontStatement | None:
        with self._lock:
            return self._items.pop(handle, None)

    def __len__(self) -> int:
        return len(self._items)
