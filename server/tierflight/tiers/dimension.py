"""Dimension tables: small keyed tables held in memory, stored as one versioned file each.

A dimension table (``[tables.<t>] kind = "dimension"``) has no time column, tiers or
rollups: it is loaded whole and replaced (or appended to) whole through ingest. Its rows
live in memory as one Arrow table and, in a server, as one DuckDB table per version
(:class:`DimensionTables`, named by the version: a statement planned on a version reads
that version from start to end). A new version's table is created before it is served and
the old one dropped once it is not; the raw planner splices the served version's table name
into the statements that read it, so nothing is registered per statement and a cached plan
or result names the version it read.

On disk, under ``<data dir>/<table>/dimension/``:

* ``v<N>.arrow``: version N, an Arrow IPC file, written under a temporary name, fsynced
  and renamed into place (with the directory fsynced);
* ``current.json``: the version served, replaced atomically after the file is in place.
  It is the commit point: a crash before it leaves the old version served, after it the
  new one; files it does not name are left-overs of an interrupted write and removed at the
  next start (by the writing process only: a read-only follower never deletes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tierflight.core.config import TableConfig
from tierflight.core.durable import fsync_dir, write_json_atomic
from tierflight.core.errors import InvalidArgument, StorageUnavailable
from tierflight.core.log import get_logger
from tierflight.tiers.evolution import arrow_schema

log = get_logger("tierflight.dimension")

POINTER = "current.json"
_SUFFIX = ".arrow"


@dataclass(frozen=True)
class DimensionVersion:
    """One immutable version of a dimension table's rows."""

    version: int
    data: pa.Table
    # The DuckDB table holding these rows (DimensionTables.install_dimension), or None where
    # no database keeps them (a reader outside the server).
    relation: str | None = None

    @property
    def rows(self) -> int:
        return int(self.data.num_rows)


class DimensionTables(Protocol):
    """Where a server keeps each served version as a DuckDB table (engine.database.Database)."""

    def install_dimension(self, table: str, version: int, data: pa.Table) -> str:
        """Create a table of ``data``; its qualified name, which no other install shares."""
        ...

    def drop_dimension(self, qualified: str) -> None: ...


def _file_name(version: int) -> str:
    return f"v{version:08d}{_SUFFIX}"


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


