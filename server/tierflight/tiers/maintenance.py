"""Tier maintenance: demote aged warm partitions into Iceberg, compact small files.

Each step is ordered so that a crash between any two of them loses no row and shows none
twice, and a re-run finishes the job:

demotion   1. copy the warm files of the aged days into the Iceberg table's data location
              (on one local disk: hard links) and register them in ONE commit (tagged with
              the days it carries);
           2. move the boundary ``cold_until`` (atomic file replace): from now on the cold
              tier serves those days and the warm tier ignores them;
           3. swap the new view in (this process) and bump the table's generation (servers
              in other processes re-list on their next statement), wait ``settle`` seconds
              so statements planned against the old view have opened their files, then move
              the warm day directories to the trash (emptied after a grace period).
           A crash after 1 leaves Iceberg holding days it does not serve yet; the re-run
           sees the commit's tag and skips straight to 2.
compaction 1. write one file with the partition's rows under a temporary name;
           2. journal the swap, rename the new file into place (from here listings show the
              new file and hide the old ones);
           3. as in demotion: swap the view in, bump the generation, settle, then trash the
              old files and drop the journal.

A file that cannot be read or has the wrong schema stops a demotion before anything changes
(the error names the file); compaction skips its partition and logs it.

The steps are written once against :class:`~tierflight.tiers.objects.Objects`, so they run
the same on local disks and on S3 (warm prefix, Iceberg on a REST catalog, or any mix). On
S3 a "rename" is a copy then a delete, which the order above already survives: a copied
merged file is hidden until its journal names it, and a day half moved to the trash is past
the boundary, so no listing serves it. The lock is a local file lock: when several servers
share one bucket, let one of them run maintenance (``[tiers] maintenance_interval = "0s"``
on the others).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tierflight.core.errors import StorageUnavailable
from tierflight.core.log import get_logger
from tierflight.tiers.evolution import conform, stored_name
from tierflight.tiers.objects import Objects
from tierflight.tiers.store import TableStore
from tierflight.tiers.warm import COMPACTION_JOURNAL, day_dir_name, inspect_file

log = get_logger("tierflight.maintenance")

FaultHook = Callable[[str], None]
DEMOTED_DAYS = "tierflight.demoted-days"
TRASH_GRACE_SECONDS = 600.0
# How long replaced files stay in place after the new view is published: a statement planned
# against the old view opens its files within this (DuckDB opens them as the scan reaches them).
SETTLE_SECONDS = 1.0


def _no_fault(step: str) -> None:
    fault = os.environ.get("TIERFLIGHT_FAULT")
    if fault == step:
        # Test hook: die exactly here, as kill -9 would.
        os._exit(99)


@contextmanager
def maintenance_lock(store: TableStore) -> Iterator[None]:
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / ".maintenance.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def trash(store: TableStore, path: str) -> None:
    """Move a warm file or day directory to the trash (emptied after a grace period)."""
    name = path.rstrip("/").rpartition("/")[2]
    # Whole seconds rounded down: a stamp never lies ahead of the clock (rounded, it could by
    # half a second, and a trash emptied at once with no grace would keep the entry).
    store.warm.objects.move(path, f"{store.warm.trash_path}/{int(time.time())}-{uuid.uuid4().hex[:8]}-{name}")


def empty_trash(store: TableStore, grace_seconds: float = TRASH_GRACE_SECONDS) -> int:
    objects = store.warm.objects
    removed = 0
    now = time.time()
    for entry in objects.entries(store.warm.trash_path):
        try:
            stamp = float(entry.base_name.split("-", 1)[0])
        except ValueError:
            continue
        if now - stamp >= grace_seconds:
            objects.delete_tree(entry.path) if entry.type == pafs.FileType.Directory else objects.delete(entry.path)
            removed += 1
    return removed


def _committed_days(store: TableStore) -> set[str]:
    """Days already carried into Iceberg by a demotion commit (for the re-run after a crash)."""
    table = store.cold.table()
    days: set[str] = set()
    for snap in table.snapshots():
        summary = snap.summary
        value = summary.additional_properties.get(DEMOTED_DAYS) if summary is not None else None
        if value:
            days.update(value.split(","))
    return days


@dataclass(frozen=True)
class DemoteStats:
    days: int
    files: int
    rows: int
    seconds: float


def _publish(store: TableStore, settle: float) -> None:
    """Make the change visible here and to other processes, then let old plans drain."""
    store.refresh()
    store.bump_generation()
    if settle > 0:
        time.sleep(settle)


def _renamed_in(store: TableStore, path: str) -> bool:
    """Whether a warm file stores a column under a name it had before a rename."""
    aliases = store.registry.aliases()
    if not aliases:
        return False
    stored = pq.read_schema(path, filesystem=store.warm.objects.fs).names
    return any(stored_name(n, stored, aliases) not in (None, n) for n in store.schema.names)


def objects_read_all(store: TableStore, path: str) -> pa.Table:
    objects = store.warm.objects
    return objects.read_parquet(path, pq.read_schema(path, filesystem=objects.fs).names)


def demote(store: TableStore, fault: FaultHook = _no_fault, settle: float = SETTLE_SECONDS) -> DemoteStats:
    began = time.perf_counter()
    with maintenance_lock(store):
        boundary = store.warm_boundary()
        until = store.cold_until()
        warm = store.warm
        aged = [(day, path) for day, path in warm.days() if day < boundary]
        if not aged:
            return DemoteStats(0, 0, 0, time.perf_counter() - began)
        todo = [(d, p) for d, p in aged if until is None or d >= until]
        committed = _committed_days(store) if todo else set()
        pending = [(d, p) for d, p in todo if d.isoformat() not in committed]
        sources: list[tuple[dt.date, str]] = []
        rows = 0
        for day, path in pending:
            recover_compaction(store, path)
            for info in warm.live(path):
                src = info.path
                n, problem = inspect_file(src, store.schema, warm.objects.fs, store.registry.columns, store.registry.aliases())
                if problem:
                    raise StorageUnavailable(f"cannot demote {store.table.name} {day_dir_name(day)}: {problem}")
                sources.append((day, src))
                rows += n
        paths: list[str] = []
        for day, src in sources:
            # Named after the source (unique within its day): a re-run after a crash before
            # the commit copies over what it copied, so no unregistered copy is left behind.
            dst = store.cold_file_location(day, f"demoted-{src.rpartition('/')[2]}")
            if _renamed_in(store, src):
                # Iceberg registers a file by the current column names: one written before a
                # rename is rewritten under them (the rest are copied byte for byte).
                data = objects_read_all(store, src)
                store.write_object(conform(data, store.schema, store.registry.aliases()), dst, cold=True)
            else:
                warm.objects.copy(src, store.cold_objects, Objects.path(dst))
            paths.append(dst)
        fault("demote:copied")
        if paths:
            days = ",".join(d.isoformat() for d, _ in pending)
            store.cold.add_files(paths, {"tierflight.operation": "demote", DEMOTED_DAYS: days})
        fault("demote:committed")
        new_until = max(d for d, _ in aged) + dt.timedelta(days=1)
        if until is None or new_until > until:
            store.set_cold_until(new_until)
        fault("demote:boundary")
        _publish(store, settle)
        for _, path in aged:
            trash(store, path)
        store.refresh()
        log.info("demote", table=store.table.name, days=len(aged), files=len(paths), rows=rows)
        return DemoteStats(len(aged), len(paths), rows, time.perf_counter() - began)


@dataclass(frozen=True)
class CompactStats:
    partitions: int
    files_before: int
    files_after: int
    seconds: float


def recover_compaction(store: TableStore, day_dir: str) -> None:
    """Finish or undo a compaction a crash interrupted (see the module docstring)."""
    objects = store.warm.objects
    journal_path = f"{day_dir}/{COMPACTION_JOURNAL}"
    data = objects.read_json(journal_path)
    if isinstance(data, dict):
        if objects.exists(f"{day_dir}/{data['new']}"):
            for name in data["old"]:
                if objects.exists(f"{day_dir}/{name}"):
                    trash(store, f"{day_dir}/{name}")
        else:
            objects.delete(f"{day_dir}/{data['tmp']}")
    objects.delete(journal_path)
    # A merged file whose write finished but whose journal was never written: never listed.
    for orphan in objects.files(day_dir):
        base = orphan.rpartition("/")[2]
        if base.startswith(".") and base.endswith(".compacting"):
            objects.delete(orphan)


def _merge(store: TableStore, day_dir: str, files: list[str]) -> pa.Table | None:
    """The partition's rows in one table, or None if a file is unreadable or mis-shaped."""
    names = store.schema.names
    objects = store.warm.objects
    partition = day_dir.rpartition("/")[2]
    expected = 0
    for f in files:
        n, problem = inspect_file(f, store.schema, objects.fs, store.registry.columns, store.registry.aliases())
        if problem:
            log.warning("compact_skipped", table=store.table.name, partition=partition, problem=problem)
            return None
        expected += n
    parts = []
    for f in files:
        try:
            # A file written before the table evolved lacks its new columns: read as NULL.
            aliases = store.registry.aliases()
            stored = pq.read_schema(f, filesystem=objects.fs).names
            present = [s for n in names if (s := stored_name(n, stored, aliases)) is not None]
            parts.append(conform(objects.read_parquet(f, present).select(present), store.schema, aliases))
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt page: the footer was fine, the data is not
            log.warning("compact_skipped", table=store.table.name, partition=partition, file=objects.uri(f), error=repr(exc))
            return None
    merged = pa.concat_tables(parts).sort_by(store.table.time_column)
    if merged.num_rows != expected:
        raise StorageUnavailable(
            f"compaction of {objects.uri(day_dir)} read {merged.num_rows} rows where the footers say {expected}"
        )
    return merged


