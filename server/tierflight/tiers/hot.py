"""Hot tail: rows appended at run time and not yet flushed to warm Parquet.

The rows stay the Arrow batches they arrived as, each with the write-ahead-log sequence
number it came in under, so a flush can drop exactly the batches it wrote to Parquet, in
the same critical section that makes the Parquet files visible: a statement sees every row
exactly once. Appending is O(1) (a DuckDB INSERT of a 64K-row batch cost 40-400 ms);
statements read the tail as an Arrow table registered on their cursor, like S3 datasets.
"""

from __future__ import annotations

import datetime as dt
import threading

import pyarrow as pa
import pyarrow.compute as pc

from tierflight.core.config import TableConfig
from tierflight.core.sql import quote_ident
from tierflight.tiers.base import ALL_TIME, Partition, Relation, Scan, Tier, TierKind, TimeRange
from tierflight.tiers.evolution import conform


class HotTail(Tier[None]):
    """The hot tail has no listing: it is read as it is when a statement is planned (the
    swap lock keeps that consistent with the other tiers' listings)."""

    kind = TierKind.HOT

    def __init__(self, table: TableConfig, schema: pa.Schema) -> None:
        self.table_config = table
        self.table_name = table.name
        self.schema = schema
        self.registration = f"__tf_hot_{table.name}"
        self._columns = ", ".join(quote_ident(c.name) for c in table.columns)
        self._lock = threading.Lock()
        self._batches: list[tuple[int, pa.Table]] = []
        self._rows = 0
        self._span: tuple[dt.datetime, dt.datetime] | None = None
        self._whole: pa.Table | None = None  # the batches as one (chunked) table, built lazily

    @property
    def rows(self) -> int:
        return self._rows

    def append(self, data: pa.Table, seq: int = 0) -> None:
        """Append rows (already validated and cast to the table's schema)."""
        if data.num_rows == 0:
            return
        t = data[self.table_config.time_column]
        lo, hi = pc.min(t).as_py(), pc.max(t).as_py()
        with self._lock:
            self._batches.append((seq, data))
            self._rows += data.num_rows
            self._span = (lo, hi) if self._span is None else (min(self._span[0], lo), max(self._span[1], hi))
            self._whole = None

    def apply_schema(self, table: TableConfig, schema: pa.Schema) -> None:
        """Serve ``table``'s (evolved) columns: the rows held are conformed to them (a new
        column's nulls cost no copy of the other columns)."""
        with self._lock:
            self._batches = [(s, conform(t, schema)) for s, t in self._batches]
            self.table_config, self.schema = table, schema
            self._columns = ", ".join(quote_ident(c.name) for c in table.columns)
            self._whole = None

    def read(self, through_seq: int | None = None) -> pa.Table:
        with self._lock:
            tables = [t for s, t in self._batches if through_seq is None or s <= through_seq]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def delete_through(self, seq: int) -> None:
        with self._lock:
            self._batches = [(s, t) for s, t in self._batches if s > seq]
            self._whole = None
        self.refresh()

    def refresh(self) -> None:
        with self._lock:
            batches = [t for _, t in self._batches]
        rows = sum(t.num_rows for t in batches)
        span = None
        if rows:
            times = [t[self.table_config.time_column] for t in batches]
            span = (min(pc.min(c).as_py() for c in times), max(pc.max(c).as_py() for c in times))
        with self._lock:
            self._rows, self._span = rows, span

    def build_listing(self, cold_until: dt.date | None) -> None:
        return None

    def apply(self, listing: None) -> None:
        self.refresh()

    def listing(self) -> None:
        return None

    def partitions(self, listing: None = None, time_range: TimeRange = ALL_TIME) -> list[Partition]:
        with self._lock:
            rows, span = self._rows, self._span
        if not rows or span is None:
            return []
        start, end = span
        if not time_range.overlaps(start, end + dt.timedelta(microseconds=1)):
            return []
        return [Partition(self.table_name, self.kind, "tail", start, end, 0, rows, 0)]

    def relation(self, listing: None, scan: Scan) -> Relation | None:
        """SQL over the tail and the Arrow table it reads (registered on the statement's
        cursor), or None when the tail has no row in the scan's range."""
        with self._lock:
            rows, span = self._rows, self._span
            if not rows or span is None:
                return None
            if not scan.time_range.overlaps(span[0], span[1] + dt.timedelta(microseconds=1)):
                return None
            if self._whole is None:
                self._whole = pa.concat_tables([t for _, t in self._batches])
            whole = self._whole
        return Relation(f"SELECT {self._columns} FROM {self.registration}", ((self.registration, whole),))
