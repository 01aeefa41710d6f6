"""A readers-writer lock: statements plan and start under the read side, a flush swaps
files and hot rows under the write side, so each statement sees the tiers before or after."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            # Writers go first once waiting, so a stream of statements cannot starve a flush.
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self, patience: float = 0.0) -> Iterator[None]:
        """The write side. With ``patience`` (seconds), the writer first waits that long for
        a moment with no statement running without holding new statements back; only then
        does it take its turn ahead of them. An ingest commit is quick, but waiting its turn
        would hold every arriving statement behind the longest running one."""
        with self._cond:
            deadline = time.monotonic() + patience
            while self._writer or self._readers:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
