"""Thread priority: background work (ingest, WAL writes, flushes, rollup verification) yields
the CPU to statements."""

from __future__ import annotations

import contextlib
import os
import threading


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread yield the CPU to statements (Linux schedules threads one by
    one, so this touches no other thread). Lowering needs no privilege; where the platform
    refuses, the thread keeps its priority."""
    if nice <= 0:
        return
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))


class Slots:
    """A count of free slots, taken without waiting: a BoundedSemaphore without the
    condition variable it takes (and notifies) on every acquire and release, which nothing
    here waits on."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._free = size
        self._lock = threading.Lock()

    @property
    def free(self) -> int:
        return self._free

    def take(self) -> bool:
        """Take a slot: False when none is free."""
        with self._lock:
            if self._free == 0:
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        """Give a taken slot back (ValueError if more are given back than were taken)."""
        with self._lock:
            if self._free >= self._size:
                raise ValueError("a slot was given back that was never taken")
            self._free += 1
