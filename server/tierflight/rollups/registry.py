"""The hot tier's rollups: definitions, status, snapshots and their in-memory copies.

Loaded rollups live in DuckDB tables (``tf_rollup.main.<name>``, sorted by time so DuckDB's
zone maps slice by time before scanning); the router rewrites statements onto them. The
``tf_rollup`` database is in memory and compressed (see engine.database): each table is compressed
when it is installed, at a checkpoint, and merged-in rows until the next install.
"""

from __future__ import annotations

import array
import contextlib
import datetime as dt
import enum
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tierflight.core.config import Config
from tierflight.core.decimals import describe, first_violation
from tierflight.core.errors import ConfigError
from tierflight.core.log import get_logger
from tierflight.core.names import ROLLUP_DATABASE
from tierflight.core.sql import quote_ident
from tierflight.rollups.build import build_groups, source_state
from tierflight.rollups.database import RollupDatabase
from tierflight.rollups.definition import (
    RollupDef,
    StorageGroup,
    exact_sum_sql,
    parse_rollups,
    storage_groups,
)
from tierflight.rollups.snapshot import (
    LocalSnapshots,
    SnapshotError,
    SnapshotMeta,
    Snapshots,
    SourceState,
    fingerprint_of,
)
from tierflight.tiers.evolution import ARROW_TO_DUCK
from tierflight.tiers.store import TableStore

log = get_logger("tierflight.rollups")

# compact_grown leaves a rollup alone until its merged-in rows reach this many (and as many
# as it was installed with): below, scanning them costs less than compacting.
COMPACT_MIN_ROWS = 32_768

ROLLUPS_TABLE_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("table_name", pa.string()),
        ("dimensions", pa.list_(pa.string())),
        ("measures", pa.list_(pa.string())),
        ("status", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("built_at", pa.timestamp("us")),
        ("watermark", pa.timestamp("us")),
        ("hits", pa.int64()),
        # Background verification (rollups/verifier.py): when a sample of its groups was last
        # recomputed from the raw tiers, and how many of those groups differed.
        ("verified_at", pa.timestamp("us")),
        ("mismatches", pa.int64()),
        ("origin", pa.string()),
        ("last_hit", pa.timestamp("us")),
        ("saved_ms", pa.float64()),
    ]
)


class Origin(enum.StrEnum):
    CONFIG = "config"  # declared in the configuration: never dropped
    AUTO = "auto"  # built by autonomous mode (advisor.auto): dropped when it stops earning


class FlushedBatches(Protocol):
    """What the registry reads of the write-ahead log (ingest.service implements it)."""

    def flushed_through(self, table: str) -> int: ...

    def flushed_rows_after(self, table: str, after: int) -> Mapping[str, int] | None:
        """Rows per partition of the flushed batches after ``after`` (None: one is gone)."""
        ...


def bucket_times(starts: np.ndarray) -> array.array[int]:
    """A rollup's bucket starts (datetime64 values) as ``RollupState.times`` keeps them: sorted
    microseconds since the epoch, searched with bisect by the planner's row estimates (a
    numpy search lets go of the GIL, and under many statements getting it back waits behind
    them)."""
    return array.array("q", np.sort(starts.astype("datetime64[us]").astype(np.int64)))


@dataclass
class RollupState:
    group: StorageGroup
    members: tuple[RollupDef, ...]
    status: str = "pending"  # pending, building, active, stale, failed
    meta: SnapshotMeta | None = None
    rows: int = 0
    bytes: int = 0
    hits: int = 0
    error: str | None = None
    times: Any = None  # sorted bucket starts (microseconds since the epoch, an array of int64) for row estimates
    installed_rows: int = 0  # rows of the table as last installed (rows - this: merged deltas)
    watermark: dt.datetime | None = None  # newest row merged in since the snapshot
    # WAL sequence of the newest ingested batch merged in (None: the snapshot's wal_through).
    merged_through: int | None = None
    verified_at: dt.datetime | None = None
    # Groups that differed from the raw tiers at the last verification: the rollup is stale
    # (whatever allow_stale says) until a build replaces its rows.
    mismatches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    origin: Origin = Origin.CONFIG
    last_hit_s: float | None = None  # unix seconds (a datetime per hit cost the hot path)
    saved_ms: float = 0.0  # auto rollups: observed raw time of the statements it answered, less theirs

    @property
    def qualified(self) -> str:
        return f"{ROLLUP_DATABASE}.main.{quote_ident(self.group.name)}"

    @property
    def current_watermark(self) -> dt.datetime | None:
        """The newest source row the loaded rollup covers (snapshot or merged since)."""
        marks = [m for m in (self.meta.watermark_dt if self.meta else None, self.watermark) if m is not None]
        return max(marks) if marks else None

    @property
    def usable(self) -> bool:
        return self.status == "active"


