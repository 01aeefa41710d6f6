"""Load generated demo events into a table's tiers: each day lands where its time belongs.

Days older than the warm window are written as Parquet straight into the Iceberg table's
data directory and registered in one commit at the end (so a bulk load costs about what
writing the Parquet costs); newer days become warm partitions.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pyarrow as pa

from tierflight.core.errors import InvalidArgument
from tierflight.demo.generate import GenerateStats, generate_to_hive
from tierflight.tiers.store import TableStore


def generate_into(store: TableStore, rows: int, start: dt.date, days: int, seed: int, progress: bool = True) -> GenerateStats:
    last = start + dt.timedelta(days=days - 1)
    clash = sorted(d for d in store.days_with_data() if start <= d <= last)
    if clash:
        raise InvalidArgument(
            f"table {store.table.name} already holds data for {clash[0]}..{clash[-1]}; "
            "use an empty --data-dir or other days"
        )
    boundary = store.warm_boundary()
    cold_paths: list[str] = []
    lock = threading.Lock()

    def write_day(day: dt.date, table: pa.Table) -> int:
        # The table's declared nullability (NOT NULL columns are "required" in Iceberg).
        table = table.cast(store.schema)
        if day < boundary:
            path, size = store.write_cold_file(day, f"generated-{uuid.uuid4().hex}.parquet", table)
            with lock:
                cold_paths.append(path)
            return size
        return store.write_warm_file(day, "part-0.parquet", table)

    stats = generate_to_hive(store.root, rows, start, days, seed, progress=progress, write_day=write_day)
    if cold_paths:
        store.register_cold(cold_paths, boundary)
    store.bump_generation()  # a server running on this data dir lists the new days
    store.refresh()
    return stats
