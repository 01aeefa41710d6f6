"""One writer per data dir: an advisory lock the writing commands take before touching it.

Two processes writing one data dir (two ``serve``, or ``rollups build`` beside a ``serve``)
would replay the same WAL twice, move each other's files and overwrite each other's
snapshots. ``serve`` (its front, with ``--workers``), ``generate``, ``rollups build`` and
``tiers demote|compact`` hold ``fcntl.flock`` on ``<data dir>/.tierflight.lock`` for their
whole run; the kernel drops it when the process ends, however it ends (``kill -9``
included), so a stale lock file never blocks a restart. Replicas keep a data dir each (see
docs/deployment.md); what they share lives in the object store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from tierflight.core.errors import ConfigError

LOCK_NAME = ".tierflight.lock"
_held: dict[Path, int] = {}  # data dir -> the descriptor that holds its lock (for the process's life)


def lock_data_dir(data_dir: Path) -> None:
    """Take the data dir's writer lock for this process, or raise ConfigError naming the holder."""
    path = data_dir.resolve()
    if path in _held:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"data dir {path} is in use by another tierflight process (pid {holder}); stop it or use --data-dir"
        ) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd


def unlock_data_dir(data_dir: Path) -> None:
    fd = _held.pop(data_dir.resolve(), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor releases the lock
