"""Warm tier: recent partitions as Parquet files in a hive layout by day.

``<data_dir>/<table>/warm/day=YYYY-MM-DD/part-*.parquet``. Partition pruning happens here
(the file list handed to DuckDB only holds the days a time range touches); DuckDB then prunes
row groups by their statistics.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pyarrow.parquet as pq

from tierflight.engine.database import quote_literal
from tierflight.tiers.base import ALL_TIME, Partition, TimeRange

_DAY = dt.timedelta(days=1)
COMPACTION_JOURNAL = "_compaction.json"


def live_files(day_dir: Path) -> list[Path]:
    """The partition's files, minus those a completed-but-unfinished compaction replaced."""
    files = sorted(day_dir.glob("*.parquet"))
    journal = day_dir / COMPACTION_JOURNAL
    if journal.exists():
        try:
            data = json.loads(journal.read_text())
        except ValueError:
            return files
        if (day_dir / data["new"]).exists():
            old = set(data["old"])
            files = [f for f in files if f.name not in old]
    return files


def day_dir_name(day: dt.date) -> str:
    return f"day={day.isoformat()}"


class WarmTier:
    name = "warm"

    def __init__(self, root: Path, table_name: str) -> None:
        self.root = root
        self.table_name = table_name
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[float, int]] = {}  # file -> (mtime, rows)
        # The listing is read on every planned statement, so it is kept and rebuilt on refresh().
        self._listing: list[tuple[Partition, list[Path]]] = []
        # Days before this belong to the cold tier (a demotion may not have deleted them yet).
        self.since: dt.datetime | None = None
        self.refresh()

    def day_dirs(self) -> list[tuple[dt.date, Path]]:
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and d.name.startswith("day="):
                try:
                    out.append((dt.date.fromisoformat(d.name[4:]), d))
                except ValueError:
                    continue
        return sorted(out)

    def files(self, time_range: TimeRange = ALL_TIME) -> list[Path]:
        out: list[Path] = []
        for part, files in self._listing:
            if time_range.overlaps(part.start, part.end):
                out.extend(files)
        return out

    def _rows(self, path: Path) -> int:
        mtime = path.stat().st_mtime
        with self._lock:
            cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        rows = pq.ParquetFile(path).metadata.num_rows
        with self._lock:
            self._cache[path] = (mtime, rows)
        return rows

    def partitions(self) -> list[Partition]:
        return [p for p, _ in self._listing]

    def refresh(self) -> None:
        listing = []
        for day, path in self.day_dirs():
            files = live_files(path)
            start = dt.datetime.combine(day, dt.time())
            if self.since is not None and start < self.since:
                continue
            listing.append(
                (
                    Partition(
                        table_name=self.table_name,
                        tier=self.name,
                        partition=path.name,
                        start=start,
                        end=start + _DAY,
                        files=len(files),
                        rows=sum(self._rows(f) for f in files),
                        bytes=sum(f.stat().st_size for f in files),
                    ),
                    files,
                )
            )
        self._listing = listing

    def relation_sql(self, time_range: TimeRange = ALL_TIME) -> str | None:
        files = self.files(time_range)
        if not files:
            return None
        listing = ", ".join(quote_literal(str(f)) for f in files)
        return f"SELECT * FROM read_parquet([{listing}], hive_partitioning = false)"
