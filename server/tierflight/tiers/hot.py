"""Hot tail: rows appended at run time and not yet flushed to warm Parquet.

The rows live in a DuckDB table, so a flush can delete them and make their Parquet file
visible in one DuckDB transaction: a query sees every row exactly once.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from tierflight.config import TableConfig
from tierflight.engine.database import Database, quote_ident
from tierflight.tiers.base import ALL_TIME, Partition, TimeRange

HOT_SCHEMA = "tf_hot"


class HotTail:
    name = "hot"

    def __init__(self, database: Database, table: TableConfig) -> None:
        self.database = database
        self.table_config = table
        self.table_name = table.name
        self.qualified = f"{HOT_SCHEMA}.{quote_ident(table.name)}"
        cols = ", ".join(f"{quote_ident(c.name)} {c.type}" for c in table.columns)
        database.execute_internal(f"CREATE SCHEMA IF NOT EXISTS {HOT_SCHEMA}")
        database.execute_internal(f"CREATE TABLE IF NOT EXISTS {self.qualified} ({cols})")
        self._rows = 0
        self._span: tuple[dt.datetime, dt.datetime] | None = None

    def append(self, data: pa.Table) -> None:
        self.database.append_internal(self.qualified, data)
        self.refresh()

    def refresh(self) -> None:
        t = quote_ident(self.table_config.time_column)
        row = self.database.query_internal(f"SELECT count(*), min({t}), max({t}) FROM {self.qualified}")[0]
        self._rows = int(row[0])
        self._span = (row[1], row[2]) if self._rows else None

    def partitions(self) -> list[Partition]:
        if not self._rows or self._span is None:
            return []
        start, end = self._span
        return [Partition(self.table_name, self.name, "tail", start, end, 0, self._rows, 0)]

    def relation_sql(self, time_range: TimeRange = ALL_TIME) -> str | None:
        if not self._rows or self._span is None:
            return None
        start, end = self._span
        if not time_range.overlaps(start, end + dt.timedelta(microseconds=1)):
            return None
        return f"SELECT * FROM {self.qualified}"
