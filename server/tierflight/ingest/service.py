"""Bulk ingest over Flight SQL, the durable hot tail, and its flush to the storage tiers.

ingest  validate the whole batch → WAL append + fsync → hot tail → merge rollup states →
        acknowledge. Serialized per table, so the WAL order is the visibility order.
flush   (size or age threshold, or shutdown) publish the hot rows as Parquet/Iceberg files:
        1. write the files under names no reader lists (and cold files, not yet committed);
        2. write a journal naming them and the WAL sequence they cover;
        3. commit cold files to Iceberg (tagged with the sequence), rename warm files into
           place, and drop the rows from the hot tail - all under the table's swap lock,
           which statements hold while they plan and start;
        4. move the WAL's flushed mark, delete its segments, snapshot the rollups, drop the
           journal. recover() finishes a flush a crash interrupted, then replays the WAL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tierflight.core.config import IngestConfig, TableConfig
from tierflight.core.durable import write_json_atomic
from tierflight.core.errors import ConfigError, InvalidArgument, NotFound, PermissionDenied
from tierflight.core.log import get_logger
from tierflight.core.names import Kind, Names
from tierflight.core.rwlock import RWLock
from tierflight.core.threads import lower_thread_priority
from tierflight.ingest.dimension import dimension_mode, ingest_dimension, read_bounded
from tierflight.ingest.tables import (
    FLUSH_JOURNAL,
    FLUSH_THROUGH,
    INGEST_LOCK_PATIENCE,
    IngestTables,
    TableIngest,
    publish_files,
    write_journal_names,
)
from tierflight.ingest.validate import validate_batch
from tierflight.ingest.wal import WriteAheadLog
from tierflight.rollups.registry import RollupDelta, RollupState, StagedDelta
from tierflight.tiers.dimension import DimensionStore
from tierflight.tiers.evolution import arrow_schema, conform, plan_changes

log = get_logger("tierflight.ingest")

__all__ = ["FLUSH_JOURNAL", "FLUSH_THROUGH", "INGEST_LOCK_PATIENCE", "IngestService", "IngestSettings"]

# Flight SQL TableDefinitionOptions (FlightSql.proto).
IF_NOT_EXIST_CREATE = 1
IF_EXISTS_FAIL = 1
IF_EXISTS_REPLACE = 3


# The [ingest] section, parsed and checked by tierflight.core.config.
IngestSettings = IngestConfig


# Statements that finished this recently count as running (a dashboard sends them in bursts).
STATEMENTS_RECENT_S = 0.25


class RollupMerge(Protocol):
    """What ingest does with the loaded rollups (rollups.registry.RollupRegistry): merge a
    batch's states, replay the WAL into them, snapshot them after a flush."""

    @property
    def content_lock(self) -> AbstractContextManager[Any]:
        """Re-entrant; held while states are staged and committed (and snapshots compact)."""

    @property
    def hot_merged(self) -> dict[str, int]:
        """Per table: the hot rows whose states are merged."""

    def all_states(self, table: str) -> list[RollupState]: ...
    def compute_delta(
        self, table_name: str, data: pa.Table, through: int | None = None, states: Sequence[RollupState] | None = None
    ) -> RollupDelta: ...
    def apply_delta(self, delta: RollupDelta) -> None: ...
    def stage_delta(self, delta: RollupDelta) -> StagedDelta: ...
    def skip_delta(self, table_name: str, rows: int, reason: str) -> None: ...
    def widen(self, table_name: str) -> None:
        """A column of the table was widened (tiers.evolution): its states follow."""
    def compact_grown(self, table_name: str) -> list[str]: ...
    def snapshot(self, table_name: str) -> None: ...
    def wal_needed_after(self, table_name: str) -> int | None: ...
    def unsnapshotted(self, table: str) -> bool: ...


class StatementActivity(Protocol):
    """Whether statements run (the executor): ingest then paces its acknowledgements."""

    def busy(self, within: float) -> bool: ...


class IngestObserver(Protocol):
    """Told of acknowledged rows and the WAL's size (metrics)."""

    def record_ingest(self, rows: int) -> None: ...
    def set_wal_bytes(self, n: int) -> None: ...


