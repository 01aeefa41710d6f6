"""Joined rollups held by the engine (what they are and why they are exact: router/joined.py).

A statement of a flat join runs on its joined rollup when one is held for the same join (the
build's text: rollup, dimension versions, columns, merges) and the same data version. A join is
built the second time it runs at a version: a statement that never comes again costs nothing,
and a dashboard's next filter value reads the table the first one built.

Before a table serves, the statement over it must bind to the names and types of the flat
join's answer (DuckDB says so, not the router); otherwise that join is never built again. The
tables of an older data version go when a newer one is built (an ingest or a dimension
replace moves the version: a new plan never names the old), and the oldest go first while the
rows held pass ``[router] joined_rollup_rows``.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from tierflight.core.log import get_logger
from tierflight.core.lru import LRU
from tierflight.core.names import JOINED_DATABASE
from tierflight.core.sql import quote_ident
from tierflight.engine.database import Database
from tierflight.router.joined import MARKER, JoinedRollup
from tierflight.router.route import PartTier, Route

log = get_logger(__name__)

_Key = tuple[str, tuple[Any, ...]]  # (the build's text, the data version)


@dataclass(frozen=True)
class _Held:
    qualified: str
    rows: int


class JoinedRollups:
    def __init__(self, database: Database, max_rows: int) -> None:
        self._database = database
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()  # one build at a time (each is one DuckDB statement)
        self._held: OrderedDict[_Key, _Held] = OrderedDict()
        self._seen: LRU[_Key, int] = LRU(4096)
        self._refused: LRU[str, bool] = LRU(4096)
        self._seq = itertools.count(1)
        self.built = 0

    @property
    def rows(self) -> int:
        with self._lock:
            return sum(h.rows for h in self._held.values())

    def sql(self, route: Route, cursor: duckdb.DuckDBPyConnection) -> str:
        """What runs for ``route`` on ``cursor``: its SQL, or the statement over its joined
        rollup (built here when this is its second run at this data version)."""
        if not route.flat_join or route.version is None or self._max_rows == 0:
            return route.sql
        joined = route.joined
        if joined is None or self._refused.get(joined.build):
            return route.sql
        key = (joined.build, route.version)
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                self._held.move_to_end(key)
                return joined.outer.replace(MARKER, held.qualified)
            seen = (self._seen.get(key) or 0) + 1
            self._seen.put(key, seen)
        if seen < 2:
            return route.sql
        with self._build_lock:
            with self._lock:
                held = self._held.get(key)
            if held is None:
                held = self._build(key, joined, route.sql, cursor)
            return route.sql if held is None else joined.outer.replace(MARKER, held.qualified)

    def explain(self, route: Route) -> pa.Table:
        """EXPLAIN ROUTE's rows for ``route``, with a row for its joined rollup if it has one."""
        table = route.explain_table()
        joined = route.joined if route.flat_join else None
        if joined is None or self._max_rows == 0:
            return table
        with self._lock:
            held = self._held.get((joined.build, route.version)) if route.version is not None else None
        if held is not None:
            rows, why = held.rows, "the join's rows joined once, grouped by the columns the statement reads: read in place of the join"
        elif self._refused.get(joined.build):
            rows, why = None, "not kept for this join (see the server log): the join runs"
        else:
            rows, why = None, "not held yet: built when this join runs again at this data version; until then the join runs"
        row = pa.table(
            {
                "tier": pa.array([str(PartTier.HOT)], pa.string()),
                "source": pa.array([f"joined rollup: {joined.source}"], pa.string()),
                "estimated_rows": pa.array([rows], pa.int64()),
                "reason": pa.array([why], pa.string()),
            }
        )
        return pa.concat_tables([table, row.cast(table.schema)])

    def _build(
        self, key: _Key, joined: JoinedRollup, flat_sql: str, cursor: duckdb.DuckDBPyConnection
    ) -> _Held | None:
        qualified = f"{JOINED_DATABASE}.main.{quote_ident(f'j{next(self._seq)}')}"
        outer = joined.outer.replace(MARKER, qualified)
        try:
            # One row past the budget says it is over: the table never holds more.
            self._database.execute_internal(
                f"CREATE TABLE {qualified} AS SELECT * FROM ({joined.build}) LIMIT {self._max_rows + 1}",
                cursor=cursor,
            )
            rows = cursor.execute(f"SELECT count(*) FROM {qualified}").fetchall()[0][0]
            same = _described(cursor, outer) == _described(cursor, flat_sql)
        except duckdb.InterruptException:
            # The statement was cancelled: its own error says so. Its deadline or the memory
            # ceiling stops a build that costs more than the join: were it tried again, every
            # later run of the join would be stopped the same way.
            self._refuse(joined, qualified, "stopped")
            raise
        except duckdb.Error as exc:
            # Out of memory, or a text DuckDB does not take: the flat join answers, as before.
            self._refuse(joined, qualified, str(exc).splitlines()[0])
            return None
        if not same or rows > self._max_rows:
            self._refuse(joined, qualified, "another schema" if not same else f"{rows} rows")
            return None
        held = _Held(qualified, rows)
        with self._lock:
            self._held[key] = held
            older = [k for k in self._held if k[1] != key[1]]  # other data versions
            dropped = [self._held.pop(k) for k in older]
            total = sum(h.rows for h in self._held.values())
            for k in list(self._held):
                if total <= self._max_rows:
                    break
                if k != key:
                    total -= self._held[k].rows
                    dropped.append(self._held.pop(k))
            self.built += 1
        for old in dropped:
            self._drop(old.qualified)
        log.debug("joined_rollup_built", table=qualified, rows=rows, source=joined.source)
        return held

    def _refuse(self, joined: JoinedRollup, qualified: str, reason: str) -> None:
        """This join is never built again; what its build wrote goes."""
        log.info("joined_rollup_refused", reason=reason)
        self._drop(qualified)
        self._refused.put(joined.build, True)

    def _drop(self, qualified: str) -> None:
        # A statement already reading it keeps its rows (DuckDB's catalog is transactional).
        try:
            self._database.execute_internal(f"DROP TABLE IF EXISTS {qualified}")
        except duckdb.Error as exc:
            log.warning("joined_rollup_drop_failed", table=qualified, reason=str(exc).splitlines()[0])

    def clear(self) -> None:
        with self._lock:
            dropped = list(self._held.values())
            self._held.clear()
        for old in dropped:
            self._drop(old.qualified)


def _described(cursor: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    """The names and types DuckDB binds ``sql``'s answer to (nothing runs)."""
    return [(r[0], r[1]) for r in cursor.execute(f"DESCRIBE {sql}").fetchall()]
