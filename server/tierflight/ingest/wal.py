"""Write-ahead log: one Arrow IPC file per acknowledged batch, fsynced before the ack.

``<data_dir>/<table>/wal/<seq>.arrow`` holds batch ``seq``; ``state.json`` records the
highest sequence already flushed to Parquet (or Iceberg). On start the segments above it
are replayed into the hot tail, so an acknowledged row is never lost and, because the
flush moves the mark in the same step that publishes the files (see ingest.flush), never
counted twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from tierflight.core.durable import fsync_dir, write_json_atomic


class WriteAheadLog:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Half-written segments (a crash before the rename) were never acknowledged.
        for tmp in root.glob("*.arrow.tmp"):
            tmp.unlink()
        self.flushed_through = self._read_state()
        segments = self.segments()
        self.last_seq = max([self.flushed_through, *(s for s, _ in segments)])
        # Kept as a running total: the metrics read it on every ingest, a listing is not free.
        self._bytes = sum(p.stat().st_size for _, p in segments)

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def _read_state(self) -> int:
        try:
            return int(json.loads(self.state_path.read_text())["flushed_through"])
        except FileNotFoundError:
            return 0

    def set_flushed_through(self, seq: int) -> None:
        write_json_atomic(self.state_path, {"flushed_through": seq})
        self.flushed_through = seq

    def segments(self, after: int = 0) -> list[tuple[int, Path]]:
        out = []
        for p in self.root.glob("*.arrow"):
            try:
                seq = int(p.stem)
            except ValueError:
                continue
            if seq > after:
                out.append((seq, p))
        return sorted(out)

    def append(self, data: pa.Table) -> int:
        """Durably write one batch; returns its sequence number. Only then may it be acked."""
        with self._lock:
            seq = self.last_seq + 1
            path = self.root / f"{seq:012d}.arrow"
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as fh:
                with ipc.new_file(fh, data.schema) as writer:
                    writer.write_table(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(self.root)
            self.last_seq = seq
            self._bytes += path.stat().st_size
            return seq

    @staticmethod
    def read(path: Path) -> pa.Table:
        with pa.memory_map(str(path), "r") as source:
            return ipc.open_file(source).read_all()

    def delete_through(self, seq: int) -> None:
        for s, p in self.segments():
            if s <= seq:
                with contextlib.suppress(FileNotFoundError):
                    size = p.stat().st_size
                    p.unlink()
                    with self._lock:
                        self._bytes -= size

    def size_bytes(self) -> int:
        return max(0, self._bytes)
