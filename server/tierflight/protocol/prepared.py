"""Prepared statements: a handle per statement, its checked SQL and its bound parameters."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tierflight.core.errors import NotFound
from tierflight.core.statement import Statement
from tierflight.engine.executor import Execution
from tierflight.protocol.parameters import parameter_rows


@dataclass
class Prepared:
    handle: bytes
    statement: Statement
    user: str
    dataset_schema: pa.Schema
    parameter_schema: pa.Schema
    params: list[tuple[Any, ...]] | None = None
    touched: float = field(default_factory=time.monotonic)
    # A statement without parameters is started when prepared (that is how its schema is
    # known); the first execution then streams this one instead of running it again.
    pending: Execution | None = None

    def take_pending(self) -> Execution | None:
        ex, self.pending = self.pending, None
        return ex


__all__ = ["Prepared", "PreparedStatements", "parameter_rows"]


class PreparedStatements:
    """Bounded store; the least recently used handles are dropped first."""

    def __init__(self, capacity: int = 10_000, idle_seconds: float = 3600.0) -> None:
        self._items: OrderedDict[bytes, Prepared] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity
        self._idle = idle_seconds

    def add(self, statement: Statement, user: str, dataset_schema: pa.Schema, parameter_schema: pa.Schema) -> Prepared:
        handle = secrets.token_bytes(16)
        item = Prepared(handle, statement, user, dataset_schema, parameter_schema)
        now = time.monotonic()
        with self._lock:
            self._items[handle] = item
            while len(self._items) > self._capacity or (
                self._items and now - next(iter(self._items.values())).touched > self._idle
            ):
                _, dropped = self._items.popitem(last=False)
                pending = dropped.take_pending()
                if pending is not None:
                    pending.discard()
        return item

    def get(self, handle: bytes) -> Prepared:
        with self._lock:
            item = self._items.get(handle)
            if item is None:
                raise NotFound("unknown or closed prepared statement handle; prepare the statement again")
            self._items.move_to_end(handle)
        item.touched = time.monotonic()
        return item

    def close(self, handle: bytes) -> None:
        with self._lock:
            item = self._items.pop(handle, None)
        if item is not None:
            pending = item.take_pending()
            if pending is not None:
                pending.discard()
