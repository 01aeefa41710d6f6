"""Rollup snapshots in an object store, for replicas that share them.

The node that builds or refreshes rollups writes each snapshot as an Arrow IPC object under
a fresh name, then replaces the manifest object (``<name>.json``): a PUT is atomic, so a
reader sees the old manifest or the new one, and the object it names is complete. Readers
poll the manifests (``[rollups] reload_interval``) and load what changed; the checksum in
the manifest is verified on every read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import uuid
from dataclasses import asdict

import pyarrow as pa
import pyarrow.ipc as ipc

from tierflight.rollups.snapshot import SnapshotError, SnapshotMeta, SourceState, new_meta
from tierflight.tiers.s3 import S3Settings, strip_scheme


class S3Snapshots:
    def __init__(self, s3: S3Settings, uri: str) -> None:
        self.s3 = s3
        self.where = uri.rstrip("/")
        self._prefix = strip_scheme(uri)

    def _key(self, name: str) -> str:
        return f"{self._prefix}/{name}"

    def _put(self, name: str, data: bytes | pa.Buffer) -> None:
        try:
            with self.s3.filesystem().open_output_stream(self._key(name)) as fh:
                fh.write(data)
        except OSError as exc:
            raise self.s3.unavailable(f"write rollup snapshot {self.where}/{name}", exc) from None

    def _get(self, name: str) -> bytes | None:
        try:
            with self.s3.filesystem().open_input_stream(self._key(name)) as fh:
                return bytes(fh.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.s3.unavailable(f"read rollup snapshot {self.where}/{name}", exc) from None

    def write(
        self,
        name: str,
        table: pa.Table,
        definition_hash: str,
        source: SourceState,
        watermark: dt.datetime | None,
        wal_through: int | None = None,
    ) -> SnapshotMeta:
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1 << 20)
        body = sink.getvalue()
        file = f"{name}-{uuid.uuid4().hex[:12]}.arrow"
        self._put(file, body)
        sha = hashlib.sha256(memoryview(body)).hexdigest()
        meta = new_meta(name, file, sha, table, definition_hash, source, watermark, wal_through)
        previous = self.read_meta(name)
        self._put(f"{name}.json", json.dumps(asdict(meta)).encode())
        if previous is not None and previous.file != meta.file:
            # A failed delete leaves an unreferenced object behind: harmless.
            with contextlib.suppress(OSError):
                self.s3.filesystem().delete_file(self._key(previous.file))
        return meta

    def read_meta(self, name: str) -> SnapshotMeta | None:
        raw = self._get(f"{name}.json")
        if raw is None:
            return None
        try:
            return SnapshotMeta(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def read(self, meta: SnapshotMeta) -> pa.Table:
        body = self._get(meta.file)
        where = f"{self.where}/{meta.file}"
        if body is None:
            raise SnapshotError(f"snapshot object {where} is missing")
        if hashlib.sha256(body).hexdigest() != meta.sha256:
            raise SnapshotError(f"snapshot object {where} does not match its checksum (truncated or corrupt)")
        try:
            return ipc.open_file(pa.BufferReader(body)).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise SnapshotError(f"snapshot object {where} cannot be read: {exc}") from None

    def remove(self, name: str) -> None:
        meta = self.read_meta(name)
        fs = self.s3.filesystem()
        with contextlib.suppress(OSError):
            fs.delete_file(self._key(f"{name}.json"))
            if meta is not None:
                fs.delete_file(self._key(meta.file))