class DimensionStore:
    """One dimension table: the version served, and durable writes of the next one."""

    def __init__(
        self, data_dir: Path, table: TableConfig, *, writer: bool = True, tables: DimensionTables | None = None
    ) -> None:
        assert table.key is not None, "a dimension table has a key (config checks it)"
        self.table = table
        self.key: str = table.key
        self.schema = arrow_schema(table)
        self.directory = data_dir / table.name / "dimension"
        self.registration = f"__tf_dim_{table.name}"
        # One replace or append at a time: each builds on the version before it.
        self.write_lock = threading.Lock()
        self._writer = writer
        self._tables = tables
        self._pointer_seen: tuple[int, int] | None = None
        self._current = self._installed(self._load())
        if writer:
            self._remove_others(self._current.version)

    @property
    def current(self) -> DimensionVersion:
        return self._current

    # -- reading --------------------------------------------------------------------------

    def _read_pointer(self) -> int:
        path = self.directory / POINTER
        try:
            return int(json.loads(path.read_text())["version"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageUnavailable(f"dimension table {self.table.name}: {POINTER} is unreadable ({exc})") from None

    def _load(self) -> DimensionVersion:
        self._pointer_seen = _stat_key(self.directory / POINTER)
        version = self._read_pointer()
        if version == 0:
            return DimensionVersion(0, self.schema.empty_table())
        path = self.directory / _file_name(version)
        try:
            with pa.OSFile(str(path)) as fh:
                data = pa.ipc.open_file(fh).read_all()
        except (OSError, pa.ArrowInvalid) as exc:
            raise StorageUnavailable(f"dimension table {self.table.name}: version {version} is unreadable ({exc})") from None
        if not data.schema.equals(self.schema):
            # The configured columns changed since it was written: keep what still fits.
            try:
                data = data.select(self.schema.names).cast(self.schema)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StorageUnavailable(
                    f"dimension table {self.table.name}: stored version {version} does not match the configured "
                    f"columns ({exc}); load it again with mode='replace'"
                ) from None
        return DimensionVersion(version, data)

    def changed_on_disk(self) -> DimensionVersion | None:
        """Another process's newer version, read (not yet served), or None (a cheap stat)."""
        if _stat_key(self.directory / POINTER) == self._pointer_seen:
            return None
        loaded = self._load()
        return self._installed(loaded) if loaded.version != self._current.version else None

    def _installed(self, version: DimensionVersion) -> DimensionVersion:
        """``version`` with its DuckDB table created (where the server keeps one)."""
        if self._tables is None:
            return version
        relation = self._tables.install_dimension(self.table.name, version.version, version.data)
        return dataclasses.replace(version, relation=relation)

    def discard(self, version: DimensionVersion) -> None:
        """Drop the table of a version that will not be served (a write that failed after it)."""
        if self._tables is not None and version.relation is not None and version.relation != self._current.relation:
            self._tables.drop_dimension(version.relation)

    # -- writing --------------------------------------------------------------------------

    def combined(self, clean: pa.Table, *, append: bool) -> pa.Table:
        """The next version's rows: ``clean`` alone (replace) or after the current rows
        (append), refused naming the key value when a key is NULL or repeated."""
        name, key = self.table.name, self.key
        keys = clean[key]
        if keys.null_count:
            row = pc.index(pc.is_null(keys), True).as_py()
            raise InvalidArgument(f"ingest into {name}: key {key} is NULL at row {row}; nothing was written")
        counts = pc.value_counts(keys)
        repeated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
        if len(repeated):
            value = repeated[0]["values"].as_py()
            raise InvalidArgument(f"ingest into {name}: key {key} = {value!r} appears more than once; nothing was written")
        if not clean.schema.equals(self.schema):  # conformed already: only nullability differs
            clean = clean.cast(self.schema)
        if not append:
            return clean.combine_chunks()
        old = self._current.data
        present = pc.is_in(keys, value_set=old[key].combine_chunks()) if old.num_rows else None
        if present is not None and pc.any(present).as_py():
            row = pc.index(present, True).as_py()
            raise InvalidArgument(
                f"ingest into {name}: key {key} = {keys[row].as_py()!r} (row {row}) is already in the table; "
                "mode='append' adds new keys only (mode='replace' loads the whole table); nothing was written"
            )
        return pa.concat_tables([old, clean]).combine_chunks()

    def write(self, data: pa.Table) -> DimensionVersion:
        """Make ``data`` the next version on disk (durable when this returns). The caller
        holds ``write_lock`` and serves the result with :meth:`serve`. Its DuckDB table is
        created first: once the version is durable, serving it cannot fail."""
        if not self._writer:
            raise InvalidArgument(f"dimension table {self.table.name} is read-only in this process")
        version = self._installed(DimensionVersion(self._current.version + 1, data))
        try:
            self._write_file(version.version, data)
        except BaseException:
            self.discard(version)
            raise
        return version

    def _write_file(self, version: int, data: pa.Table) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / _file_name(version)
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as raw:
            with pa.ipc.new_file(raw, data.schema) as ipc:
                ipc.write_table(data)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
        fsync_dir(self.directory)
        write_json_atomic(self.directory / POINTER, {"version": version, "file": final.name, "rows": data.num_rows})
        self._pointer_seen = _stat_key(self.directory / POINTER)

    def serve(self, version: DimensionVersion) -> None:
        """Serve ``version`` from now on (the caller holds the swap lock's write side, so
        no statement is between its plan and its start): the old version's table goes."""
        old, self._current = self._current, version
        if self._tables is not None and old.relation is not None and old.relation != version.relation:
            self._tables.drop_dimension(old.relation)

    def remove_old(self) -> None:
        if self._writer:
            self._remove_others(self._current.version)

    def _remove_others(self, keep: int) -> None:
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name == POINTER or path.name == _file_name(keep):
                continue
            if path.name.endswith((_SUFFIX, ".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    log.info("dimension_file_removed", table=self.table.name, file=path.name)
