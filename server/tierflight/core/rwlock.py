"""A readers-writer lock: statements plan and start under the read side, a flush swaps
files and hot rows under the write side, so each statement sees the tiers before or after."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0  # past their patience: new readers wait for them
        self._pending_writers = 0  # in write() and not yet writing: the last reader out wakes them
        self._read_side = _ReadSide(self)

    def read(self) -> _ReadSide:
        """The read side (a context manager; one object for every reader, it holds no state)."""
        return self._read_side

    @contextmanager
    def write(self, patience: float = 0.0) -> Iterator[None]:
        """The write side. With ``patience`` (seconds), the writer first waits that long for
        a moment with no statement running without holding new statements back; only then
        does it take its turn ahead of them. An ingest commit is quick, but waiting its turn
        would hold every arriving statement behind the longest running one."""
        with self._cond:
            deadline = time.monotonic() + patience
            self._pending_writers += 1
            try:
                while self._writer or self._readers:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._waiting_writers += 1
                try:
                    while self._writer or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting_writers -= 1
            finally:
                self._pending_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _ReadSide:
    """RWLock.read(): a class rather than a generator context manager, and no notify unless
    a writer waits (it is entered twice per statement)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        with lock._cond:
            # Writers go first once waiting, so a stream of statements cannot starve a flush.
            while lock._writer or lock._waiting_writers:
                lock._cond.wait()
            lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        lock = self._lock
        with lock._cond:
            lock._readers -= 1
            if not lock._readers and lock._pending_writers:
                lock._cond.notify_all()