def snapshot_store(config: Config) -> Snapshots:
    """``[rollups] snapshot_uri`` if set; else next to the warm tier when that is on S3 (so
    replicas share them); else ``<data_dir>/rollups``."""
    from tierflight.tiers.s3 import S3Settings, is_s3_uri

    uri = config.rollups.snapshot_uri or ""
    warm = config.storage.warm_uri or ""
    if not uri and is_s3_uri(warm):
        uri = f"{warm.rstrip('/')}/_rollups"
    if is_s3_uri(uri):
        from tierflight.rollups.snapshot_s3 import S3Snapshots

        return S3Snapshots(S3Settings.from_config(config.s3), uri)
    return LocalSnapshots(Path(uri).expanduser().absolute() if uri else config.data_dir / "rollups")


@dataclass(frozen=True)
class RollupDelta:
    """The states of one or more ingested batches, computed and not yet applied."""

    table: str
    states: tuple[RollupState, ...]
    tables: Mapping[str, pa.Table]
    watermark: dt.datetime | None
    rows: int
    through: int | None = None  # the newest WAL sequence among the batches


class StagedDelta:
    """A delta inserted in an open transaction (see :meth:`RollupRegistry.stage_delta`)."""

    def __init__(self, registry: RollupRegistry, delta: RollupDelta, cursor: duckdb.DuckDBPyConnection) -> None:
        self.registry = registry
        self.delta = delta
        self.cursor = cursor

    def commit(self) -> None:
        delta = self.delta
        try:
            self.cursor.commit()
        finally:
            self.cursor.close()
        for s in delta.states:
            table = delta.tables.get(s.group.name)
            with s.lock:
                if table is not None:
                    s.rows += table.num_rows
                    s.bytes += table.nbytes
                if delta.watermark is not None:
                    s.watermark = max(s.watermark or delta.watermark, delta.watermark)
                if delta.through is not None:
                    s.merged_through = max(s.merged_through or 0, delta.through)
        merged = self.registry.hot_merged
        merged[delta.table] = merged.get(delta.table, 0) + delta.rows

    def rollback(self) -> None:
        try:
            self.cursor.rollback()
        finally:
            self.cursor.close()


