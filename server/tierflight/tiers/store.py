"""One table's tiers and the boundary between them.

The boundary ``cold_until`` (a day) is the single source of truth for where a day lives:
the cold tier serves days before it, the warm tier the days from it on. It is stored in
``<data_dir>/<table>/tiers.json`` and replaced atomically, so a demotion that crashes
between copying a day into Iceberg and deleting it from warm never shows the day twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tierflight.config import Config, TableConfig
from tierflight.engine.database import Database
from tierflight.tiers.base import ALL_TIME, Partition, Tier, TimeRange
from tierflight.tiers.cold import ColdTier, IcebergSettings, load_catalog
from tierflight.tiers.hot import HotTail
from tierflight.tiers.warm import WarmTier

_DUCK_TO_ARROW = {
    "TIMESTAMP": pa.timestamp("us"),
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "SMALLINT": pa.int16(),
}


def arrow_schema(table: TableConfig) -> pa.Schema:
    fields = []
    for c in table.columns:
        try:
            fields.append(pa.field(c.name, _DUCK_TO_ARROW[c.type], nullable=c.nullable))
        except KeyError:
            raise ValueError(
                f"tables.{table.name}.columns.{c.name}: type {c.type} is not supported; "
                f"use one of {', '.join(sorted(_DUCK_TO_ARROW))}"
            ) from None
    return pa.schema(fields)


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


@dataclass(frozen=True)
class Source:
    tier: str
    sql: str
    partitions: tuple[Partition, ...]
    files: int


class TableStore:
    def __init__(self, config: Config, table: TableConfig, database: Database) -> None:
        self.config = config
        self.table = table
        self.root = config.data_dir / table.name
        self.schema = arrow_schema(table)
        self.warm = WarmTier(self.root / "warm", table.name)
        settings = IcebergSettings.from_config(dict(config.raw.get("iceberg", {})), config.data_dir)
        self.cold = ColdTier(load_catalog(settings), settings, table.name, self.schema, table.time_column)
        self.hot = HotTail(database, table)
        self.refresh()

    @property
    def tiers(self) -> list[Tier]:
        return [self.hot, self.warm, self.cold]

    # -- the boundary ---------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.root / "tiers.json"

    def cold_until(self) -> dt.date | None:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        value = data.get("cold_until")
        return dt.date.fromisoformat(value) if value else None

    def set_cold_until(self, day: dt.date) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cold_until": day.isoformat()}))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    def warm_boundary(self) -> dt.date:
        """Days before this are older than the warm window and belong in cold."""
        return (self.config.tiers.current_time() - self.config.tiers.warm_window).date()

    def refresh(self) -> None:
        until = self.cold_until()
        self.cold.until = day_start(until) if until else day_start(dt.date(1970, 1, 1))
        self.warm.since = day_start(until) if until else None
        self.warm.refresh()
        self.cold.refresh()
        self.hot.refresh()

    # -- reading --------------------------------------------------------------------------

    def partitions(self) -> list[Partition]:
        return [p for t in (self.cold, self.warm, self.hot) for p in t.partitions()]

    def sources(self, time_range: TimeRange = ALL_TIME) -> list[Source]:
        out = []
        for tier in (self.cold, self.warm, self.hot):
            sql = tier.relation_sql(time_range)
            if sql:
                parts = tuple(p for p in tier.partitions() if time_range.overlaps(p.start, p.end))
                out.append(Source(tier.name, sql, parts, sum(p.files for p in parts)))
        return out

    def has_data(self) -> bool:
        return any(t.partitions() for t in self.tiers)

    def days_with_data(self) -> set[dt.date]:
        return {p.start.date() for p in self.partitions() if p.tier != "hot"}

    # -- bulk load ------------------------------------------------------------------------

    def cold_file_path(self, day: dt.date, name: str) -> Path:
        return Path(self.cold.data_location(day).removeprefix("file://")) / name

    def register_cold(self, paths: Iterable[str], boundary: dt.date) -> None:
        """One Iceberg commit for every file of a bulk load, then move the boundary."""
        self.cold.add_files(sorted(paths), {"tierflight.operation": "bulk-load"})
        current = self.cold_until()
        if current is None or boundary > current:
            self.set_cold_until(boundary)
        self.refresh()
