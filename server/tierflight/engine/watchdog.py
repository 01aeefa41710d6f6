"""One thread that enforces statement deadlines and expires abandoned executions.

A timer thread per statement would cost more than a small query; a single heap of deadlines
keeps the per-statement cost to a heap push.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Watchdog:
    def __init__(self) -> None:
        # The heap holds only (deadline, token); a cancelled token's action is dropped at once,
        # so nothing it references (an execution, a cursor) outlives the statement.
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Callable[[], None]] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="tierflight-watchdog", daemon=True)
        self._thread.start()

    def schedule(self, delay_s: float, action: Callable[[], None]) -> int:
        token = next(self._ids)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay_s, token))
            self._actions[token] = action
            if self._heap[0][1] == token:
                self._cond.notify()
        return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._actions.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, token = heapq.heappop(self._heap)
                action = self._actions.pop(token, None)
                if action is None:
                    continue
            # A failing action must not stop the watchdog.
            with contextlib.suppress(Exception):
                action()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
