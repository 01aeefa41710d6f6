"""Table state every process serving a table must agree on: the cold/warm boundary
(``tiers.json``) and a generation marker that changes whenever the table's files change.

Local storage keeps both in the table's directory of the data dir (one machine: the
server, a CLI run, ``serve --workers``). When the warm tier is on S3 they live next to it
in the bucket, so replicas on other machines, each with its own local data dir, see the
same boundary and notice each other's changes. Checking S3 costs two small GETs, so it
happens at most every ``[storage] poll_interval``; a writer's own changes are seen at once.
Locally it costs two stat calls, made at most every LOCAL_POLL_S: every statement asks, and
each call into the OS hands the GIL to another thread of a busy server. Maintenance waits
a settle time (a second) before it removes what a stale view could still name.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from tierflight.core.durable import write_json_atomic
from tierflight.tiers.s3 import S3Settings, strip_scheme

BOUNDARY_FILE = "tiers.json"
GENERATION_FILE = ".generation"
LOCAL_POLL_S = 0.01


class TableState(Protocol):
    where: str

    def read(self) -> dict[str, Any]: ...

    def write(self, data: dict[str, Any]) -> None: ...

    def bump(self) -> None: ...

    def signature(self, fresh: bool = False) -> tuple[object, ...]: ...


class LocalTableState:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)
        self._cached: tuple[float, tuple[object, ...]] | None = None

    def read(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.root / BOUNDARY_FILE).read_text()))
        except FileNotFoundError:
            return {}

    def write(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / BOUNDARY_FILE, data)
        self._cached = None

    def bump(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / GENERATION_FILE).write_text(uuid.uuid4().hex)
        self._cached = None

    def signature(self, fresh: bool = False) -> tuple[object, ...]:
        now = time.monotonic()
        cached = self._cached
        if not fresh and cached is not None and now - cached[0] < LOCAL_POLL_S:
            return cached[1]
        out: list[object] = []
        for name in (BOUNDARY_FILE, GENERATION_FILE):
            try:
                st = os.stat(os.path.join(self.where, name))
            except FileNotFoundError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        sig = tuple(out)
        self._cached = (now, sig)
        return sig


class S3TableState:
    def __init__(self, s3: S3Settings, uri: str, poll_interval: float) -> None:
        self.s3 = s3
        self.where = uri.rstrip("/")
        self._prefix = strip_scheme(uri)
        self._poll = poll_interval
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[object, ...]] | None = None

    def _get(self, name: str) -> bytes | None:
        fs = self.s3.filesystem()
        try:
            with fs.open_input_stream(f"{self._prefix}/{name}") as fh:
                return bytes(fh.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.s3.unavailable(f"read {self.where}/{name}", exc) from None

    def _put(self, name: str, data: bytes) -> None:
        fs = self.s3.filesystem()
        try:
            # One PUT: readers see the old object or the new one, never a part.
            with fs.open_output_stream(f"{self._prefix}/{name}") as fh:
                fh.write(data)
        except OSError as exc:
            raise self.s3.unavailable(f"write {self.where}/{name}", exc) from None
        with self._lock:
            self._cached = None

    def read(self) -> dict[str, Any]:
        raw = self._get(BOUNDARY_FILE)
        return dict(json.loads(raw)) if raw else {}

    def write(self, data: dict[str, Any]) -> None:
        self._put(BOUNDARY_FILE, json.dumps(data).encode())

    def bump(self) -> None:
        self._put(GENERATION_FILE, uuid.uuid4().hex.encode())

    def signature(self, fresh: bool = False) -> tuple[object, ...]:
        now = time.monotonic()
        with self._lock:
            cached = self._cached
        if not fresh and cached is not None and now - cached[0] < self._poll:
            return cached[1]
        # Contents, not object times: S3 times have one-second resolution.
        sig = (self._get(BOUNDARY_FILE), self._get(GENERATION_FILE))
        with self._lock:
            self._cached = (now, sig)
        return sig
