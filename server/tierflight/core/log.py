"""structlog set-up: JSON lines, or a console format when attached to a terminal.

What is logged, and what never is: statements are logged as a ``statement`` event with a
hash of the SQL text (never the text, never parameter values); authentication logs user
names, never passwords or tokens.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write, not at configuration
    time: test runners swap and close the stream, and a server must never log into a closed
    file. Or to the stream configure_logging was given (an in-process profile's log file)."""

    target: TextIO | None = None

    def write(self, text: str) -> int:
        return (self.target or sys.stderr).write(text)

    def flush(self) -> None:
        (self.target or sys.stderr).flush()


# The one logger written on every statement: its info lines are buffered (a write and a flush
# per statement would hand the GIL to another thread on each statement of a busy server).
STATEMENT_LOGGER = "tierflight.statement"
BUFFERED_LOGGERS = frozenset({STATEMENT_LOGGER})
FLUSH_INTERVAL_S = 0.1
# One line at a time on the stream, whichever logger writes it.
_WRITE_LOCK = threading.Lock()


class _Line:
    """Writes each line at once (structlog calls the method named after the level)."""

    def __init__(self, out: _CurrentStderr) -> None:
        self._out = out

    def msg(self, message: str) -> None:
        with _WRITE_LOCK:
            self._out.write(message + "\n")
            self._out.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = failure = msg


@dataclass(frozen=True, slots=True)
class _Later:
    """An info line rendered when it is written (see log_later), by the renderer configured
    when it was logged."""

    timestamp: float
    event: str
    fields: Callable[[], dict[str, Any]]
    renderer: Callable[[Any, str, dict[str, Any]], Any]

    def render(self) -> str:
        try:
            event_dict = self.fields()
            event_dict["event"] = self.event
            event_dict["level"] = "info"
            # As structlog's TimeStamper(fmt="iso", utc=True) writes it.
            event_dict["timestamp"] = datetime.fromtimestamp(self.timestamp, UTC).isoformat().replace("+00:00", "Z")
            return str(self.renderer(None, "info", event_dict))
        except Exception as exc:  # noqa: BLE001 - one unrenderable line must not stop the log
            return json.dumps({"event": self.event, "level": "error", "render_error": type(exc).__name__})


class _BufferedLines:
    """Keeps info lines and writes them every FLUSH_INTERVAL_S (from a thread of its own),
    at exit, and before any line of level warning or above, which is written at once: an
    error's query id is in the log by the time the client sees the error."""

    def __init__(self, out: _CurrentStderr) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._lines: list[str | _Later] = []
        self._flusher: threading.Thread | None = None
        self._pid = 0

    def buffered(self, message: str | _Later) -> None:
        with self._lock:
            self._lines.append(message)
            if self._pid != os.getpid():  # first line, or the first in a forked worker
                self._pid = os.getpid()
                self._flusher = threading.Thread(target=self._run, name="tierflight-log-flush", daemon=True)
                self._flusher.start()

    def now(self, message: str) -> None:
        self.buffered(message)
        self.flush()

    def flush(self) -> None:
        # The stream lock is taken first and the lines are swapped out under it, so lines go
        # out in order; writers only ever wait for the short swap, never for the write.
        with _WRITE_LOCK:
            with self._lock:
                lines, self._lines = self._lines, []
            if lines:
                text = "\n".join(line if isinstance(line, str) else line.render() for line in lines)
                with contextlib.suppress(ValueError, OSError):  # stderr closed at exit
                    self._out.write(text + "\n")
                    self._out.flush()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            if self._lines:
                self.flush()

    log = debug = info = buffered
    msg = warn = warning = error = err = critical = exception = fatal = failure = now


# Set by configure_logging: how log_later's lines are rendered, and the least level written.
_RENDERER: Callable[[Any, str, dict[str, Any]], Any] | None = None
_LEVEL = logging.INFO

_STDERR = _CurrentStderr()
_BUFFERED = _BufferedLines(_STDERR)
atexit.register(_BUFFERED.flush)


def log_later(event: str, fields: Callable[[], dict[str, Any]]) -> None:
    """An info line of the statement log whose fields are computed and rendered when the
    buffer is written (by the flush thread), not on the statement's own thread: a busy
    server's handler threads take turns on one GIL, and the structlog pipeline (context,
    level, timestamp, rendering) cost more than the rest of a cached statement's bookkeeping.
    ``fields`` must be safe to call later from another thread (read only immutable state)."""
    renderer = _RENDERER
    if renderer is None:  # logging not configured (a library use): structlog's defaults, now
        get_logger(STATEMENT_LOGGER).info(event, **fields())
    elif _LEVEL <= logging.INFO:
        _BUFFERED.buffered(_Later(time.time(), event, fields, renderer))


def reset_logging() -> None:
    """Back to structlog's defaults, as before configure_logging (tests that configured the
    server's log: later statement lines must not go to a stream they no longer own)."""
    global _RENDERER, _LEVEL
    flush_logs()
    _RENDERER, _LEVEL = None, logging.INFO
    _STDERR.target = None
    structlog.reset_defaults()


def flush_logs() -> None:
    """Write out buffered log lines (shutdown, tests that read the log of a live server)."""
    _BUFFERED.flush()


def _logger_for(*args: Any) -> _Line | _BufferedLines:
    name = args[0] if args else None
    return _BUFFERED if name in BUFFERED_LOGGERS else _Line(_STDERR)


def configure_logging(level: str = "info", json_format: bool | None = None, stream: TextIO | None = None) -> None:
    """``stream``: where every line goes (None: the process's stderr at the time of each write)."""
    flush_logs()  # lines already kept go where they were meant to
    _STDERR.target = stream
    if json_format is None:
        json_format = not sys.stderr.isatty()
    # Plain tracebacks on a terminal too: structlog's default (rich, with every frame's local
    # variables) costs seconds of CPU per internal error and would print locals such as
    # credentials into the log.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_format
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    numeric_level = logging.getLevelName(level.upper())
    global _RENDERER, _LEVEL
    _RENDERER, _LEVEL = renderer, numeric_level
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_logger_for,
        cache_logger_on_first_use=True,
    )
    # Standard-library loggers (ours in protocol.auth, and libraries') go through the same
    # renderer to the same stream, so the log stays one format. Libraries only from WARNING.
    handler = logging.StreamHandler(_STDERR)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level, timestamper],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("tierflight").setLevel(numeric_level)
    # sqlglot warns on every EXPLAIN it cannot parse natively; that is expected here.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