def _ascending(values: pa.ChunkedArray) -> bool:
    """Whether ``values`` never decrease (batches often arrive in time order)."""
    if len(values) < 2 or values.null_count:
        return len(values) < 2
    flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return bool(pc.all(pc.greater_equal(flat.slice(1), flat.slice(0, len(flat) - 1))).as_py())


class IngestService:
    """Ingest, flush and WAL replay over ``tables`` (built first, see ingest.tables): what it
    changes it publishes under ``swap_lock``, merging into ``rollups`` and telling the
    router through ``invalidate``; a batch that evolves a table's schema (tiers.evolution) is
    announced through ``schema_changed`` (under the swap lock); ``statements`` paces it;
    ``observer`` counts."""

    def __init__(
        self,
        settings: IngestConfig,
        tables: IngestTables,
        *,
        names: Names,
        rollups: RollupMerge,
        invalidate: Callable[[], None],
        schema_changed: Callable[[str], None],
        dimensions: Mapping[str, DimensionStore],
        statements: StatementActivity,
        swap_lock: RWLock,
        current_time: Callable[[], dt.datetime],
        observer: IngestObserver | None = None,
    ) -> None:
        self.settings: IngestSettings = settings
        self.wal_tables = tables
        self.tables = tables.tables
        self.names = names
        self.rollups = rollups
        self.invalidate = invalidate
        self.schema_changed = schema_changed
        self.dimensions = dimensions
        self.statements = statements
        self.swap_lock = swap_lock
        self.current_time = current_time
        self.observer = observer
        self._stop = threading.Event()
        self.rows_total = 0
        # Ingest, its WAL writes and flushes run on threads of lower priority ([ingest] nice):
        # on a busy machine statements keep their latency and ingest takes the CPU left.
        nice = self.settings.nice
        self._wal_writer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tierflight-wal", initializer=lower_thread_priority, initargs=(nice,)
        )
        self._appender = ThreadPoolExecutor(
            max_workers=max(1, len(self.tables)),
            thread_name_prefix="tierflight-ingest",
            initializer=lower_thread_priority,
            initargs=(nice,),
        )

    # -- start-up -------------------------------------------------------------------------

    def replay(self) -> int:
        """Replay unflushed WAL segments into the hot tail, and every segment a rollup
        snapshot does not hold yet into that rollup."""
        replayed = 0
        rollups = self.rollups
        for name, t in self.tables.items():
            flushed = t.wal.flushed_through
            states = [s for s in rollups.all_states(name) if s.status in ("active", "stale")]

            def held(s: Any, flushed: int = flushed) -> int:
                if s.merged_through is not None:
                    return int(s.merged_through)
                # A build's snapshot holds what the files held when it was written.
                meta = s.meta
                return int(meta.files_through) if meta is not None and meta.files_through is not None else flushed

            segments = t.wal.segments(after=min([flushed, *(held(s) for s in states)]))
            present = {seq for seq, _ in segments}
            for s in states:
                if any(q not in present for q in range(held(s) + 1, flushed + 1)):
                    # Its snapshot is older than the WAL kept (a flush crashed before it
                    # was rewritten): it cannot be completed, so it is not used.
                    s.status = "stale"
                    log.warning("rollup_behind_wal", rollup=s.group.name, holds=held(s), flushed=flushed)
            for seq, path in segments:
                data = conform(WriteAheadLog.read(path), t.store.schema, t.store.registry.aliases())
                if seq > flushed:
                    t.store.hot.append(data, seq)
                    t.hot_bytes += data.nbytes
                    replayed += data.num_rows
                need = [s for s in states if s.status in ("active", "stale") and held(s) < seq]
                if need:
                    try:
                        delta = rollups.compute_delta(name, data, seq, need)
                    except Exception as exc:  # noqa: BLE001 - never stops the start (see below)
                        # Rows the table's config no longer accepts, or a merge DuckDB
                        # refuses: those rollups are left stale (the raw tiers answer for
                        # them, exactly) instead of keeping the server from starting.
                        for s in need:
                            s.status = "stale"
                        error = str(exc) if isinstance(exc, ConfigError) else repr(exc)
                        log.error("rollup_replay_refused", table=name, wal_sequence=seq, error=error)
                    else:
                        rollups.apply_delta(delta)
            rollups.hot_merged[name] = t.store.hot.rows
            if t.store.hot.rows:
                t.oldest_unflushed = time.monotonic()
        if replayed:
            log.info("wal_replayed", rows=replayed)
            self.invalidate()
        return replayed

    # -- ingest ---------------------------------------------------------------------------

    def ingest(self, cmd: Any, reader: Any, user: str) -> int:
        # The target resolves as a statement's table name does (any case, main schema,
        # the tierflight catalog): adbc_ingest("EVENTS", ...) appends to events.
        schema = cmd.schema if cmd.HasField("schema") and cmd.schema else None
        catalog = cmd.catalog if cmd.HasField("catalog") and cmd.catalog else None
        resolved = self.names.lookup(cmd.table, schema, catalog)
        if resolved is not None and resolved.kind is Kind.DIMENSION:
            return self._ingest_dimension(resolved.name, cmd, reader)
        if resolved is None or resolved.kind is not Kind.TABLE or resolved.name not in self.tables:
            shown = ".".join(p for p in (catalog, schema, cmd.table) if p)
            known = ", ".join([*self.tables, *self.dimensions])
            raise NotFound(f"table {shown!r} is not configured for ingest; known: {known}")
        table_name = resolved.name
        opts = cmd.table_definition_options
        if opts.if_exists in (IF_EXISTS_FAIL, IF_EXISTS_REPLACE) or (opts.if_not_exist == IF_NOT_EXIST_CREATE and opts.if_exists == IF_EXISTS_FAIL):
            raise PermissionDenied(
                f"table {table_name} exists and is managed by the configuration: only mode='append' is allowed "
                "(create and replace are refused)"
            )
        if cmd.temporary:
            raise InvalidArgument("temporary tables are not supported; ingest appends to configured tables")
        return self._appender.submit(self._read_and_append, table_name, reader).result()

    def _ingest_dimension(self, table_name: str, cmd: Any, reader: Any) -> int:
        """A dimension table's next version (ingest.dimension), on the low-priority thread."""
        if cmd.temporary:
            raise InvalidArgument("temporary tables are not supported; ingest loads configured tables")
        mode = dimension_mode(table_name, cmd.table_definition_options.if_exists)
        store = self.dimensions[table_name]
        limit = self.settings.max_dimension_bytes

        def run() -> int:
            data = read_bounded(reader, table_name, limit)
            return ingest_dimension(store, data, mode, self.swap_lock, self.invalidate, limit)

        return self._appender.submit(run).result()

    def _read_and_append(self, table_name: str, reader: Any) -> int:
        # Decoding the stream is ingest work too: on the low-priority thread.
        started = time.perf_counter()
        data = reader.read_all()
        read_ms = (time.perf_counter() - started) * 1000
        if read_ms > 100:
            log.info("ingest_read_slow", table=table_name, rows=data.num_rows, ms=round(read_ms, 1))
        rows = self.append(table_name, data)
        self._yield_to_statements(rows, started)
        return rows

    def _yield_to_statements(self, rows: int, started: float) -> None:
        """While statements run, hold the acknowledgement (the rows are durable and visible
        already) so that ingest takes at most [ingest] yield_rows_per_s: on a small machine
        its CPU is what statements lose, and nice levels do not stop a thread that holds the
        GIL. Alone it runs at full speed. The appender runs one batch of a table at a time, so
        holding it paces all of that table's clients together."""
        rate = self.settings.yield_rows_per_s
        if rate <= 0 or not self.statements.busy(within=STATEMENTS_RECENT_S):
            return
        wait = started + rows / rate - time.perf_counter()
        if wait > 0:
            time.sleep(min(wait, 1.0))

    def append(self, table_name: str, data: pa.Table) -> int:
        started = time.perf_counter()
        t = self.tables[table_name]
        changes = plan_changes(data.schema, t.store.table, t.store.registry.former_names)
        if changes:
            # The schema changes with the batch: validated and applied under the table's lock,
            # so no other batch of the table evolves it in between.
            with t.lock:
                clean, seq, timings = self._evolve_and_append(t, data, started)
            return self._appended(t, table_name, clean, seq, started, timings)
        clean = self._validate(data, t.store.table, t.store.schema)
        if clean.num_rows == 0:
            return 0
        validated = time.perf_counter()
        with t.lock:
            seq, timings = self._append_locked(t, table_name, clean, started, validated)
        return self._appended(t, table_name, clean, seq, started, timings)

    def _validate(self, data: pa.Table, table: TableConfig, schema: pa.Schema) -> pa.Table:
        now = self.current_time()
        return validate_batch(data, table, schema, now, self.settings.max_past, self.settings.max_future)

    def _evolve_and_append(self, t: TableIngest, data: pa.Table, started: float) -> tuple[pa.Table, int, dict[str, float]]:
        """Apply a batch's schema changes, then append it (the caller holds the table's lock).

        The whole batch is validated against the evolved schema first: a batch refused for
        any reason changes nothing. The change is recorded durably (tiers.evolution) before
        the batch reaches the WAL, so a replay after a crash reads the batch under a schema
        that has its columns; a crash between the two leaves the columns added and empty.
        """
        store = t.store
        name = store.table.name
        changes = plan_changes(data.schema, store.table, store.registry.former_names)  # again: another batch may have evolved it
        prospective = store.registry.with_changes(changes).effective(store.base) if changes else store.table
        clean = self._validate(data, prospective, arrow_schema(prospective))
        if changes:
            evolved = store.evolve(changes)
            # content_lock before the swap lock, as a batch's commit takes them.
            with self.rollups.content_lock, self.swap_lock.write(patience=INGEST_LOCK_PATIENCE):
                store.apply_schema(evolved)
                if any(not c.added for c in changes):
                    self.rollups.widen(name)
                self.schema_changed(name)
                self.invalidate()
            log.info("schema_evolved", table=name, version=store.registry.version, changes=[c.describe() for c in changes])
        if clean.num_rows == 0:
            return clean, 0, {}
        seq, timings = self._append_locked(t, name, clean, started, started)
        return clean, seq, timings

    def _append_locked(
        self, t: TableIngest, table_name: str, clean: pa.Table, started: float, validated: float
    ) -> tuple[int, dict[str, float]]:
        """WAL, rollup states and hot tail for a validated batch (the caller holds t.lock)."""
        locked = time.perf_counter()
        # The WAL write (I/O, fsync) and the batch's rollup states (DuckDB) both release
        # the GIL: they run side by side. The states are computed outside the swap lock
        # (statements go on) and applied with the hot rows in one step under it, so a
        # statement sees the batch in both or in neither; the ack follows, so the next
        # statement gets routed answers that include it.
        durable = self._wal_writer.submit(t.wal.append, clean)
        failure = ""
        try:
            delta: RollupDelta | None = self.rollups.compute_delta(table_name, clean)
        except Exception as exc:  # noqa: BLE001 - the rows are durable; rollups go stale
            delta, failure = None, repr(exc)
        seq = durable.result()  # raises if the batch could not be made durable: no ack
        computed = time.perf_counter()
        if delta is not None:
            delta = dataclasses.replace(delta, through=seq)
        # content_lock before the swap lock: a snapshot compacting a rollup holds it,
        # and statements must not queue behind an ingest that waits for it. The states
        # are inserted before the swap lock, in a transaction statements cannot see, and
        # committed under it together with the hot rows.
        with self.rollups.content_lock:
            staged = None
            if delta is not None:
                try:
                    staged = self.rollups.stage_delta(delta)
                except Exception as exc:  # noqa: BLE001 - the rows are durable; rollups go stale
                    failure = repr(exc)
            staged_at = time.perf_counter()
            with self.swap_lock.write(patience=INGEST_LOCK_PATIENCE):
                holding = time.perf_counter()
                try:
                    t.store.hot.append(clean, seq)
                except BaseException:
                    if staged is not None:
                        staged.rollback()  # no open transaction left behind the failure
                    raise
                if staged is not None:
                    try:
                        staged.commit()
                    except Exception as exc:  # noqa: BLE001 - as above: answered raw until rebuilt
                        staged, failure = None, repr(exc)
                if staged is None:
                    self.rollups.skip_delta(table_name, clean.num_rows, failure)
                self.invalidate()
                released = time.perf_counter()
        applied = time.perf_counter()
        t.hot_bytes += clean.nbytes
        if t.oldest_unflushed is None:
            t.oldest_unflushed = time.monotonic()
        timings = {
            "validate_ms": validated - started,
            "lock_wait_ms": locked - validated,
            "wal_and_states_ms": computed - locked,
            "apply_ms": applied - computed,
            # Of apply: inserting the states (statements go on), waiting for the swap lock,
            # and holding it (statements wait).
            "stage_ms": staged_at - computed,
            "swap_wait_ms": holding - staged_at,
            "swap_hold_ms": released - holding,
        }
        return seq, timings

    def _appended(
        self, t: TableIngest, table_name: str, clean: pa.Table, seq: int, started: float, timings: dict[str, float]
    ) -> int:
        """After the table's lock: compaction, metrics, the log line, a due flush."""
        if clean.num_rows == 0:
            return 0
        applied = time.perf_counter()
        # Outside the table's lock: the next batch's WAL write and states go on meanwhile.
        compacted = self.rollups.compact_grown(table_name)
        self.rows_total += clean.num_rows
        if self.observer is not None:
            self.observer.record_ingest(clean.num_rows)
            self.observer.set_wal_bytes(self.wal_bytes())
        done = time.perf_counter()
        log.info(
            "ingest",
            table=table_name,
            rows=clean.num_rows,
            seq=seq,
            ms=round((done - started) * 1000, 1),
            **{k: round(v * 1000, 1) for k, v in timings.items()},
            compact_ms=round((done - applied) * 1000, 1),
            compacted=compacted or None,
        )
        if self._due(t) and not t.flush_lock.locked():
            threading.Thread(target=self._background_flush, args=(table_name,), daemon=True).start()
        return int(clean.num_rows)

    # -- flush ----------------------------------------------------------------------------

    def _due(self, t: TableIngest) -> bool:
        if not t.store.hot.rows:
            return False
        age = time.monotonic() - (t.oldest_unflushed or time.monotonic())
        return (
            t.store.hot.rows >= self.settings.flush_rows
            or t.hot_bytes >= self.settings.flush_bytes
            or age >= self.settings.flush_age.total_seconds()
        )

    def flush(self, table_name: str, wait: bool = True, snapshot: bool = False) -> int:
        """Write the hot tail to Parquet (or Iceberg, for late rows) and publish it. Ingest
        goes on meanwhile: only reading the rows to write holds the ingest lock."""
        from tierflight.tiers.maintenance import maintenance_lock

        t = self.tables[table_name]
        if not t.flush_lock.acquire(blocking=wait):
            return 0  # a flush is running; it or the next one takes these rows
        try:
            # The maintenance lock keeps a demotion from moving the day this flush writes into.
            with maintenance_lock(t.store):
                with t.lock:
                    through = t.wal.last_seq
                    if through <= t.wal.flushed_through or not t.store.hot.rows:
                        return 0
                    data = t.store.hot.read(through)
                journal = self._write_files(t, data, through)
                self._publish(t, journal, force_snapshot=snapshot)
                with t.lock:
                    t.hot_bytes = max(0, t.hot_bytes - data.nbytes)
                    t.oldest_unflushed = time.monotonic() if t.store.hot.rows else None
                return int(data.num_rows)
        finally:
            t.flush_lock.release()

    def _write_files(self, t: TableIngest, data: pa.Table, through: int) -> dict[str, Any]:
        store = t.store
        until = store.cold_until()
        # Sorted by time for pruning, all days at once: one copy of the rows (a filter and a
        # sort per day made two), after which each day is a slice. With Arrow, on this
        # (low-priority) thread: Polars would be twice as fast on both cores, taking them
        # from statements.
        ts = data[store.table.time_column]
        if not _ascending(ts):
            data = data.take(pc.sort_indices(ts))
        days = pc.cast(data[store.table.time_column], pa.date32()).to_numpy()
        starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]]) if len(days) else np.array([], np.int64)
        warm: list[tuple[str, str]] = []
        cold: list[str] = []
        for start, stop in zip(starts.tolist(), [*starts[1:].tolist(), len(days)], strict=True):
            day = days[start].astype(object)
            # The declared nullability ("required" in Iceberg).
            rows = conform(data.slice(start, stop - start), store.schema)
            name = f"part-wal-{through:012d}-{uuid.uuid4().hex[:8]}.parquet"
            if until is not None and day < until:
                # A late row for a day already in Iceberg goes to Iceberg (registered at publish).
                location, _ = store.write_cold_file(day, name, rows)
                cold.append(location)
            else:
                # Staged under a name the warm listing skips; renamed into place at publish.
                final = store.warm_location(day, name)
                staged = store.warm_location(day, f".{name}.flushing")
                store.write_object(rows, staged)
                warm.append((staged, final))
        journal = {"through": through, "warm": warm, "cold": cold}
        write_json_atomic(store.root / FLUSH_JOURNAL, write_journal_names(journal, store))
        return journal

    def _snapshot(self, t: TableIngest, force: bool) -> None:
        """Rewrite the table's rollup snapshots, then forget the flushed WAL segments they
        hold. Under sustained ingest (the hot tail refills while a flush runs) the snapshots
        are rewritten every ``[ingest] snapshot_every``, not at every flush: that rewrites
        every rollup, and cost as much CPU as the flush itself. Between the two, snapshots lag
        the files, and the WAL keeps the flushed batches after the files they were taken
        with: after a crash, the start matches each snapshot's rows per partition plus those
        batches with the files, uses it, and merges in what it lacks (rollups.registry
        ``_source_matches`` and :meth:`replay`). A graceful shutdown snapshots first."""
        name = t.store.table.name
        if force or self._snapshot_due(t):
            self.rollups.snapshot(name)
            t.last_snapshot = time.monotonic()
        needed = self.rollups.wal_needed_after(name)
        t.wal.delete_through(t.wal.flushed_through if needed is None else min(needed, t.wal.flushed_through))

    def _snapshot_due(self, t: TableIngest) -> bool:
        return time.monotonic() - t.last_snapshot >= self.settings.snapshot_every.total_seconds()

    def snapshot_idle(self) -> None:
        """Snapshot rollups that hold merged rows their snapshots lack once ingest has stopped
        (no hot rows) or the interval passed; ``serve --workers`` followers and replicas serve
        the snapshots."""
        for t in self.tables.values():
            name = t.store.table.name
            if not self.rollups.unsnapshotted(name):
                continue
            if t.store.hot.rows and not self._snapshot_due(t):
                continue
            if t.flush_lock.acquire(blocking=False):
                try:
                    self._snapshot(t, force=True)
                finally:
                    t.flush_lock.release()

    def _publish(self, t: TableIngest, journal: dict[str, Any], force_snapshot: bool = False) -> None:
        """Make a flush's files the tiers' and drop the rows from the hot tail (the hot tail
        and rollups hold them too); snapshot the rollups when due (see _snapshot) and forget
        the flushed WAL segments."""
        store = t.store
        name = store.table.name
        through = int(journal["through"])

        def drop_flushed_rows() -> None:
            before = store.hot.rows
            store.hot.delete_through(through)
            # Every flushed row was merged before the flush read it.
            merged = self.rollups.hot_merged
            merged[name] = max(0, merged.get(name, 0) - (before - store.hot.rows))
            self.invalidate()

        def snapshot() -> None:
            self._snapshot(t, force=force_snapshot or not store.hot.rows)

        publish_files(t, journal, self.swap_lock, under_lock=drop_flushed_rows, before_done=snapshot)

    def _background_flush(self, table_name: str) -> None:
        lower_thread_priority(self.settings.nice)
        self.flush(table_name, wait=False)

    def flush_all(self) -> None:
        """Flush every table and snapshot its rollups (shutdown, the CLI, tests)."""
        for name, t in self.tables.items():
            if not self.flush(name, snapshot=True):
                with t.flush_lock:
                    if self.rollups.unsnapshotted(name):
                        self._snapshot(t, force=True)

    def start_background(self, interval: float = 1.0) -> None:
        def loop() -> None:
            lower_thread_priority(self.settings.nice)
            while not self._stop.wait(interval):
                for name, t in self.tables.items():
                    try:
                        if self._due(t):
                            self.flush(name, wait=False)
                    except Exception as exc:  # noqa: BLE001 - retried next round; the WAL keeps the rows
                        log.error("flush_failed", table=name, error=repr(exc))
                try:
                    self.snapshot_idle()
                except Exception as exc:  # noqa: BLE001 - retried next round; the WAL keeps the rows
                    log.error("snapshot_failed", error=repr(exc))

        threading.Thread(target=loop, name="tierflight-flush", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._appender.shutdown(wait=True)
        self._wal_writer.shutdown(wait=True)

    def wal_bytes(self) -> int:
        return self.wal_tables.wal_bytes()
