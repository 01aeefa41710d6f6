"""Wiring: configuration → tiers → DuckDB views → planner → executor, and the server around it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from tierflight.config import Config
from tierflight.engine.database import Database
from tierflight.engine.executor import Executor
from tierflight.log import get_logger
from tierflight.rollups.registry import RollupRegistry
from tierflight.router.planner import Router
from tierflight.tiers.base import partitions_table
from tierflight.tiers.store import TableStore

log = get_logger("tierflight.app")

class App:
    """One tierflight instance: its tables, tiers, DuckDB and executor (no network)."""

    def __init__(self, config: Config, *, build_rollups: bool = True, progress: bool = False) -> None:
        self.config = config
        self.database = Database(config)
        self.stores: dict[str, TableStore] = {
            name: TableStore(config, table, self.database) for name, table in config.tables.items()
        }
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh_tables()
        self.rollups = RollupRegistry(config, self.database, self.stores)
        self.rollups.load(build_missing=build_rollups, progress=progress)
        routing = bool(dict(config.raw.get("router", {})).get("enabled", True))
        self.router = Router(self.store_map, self.rollups, config.tiers.current_time, enabled=routing)
        self.planner = self.router
        self.executor = Executor(config, self.database, self.router)
        self.database.register_system_table("partitions", self.partitions_table)
        self.database.register_system_table("queries", self.executor.queries_table)
        self.database.register_system_table("rollups", self.rollups.system_table)
        self.catalog_name: str = self.database.cursor().sql("SELECT current_database()").fetchall()[0][0]

    def store_map(self) -> Mapping[str, TableStore]:
        return self.stores

    def refresh_tables(self) -> None:
        """Re-list every tier and redefine the table views (after data changes)."""
        with self._refresh_lock:
            for store in self.stores.values():
                store.refresh()
                self.database.set_table_view(store.table, [s.sql for s in store.sources()])
            router = getattr(self, "router", None)
            if router is not None:
                router.invalidate()

    def partitions_table(self) -> pa.Table:
        return partitions_table([p for store in self.stores.values() for p in store.partitions()])

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
            while True:
                try:
                    self.run_maintenance()
                except Exception as exc:
                    log.error("maintenance_failed", error=repr(exc))
                if self._stop.wait(interval):
                    return

        threading.Thread(target=loop, name="tierflight-maintenance", daemon=True).start()

    def health(self) -> dict[str, Any]:
        return {"status": "ready", "tables": sorted(self.config.tables)}

    def close(self) -> None:
        self._stop.set()
        self.executor.close()
        self.database.close()


def serve_forever(server: Any, on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM; pyarrow's serve() blocks, so signals shut it down."""

    def stop(signum: int, frame: Any) -> None:
        log.info("shutdown", signal=signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if on_ready is not None:
        on_ready()
    server.serve()
