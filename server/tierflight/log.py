"""structlog set-up: JSON lines, or a console format when attached to a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(level: str = "info", json_format: bool | None = None) -> None:
    if json_format is None:
        json_format = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json_format else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # sqlglot warns on every EXPLAIN it cannot parse natively; that is expected here.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
