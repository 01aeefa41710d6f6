"""The durable side of ingest, per table: its WAL, its locks, and publishing a flush's files.

Built before the rollups load (they read what the WAL holds: :class:`IngestTables` is the
registry's ``FlushedBatches``), and able to finish a flush a crash interrupted before
anything else looks at the tiers (:func:`recover_flushes`). The ingest service (ingest,
flush, replay) is built on top of it once the rollups, router and executor exist.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tierflight.core.log import get_logger
from tierflight.core.rwlock import RWLock
from tierflight.ingest.wal import WriteAheadLog
from tierflight.tiers.relocate import relative_name, resolve_name
from tierflight.tiers.store import TableStore
from tierflight.tiers.warm import day_dir_name

log = get_logger("tierflight.ingest")

FLUSH_JOURNAL = "flush.json"
FLUSH_THROUGH = "tierflight.flush-through"
# How long an ingest's commit waits for a gap between statements before it makes them wait
# (see RWLock.write): a few statements' worth, so the ack is late by at most that.
INGEST_LOCK_PATIENCE = 0.05


def journal_names(journal: dict[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    """The flush journal with its file names mapped: stored relative to the data dir, so a
    data dir moved with a flush half done still finishes it (tiers.relocate)."""
    return {
        **journal,
        "warm": [[rename(staged), rename(final)] for staged, final in journal["warm"]],
        "cold": [rename(c) for c in journal["cold"]],
    }


def write_journal_names(journal: dict[str, Any], store: TableStore) -> dict[str, Any]:
    return journal_names(journal, partial(relative_name, store.config.data_dir))


class TableIngest:
    def __init__(self, store: TableStore) -> None:
        self.store = store
        self.wal = WriteAheadLog(store.root / "wal")
        self.lock = threading.Lock()  # one writer (ingest or flush) at a time
        self.oldest_unflushed: float | None = None
        self.hot_bytes = 0
        # One flush at a time, held from its first file to its last snapshot; ingest goes on.
        self.flush_lock = threading.Lock()
        self.last_snapshot = time.monotonic()


class IngestTables:
    """Every configured table's WAL and locks; what the rollup registry reads of the WAL
    (rollups.registry.FlushedBatches)."""

    def __init__(self, stores: Mapping[str, TableStore]) -> None:
        self.tables = {name: TableIngest(store) for name, store in stores.items()}

    def flushed_through(self, table: str) -> int:
        return self.tables[table].wal.flushed_through

    def flushed_rows_after(self, table: str, after: int) -> dict[str, int] | None:
        t = self.tables[table]
        flushed = t.wal.flushed_through
        segments = dict(t.wal.segments(after=after))
        if any(seq not in segments for seq in range(after + 1, flushed + 1)):
            return None
        rows: dict[str, int] = {}
        for seq in range(after + 1, flushed + 1):
            days = pc.cast(WriteAheadLog.read(segments[seq]).column(t.store.table.time_column), pa.date32())
            for entry in pc.value_counts(days).to_pylist():
                partition = day_dir_name(entry["values"])
                rows[partition] = rows.get(partition, 0) + int(entry["counts"])
        return rows

    def wal_bytes(self) -> int:
        return sum(t.wal.size_bytes() for t in self.tables.values())


def cold_committed(store: TableStore, through: int) -> bool:
    table = store.cold.table()
    for snap in table.snapshots():
        props = snap.summary.additional_properties if snap.summary is not None else {}
        if props.get(FLUSH_THROUGH) == str(through):
            return True
    return False


def publish_files(
    t: TableIngest,
    journal: dict[str, Any],
    swap_lock: RWLock,
    *,
    under_lock: Callable[[], None] | None = None,
    before_done: Callable[[], None] | None = None,
) -> None:
    """Make a flush's files the tiers' (``under_lock``: what changes with them, under the
    swap lock), move the WAL's flushed mark, run ``before_done``, then drop the journal."""
    store = t.store
    through = int(journal["through"])
    if journal["cold"] and not cold_committed(store, through):
        store.cold.add_files(journal["cold"], {"tierflight.operation": "flush", FLUSH_THROUGH: str(through)})
    # The files go into place and are listed before the swap lock: statements read the
    # view applied last, which changes only under the lock, together with the hot tail.
    for staged, final in journal["warm"]:
        if store.object_exists(staged):
            store.move_object(staged, final)
    listing = store.prepare_listing()
    # As an ingest commit: wait for a gap between statements before holding new ones back.
    with swap_lock.write(patience=INGEST_LOCK_PATIENCE):
        store.apply_listing(listing)
        if under_lock is not None:
            under_lock()
    store.announce_change()
    t.wal.set_flushed_through(through)
    if before_done is not None:
        before_done()
    (store.root / FLUSH_JOURNAL).unlink(missing_ok=True)
    log.info(
        "flush", table=store.table.name, through=through, warm_files=len(journal["warm"]), cold_files=len(journal["cold"])
    )


def recover_flushes(tables: IngestTables, swap_lock: RWLock) -> None:
    """Finish a flush a crash interrupted (before rollups load: it changes the tiers)."""
    for t in tables.tables.values():
        _finish_journal(t, swap_lock)


def _finish_journal(t: TableIngest, swap_lock: RWLock) -> None:
    path = t.store.root / FLUSH_JOURNAL
    if not path.exists():
        return
    store = t.store
    journal = journal_names(json.loads(path.read_text()), partial(resolve_name, store.config.data_dir))
    through = int(journal["through"])
    missing = [s for s, f in journal["warm"] if not store.object_exists(s) and not store.object_exists(f)]
    if missing or through <= t.wal.flushed_through:
        # Files never fully written (or already published): the WAL still has the rows.
        for staged, _ in journal["warm"]:
            store.delete_object(staged)
        if through > t.wal.flushed_through and not cold_committed(store, through):
            for c in journal["cold"]:
                store.delete_object(c, cold=True)
        path.unlink()
        return
    log.info("flush_recovered", table=t.store.table.name, through=through)
    # Not live: the hot tail and rollups do not hold the rows yet (replay comes after).
    publish_files(t, journal, swap_lock)
