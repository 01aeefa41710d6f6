"""The RPC a handler serves, as the engine sees it (no pyarrow.flight, no DuckDB here: the
front of ``serve --workers`` imports the protocol boundary that sets it)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

# The cancelled-check of the RPC being served on this thread (set by protocol.boundary for
# the duration of a handler): the executor hands it to the monitor while a statement runs.
current_call: ContextVar[Callable[[], bool] | None] = ContextVar("tierflight_current_call", default=None)