class RollupRegistry:
    def __init__(
        self, config: Config, database: RollupDatabase, stores: Mapping[str, TableStore], wal: FlushedBatches | None = None
    ) -> None:
        self.config = config
        self.database = database
        self.stores = stores
        self.wal = wal
        self.memory_budget = config.rollups.memory_budget
        self.allow_stale = config.rollups.allow_stale
        self.enabled = config.rollups.enabled
        self.snapshots: Snapshots = snapshot_store(config)
        self.states: dict[str, RollupState] = {}
        for table in config.tables.values():
            defs = parse_rollups(table)
            for group in storage_groups(defs):
                members = tuple(d for d in defs if d.name in group.members)
                self.states[group.name] = RollupState(group, members)
        self._lock = threading.Lock()
        # Rows of each table's hot tail already merged into its rollups.
        self.hot_merged: dict[str, int] = {}
        # Serialises changes to the loaded rollups' contents (a merge, a compaction), so a
        # snapshot is exactly the states merged up to its wal_through.
        self.content_lock = threading.RLock()
        # One compaction of a rollup's rows at a time (a snapshot's, or compact_grown's): each
        # swaps the table by row id.
        self._compacting = threading.Lock()
        # Ingested batches' states, and a snapshot's compaction, are computed on a DuckDB of
        # their own with one thread: they read only Arrow they are given, and the work stays
        # on the (low-priority) ingest or flush thread instead of taking the shared pool's
        # threads from statements.
        self._batch_db = duckdb.connect(config={"threads": 1, "enable_external_access": False})

    def close(self) -> None:
        self._batch_db.close()

    # -- rollups added and removed while serving (advisor.auto) --------------------------
    # ``states`` is replaced, never changed in place: statements iterate it without a lock.

    def add_state(self, state: RollupState) -> None:
        if state.group.name in self.states:
            raise ConfigError(f"a rollup named {state.group.name!r} exists already")
        self.states = {**self.states, state.group.name: state}

    def install_new(self, state: RollupState, table: pa.Table, meta: SnapshotMeta, swap_lock: Any) -> None:
        """Load a rollup built while serving and publish it: statements planned after this
        see it (the caller holds the table's ingest lock, so every later batch merges into it)."""
        self._install(state, table, meta, "active")
        with swap_lock.write(patience=0.05):
            self.add_state(state)

    def remove_state(self, name: str, swap_lock: Any) -> None:
        """Unpublish a rollup, then drop its table (statements that run on it keep their
        transaction's view of it)."""
        with swap_lock.write(patience=0.05):
            self.states = {n: s for n, s in self.states.items() if n != name}
        with self.content_lock:
            self.database.execute_internal(f"DROP TABLE IF EXISTS {ROLLUP_DATABASE}.main.{quote_ident(name)}")

    # -- loading --------------------------------------------------------------------------

    def load(self, build_missing: bool = True, progress: bool = False) -> None:
        """Load every fresh snapshot; rebuild missing, stale or corrupt ones if asked."""
        used = 0
        to_build: list[RollupState] = []
        matches: dict[tuple[str, str, int | None], bool] = {}
        for state in self.states.values():
            meta = self.snapshots.read_meta(state.group.name)
            store = self.stores[state.group.table]
            if meta is None:
                state.status = "pending"
                to_build.append(state)
                continue
            state.meta = meta
            key = (state.group.table, meta.fingerprint, meta.files_through)
            if key not in matches:
                matches[key] = self._source_matches(store, meta)
            fresh = meta.definition_hash == state.group.definition_hash() and matches[key]
            if not fresh and not self.allow_stale:
                state.status = "stale"
                to_build.append(state)
                continue
            if used + meta.bytes > self.memory_budget:
                state.status = "failed"
                state.error = f"skipped: {meta.bytes} bytes would exceed rollups.memory_budget"
                log.warning("rollup_over_budget", rollup=state.group.name, bytes=meta.bytes, budget=self.memory_budget)
                continue
            try:
                table = self.snapshots.read(meta)
            except SnapshotError as exc:
                log.warning("rollup_snapshot_corrupt", rollup=state.group.name, error=str(exc))
                state.status = "stale"
                to_build.append(state)
                continue
            self._install(state, table, meta, "active" if fresh else "stale")
            used += meta.bytes
        if build_missing and to_build:
            try:
                self.build([s.group.name for s in to_build], progress=progress)
            except Exception as exc:  # noqa: BLE001 - marked failed; the router answers from raw tiers
                log.error("rollup_build_failed_at_start", error=str(exc).splitlines()[0])

    def _install(self, state: RollupState, table: pa.Table, meta: SnapshotMeta | None, status: str) -> None:
        with self.content_lock:
            self._install_table(state, table, status)
        if meta is not None:
            with state.lock:
                state.meta = meta
                state.merged_through = meta.wal_through
        log.info("rollup_loaded", rollup=state.group.name, rows=table.num_rows, bytes=table.nbytes, status=status)

    def _dimension_types(self, state: RollupState, table: pa.Table) -> pa.Table:
        """A snapshot's dimension columns in the table's current types: a column ingest
        widened since (tiers.evolution) is cast up, so merged states of wider values fit."""
        store = self.stores.get(state.group.table)
        if store is None:
            return table
        for name in state.group.dimensions:
            if name in table.column_names and name in store.schema.names:
                wanted = store.schema.field(name).type
                if table.schema.field(name).type != wanted:
                    table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(wanted))
        return table

    def widen(self, table_name: str) -> None:
        """Cast the loaded rollups' dimension columns to the table's current types (a batch
        widened a column: its states would not fit). The caller holds content_lock."""
        for state in self.all_states(table_name):
            if state.status not in ("active", "stale"):
                continue
            cur = self.database.cursor()
            try:
                current = cur.sql(f"SELECT * FROM {state.qualified} LIMIT 0").to_arrow_table().schema
                for name in state.group.dimensions:
                    store = self.stores[table_name]
                    if name in current.names and name in store.schema.names:
                        wanted = store.schema.field(name).type
                        if current.field(name).type != wanted:
                            duck = ARROW_TO_DUCK[wanted]
                            self.database.execute_internal(
                                f"ALTER TABLE {state.qualified} ALTER COLUMN {quote_ident(name)} TYPE {duck}", cursor=cur
                            )
            finally:
                cur.close()

    def _install_table(self, state: RollupState, table: pa.Table, status: str) -> None:
        """Replace the loaded rollup (callers hold content_lock, so no merge lands in between)."""
        table = self._dimension_types(state, table)
        cur = self.database.cursor()
        try:
            cur.register("__tf_rollup_src", table)
            self.database.execute_internal(
                f"CREATE OR REPLACE TABLE {state.qualified} AS SELECT * FROM __tf_rollup_src", cursor=cur
            )
            cur.unregister("__tf_rollup_src")
            self.database.compress(ROLLUP_DATABASE, cursor=cur)
        finally:
            cur.close()
        times = None
        if state.group.grain:
            times = bucket_times(pc.cast(table[state.group.grain], pa.timestamp("us")).to_numpy(zero_copy_only=False))
        with state.lock:
            state.watermark = None
            state.times = times
            state.rows = state.installed_rows = table.num_rows
            state.bytes = table.nbytes
            # A compaction or another node's snapshot keeps a rollup that failed verification
            # stale; only a build (which clears mismatches first) brings it back.
            state.status = "stale" if state.mismatches and status == "active" else status
            state.error = None

    # -- building -------------------------------------------------------------------------

    def _source_matches(self, store: TableStore, meta: SnapshotMeta) -> bool:
        """Whether the snapshot's source is the table's stored rows now: the same rows per
        partition, or those rows plus the WAL batches flushed since (kept until a snapshot
        holds them), which the start-up replay merges into it."""
        current = source_state(store).fingerprint
        if meta.fingerprint == current:
            return True
        if self.wal is None or meta.files_through is None or meta.partition_rows is None:
            return False
        added = self.wal.flushed_rows_after(store.table.name, meta.files_through)
        if added is None:
            return False
        rows = dict(meta.partition_rows)
        for partition, n in added.items():
            rows[partition] = rows.get(partition, 0) + n
        return fingerprint_of(rows) == current

    def _source(self, store: TableStore) -> SourceState:
        table = store.table.name
        return source_state(store, self.wal.flushed_through(table) if self.wal is not None else None)

    def wal_needed_after(self, table_name: str) -> int | None:
        """The WAL sequence after which flushed batches must be kept: what the table's
        active snapshots need to be matched with the files at start (None: nothing)."""
        marks = [
            s.meta.files_through
            for s in self.all_states(table_name)
            if s.status == "active" and s.meta is not None and s.meta.files_through is not None
        ]
        return min(marks) if marks else None

    def build(self, names: Sequence[str] | None = None, progress: bool = False) -> dict[str, float]:
        """Build the named rollups (all by default) in one pass per table and filter."""
        wanted = [self.states[n] for n in (names or list(self.states))]
        by_table: dict[str, list[RollupState]] = {}
        for s in wanted:
            by_table.setdefault(s.group.table, []).append(s)
        timings: dict[str, float] = {}
        for table_name, states in by_table.items():
            store = self.stores[table_name]
            for s in states:
                s.status = "building"
                s.mismatches = 0
            cur = self.database.cursor()
            try:
                result = build_groups(store, [s.group for s in states], cur, self.config.tiers.current_time())
            except Exception as exc:
                for s in states:
                    s.status, s.error = "failed", str(exc)
                log.error("rollup_build_failed", table=table_name, error=repr(exc))
                raise
            finally:
                cur.close()
            source = self._source(store)
            for s in states:
                table = result.tables[s.group.name]
                meta = self.snapshots.write(s.group.name, table, s.group.definition_hash(), source, result.watermark)
                self._install(s, table, meta, "active")
            timings[table_name] = result.seconds
            log.info("rollups_built", table=table_name, rollups=len(states), source_rows=result.source_rows, seconds=round(result.seconds, 3))
        return timings

    def reload_changed(self) -> list[str]:
        """Load snapshots another process (the node that ingests) published since ours.

        Only for rollups with no rows merged in here since their snapshot: a node that
        ingests is the one that publishes."""
        reloaded = []
        for state in self.states.values():
            meta = self.snapshots.read_meta(state.group.name)
            if meta is None or state.meta is None or meta.file == state.meta.file:
                continue
            if self.hot_merged.get(state.group.table, 0):
                continue
            if meta.definition_hash != state.group.definition_hash():
                continue
            try:
                table = self.snapshots.read(meta)
            except SnapshotError as exc:
                log.warning("rollup_snapshot_corrupt", rollup=state.group.name, error=str(exc))
                continue
            self._install(state, table, meta, "active")
            reloaded.append(state.group.name)
        if reloaded:
            log.info("rollups_reloaded", rollups=reloaded)
        return reloaded

    # -- incremental ----------------------------------------------------------------------

    def compute_delta(
        self,
        table_name: str,
        data: pa.Table,
        through: int | None = None,
        states: Sequence[RollupState] | None = None,
    ) -> RollupDelta:
        """The states of ``data`` (WAL batches up to ``through``) for the table's loaded
        rollups, or for ``states`` (reads nothing shared).

        Every routed statement re-aggregates the states it reads, so appending a batch's
        partial states as extra rows is exact; a later snapshot compacts them.
        """
        if states is None:
            states = [s for s in self.all_states(table_name) if s.status in ("active", "stale")]
        if not states or data.num_rows == 0:
            return RollupDelta(table_name, tuple(states), {}, None, data.num_rows, through)
        digits = {c: d for s in states for c, d in s.group.digits}
        broken = first_violation(data, digits) if digits else None
        if broken is not None:  # rows ingested before the table declared its decimals
            column, _, value = broken
            raise ConfigError(f"table {table_name}: {describe(table_name, column, digits[column], value)}")
        cur = self._batch_db.cursor()
        try:
            cur.register("__tf_ingest_batch", data)
            result = build_groups(
                self.stores[table_name], [s.group for s in states], cur, self.config.tiers.current_time(),
                source_sql="SELECT * FROM __tf_ingest_batch",
                rows=data,
            )
        finally:
            cur.close()
        return RollupDelta(table_name, tuple(states), result.tables, result.watermark, data.num_rows, through)

    def apply_delta(self, delta: RollupDelta) -> None:
        """Append computed states to the loaded rollups."""
        with self.content_lock:
            self.stage_delta(delta).commit()

    def stage_delta(self, delta: RollupDelta) -> StagedDelta:
        """Insert a delta's states in an open DuckDB transaction: statements do not see them
        until :meth:`StagedDelta.commit`, which is quick, so an ingest can commit them under
        the swap lock's write side without holding statements up for the inserts. The caller
        holds ``content_lock`` until the commit (a snapshot swap must not come between)."""
        cur = self.database.cursor()
        try:
            cur.begin()
            for s in delta.states:
                table = delta.tables.get(s.group.name)
                if table is not None and table.num_rows:
                    cur.register("__tf_rollup_delta", table)
                    cur.execute(f"INSERT INTO {s.qualified} BY NAME SELECT * FROM __tf_rollup_delta")
                    cur.unregister("__tf_rollup_delta")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cur.rollback()
            cur.close()
            raise
        return StagedDelta(self, delta, cur)

    def skip_delta(self, table_name: str, rows: int, reason: str) -> None:
        """Rows whose states could not be merged: the table's rollups no longer hold every
        row, so they are stale (the router answers from the raw tiers) until rebuilt."""
        for s in self.all_states(table_name):
            if s.status == "active":
                s.status = "stale"
        self.hot_merged[table_name] = self.hot_merged.get(table_name, 0) + rows
        log.error("rollup_merge_failed", table=table_name, rows=rows, error=reason)

    def snapshot(self, table_name: str) -> None:
        """Write the loaded (merged) rollups of a table as fresh snapshots, compacted by key.
        The snapshot holds exactly the rows compacted (see :meth:`_compact_in_place`), and
        records the WAL sequence they cover, so a restart merges just the newer batches."""
        store = self.stores[table_name]
        source = self._source(store)
        with self._compacting:
            for s in self.all_states(table_name):
                if s.status != "active":
                    continue
                table, watermark, through = self._compact_in_place(s)
                meta = self.snapshots.write(s.group.name, table, s.group.definition_hash(), source, watermark, through)
                with s.lock:
                    s.meta = meta
                log.info("rollup_snapshot", rollup=s.group.name, rows=table.num_rows, wal_through=through)

    def compact_grown(self, table_name: str) -> list[str]:
        """Compact, in memory only, the rollups whose merged-in batches outgrew the rows they
        were installed with: every statement on a rollup scans its appended states too, and
        one batch appends as many rows as a small rollup has (advertiser x type), so under
        sustained ingest the scans would grow a hundredfold until the next snapshot. Skipped
        while a snapshot compacts (it does the same)."""
        if not self._compacting.acquire(blocking=False):
            return []
        try:
            done = []
            for s in self.all_states(table_name):
                grown = s.rows - s.installed_rows
                if s.status == "active" and grown >= max(s.installed_rows, COMPACT_MIN_ROWS):
                    self._compact_in_place(s)
                    done.append(s.group.name)
            return done
        finally:
            self._compacting.release()

    def _compact_in_place(self, s: RollupState) -> tuple[pa.Table, dt.datetime | None, int | None]:
        """Replace a rollup's rows by their compaction (callers hold ``_compacting``).

        A rollup table only grows by appends between installs, so its rows up to a row id
        are a fixed set: that set is compacted without holding content_lock (ingest goes
        on), then swapped in together with the states merged meanwhile. Returns the
        compacted set, and the watermark and WAL sequence it covers."""
        with self.content_lock:
            mark = self._last_row(s)
            watermark, through = s.current_watermark, s.merged_through
        table = self._compacted(s, mark)
        with self.content_lock:
            since = self._rows_after(s, mark)
            newest = s.current_watermark
            if since.num_rows:
                ordered = table.select(since.schema.names)
                merged = pa.concat_tables([ordered, since.cast(ordered.schema)])
            else:
                merged = table
            self._install_table(s, merged, "active")
            with s.lock:
                s.watermark = newest
        return table, watermark, through

    def _last_row(self, s: RollupState) -> int:
        row = self.database.query_internal(f"SELECT max(rowid) FROM {s.qualified}")[0][0]
        return -1 if row is None else int(row)

    def _rows_after(self, s: RollupState, mark: int) -> pa.Table:
        cur = self.database.cursor()
        try:
            return cur.sql(f"SELECT * FROM {s.qualified} WHERE rowid > {int(mark)}").to_arrow_table()
        finally:
            cur.close()

    def _compacted(self, s: RollupState, mark: int) -> pa.Table:
        g = s.group
        keys = ", ".join(quote_ident(d) for d in g.dimensions)
        aggs = []
        for m in g.measures:
            col = quote_ident(m.state)
            digits = g.sum_digits(m.column) if m.kind == "sum" else None
            if m.kind in ("count", "count_col"):
                aggs.append(f"CAST(sum({col}) AS BIGINT) AS {col}")
            elif digits is not None:  # states are sums already: room for 38 digits
                aggs.append(f"{exact_sum_sql(col, digits, width=38)} AS {col}")
            elif m.kind == "sum":
                aggs.append(f"sum({col}) AS {col}")
            elif m.kind in ("min", "max"):
                aggs.append(f"{m.kind}({col}) AS {col}")
            else:
                aggs.append(f"list({col}) AS {col}")
        select = ", ".join([*(quote_ident(d) for d in g.dimensions), *aggs])
        group_by = f"GROUP BY {keys}" if keys else ""
        order = f"ORDER BY {', '.join(quote_ident(d) for d in g.stored_order)}" if g.dimensions else ""
        cur = self.database.cursor()
        try:
            rows = cur.sql(f"SELECT * FROM {s.qualified} WHERE rowid <= {int(mark)}").to_arrow_table()
        finally:
            cur.close()
        # Aggregated on the one-thread DuckDB, on the caller's (flush) thread: statements
        # keep the shared pool.
        cur = self._batch_db.cursor()
        try:
            cur.register("__tf_rollup_rows", rows)
            table = cur.sql(f"SELECT {select} FROM __tf_rollup_rows {group_by} {order}").to_arrow_table()
        finally:
            cur.close()
        for m in g.measures:
            if m.sketch:
                merge = _union_blobs if m.kind == "hll" else _merge_kll
                param = m.sketch_lg_k if m.kind == "hll" else m.sketch_k
                merged = pa.array([merge(v, param) for v in table[m.state].to_pylist()], pa.binary())
                table = table.set_column(table.schema.get_field_index(m.state), m.state, merged)
        return table

    def fresh_for(self, table_name: str, hot_rows: int) -> bool:
        """Whether every hot-tail row of the table has been merged into its rollups."""
        return self.hot_merged.get(table_name, 0) == hot_rows

    # -- reading --------------------------------------------------------------------------

    def usable(self, table: str) -> list[RollupState]:
        if not self.enabled:
            return []
        return [s for s in self.states.values() if s.group.table == table and self.servable(s)]

    def servable(self, state: RollupState) -> bool:
        """Whether statements may read the rollup: active, or stale with allow_stale, but
        never one whose rows differed from the raw tiers."""
        if state.usable:
            return True
        return self.allow_stale and state.status == "stale" and not state.mismatches

    def record_verification(self, state: RollupState, mismatches: int, at: dt.datetime) -> bool:
        """Note a verification of the rollup's rows; True if it just turned stale by it."""
        with state.lock:
            state.verified_at = at
            if not mismatches:
                return False
            state.mismatches = mismatches
            turned = state.status == "active"
            if state.status in ("active", "stale"):
                state.status = "stale"
            return turned

    def unsnapshotted(self, table: str) -> bool:
        """Whether a loaded rollup of ``table`` holds merged rows its snapshot lacks."""
        for s in self.all_states(table):
            if s.status != "active" or s.merged_through is None:
                continue
            if s.meta is None or s.meta.wal_through is None or s.merged_through > s.meta.wal_through:
                return True
        return False

    def merged_state(self) -> dict[str, int | None]:
        """Per rollup, the WAL sequence its loaded rows hold (``App.data_state``)."""
        return {name: s.merged_through for name, s in sorted(self.states.items())}

    def snapshot_files(self) -> dict[str, str | None]:
        """Which snapshot file each rollup holds (None: not loaded from one)."""
        return {name: (s.meta.file if s.meta is not None else None) for name, s in sorted(self.states.items())}

    def all_states(self, table: str) -> list[RollupState]:
        return [s for s in self.states.values() if s.group.table == table]

    def hit(self, name: str) -> None:
        state = self.states.get(name)
        if state is not None:
            with state.lock:
                state.hits += 1
                state.last_hit_s = time.time()

    def system_table(self) -> pa.Table:
        rows = []
        for s in self.states.values():
            meta = s.meta
            for d in s.members:
                rows.append(
                    {
                        "name": d.name,
                        "table_name": d.table,
                        "dimensions": list(d.dimensions),
                        "measures": [m.label() for m in d.measures],
                        "status": s.status,
                        "rows": s.rows,
                        "bytes": s.bytes,
                        "built_at": dt.datetime.fromisoformat(meta.built_at) if meta else None,
                        "watermark": s.current_watermark,
                        "hits": s.hits,
                        "verified_at": s.verified_at,
                        "mismatches": s.mismatches,
                        "origin": s.origin.value,
                        "last_hit": None
                        if s.last_hit_s is None
                        else dt.datetime.fromtimestamp(s.last_hit_s, dt.UTC).replace(tzinfo=None),
                        "saved_ms": round(s.saved_ms, 3),
                    }
                )
        return pa.Table.from_pylist(rows, schema=ROLLUPS_TABLE_SCHEMA)


def _merge_kll(blobs: list[bytes | None], k: int) -> bytes:
    import datasketches

    present = [b for b in blobs if b is not None]
    if len(present) == 1:
        return present[0]
    sketch = datasketches.kll_doubles_sketch(k)
    for b in present:
        sketch.merge(datasketches.kll_doubles_sketch.deserialize(b))
    return bytes(sketch.serialize())


def _union_blobs(blobs: list[bytes | None], lg_k: int) -> bytes:
    import datasketches

    from tierflight.rollups.definition import HLL_TYPE

    present = [b for b in blobs if b is not None]
    if len(present) == 1:
        return present[0]  # a key no batch touched since the last compaction: as it was
    union = datasketches.hll_union(lg_k)
    for b in present:
        union.update(datasketches.hll_sketch.deserialize(b))
    return bytes(union.get_result(HLL_TYPE).serialize_compact())
