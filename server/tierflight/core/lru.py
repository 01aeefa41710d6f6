"""A small thread-safe least-recently-used map, for the caches that must stay bounded (plans,
rewrites, templates, Iceberg file plans): the oldest entry goes when a new one passes the limit."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Sightings:
    """Which keys were seen before: the admission test of a cache that one-off keys would
    only churn. A stream of statements that never repeat (a dashboard's new filter values)
    would fill a cache with entries never read, each entry's objects living long enough for
    the collector to walk them again and again in its full collections; admitted on their
    second sighting, only keys that do repeat are kept. Holds the keys' hashes only (a
    collision admits a key early: harmless), at most ``limit`` of them, oldest dropped."""

    def __init__(self, limit: int = 16384) -> None:
        # An OrderedDict: the oldest goes in O(1) (a dict's first key, once many were deleted
        # before it, is found by a scan past their slots: 14 µs a call at the limit, not 1).
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def again(self, key: object) -> bool:
        """Whether ``key`` was seen before; from now on it has been."""
        h = hash(key)
        with self._lock:
            if h in self._seen:
                return True
            self._seen[h] = None
            if len(self._seen) > self._limit:
                self._seen.popitem(last=False)
            return False
