"""The contract every storage tier keeps: list its partitions, give DuckDB a relation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True)
class TimeRange:
    """A half-open range [start, end) of the table's time column; None means unbounded."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        return (self.start is None or self.start < end) and (self.end is None or start < self.end)


ALL_TIME = TimeRange()


@dataclass(frozen=True)
class Partition:
    table_name: str
    tier: str
    partition: str  # e.g. day=2024-06-01
    start: dt.datetime
    end: dt.datetime
    files: int
    rows: int
    bytes: int


class Tier(Protocol):
    """A tier holds rows of one table; the router asks it for the part a time range needs."""

    name: str

    def partitions(self) -> list[Partition]: ...

    def relation_sql(self, time_range: TimeRange = ALL_TIME) -> str | None:
        """SQL for a relation over the tier's stored columns, pruned to ``time_range``; None if empty."""
        ...


PARTITIONS_SCHEMA = pa.schema(
    [
        ("table_name", pa.string()),
        ("tier", pa.string()),
        ("partition", pa.string()),
        ("files", pa.int64()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
    ]
)


def partitions_table(parts: list[Partition]) -> pa.Table:
    return pa.table(
        {
            "table_name": [p.table_name for p in parts],
            "tier": [p.tier for p in parts],
            "partition": [p.partition for p in parts],
            "files": [p.files for p in parts],
            "rows": [p.rows for p in parts],
            "bytes": [p.bytes for p in parts],
        },
        schema=PARTITIONS_SCHEMA,
    )
