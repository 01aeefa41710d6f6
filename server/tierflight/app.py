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
from tierflight.router.raw import RawPlanner
from tierflight.tiers.base import Tier, partitions_table
from tierflight.tiers.warm import WarmTier

log = get_logger("tierflight.app")

ROLLUPS_SCHEMA = pa.schema(
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
    ]
)


class App:
    """One tierflight instance: its tables, tiers, DuckDB and executor (no network)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.database = Database(config)
        self.tiers: dict[str, list[Tier]] = {
            name: [WarmTier(config.data_dir / name / "warm", name)] for name in config.tables
        }
        self._refresh_lock = threading.Lock()
        self.refresh_tables()
        self.planner = RawPlanner(self.tier_map)
        self.executor = Executor(config, self.database, self.planner)
        self.database.register_system_table("partitions", self.partitions_table)
        self.database.register_system_table("queries", self.executor.queries_table)
        self.database.register_system_table("rollups", ROLLUPS_SCHEMA.empty_table)
        self.catalog_name: str = self.database.cursor().sql("SELECT current_database()").fetchall()[0][0]

    def tier_map(self) -> Mapping[str, list[Tier]]:
        return self.tiers

    def refresh_tables(self) -> None:
        """Re-list every tier and redefine the table views (after data changes)."""
        with self._refresh_lock:
            for name, table in self.config.tables.items():
                sources = []
                for tier in self.tiers[name]:
                    refresh = getattr(tier, "refresh", None)
                    if refresh is not None:
                        refresh()
                    sources.append(tier.relation_sql())
                self.database.set_table_view(table, [s for s in sources if s])

    def partitions_table(self) -> pa.Table:
        return partitions_table([p for tiers in self.tiers.values() for t in tiers for p in t.partitions()])

    def has_data(self, table: str) -> bool:
        return any(t.partitions() for t in self.tiers.get(table, []))

    def health(self) -> dict[str, Any]:
        return {"status": "ready", "tables": sorted(self.config.tables)}

    def close(self) -> None:
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
