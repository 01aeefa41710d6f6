"""A statement's output column names as DuckDB gives them, without touching any data."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import duckdb

from tierflight.core.config import TableConfig
from tierflight.core.lru import LRU
from tierflight.core.sql import quote_ident, table_view_sql
from tierflight.engine.database import use_catalog


class ColumnNames:
    """Output names of a statement, bound against empty views of the tables (same columns, no
    files), so a plan-cache miss does not pay for listing files; remembered by text, since
    they depend only on it and the tables' columns (a data change empties the plan cache, and
    the same dashboard statements are planned again; a schema change: schema_changed)."""

    def __init__(self, tables: Mapping[str, TableConfig], capacity: int = 4096) -> None:
        self._tables = tables
        self._cache: LRU[str, tuple[str, ...]] = LRU(capacity)
        self._lock = threading.Lock()
        # Opened on the first miss: a follower or a process whose statements are all cached
        # never needs it.
        self._binder: duckdb.DuckDBPyConnection | None = None

    def __call__(self, sql: str) -> list[str]:
        names = self._cache.get(sql)
        if names is not None:
            return list(names)
        cur = self._connection().cursor()
        try:
            found = tuple(cur.sql(sql).columns)
        finally:
            cur.close()
        self._cache.put(sql, found)
        return list(found)

    def clear(self) -> None:
        """Forget the remembered names (benchmarks measure a miss)."""
        self._cache.clear()

    def schema_changed(self) -> None:
        """A table's columns changed (ingest evolved it; ``tables`` holds the new ones): bind
        against new views, and forget names bound against the old ones (``SELECT *``)."""
        with self._lock:
            self._binder = None
            self._cache.clear()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._binder is None:
                # Named like the server's database, so catalog-qualified names bind; no file
                # access (the statement is the client's; only its names are wanted).
                binder = duckdb.connect(":memory:", config={"enable_external_access": False})
                use_catalog(binder)
                for table in self._tables.values():
                    binder.execute(f"CREATE VIEW {quote_ident(table.name)} AS {table_view_sql(table, [])}")
                self._binder = binder
            return self._binder
