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
