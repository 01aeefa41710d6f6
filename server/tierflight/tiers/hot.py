"""Hot tail: rows appended at run time and not yet flushed to warm Parquet.

The rows live in a DuckDB table with the write-ahead-log sequence number of the batch they
came in, so a flush can delete exactly the rows it wrote to Parquet, in the same critical
section that makes the Parquet files visible: a statement sees every row exactly once.
"""

from __future__ import annotations

import datetime as dt
import threading

import pyarrow as pa

from tierflight.config import TableConfig
from tierflight.engine.database import Database, quote_ident
from tierflight.tiers.base import ALL_TIME, Partition, TimeRange

HOT_SCHEMA = "tf_hot"
SEQ_COLUMN = "_tf_seq"


class HotTail:
    name = "hot"

    def __init__(self, database: Database, table: TableConfig) -> None:
        self.database = database
        self.table_config = table
        self.table_name = table.name
        self.qualified = f"{HOT_SCHEMA}.{quote_ident(table.name)}"
        cols = ", ".join(f"{quote_ident(c.name)} {c.type}" for c in table.columns)
        self._columns = ", ".join(quote_ident(c.name) for c in table.columns)
        database.execute_internal(f"CREATE SCHEMA IF NOT EXISTS {HOT_SCHEMA}")
        database.execute_internal(f"CREATE TABLE IF NOT EXISTS {self.qualified} ({cols}, {SEQ_COLUMN} BIGINT)")
        self._lock = threading.Lock()
        self._rows = 0
        self._span: tuple[dt.datetime, dt.datetime] | None = None

    @property
    def rows(self) -> int:
        return self._rows

    def append(self, data: pa.Table, seq: int = 0) -> None:
        """Append rows (already validated and cast to the table's schema)."""
        with_seq = data.append_column(SEQ_COLUMN, pa.array([seq] * data.num_rows, pa.int64()))
        self.database.append_internal(self.qualified, with_seq)
        self._extend(data)

    def _extend(self, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        import pyarrow.compute as pc

        t = data[self.table_config.time_column]
        lo, hi = pc.min(t).as_py(), pc.max(t).as_py()
        with self._lock:
            self._rows += data.num_rows
            if self._span is None:
                self._span = (lo, hi)
            else:
                self._span = (min(self._span[0], lo), max(self._span[1], hi))

    def read(self, through_seq: int | None = None) -> pa.Table:
        where = f"WHERE {SEQ_COLUMN} <= {int(through_seq)}" if through_seq is not None else ""
        cur = self.database.cursor()
        try:
            return cur.sql(f"SELECT {self._columns} FROM {self.qualified} {where}").to_arrow_table()
        finally:
            cur.close()

    def delete_through(self, seq: int) -> None:
        self.database.execute_internal(f"DELETE FROM {self.qualified} WHERE {SEQ_COLUMN} <= {int(seq)}")
        self.refresh()

    def refresh(self) -> None:
        t = quote_ident(self.table_config.time_column)
        row = self.database.query_internal(f"SELECT count(*), min({t}), max({t}) FROM {self.qualified}")[0]
        with self._lock:
            self._rows = int(row[0])
            self._span = (row[1], row[2]) if self._rows else None

    def partitions(self) -> list[Partition]:
        with self._lock:
            rows, span = self._rows, self._span
        if not rows or span is None:
            return []
        start, end = span
        return [Partition(self.table_name, self.name, "tail", start, end, 0, rows, 0)]

    def relation_sql(self, time_range: TimeRange = ALL_TIME) -> str | None:
        with self._lock:
            rows, span = self._rows, self._span
        if not rows or span is None:
            return None
        start, end = span
        if not time_range.overlaps(start, end + dt.timedelta(microseconds=1)):
            return None
        return f"SELECT {self._columns} FROM {self.qualified}"
