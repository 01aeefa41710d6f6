"""Rollup snapshots: Arrow IPC files plus a manifest that makes replacement atomic.

``<data_dir>/rollups/<name>.json`` names the current data file and carries its SHA-256,
the definition hash, the watermark and the source fingerprint. A build writes a new data
file under a fresh name, then replaces the manifest (one rename): a crash mid-build leaves
the old manifest and its file untouched and usable. A file whose checksum does not match
its manifest is never served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.ipc as ipc


@dataclass(frozen=True)
class SnapshotMeta:
    name: str
    file: str
    sha256: str
    definition_hash: str
    fingerprint: str
    watermark: str | None  # ISO timestamp of the newest source row covered
    built_at: str
    rows: int
    bytes: int
    # The newest WAL sequence whose rows the snapshot holds (None: written by a build, which
    # covers exactly the flushed rows). On start, newer WAL batches are merged into it.
    wal_through: int | None = None
    # The source as it was: rows per partition (what the fingerprint hashes) and the WAL
    # sequence the files held. Files flushed since are explained by the WAL batches after
    # files_through (kept until a snapshot holds them), so a restart need not rebuild.
    files_through: int | None = None
    partition_rows: dict[str, int] | None = None

    @property
    def watermark_dt(self) -> dt.datetime | None:
        return dt.datetime.fromisoformat(self.watermark) if self.watermark else None


@dataclass(frozen=True)
class SourceState:
    """What a snapshot was computed from: the stored rows per partition (hot tail excluded)
    and the WAL sequence the files held then (None: not known, no WAL)."""

    partition_rows: Mapping[str, int]
    files_through: int | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.partition_rows)


def fingerprint_of(partition_rows: Mapping[str, int]) -> str:
    """Changes whenever the stored rows change. Rows per partition, not tiers or files:
    demotion and compaction move rows without changing them, and must not make every
    rollup stale."""
    h = hashlib.sha256()
    for partition in sorted(partition_rows):
        h.update(f"{partition}|{partition_rows[partition]}\n".encode())
    return h.hexdigest()[:16]


class SnapshotError(Exception):
    """The snapshot is missing, truncated or corrupt; it must be rebuilt."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def new_meta(
    name: str,
    file: str,
    sha256: str,
    table: pa.Table,
    definition_hash: str,
    source: SourceState,
    watermark: dt.datetime | None,
    wal_through: int | None,
) -> SnapshotMeta:
    return SnapshotMeta(
        name=name,
        file=file,
        sha256=sha256,
        definition_hash=definition_hash,
        fingerprint=source.fingerprint,
        watermark=watermark.isoformat() if watermark else None,
        built_at=dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(),
        rows=table.num_rows,
        bytes=table.nbytes,
        wal_through=wal_through,
        files_through=source.files_through,
        partition_rows=dict(source.partition_rows),
    )


def write_snapshot(
    root: Path,
    name: str,
    table: pa.Table,
    definition_hash: str,
    source: SourceState,
    watermark: dt.datetime | None,
    wal_through: int | None = None,
) -> SnapshotMeta:
    root.mkdir(parents=True, exist_ok=True)
    data_path = root / f"{name}-{uuid.uuid4().hex[:12]}.arrow"
    with pa.OSFile(str(data_path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)
    with open(data_path, "rb+") as fh:
        os.fsync(fh.fileno())
    meta = new_meta(name, data_path.name, _sha256(data_path), table, definition_hash, source, watermark, wal_through)
    manifest = root / f"{name}.json"
    tmp = manifest.with_suffix(".json.tmp")
    _fsync_write(tmp, json.dumps(asdict(meta)).encode())
    previous = read_meta(root, name)
    os.replace(tmp, manifest)
    if previous is not None and previous.file != meta.file:
        (root / previous.file).unlink(missing_ok=True)
    return meta


def read_meta(root: Path, name: str) -> SnapshotMeta | None:
    try:
        data = json.loads((root / f"{name}.json").read_text())
        return SnapshotMeta(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None


def read_snapshot(root: Path, meta: SnapshotMeta, verify: bool = True) -> pa.Table:
    path = root / meta.file
    if not path.exists():
        raise SnapshotError(f"snapshot file {path} is missing")
    if verify and _sha256(path) != meta.sha256:
        raise SnapshotError(f"snapshot file {path} does not match its checksum (truncated or corrupt)")
    try:
        source = pa.memory_map(str(path), "r")
        return ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SnapshotError(f"snapshot file {path} cannot be read: {exc}") from None


class Snapshots(Protocol):
    """Where a registry keeps its snapshots: the data dir, or an object store (see
    rollups.snapshot_s3) when replicas on several machines share them."""

    where: str

    def write(
        self,
        name: str,
        table: pa.Table,
        definition_hash: str,
        source: SourceState,
        watermark: dt.datetime | None,
        wal_through: int | None = None,
    ) -> SnapshotMeta: ...

    def read_meta(self, name: str) -> SnapshotMeta | None: ...

    def read(self, meta: SnapshotMeta) -> pa.Table: ...

    def remove(self, name: str) -> None:
        """Delete a rollup's snapshot (manifest first: a crash between leaves only an
        unreferenced data file). Failures are left behind, never raised."""


class LocalSnapshots:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def write(
        self,
        name: str,
        table: pa.Table,
        definition_hash: str,
        source: SourceState,
        watermark: dt.datetime | None,
        wal_through: int | None = None,
    ) -> SnapshotMeta:
        return write_snapshot(self.root, name, table, definition_hash, source, watermark, wal_through)

    def read_meta(self, name: str) -> SnapshotMeta | None:
        return read_meta(self.root, name)

    def read(self, meta: SnapshotMeta) -> pa.Table:
        return read_snapshot(self.root, meta)

    def remove(self, name: str) -> None:
        meta = read_meta(self.root, name)
        with contextlib.suppress(OSError):
            (self.root / f"{name}.json").unlink(missing_ok=True)
            if meta is not None:
                (self.root / meta.file).unlink(missing_ok=True)
