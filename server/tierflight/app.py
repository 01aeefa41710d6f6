"""Wiring: configuration → tiers → DuckDB views → planner → executor, and the server around it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import pyarrow as pa

from tierflight.core.config import Config, TableConfig
from tierflight.core.errors import ConfigError, Unsupported
from tierflight.core.log import flush_logs, get_logger
from tierflight.core.lru import LRU
from tierflight.core.names import Names
from tierflight.core.rwlock import RWLock
from tierflight.core.sql import quote_ident, table_view_sql
from tierflight.engine.catalog import ShadowCatalog
from tierflight.engine.database import Database, use_catalog
from tierflight.engine.executor import Executor
from tierflight.ingest.service import IngestService
from tierflight.observability import Metrics, OpsServer, readiness
from tierflight.rollups.registry import RollupRegistry
from tierflight.router.planner import Router
from tierflight.tiers.base import partitions_table
from tierflight.tiers.store import TableStore
from tierflight.tiers.timetravel import snapshots_table

log = get_logger("tierflight.app")

class App:
    """One tierflight instance: its tables, tiers, DuckDB and executor (no network)."""

    def __init__(
        self, config: Config, *, build_rollups: bool = True, progress: bool = False, follower: bool = False
    ) -> None:
        # A follower (a read-only worker of ``serve --workers``) serves what the node that
        # ingests published: it never recovers flushes, replays the WAL or builds rollups.
        self.config = config
        self.follower = follower
        self.database = Database(config)
        self.names = Names(config.tables, lambda: self.database.system_tables.keys())
        self.stores: dict[str, TableStore] = {
            name: TableStore(config, table) for name, table in config.tables.items()
        }
        # The tables' effective columns: the configured ones plus what ingest added
        # (tiers.evolution); kept current by schema_changed.
        self.tables: dict[str, TableConfig] = {name: store.table for name, store in self.stores.items()}
        self.schema_listeners: list[Callable[[], None]] = []
        # What catalog queries and the metadata calls see (engine.catalog).
        self.catalog = ShadowCatalog(self.tables, lambda: self.database.system_tables, self.database.query_internal)
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._names_cache: LRU[str, tuple[str, ...]] = LRU(4096)
        self._binder: duckdb.DuckDBPyConnection | None = None
        self.swap_lock = RWLock()
        self.ingest_service = IngestService(self)
        # A flush a crash interrupted changes the tiers: finish it before rollups are checked.
        if not follower:
            self.ingest_service.recover_files()
        self.refresh_tables()
        self.rollups = RollupRegistry(config, self.database, self.stores, wal=None if follower else self.ingest_service)
        self.rollups.load(build_missing=build_rollups and not follower, progress=progress)
        routing = config.router.enabled
        self.router = Router(
            self.store_map,
            self.rollups,
            config.tiers.current_time,
            enabled=routing,
            column_names=self._column_names,
            names=self.names,
            catalog=self.catalog,
        )
        self.planner = self.router
        self.executor = Executor(config, self.database, self.router, self.swap_lock)
        # Per-App registry (see observability.metrics); ingest reports via self.metrics too.
        self.metrics = Metrics(self)
        self.executor.observer = self.metrics
        self.draining = False  # set on shutdown: /readyz answers 503 from then on
        self._http: OpsServer | None = None
        if not follower:
            self.ingest_service.replay()
        self.database.register_system_table("partitions", self.partitions_table)
        self.database.register_caller_table("queries", self.executor.queries_table)
        self.database.register_system_table("rollups", self.rollups.system_table)
        self.database.register_system_table("snapshots", lambda: snapshots_table(self.stores))
        self.catalog_name: str = self.database.cursor().sql("SELECT current_database()").fetchall()[0][0]

    def ingest(self, cmd: Any, reader: Any, user: str) -> int:
        """DoPut(CommandStatementIngest): see ingest.service for the durability protocol."""
        if self.follower:
            raise Unsupported("this worker is a read-only follower; ingest goes to the primary worker")
        return self.ingest_service.ingest(cmd, reader, user)

    def data_state(self) -> dict[str, Any]:
        """What this process serves: unflushed hot rows, and a version of its files and rollup
        snapshots. Two processes with no hot rows and equal versions give the same answers
        (``serve --workers`` sends statements to a follower only then). Whatever another
        process published is picked up first."""
        for name, t in self.ingest_service.tables.items():
            # A follower learns a schema the primary evolved (tiers.evolution) first: the
            # files and rollup snapshots it loads next may have the new columns. Under the
            # ingest lock, so the primary's own evolution is never seen half done.
            with t.lock:
                evolved = t.store.reload_registry()
                if evolved is not None:
                    with self.swap_lock.write():
                        t.store.apply_schema(evolved)
                        self.schema_changed(name)
        changed = any(store.refresh_if_changed() for store in self.stores.values())
        if self.rollups.reload_changed() or changed:
            self.router.invalidate()
        # A flush holds its flush lock from its first file to its last snapshot, and ingest
        # takes the ingest lock: holding both, no half-published state is reported.
        locks = [lock for t in self.ingest_service.tables.values() for lock in (t.flush_lock, t.lock)]
        for lock in locks:
            lock.acquire()
        try:
            return {
                "hot_rows": sum(store.hot.rows for store in self.stores.values()),
                "files": {name: repr(store.seen_signature) for name, store in sorted(self.stores.items())},
                "schemas": {name: store.registry.version for name, store in sorted(self.stores.items())},
                "rollups": self.rollups.snapshot_files(),
                # Rows merged since the snapshots (a flush under sustained ingest defers them).
                "merged": self.rollups.merged_state(),
            }
        finally:
            for lock in reversed(locks):
                lock.release()

    def flush_all(self) -> None:
        self.ingest_service.flush_all()

    def schema_changed(self, table: str) -> None:
        """A table's columns changed (ingest evolved it; the caller holds the swap lock):
        everything that knows a table's columns learns them again."""
        self.tables[table] = self.stores[table].table
        self._binder = None
        self._names_cache = LRU(4096)
        self.catalog.schema_changed()
        self.router.schema_changed()
        for listener in self.schema_listeners:
            listener()

    def _column_names(self, sql: str) -> list[str]:
        """Output names of a statement as DuckDB gives them. Bound against empty views of the
        tables (same columns, no files), so a plan-cache miss does not pay for listing files;
        remembered by text, since they depend only on it and the configured columns (a data
        change empties the plan cache, and the same dashboard statements are planned again)."""
        names = self._names_cache.get(sql)
        if names is not None:
            return list(names)
        binder = self._binder
        if binder is None:
            # Named like the server's database, so catalog-qualified names bind; no file
            # access (the statement is the client's; only its names are wanted).
            binder = duckdb.connect(":memory:", config={"enable_external_access": False})
            use_catalog(binder)
            for table in self.tables.values():
                binder.execute(f"CREATE VIEW {quote_ident(table.name)} AS {table_view_sql(table, [])}")
            self._binder = binder
        cur = binder.cursor()
        try:
            found = tuple(cur.sql(sql).columns)
        finally:
            cur.close()
        self._names_cache.put(sql, found)
        return list(found)

    def store_map(self) -> Mapping[str, TableStore]:
        return self.stores

    def refresh_tables(self) -> None:
        """Re-list every tier (after data changes)."""
        with self._refresh_lock:
            for store in self.stores.values():
                store.refresh()
            router = getattr(self, "router", None)
            if router is not None:
                router.invalidate()

    def partitions_table(self) -> pa.Table:
        return partitions_table([p for store in self.stores.values() for p in store.partitions()])

    def start_snapshot_watch(self) -> None:
        """Pick up rollup snapshots and files another node (or a CLI run) published."""
        interval = self.config.rollups.reload_interval
        if interval.total_seconds() <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(interval.total_seconds()):
                try:
                    changed = any(store.refresh_if_changed() for store in self.stores.values())
                    if self.rollups.reload_changed() or changed:
                        self.router.invalidate()
                except Exception as exc:  # noqa: BLE001 - retried next round; never kill the server
                    log.error("snapshot_watch_failed", error=repr(exc))

        threading.Thread(target=loop, name="tierflight-snapshot-watch", daemon=True).start()

    def run_maintenance(self) -> None:
        """Demote, compact and empty the trash for every table, then re-list the tiers."""
        from tierflight.tiers.maintenance import compact_warm, demote, empty_trash

        for store in self.stores.values():
            demote(store)
            compact_warm(store, self.config.tiers.compact_small_file_bytes)
            empty_trash(store)
        self.refresh_tables()

    def start_maintenance(self) -> None:
        interval = self.config.tiers.maintenance_interval.total_seconds()
        if interval <= 0:
            return

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_maintenance()
                except Exception as exc:  # noqa: BLE001 - the next round retries; never kill the server
                    log.error("maintenance_failed", error=repr(exc))
                if self._stop.wait(interval):
                    return

        self._maintenance = threading.Thread(target=loop, name="tierflight-maintenance", daemon=True)
        self._maintenance.start()

    def health(self) -> dict[str, Any]:
        """The readiness report of /readyz (also the Flight ``healthcheck`` action's answer)."""
        return readiness(self)

    def start_http(self) -> int | None:
        """Serve /metrics, /healthz and /readyz on [metrics] host/port; the bound port (None: off)."""
        cfg = self.config.metrics
        if not cfg.enabled or self._http is not None:
            return self._http.port if self._http is not None else None
        try:
            self._http = OpsServer(cfg.host, cfg.port, self.metrics.registry, self.health).start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /metrics on {cfg.host}:{cfg.port}: {exc.strerror or exc}; "
                'set [metrics] port to a free port, 0 for any, or "off"'
            ) from None
        log.info("metrics_listening", host=cfg.host, port=self._http.port, url=f"{self._http.url}/metrics")
        return self._http.port

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    def close(self) -> None:
        self._stop.set()
        self.stop_http()
        self.ingest_service.stop()
        # Maintenance uses the database: let a running round finish (it is crash-safe, so a
        # round cut short by the timeout is completed by the next start).
        maintenance = getattr(self, "_maintenance", None)
        if maintenance is not None:
            maintenance.join(timeout=30)
        self.executor.close()
        self.rollups.close()
        self.database.close()
        # A worker process leaves through os._exit (no atexit): the statement log goes out here.
        flush_logs()


def serve_forever(server: Any, on_ready: Any = None) -> bool:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (see tierflight.lifecycle).

    False when calls were still stuck after the grace period and the cancel wait.
    """
    from tierflight.lifecycle import serve_until_signalled

    return serve_until_signalled(server.app, server, on_ready)
