"""Estimated rows of a proposed rollup, from the data: distinct groups in a sample.

One sample per table (DuckDB's system sample of the raw tiers, hot tail included) is kept
for a while as Arrow; each proposal counts its groups in it, with the filter and retention
applied, and scales the count to the table with the GEE estimator (Charikar et al.): groups
seen once in the sample stand for sqrt(N/n) groups each, groups seen more often for one.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import pyarrow as pa

from tierflight.advisor.propose import Proposal
from tierflight.core.sql import quote_ident, table_view_sql
from tierflight.rollups.definition import dimension_expr
from tierflight.tiers.store import TableStore

SAMPLE_ROWS = 200_000
SAMPLE_TTL_S = 600.0


class DataEstimator:
    def __init__(
        self, stores: Mapping[str, TableStore], now: Callable[[], dt.datetime], spill: str | None = None
    ) -> None:
        self.stores = stores
        self.now = now
        self._samples: dict[str, tuple[float, pa.Table, int]] = {}
        self._lock = threading.Lock()
        # A DuckDB of its own with one thread: estimates never take the statements' pool.
        settings: dict[str, Any] = {"threads": 1, "memory_limit": "512MB"}
        if spill:
            settings["temp_directory"] = spill
        self._db = duckdb.connect(config=settings)

    def close(self) -> None:
        self._db.close()

    def _sample(self, table: str) -> tuple[pa.Table, int]:
        cached = self._samples.get(table)
        if cached is not None and time.monotonic() - cached[0] < SAMPLE_TTL_S:
            return cached[1], cached[2]
        store = self.stores[table]
        total = sum(p.rows for p in store.partitions())
        sources = store.sources()
        cur = self._db.cursor()
        try:
            for s in sources:
                for name, obj in s.registrations:
                    cur.register(name, obj)
            body = table_view_sql(store.table, [s.sql for s in sources])
            share = min(100.0, max(0.01, 100.0 * SAMPLE_ROWS / max(total, 1)))
            sample = cur.sql(f"SELECT * FROM ({body}) USING SAMPLE {share:.4f}% (system)").to_arrow_table()
        finally:
            cur.close()
        self._samples[table] = (time.monotonic(), sample, total)
        return sample, total

    def __call__(self, p: Proposal) -> int:
        with self._lock:
            sample, total = self._sample(p.table)
            if sample.num_rows == 0:
                return 0
            table = self.stores[p.table].table
            where = []
            if p.filter:
                where.append(f"({p.filter})")
            if p.retention_days:
                cutoff = self.now() - dt.timedelta(days=p.retention_days)
                where.append(f"{quote_ident(table.time_column)} >= TIMESTAMP '{cutoff.isoformat(sep=' ')}'")
            dims = [dimension_expr(d, table.time_column) for d in p.dimensions] or ["1"]
            cur = self._db.cursor()
            try:
                cur.register("__tf_sample", sample)
                sql = (
                    f"SELECT count(*) FILTER (WHERE c = 1), count(*) FILTER (WHERE c > 1), coalesce(sum(c), 0) "
                    f"FROM (SELECT count(*) AS c FROM __tf_sample {'WHERE ' + ' AND '.join(where) if where else ''} "
                    f"GROUP BY {', '.join(dims)})"
                )
                once, more, matched = cur.sql(sql).fetchall()[0]
            finally:
                cur.close()
        if not matched:
            return 0
        population = total * matched / sample.num_rows  # rows of the table the rollup covers
        return int(min(population, math.sqrt(population / matched) * once + more))
