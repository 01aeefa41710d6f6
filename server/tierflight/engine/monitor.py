"""One thread that stops statements the server must not let run on.

Two things are polled, both too cheap to matter (a read of ``/proc/self/statm``, a flag of
the gRPC call):

* the process' resident memory against ``[server] memory_ceiling``. DuckDB's
  ``memory_limit`` covers its buffer manager only: string vectors of some operators
  (``string_split`` of a huge string, ``repeat``) grow past it unchecked, and a few such
  statements take the host down. Past the ceiling the newest statement is interrupted
  (then, if memory stays high once it is gone, the next newest), and it fails with
  RESOURCE_EXHAUSTED saying the ceiling was reached; the memory it held is handed back to
  the OS (``malloc_trim``) once it is gone.
* whether the RPC a statement runs in was cancelled by its client or passed its gRPC
  deadline. pyarrow runs a handler to completion whatever the client does; the poll turns a
  cancel into a DuckDB interrupt while the statement plans, starts (GetFlightInfo,
  CreatePreparedStatement, DoGet of a ticket run again) and streams.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import duckdb

from tierflight.core.log import get_logger

log = get_logger("tierflight.monitor")

_PAGE = os.sysconf("SC_PAGE_SIZE")
# After stopping a statement for memory: how long it gets to unwind before the next one is stopped.
UNWIND_S = 2.0


class StopReason(enum.Enum):
    DEADLINE = "deadline"  # server.statement_timeout
    CANCELLED = "cancelled"  # the client (CancelFlightInfo, a cancelled RPC, its gRPC deadline)
    MEMORY = "memory"  # server.memory_ceiling
    SHUTDOWN = "shutdown"


class Stop:
    """What can stop one statement: the cursor to interrupt, the RPC to watch, and why it was
    stopped (the first reason wins). Called from the watchdog, the monitor or a cancel."""

    def __init__(self, query_id: str) -> None:
        self.query_id = query_id
        self.started = time.monotonic()
        self.reason: StopReason | None = None
        self.cursor: duckdb.DuckDBPyConnection | None = None
        # Told once the statement is stopped (the execution settles its slot and log entry).
        self.on_stop: Callable[[StopReason], None] | None = None
        self._call: Callable[[], bool] | None = None
        self._call_lock = threading.Lock()

    def __call__(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        cursor = self.cursor
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):  # it finished (and closed) meanwhile
                cursor.interrupt()
        on_stop = self.on_stop
        if on_stop is not None:
            on_stop(self.reason)

    @contextlib.contextmanager
    def watching(self, call: Callable[[], bool] | None) -> Iterator[None]:
        """Poll ``call`` (an RPC's is-cancelled) while the block runs, never after: the RPC's
        context is gone once its handler (or its stream) has ended."""
        with self._call_lock:
            self._call = call
        try:
            yield
        finally:
            with self._call_lock:
                self._call = None

    def call_cancelled(self) -> bool:
        with self._call_lock:
            if self._call is None:
                return False
            try:
                return self._call()
            except Exception:  # noqa: BLE001 - a call that cannot tell is not cancelled
                return False


class Statements(Protocol):
    def stops(self) -> list[Stop]:
        """The statements that can be stopped (planning, running, streaming or parked), oldest first."""
        ...


class _Statm:
    """/proc/self/statm kept open and read in place: the monitor reads it 50 times a second,
    and an open and close each time cost more than the read."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = -1

    def rss(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child reads its own
            self._fd, self._pid = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC), os.getpid()
        return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE


_statm = _Statm()


def rss_bytes() -> int:
    return _statm.rss()


def machine_memory() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text != "max":
            total = min(total, int(text))
    return total


def resolve_ceiling(value: int | float) -> int:
    """Bytes from ``[server] memory_ceiling``: a byte count, or a fraction of machine_memory()."""
    if isinstance(value, float):
        return int(machine_memory() * value)
    return value


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _malloc_trim() -> Callable[[], Any]:
    # The process' own symbols hold the C library's: no find_library, which runs ldconfig in a
    # subprocess. A C library without malloc_trim (musl, macOS) makes this a no-op.
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        libc = None
    trim = getattr(libc, "malloc_trim", None)
    return (lambda: trim(0)) if trim is not None else (lambda: None)


class Monitor:
    def __init__(
        self, statements: Statements, ceiling: int, interval_s: float = 0.02, call_every: int = 5
    ) -> None:
        self._statements = statements
        self.ceiling = ceiling
        self._interval = interval_s
        self._call_every = call_every  # RPCs are polled every call_every memory samples
        self._trim = _malloc_trim()
        self._victim: Stop | None = None
        self._victim_at = 0.0
        self._warned = False
        self.stopped_for_memory = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tierflight-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self._interval):
            tick += 1
            # A failing poll must not end the monitor.
            try:
                if self.ceiling > 0:
                    self._check_memory()
                if tick % self._call_every == 0:
                    self._check_calls()
            except Exception as exc:  # noqa: BLE001
                log.error("monitor_failed", error=repr(exc))

    def _check_calls(self) -> None:
        for stop in self._statements.stops():
            if stop.reason is None and stop.call_cancelled():
                stop(StopReason.CANCELLED)

    def _alive(self, stop: Stop) -> bool:
        return any(s is stop for s in self._statements.stops())

    def _check_memory(self) -> None:
        rss = rss_bytes()
        victim = self._victim
        if rss <= self.ceiling:
            if victim is not None and not self._alive(victim):
                self._victim = None
                self._trim()  # give what the stopped statement held back to the OS
            return
        if victim is not None:
            if self._alive(victim) and time.monotonic() - self._victim_at < UNWIND_S:
                return  # still unwinding: its memory is not free yet
            self._trim()
            rss = rss_bytes()
            if rss <= self.ceiling:
                self._victim = None
                return
        candidates = [s for s in self._statements.stops() if s.reason is None]
        if not candidates:
            if not self._warned:
                self._warned = True
                log.warning("memory_ceiling_idle", rss=rss, ceiling=self.ceiling)
            return
        self._warned = False
        # The newest first: older statements have had their memory longer and are nearer their end.
        newest = max(candidates, key=lambda s: s.started)
        self._victim, self._victim_at = newest, time.monotonic()
        self.stopped_for_memory += 1
        log.warning("memory_ceiling_reached", query_id=newest.query_id, rss=rss, ceiling=self.ceiling)
        newest(StopReason.MEMORY)

    def stop(self) -> None:
        self._stop.set()
