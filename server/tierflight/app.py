"""The composition root: configuration → database, stores, names → WAL → rollups → router →
metrics, executor → ingest, each handed the narrow interfaces it uses, in dependency order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from tierflight.advisor import auto
from tierflight.advisor.service import Advisor
from tierflight.core.config import Config, TableConfig
from tierflight.core.errors import ConfigError, Unsupported
from tierflight.core.log import flush_logs, get_logger
from tierflight.core.names import Names, Resolved
from tierflight.core.rwlock import RWLock
from tierflight.engine.catalog import ShadowCatalog
from tierflight.engine.columns import ColumnNames
from tierflight.engine.database import Database
from tierflight.engine.executor import Executor
from tierflight.ingest.service import IngestService
from tierflight.ingest.tables import IngestTables, recover_flushes
from tierflight.lifecycle import Stoppable
from tierflight.observability import Metrics, OpsServer, readiness
from tierflight.observability.metrics import ServingState
from tierflight.rollups.registry import RollupRegistry, RollupState
from tierflight.router.planner import Router
from tierflight.tiers.base import partitions_table
from tierflight.tiers.dimension import DimensionStore
from tierflight.tiers.store import TableStore
from tierflight.tiers.timetravel import snapshots_table

if TYPE_CHECKING:
    from tierflight.protocol.server import FlightServices
    from tierflight.rollups.verifier import Verifier
    from tierflight.rollups.verify import VerifyResult

log = get_logger("tierflight.app")


class Periodic:
    """``action`` every ``interval_s`` on a daemon thread (``first``: run once at start, else
    wait first); a failing round is logged as ``failure`` and the next round retries it, so
    it never kills the server. An interval of 0 or less: never started."""

    def __init__(self, name: str, interval_s: float, action: Callable[[], None], failure: str, *, first: bool) -> None:
        self._interval = interval_s
        self._action = action
        self._failure = failure
        self._first = first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        if self._interval > 0 and not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self, wait_s: float | None = None) -> None:
        """Stop after the current round; ``wait_s``: wait that long for it to end."""
        self._stop.set()
        if wait_s is not None and self._thread.is_alive():
            self._thread.join(timeout=wait_s)

    def _loop(self) -> None:
        if not self._first and self._stop.wait(self._interval):
            return
        while not self._stop.is_set():
            try:
                self._action()
            except Exception as exc:  # noqa: BLE001 - retried next round; never kill the server
                log.error(self._failure, error=repr(exc))
            if self._stop.wait(self._interval):
                return


class App:
    """One tierflight instance: its tables, tiers, DuckDB and executor (no network).

    Also what the servers around it are handed: the catalog (protocol.metadata
    CatalogSource), ingest, health and data state (protocol.server NodeService), and what a
    graceful shutdown drains (lifecycle.Drainable)."""

    def __init__(
        self, config: Config, *, build_rollups: bool = True, progress: bool = False, follower: bool = False
    ) -> None:
        # A follower (a read-only worker of ``serve --workers``) serves what the node that
        # ingests published: it never recovers flushes, replays the WAL or builds rollups.
        self.config = config
        self.follower = follower
        self.draining = False  # set on shutdown: /readyz answers 503 from then on
        database = self.database = Database(config)
        # Dimension tables: in memory, their current version loaded from the data dir and kept
        # as a DuckDB table of the server's database.
        self.dimensions: dict[str, DimensionStore] = {
            name: DimensionStore(config.data_dir, table, writer=not follower, tables=database)
            for name, table in config.dimensions.items()
        }
        self.names = Names(config.tables, lambda: database.system_tables.keys(), config.dimensions)
        self.stores: dict[str, TableStore] = {name: TableStore(config, table) for name, table in config.tables.items()}
        # The fact tables' effective columns: the configured ones plus what ingest added
        # (tiers.evolution); kept current by schema_changed. With the dimension tables, the
        # columns the catalog, the column-name binder and the parameter typer see.
        self.tables: dict[str, TableConfig] = {name: store.table for name, store in self.stores.items()}
        self._visible: dict[str, TableConfig] = {**self.tables, **config.dimensions}
        self._schema_listeners: list[Callable[[], None]] = []
        # What catalog queries and the metadata calls see (engine.catalog).
        self.catalog = ShadowCatalog(self._visible, lambda: database.system_tables, database.query_internal)
        self.swap_lock = RWLock()
        self._refresh_lock = threading.Lock()
        # The WAL side of ingest comes first: the rollups read what it holds.
        self.ingest_tables = IngestTables(self.stores)
        # A flush a crash interrupted changes the tiers: finish it before rollups are checked.
        if not follower:
            recover_flushes(self.ingest_tables, self.swap_lock)
        self._list_tiers()
        self.rollups = RollupRegistry(config, database, self.stores, wal=None if follower else self.ingest_tables)
        auto.restore(config, self.rollups)  # auto rollups built before a restart load like the others
        self.rollups.load(build_missing=build_rollups and not follower, progress=progress)
        self.column_names = ColumnNames(self._visible)
        self.router = Router(
            self.store_map,
            self.rollups,
            config.tiers.current_time,
            enabled=config.router.enabled,
            column_names=self.column_names,
            names=self.names,
            catalog=self.catalog,
            dimensions=self.dimension_map,
        )
        # Per-App registry (see observability.metrics): the executor's and ingest's observer.
        self.metrics = Metrics(self.rollups.states)
        self._verifier: Verifier | None = None
        self.executor = Executor(
            config, database, self.router, self.swap_lock, observer=self.metrics, column_names=self.column_names
        )
        self.metrics.watch(
            ServingState(
                self.executor.in_flight,
                self.stores,
                self.rollups.states,
                config.tiers.current_time,
                joined_rows=lambda: self.executor.joined.rows,
            )
        )
        # The advisor learns from finished statements' shapes (advisor/); a follower's
        # statements are the primary's workload too, but only the primary keeps the log.
        self.advisor = Advisor(config, self.stores, self.rollups, background=not follower)
        self.executor.shape_sink = self.advisor.log.offer
        self.ingest_service = IngestService(
            config.ingest,
            self.ingest_tables,
            names=self.names,
            rollups=self.rollups,
            invalidate=self.router.invalidate,
            schema_changed=self.schema_changed,
            dimensions=self.dimensions,
            statements=self.executor,
            swap_lock=self.swap_lock,
            current_time=config.tiers.current_time,
            observer=self.metrics,
        )
        self.auto = auto.AutoRollups(
            config, self.rollups, self.stores, self.ingest_tables.tables, self.swap_lock, self.router.invalidate,
            self.advisor, nice=config.ingest.nice,
        )
        if not follower:
            self.ingest_service.replay()
        database.register_system_table("partitions", self.partitions_table)
        database.register_caller_table("queries", self.executor.queries_table)
        database.register_system_table("rollups", self.rollups.system_table)
        database.register_system_table("snapshots", lambda: snapshots_table(self.stores))
        database.register_caller_table("rollup_advice", self.advisor.advice_table)
        self.advisor.started = True
        self.catalog_name: str = database.cursor().sql("SELECT current_database()").fetchall()[0][0]
        self._http: OpsServer | None = None
        self._maintenance = Periodic(
            "tierflight-maintenance",
            config.tiers.maintenance_interval.total_seconds(),
            self.run_maintenance,
            "maintenance_failed",
            first=True,
        )
        # Picks up rollup snapshots and files another node (or a CLI run) published.
        self._snapshot_watch = Periodic(
            "tierflight-snapshot-watch",
            config.rollups.reload_interval.total_seconds(),
            self._reload_published,
            "snapshot_watch_failed",
            first=False,
        )

    def flight_services(self) -> FlightServices:
        """What the Flight SQL server is handed (protocol.server.build_server)."""
        from tierflight.protocol.server import FlightServices

        return FlightServices(
            server=self.config.server,
            auth=self.config.auth,
            tables=self._visible,
            names=self.names,
            statements=self.executor,
            catalog=self,
            node=self,
            on_schema_change=self._schema_listeners.append,
        )

    # -- CatalogSource (protocol.metadata) ------------------------------------------------

    def table_names(self) -> Iterable[str]:
        return [*self.config.tables, *self.config.dimensions]

    def system_table_names(self) -> Iterable[str]:
        return self.database.system_tables.keys()

    def table_columns(self, schema: str, table: str) -> Iterable[tuple[str, str, bool]]:
        return self.catalog.table_columns(schema, table)

    def lookup(self, name: str, schema: str | None, catalog: str | None) -> Resolved | None:
        return self.names.lookup(name, schema, catalog)

    def primary_key(self, table: str) -> str | None:
        dimension = self.config.dimensions.get(table)
        return None if dimension is None else dimension.key

    def foreign_keys(self) -> list[tuple[str, str, str, str]]:
        dimensions = self.config.dimensions
        return sorted(
            (fact.name, column, target, str(dimensions[target].key))
            for fact in self.config.tables.values()
            for column, target in fact.references.items()
        )

    # -- NodeService (protocol.server) ----------------------------------------------------

    def ingest(self, cmd: Any, reader: Any, user: str) -> int:
        """DoPut(CommandStatementIngest): see ingest.service for the durability protocol."""
        if self.follower:
            raise Unsupported("this worker is a read-only follower; ingest goes to the primary worker")
        return self.ingest_service.ingest(cmd, reader, user)

    def health(self) -> dict[str, Any]:
        """The readiness report of /readyz (also the Flight ``healthcheck`` action's answer)."""
        return readiness(draining=self.draining, rollups=self.rollups, stores=self.stores, tables=self.config.tables)

    def data_state(self) -> dict[str, Any]:
        """What this process serves: unflushed hot rows, and a version of its files and rollup
        snapshots. Two processes with no hot rows and equal versions give the same answers
        (``serve --workers`` sends statements to a follower only then). Whatever another
        process published is picked up first."""
        self._reload_schemas()
        self._reload_published()
        # A flush holds its flush lock from its first file to its last snapshot, and ingest
        # takes the ingest lock: holding both, no half-published state is reported.
        locks = [lock for t in self.ingest_tables.tables.values() for lock in (t.flush_lock, t.lock)]
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
                "dimensions": {name: d.current.version for name, d in sorted(self.dimensions.items())},
            }
        finally:
            for lock in reversed(locks):
                lock.release()

    # -- Drainable (lifecycle) ------------------------------------------------------------

    def start_draining(self) -> None:
        self.draining = True

    def in_flight(self) -> int:
        return self.executor.in_flight()

    def cancel_all(self) -> int:
        return self.executor.cancel_all()

    # -- data ---------------------------------------------------------------------------

    def flush_all(self) -> None:
        self.ingest_service.flush_all()

    def schema_changed(self, table: str) -> None:
        """A table's columns changed (ingest evolved it, or the primary did: data_state; the
        caller holds the swap lock): everything that knows a table's columns learns them again."""
        self.tables[table] = self._visible[table] = self.stores[table].table
        self.column_names.schema_changed()
        self.catalog.schema_changed()
        self.router.schema_changed()
        self.executor.schema_changed()
        for listener in self._schema_listeners:
            listener()

    def _reload_schemas(self) -> None:
        for name, t in self.ingest_tables.tables.items():
            # A follower learns a schema the primary evolved (tiers.evolution) first: the
            # files and rollup snapshots it loads next may have the new columns. Under the
            # ingest lock, so the primary's own evolution is never seen half done.
            with t.lock:
                evolved = t.store.reload_registry()
                if evolved is not None:
                    with self.swap_lock.write():
                        t.store.apply_schema(evolved)
                        self.schema_changed(name)

    def store_map(self) -> Mapping[str, TableStore]:
        return self.stores

    def dimension_map(self) -> Mapping[str, DimensionStore]:
        return self.dimensions

    def reload_dimensions(self) -> None:
        """Serve the dimension versions another process (the primary worker) wrote."""
        for store in self.dimensions.values():
            if store.write_lock.locked():
                continue  # this process is writing it: nothing newer can be on disk
            newer = store.changed_on_disk()
            if newer is not None:
                with self.swap_lock.write():
                    store.serve(newer)
                    self.router.invalidate()

    def _list_tiers(self) -> None:
        with self._refresh_lock:
            for store in self.stores.values():
                store.refresh()

    def refresh_tables(self) -> None:
        """Re-list every tier (after data changes)."""
        self._list_tiers()
        self.router.invalidate()

    def _reload_published(self) -> None:
        changed = any(store.refresh_if_changed() for store in self.stores.values())
        if self.rollups.reload_changed() or changed:
            self.router.invalidate()
        self.reload_dimensions()

    def partitions_table(self) -> pa.Table:
        return partitions_table([p for store in self.stores.values() for p in store.partitions()])

    def start_auto(self) -> None:
        """Autonomous mode's rounds ([rollups] auto), on the node that ingests only."""
        if not self.follower:
            self.auto.start()

    def run_maintenance(self) -> None:
        """Demote, compact and empty the trash for every table, then re-list the tiers."""
        from tierflight.tiers.maintenance import compact_warm, demote, empty_trash

        for store in self.stores.values():
            demote(store)
            compact_warm(store, self.config.tiers.compact_small_file_bytes)
            empty_trash(store)
        self.refresh_tables()

    # -- background work and the operations endpoint ----------------------------------------

    def start_snapshot_watch(self) -> None:
        self._snapshot_watch.start()

    def start_maintenance(self) -> None:
        self._maintenance.start()

    def rollup_verifier(self) -> Verifier:
        """Verification of the loaded rollups against the raw tiers (rollups/verifier.py): a
        mismatch is counted, and the router re-plans (the rollup turned stale)."""
        if self._verifier is None:
            from tierflight.rollups.verifier import Verifier

            def mismatch(state: RollupState, result: VerifyResult) -> None:
                self.metrics.rollup_mismatches.labels(state.group.name).inc(result.mismatches)
                self.router.invalidate()

            self._verifier = Verifier(self.rollups, self.swap_lock, on_mismatch=mismatch)
        return self._verifier

    def start_verifier(self) -> None:
        """Verify a sample of every rollup each [rollups] verify_interval, at ingest priority."""
        cfg = self.config.rollups
        if not self.follower and self.rollups.states and cfg.verify_interval.total_seconds() > 0:
            # A mismatch is confirmed once the snapshot watch has had time to load what another
            # node published for the files seen.
            confirm = 2 * cfg.reload_interval.total_seconds() + 1
            self.rollup_verifier().start(cfg.verify_interval, cfg.verify_sample, self.config.ingest.nice, confirm)

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
        self._snapshot_watch.stop()
        self.stop_http()
        self.auto.stop()  # before ingest stops: a build holds a table's ingest lock
        self.ingest_service.stop()
        # Maintenance uses the database: let a running round finish (it is crash-safe, so a
        # round cut short by the timeout is completed by the next start).
        self._maintenance.stop(wait_s=30)
        if self._verifier is not None:
            self._verifier.close()
        self.executor.close()
        self.advisor.close()
        self.rollups.close()
        self.database.close()
        self.metrics.close()
        # A worker process leaves through os._exit (no atexit): the statement log goes out here.
        flush_logs()


def serve_forever(app: App, server: Stoppable, on_ready: Callable[[], None] | None = None) -> bool:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (see tierflight.lifecycle).

    False when calls were still stuck after the grace period and the cancel wait.
    """
    from tierflight.lifecycle import serve_until_signalled

    return serve_until_signalled(app, server, app.config.server.shutdown_grace.total_seconds(), on_ready)
