"""The contract every storage tier keeps: list its partitions, give DuckDB a relation.

A table has three tiers, one per :class:`TierKind`: the hot tail (rows ingested and not yet
flushed), the warm tier (Parquet files by day, on a local disk or under an S3 prefix) and
the cold tier (an Iceberg table). Each implements :class:`Tier`, so ``TableStore`` lists,
swaps and reads them in one loop and never asks which kind it holds.

A tier serves a *listing*: an immutable view of what it holds (the warm days and their
files, the Iceberg snapshot), built aside by :meth:`Tier.build_listing` (slow: it lists
storage) and swapped in by :meth:`Tier.apply`. Statements are planned against the listing
the store read under its view lock, so one statement sees one consistent set of files.
"""

from __future__ import annotations

import datetime as dt
import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa


class TierKind(enum.StrEnum):
    """A tier's name, as system.partitions, EXPLAIN ROUTE and the statement log print it."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


@dataclass(frozen=True)
class TimeRange:
    """A half-open range [start, end) of the table's time column; None means unbounded."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        return (self.start is None or self.start < end) and (self.end is None or start < self.end)


ALL_TIME = TimeRange()

# A name the relation's SQL reads and the Arrow object (table, dataset) to register under it
# on the statement's cursor: DuckDB registrations are per connection.
Registration = tuple[str, Any]


@dataclass(frozen=True)
class Partition:
    table_name: str
    tier: TierKind
    partition: str  # e.g. day=2024-06-01
    start: dt.datetime
    end: dt.datetime
    files: int
    rows: int
    bytes: int


@dataclass(frozen=True)
class Scan:
    """What a statement asks of a tier.

    ``strict``: a stored file that cannot be served (unreadable, wrong schema) fails the
    call with an error naming it; otherwise the tier serves around it (see WarmTier.files).
    ``day_as``: the derived column that is the time column's date; a tier that can read it
    from its day directories instead of computing it per row gives it (Relation.carries).
    """

    time_range: TimeRange = ALL_TIME
    strict: bool = True
    day_as: str | None = None


@dataclass(frozen=True)
class Relation:
    """SQL over a tier's rows, in the table's column order, and what it needs to run."""

    sql: str
    registrations: tuple[Registration, ...] = ()
    # Derived columns ``sql`` gives after the table's columns (Scan.day_as when carried).
    carries: tuple[str, ...] = ()


L = TypeVar("L")


class Tier(ABC, Generic[L]):
    """A tier holds rows of one table; the router asks it for the part a time range needs.

    ``L`` is the type of the tier's listing. Implementations: ``HotTail`` (tiers/hot.py),
    ``WarmTier`` over a ``WarmStorage`` per storage kind (tiers/warm.py: local disk, S3),
    ``ColdTier`` (tiers/cold.py).
    """

    kind: ClassVar[TierKind]

    @abstractmethod
    def build_listing(self, cold_until: dt.date | None) -> L:
        """What the tier holds now, without changing what it serves. ``cold_until`` is the
        table's boundary: days before it are the cold tier's, the others the warm tier's
        (None: nothing was demoted yet).

        Raises:
            StorageUnavailable: the storage cannot be listed (an S3 endpoint or an Iceberg
                catalog that does not answer; a cold tier configured to be skipped instead
                lists as empty).
        """

    @abstractmethod
    def apply(self, listing: L) -> None:
        """Serve ``listing`` from now on (cheap; called under the store's view lock)."""

    @abstractmethod
    def listing(self) -> L:
        """The listing applied last (cheap, no I/O)."""

    @abstractmethod
    def partitions(self, listing: L | None = None, time_range: TimeRange = ALL_TIME) -> list[Partition]:
        """The partitions of ``listing`` (default: the one applied last) that overlap
        ``time_range``, oldest first. Raises nothing: it reads the listing only."""

    @abstractmethod
    def relation(self, listing: L, scan: Scan) -> Relation | None:
        """The relation a statement reads over ``scan.time_range`` of ``listing``; None when
        the tier has no row there.

        Raises:
            StorageUnavailable: a file the range needs cannot be served and ``scan.strict``
                is set (warm), or the storage does not answer while planning (cold, unless
                configured to be skipped).
        """


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
            "tier": [str(p.tier) for p in parts],
            "partition": [p.partition for p in parts],
            "files": [p.files for p in parts],
            "rows": [p.rows for p in parts],
            "bytes": [p.bytes for p in parts],
        },
        schema=PARTITIONS_SCHEMA,
    )
