"""structlog set-up: JSON lines, or a console format when attached to a terminal.

What is logged, and what never is: statements are logged as a ``statement`` event with a
hash of the SQL text (never the text, never parameter values); authentication logs user
names, never passwords or tokens.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write, not at configuration
    time: test runners swap and close the stream, and a server must never log into a closed
    file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", json_format: bool | None = None) -> None:
    if json_format is None:
        json_format = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json_format else structlog.dev.ConsoleRenderer()
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    numeric_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Standard-library loggers (ours in protocol.auth, and libraries') go through the same
    # renderer to the same stream, so the log stays one format. Libraries only from WARNING.
    handler = logging.StreamHandler(_CurrentStderr())
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