def compact_warm(
    store: TableStore,
    small_file_bytes: int = 64 << 20,
    fault: FaultHook = _no_fault,
    settle: float = SETTLE_SECONDS,
) -> CompactStats:
    """Rewrite every warm partition holding several files, some small, into one file.

    1. write the merged file under a name the tier does not list; 2. write a journal naming
    the new file and the old ones; 3. rename the new file into place (from here the tier
    lists the new file and hides the old ones, by the journal); 4. publish, settle, trash the
    old files; 5. drop the journal. A crash anywhere is finished or undone by recover_compaction.
    """
    began = time.perf_counter()
    before = 0
    done: list[str] = []
    warm = store.warm
    objects = warm.objects
    with maintenance_lock(store):
        for _day, path in warm.days():
            recover_compaction(store, path)
            live = warm.live(path)
            if len(live) < 2 or all(int(f.size or 0) >= small_file_bytes for f in live):
                continue
            files = [f.path for f in live]
            table = _merge(store, path, files)
            if table is None:
                continue
            name = f"part-{uuid.uuid4().hex}.parquet"
            tmp = f".{name}.compacting"
            objects.write_parquet(table, f"{path}/{tmp}", store.write_options(table.num_rows))
            fault("compact:written")
            journal = {"new": name, "tmp": tmp, "old": [f.base_name for f in live]}
            objects.write_json(f"{path}/{COMPACTION_JOURNAL}", journal)
            fault("compact:journal")
            objects.move(f"{path}/{tmp}", f"{path}/{name}")
            fault("compact:renamed")
            done.append(path)
            before += len(files)
        if done:
            _publish(store, settle)
            for path in done:
                recover_compaction(store, path)
        store.refresh()
    if done:
        log.info("compact", table=store.table.name, partitions=len(done), files_before=before, files_after=len(done))
    return CompactStats(len(done), before, len(done), time.perf_counter() - began)
