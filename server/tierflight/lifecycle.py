"""Serving until a signal, then a graceful shutdown.

On the first SIGTERM or SIGINT:

1. ``/readyz`` turns 503 (``app.draining``) so load balancers stop sending statements;
2. the Flight server stops accepting calls (gRPC shutdown, in a thread: it blocks until the
   calls in progress have finished);
3. in-flight statements get ``[server] shutdown_grace`` to finish; a second signal skips
   the rest of the grace;
4. whatever still runs is cancelled (its client gets CANCELLED), including statements that
   are still inside DuckDB before their first batch;
5. the caller then flushes ingested rows (``App.flush_all``), closes the App and exits 0.

The main thread waits on an Event instead of pyarrow's ``serve()``: the server runs from its
construction on, and Python signal handlers only run while the main thread executes Python.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from tierflight.core.log import get_logger

log = get_logger("tierflight.lifecycle")

# After the grace period: how long cancelled statements get to unwind before we give up
# waiting for their calls (a client that stopped reading holds its call open).
CANCEL_WAIT_S = 5.0
_POLL_S = 0.1


def settle_heap() -> None:
    """Before the server reports ready: collect once, then move every object that survived
    start-up (modules, configuration, loaded rollups' Python side, parsed statements) into
    the permanent generation the collector never scans again. A full collection walks
    every tracked object holding the GIL, and under ingest one came every few seconds and
    stopped all statements for 30-80 ms; frozen, the walk covers what was made since."""
    gc.collect()
    gc.freeze()


class SignalLatch:
    """Counts SIGTERM/SIGINT: the first starts the shutdown, the second cuts the grace short."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.first = threading.Event()
        self.second = threading.Event()
        self.signum: int | None = None
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.first.is_set():
            self.second.set()
            return
        self.signum = signum
        self.first.set()


def serve_until_signalled(app: Any, server: Any, on_ready: Callable[[], None] | None = None) -> bool:
    """Run until SIGTERM/SIGINT, then shut down gracefully; False if calls were still stuck."""
    latch = SignalLatch()
    if on_ready is not None:
        on_ready()
    # A timed wait: the signal handler runs between the waits, and sets the event.
    while not latch.first.wait(0.5):
        pass
    grace = app.config.server.shutdown_grace.total_seconds()
    log.info("shutdown", signal=latch.signum, grace_s=grace, in_flight=app.executor.in_flight())
    return graceful_shutdown(app, server, grace, force=latch.second)


def graceful_shutdown(app: Any, server: Any, grace_s: float, force: threading.Event | None = None) -> bool:
    """Stop accepting, drain for ``grace_s``, cancel the rest; True when every call has ended."""
    started = time.monotonic()
    app.draining = True
    stopped = threading.Event()

    def stop_server() -> None:
        try:
            server.shutdown()  # blocks until the calls in progress have ended
        except Exception as exc:  # noqa: BLE001 - the shutdown must go on to flush and exit
            log.error("server_shutdown_failed", error=repr(exc))
        finally:
            stopped.set()

    threading.Thread(target=stop_server, name="tierflight-shutdown", daemon=True).start()
    deadline = started + grace_s
    while not stopped.wait(_POLL_S):
        if time.monotonic() >= deadline or (force is not None and force.is_set()):
            break
    if not stopped.is_set():
        log.warning("shutdown_cancelling", in_flight=app.executor.in_flight(), grace_s=grace_s)
        give_up = time.monotonic() + CANCEL_WAIT_S
        while not stopped.is_set() and time.monotonic() < give_up:
            # Again each round: a statement between planning and streaming can miss one sweep.
            app.executor.cancel_all()
            stopped.wait(0.25)
    seconds = round(time.monotonic() - started, 3)
    if not stopped.is_set():
        log.error("shutdown_incomplete", in_flight=app.executor.in_flight(), seconds=seconds)
        return False
    log.info("shutdown_drained", seconds=seconds)
    return True
