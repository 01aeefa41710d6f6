"""Every statement runs through :meth:`Executor.start`: limits, routing, tracing, logging.

An execution starts when the client asks for a FlightInfo (so its schema is known) and is
streamed by the DoGet of its ticket; it runs exactly once. If the ticket is fetched again, or
by a server that never saw the FlightInfo, the statement is run again from the ticket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from tierflight.core.config import Config
from tierflight.core.errors import (
    Cancelled,
    MemoryCeilingReached,
    Overloaded,
    ResultTooLarge,
    StatementTimeout,
    TierflightError,
)
from tierflight.core.log import get_logger
from tierflight.core.rwlock import RWLock
from tierflight.core.statement import Statement
from tierflight.engine.calls import current_call
from tierflight.engine.database import Database
from tierflight.engine.duck_errors import translate
from tierflight.engine.guards import check_builtin_bypass
from tierflight.engine.monitor import Monitor, Stop, StopReason, human_size, resolve_ceiling
from tierflight.engine.plain import plain_reader, plain_schema
from tierflight.engine.session import mentions_session_user, set_session_user
from tierflight.engine.watchdog import Watchdog
from tierflight.router.route import Route

log = get_logger("tierflight.statement")

Params = Sequence[Sequence[Any]]  # one row of values per execution of the statement


class Planner(Protocol):
    def plan(self, statement: Statement) -> Route: ...


class StatementObserver(Protocol):
    """Told of every finished statement (metrics); must be cheap and must not raise."""

    def statement(self, tier: str, rollup: str | None, status: str, seconds: float) -> None: ...


class _NoObserver:
    def statement(self, tier: str, rollup: str | None, status: str, seconds: float) -> None:
        return None


@dataclass
class QueryRecord:
    query_id: str
    sql: str
    user: str
    tier: str
    rollup: str | None
    rows: int
    bytes: int
    total_ms: float
    status: str
    reused: bool = False  # answered from the result cache
    # Query ids are random: this gives the statements' order (UTC, like the data).
    finished_at: dt.datetime | None = None


RESULT_CACHE_MAX_BYTES = 1 << 20


def _new_query_id() -> str:
    # Random, not a counter: a query id names an execution a ticket or a cancel refers to,
    # and nobody may guess another user's.
    return secrets.token_hex(16)


new_query_id = _new_query_id


class ResultCache:
    """Answers of statements the router marked reusable (a data version on the route), keyed
    by the SQL run and that version: any ingest, flush or file change moves the version, so a
    hit is never stale."""

    def __init__(self, capacity_bytes: int = 64 << 20) -> None:
        self._items: OrderedDict[tuple[Any, ...], tuple[pa.Table, int]] = OrderedDict()
        self._bytes = 0
        self._capacity = capacity_bytes
        self.enabled = capacity_bytes > 0
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: tuple[Any, ...]) -> tuple[pa.Table, int] | None:
        """The table and its size in bytes (Table.nbytes walks every buffer: kept, not redone)."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return item

    def put(self, key: tuple[Any, ...], table: pa.Table, nbytes: int) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (table, nbytes)
            self._bytes += nbytes
            while self._bytes > self._capacity and self._items:
                _, (_, old) = self._items.popitem(last=False)
                self._bytes -= old


def statement_hash(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()[:16]


def _split(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """Keep each batch under the client's message limit (ADBC's default is 16 MiB)."""
    size = batch.nbytes
    if size <= max_bytes or batch.num_rows <= 1:
        yield batch
        return
    pieces = -(-size // max_bytes)
    step = max(1, -(-batch.num_rows // pieces))
    for offset in range(0, batch.num_rows, step):
        yield from _split(batch.slice(offset, step), max_bytes)


def _at_deadline(stop: Stop) -> Callable[[], None]:
    return lambda: stop(StopReason.DEADLINE)


@dataclass
class Execution:
    """A started statement; :meth:`batches` streams it and finishes its bookkeeping."""

    query_id: str
    statement: Statement
    route: Route
    schema: pa.Schema
    user: str
    started: float
    plan_ms: float
    _executor: Executor
    _cursor: duckdb.DuckDBPyConnection | None
    _readers: Iterator[pa.RecordBatchReader] | None
    _first: pa.RecordBatchReader | pa.Table | None
    _deadline_token: int | None = None
    _holds_slot: bool = True
    _cache_key: tuple[Any, ...] | None = None
    _park_token: int | None = None
    client_sql: str | None = None
    _known_bytes: int = 0  # the size of a cached result, kept with it
    reused: bool = False  # the answer comes from the result cache
    # Interrupts the statement and says why (server.statement_timeout, a client's cancel, the
    # memory ceiling); None for an answer already in memory, which runs nothing.
    _stop: Stop | None = None
    _finished: bool = False
    rows: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        if self._stop is not None:
            self._stop(StopReason.CANCELLED)

    def stopped(self, reason: StopReason) -> None:
        """The statement was stopped: its slot and log entry are settled now, not when its
        stream next moves (a client that stopped reading may never let it move again). The
        stream fails at its next batch and closes the cursor then; a parked execution, which
        nobody streams, is finished at once (past its deadline: "expired", it never ran for
        a client)."""
        if self._executor.unpark_if_parked(self.query_id):
            self.finish("expired" if reason is StopReason.DEADLINE else self._error(None).status.value)
        else:
            self._settle(self._error(None).status.value)

    def batches(self) -> Iterator[pa.RecordBatch]:
        # Captured here, in the DoGet handler: the generator body runs after it has returned.
        return self._batches(current_call.get())

    def _batches(self, call: Callable[[], bool] | None) -> Iterator[pa.RecordBatch]:
        stop = self._stop
        with stop.watching(call) if stop is not None else contextlib.nullcontext():
            yield from self._stream()

    def _stream(self) -> Iterator[pa.RecordBatch]:
        cfg = self._executor.config.server
        status = "error"
        try:
            keep: list[pa.RecordBatch] | None = [] if self._cache_key is not None else None
            for reader in self._iter_sources():
                for batch in reader.to_batches() if isinstance(reader, pa.Table) else reader:
                    for piece in _split(batch, cfg.max_batch_bytes):
                        self.rows += piece.num_rows
                        self.bytes += piece.nbytes
                        if keep is not None:
                            keep.append(piece)
                            if self.bytes > RESULT_CACHE_MAX_BYTES:
                                keep = None
                        self._check_limits()
                        yield piece
            status = "ok"
            if keep is not None and self._cache_key is not None:
                table = pa.Table.from_batches(keep, schema=self.schema)
                self._executor.results.put(self._cache_key, table, self.bytes)
        except GeneratorExit:
            status = "cancelled"
            raise
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised
            err = self._error(exc)
            status = err.status.value
            raise err from None
        finally:
            self.finish(status)

    def table(self) -> pa.Table | None:
        """The whole answer when it is already in memory (a cached result, EXPLAIN ROUTE),
        else None (stream :meth:`batches`). pyarrow sends a table without calling back into
        Python per batch; the statement is finished (logged) as it is handed over."""
        first = self._first
        if not isinstance(first, pa.Table) or self._cursor is not None or self._readers is not None:
            return None
        self._first = None
        self.rows, self.bytes = first.num_rows, self._known_bytes or first.nbytes
        try:
            self._check_limits()
        except TierflightError as err:
            self.finish(err.status.value)
            raise
        self.finish("ok")
        return first

    def _check_limits(self) -> None:
        if self._stop is not None and self._stop.reason is not None:
            raise self._error(None)
        cfg = self._executor.config.server
        if cfg.max_result_rows and self.rows > cfg.max_result_rows:
            raise ResultTooLarge(f"result exceeds server.max_result_rows = {cfg.max_result_rows}; add a LIMIT")
        if cfg.max_result_bytes and self.bytes > cfg.max_result_bytes:
            raise ResultTooLarge(f"result exceeds server.max_result_bytes = {cfg.max_result_bytes}; add a LIMIT")

    def _iter_sources(self) -> Iterator[pa.RecordBatchReader | pa.Table]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        if self._readers is not None:
            yield from self._readers

    def _error(self, exc: BaseException | None) -> TierflightError:
        stopped = self._executor.stop_error(self._stop)
        if stopped is not None or exc is None:
            return stopped or Cancelled("statement was cancelled")
        err = translate(exc, self.query_id)
        if err.status.value == "internal":
            log.error("statement_failed", query_id=self.query_id, error=repr(exc))
        return err

    def discard(self) -> None:
        """Drop a parked execution that will never be streamed."""
        self._executor.unpark(self.query_id)
        self.finish("discarded")

    def _settle(self, status: str) -> bool:
        """Log the statement and give its slot back, once; False if that was done already."""
        with self._lock:
            if self._finished:
                return False
            self._finished = True
        self._executor._finished(self, status)
        return True

    def finish(self, status: str) -> None:
        self._settle(status)
        if self._park_token is not None:
            self._executor._watchdog.cancel(self._park_token)
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):
                cursor.close()
        if self._stop is not None:
            # A late stop must not touch the closed cursor; and no cycle is left for the collector.
            self._stop.cursor, self._stop.on_stop = None, None
            self._executor._forget(self._stop)
        # Drop what the finished statement held: DuckDB 2 slows down with many live cursors.
        self._first, self._readers = None, None


class Executor:
    def __init__(self, config: Config, database: Database, planner: Planner, swap_lock: RWLock | None = None) -> None:
        self.swap_lock = swap_lock or RWLock()
        self.config = config
        self.database = database
        self.planner = planner
        self._slots = threading.BoundedSemaphore(config.server.max_in_flight)
        self._watchdog = Watchdog()
        self._pending: dict[str, Execution] = {}
        self._running: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self._max_parked = 4 * config.server.max_in_flight
        self.recent: deque[QueryRecord] = deque(maxlen=config.server.query_log_size)
        self.results = ResultCache(config.server.result_cache_bytes)
        self.observer: StatementObserver = _NoObserver()
        # Statements still inside start() (not yet in _running): a shutdown past its grace
        # period, a cancelled RPC or the memory ceiling must reach a blocking aggregate there too.
        self._starting: dict[str, Stop] = {}
        # Every statement that holds a cursor (starting, running, streaming or parked).
        self._stops: dict[str, Stop] = {}
        self._last_finished = float("-inf")
        self.memory_ceiling = resolve_ceiling(config.server.memory_ceiling)
        self._monitor = Monitor(self, self.memory_ceiling)

    # -- the one path every statement takes ---------------------------------------------

    def start(
        self,
        statement: Statement,
        params: Params | None,
        user: str,
        query_id: str | None = None,
        *,
        sees_all: bool = False,
    ) -> Execution:
        """``sees_all``: the caller may read every user's rows of ``system.queries`` (the
        ``admin`` permission); otherwise it sees its own statements only."""
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                f"too many statements in flight (server.max_in_flight = {self.config.server.max_in_flight}); retry later"
            )
        query_id = query_id or new_query_id()
        started = time.perf_counter()
        client_sql = statement.sql  # logged as the client sent it, not as bound
        if params and len(params) == 1 and statement.parameter_count and statement.kind != "explain":
            # One value set: bind it, so the statement routes (and caches) like a literal one.
            from tierflight.router.binding import bind

            try:
                statement, params = bind(statement, params[0]), None
            except TierflightError:
                self._slots.release()
                raise
        cursor: duckdb.DuckDBPyConnection | None = None
        stop = Stop(query_id)
        deadline_token: int | None = None
        try:
            # Plan and start under the read side of the swap lock: a flush publishing files
            # and dropping hot rows never lands between the two.
            with self.swap_lock.read():
                route = self.planner.plan(statement)
                plan_ms = (time.perf_counter() - started) * 1000
                cache_key = (
                    (route.sql, *route.version)
                    if route.version is not None and not params and self.results.enabled
                    else None
                )
                cached = self.results.get(cache_key) if cache_key is not None else None
                if statement.kind == "explain_route":
                    table = route.explain_table()
                    ex = Execution(query_id, statement, route, table.schema, user, started, plan_ms, self, None, None, table)
                elif cached is not None:
                    table, nbytes = cached
                    ex = Execution(query_id, statement, route, table.schema, user, started, plan_ms, self, None, None, table)
                    ex._known_bytes, ex.reused = nbytes, True
                else:
                    check_builtin_bypass(statement.tree)
                    if route.system_tables:  # resolved by the raw planner (core.names)
                        self.database.refresh_system_tables(route.system_tables)
                    cursor = self.database.cursor()
                    stop.cursor = cursor
                    with self._lock:
                        self._starting[query_id] = stop
                        self._stops[query_id] = stop
                    for name, obj in route.registrations:
                        cursor.register(name, obj)
                    for name, obj in self.database.caller_registrations(route.system_tables, None if sees_all else user):
                        cursor.register(name, obj)
                    if mentions_session_user(route.sql):
                        set_session_user(cursor, user)
                    if route.rollup is None:
                        # A rollup rewrite is generated from an already checked SELECT tree.
                        self.database.check_statement_type(cursor, route.sql)
                    # The deadline starts before DuckDB runs anything: a blocking operator (an
                    # aggregate, a sort) runs to completion inside _run, before the first batch.
                    timeout = self.config.server.statement_timeout.total_seconds()
                    if timeout > 0:
                        deadline_token = self._watchdog.schedule(timeout, _at_deadline(stop))
                    with stop.watching(current_call.get()):
                        first, rest = self._run(cursor, route.sql, params)
                    ex = Execution(
                        query_id, statement, route, first.schema, user, started, plan_ms, self, cursor, rest, first
                    )
                    ex._cache_key = cache_key
                    ex._stop = stop
                    ex._deadline_token = deadline_token
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised
            with self._lock:
                self._starting.pop(query_id, None)
            self._forget(stop)
            self._slots.release()
            if deadline_token is not None:
                self._watchdog.cancel(deadline_token)
            if cursor is not None:
                cursor.close()
            err = self.stop_error(stop) or translate(exc, query_id)
            self._log(query_id, client_sql, user, None, 0, 0, started, 0.0, err.status.value)
            if err.status.value == "internal":
                log.error("statement_failed", query_id=query_id, error=repr(exc))
            raise err from None
        ex.client_sql = client_sql
        with self._lock:
            self._starting.pop(query_id, None)
            self._running[query_id] = ex
        if ex._stop is not None:
            ex._stop.on_stop = ex.stopped
            stopped = self.stop_error(ex._stop)
            if stopped is not None:  # stopped after DuckDB had started it, before on_stop was set
                ex.finish(stopped.status.value)
                raise stopped
        return ex

    def stop_error(self, stop: Stop | None) -> TierflightError | None:
        """The error of a statement that was stopped, or None if it was not."""
        reason = stop.reason if stop is not None else None
        if reason is StopReason.DEADLINE:
            return self._timeout_error()
        if reason is StopReason.MEMORY:
            return MemoryCeilingReached(
                f"statement cancelled: the server's memory ceiling ({human_size(self.memory_ceiling)}, "
                "server.memory_ceiling) was reached; narrow the statement (filters, fewer or smaller "
                "values, a LIMIT) or retry when the server is less busy"
            )
        if reason is StopReason.SHUTDOWN:
            return Cancelled("statement was cancelled: the server is shutting down")
        if reason is StopReason.CANCELLED:
            return Cancelled("statement was cancelled by the client")
        return None

    def stops(self) -> list[Stop]:
        with self._lock:
            return list(self._stops.values())

    def _forget(self, stop: Stop) -> None:
        with self._lock:
            if self._stops.get(stop.query_id) is stop:
                del self._stops[stop.query_id]

    def _timeout_error(self) -> StatementTimeout:
        timeout = self.config.server.statement_timeout.total_seconds()
        return StatementTimeout(f"statement exceeded the timeout of {timeout:g} s (server.statement_timeout)")

    def _run(
        self, cursor: duckdb.DuckDBPyConnection, sql: str, params: Params | None
    ) -> tuple[pa.RecordBatchReader, Iterator[pa.RecordBatchReader] | None]:
        batch_rows = self.config.server.batch_rows
        rows = list(params) if params else [()]
        first = plain_reader(cursor.sql(sql, params=list(rows[0]) or None).to_arrow_reader(batch_rows))

        def rest() -> Iterator[pa.RecordBatchReader]:
            # Each further parameter row is one more execution; results are concatenated.
            for row in rows[1:]:
                yield plain_reader(cursor.sql(sql, params=list(row) or None).to_arrow_reader(batch_rows))

        return first, (rest() if len(rows) > 1 else None)

    def schema(self, statement: Statement, parameter_count: int = 0) -> pa.Schema:
        """The result schema without running the statement (LIMIT 0 is planned, not scanned)."""
        check_builtin_bypass(statement.tree)
        route = self.planner.plan(statement)
        if statement.kind == "explain_route":
            return route.explain_table().schema
        cursor = self.database.cursor()
        try:
            for name, obj in route.registrations:
                cursor.register(name, obj)
            for name, table in self.database.caller_registrations(route.system_tables, ""):
                cursor.register(name, table)  # no rows: only the schema is asked for
            self.database.check_statement_type(cursor, route.sql)
            params = [None] * parameter_count or None
            schema = cursor.sql(route.sql, params=params).limit(0).to_arrow_table().schema
            return plain_schema(schema) or schema
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised
            raise translate(exc, "schema") from None
        finally:
            cursor.close()

    # -- tickets --------------------------------------------------------------------------

    def park(self, ex: Execution) -> None:
        """Hold a started execution until its ticket is fetched (or it expires).

        A parked execution gives its in-flight slot back: clients that ask for FlightInfos
        and never fetch them must not lock everyone else out. The oldest parked executions
        are dropped past a bound for the same reason.
        """
        evicted: list[Execution] = []
        with self._lock:
            self._pending[ex.query_id] = ex
            while len(self._pending) > self._max_parked:
                evicted.append(self._pending.pop(next(iter(self._pending))))
        self._release_slot(ex)
        for old in evicted:
            old.finish("expired")
        if ex._cursor is None:
            # Holds no cursor (an answer in memory): the bound on parked executions is enough.
            return
        # The timer holds the query id, not the execution: it must not keep it (and its cursor) alive.
        query_id = ex.query_id
        ex._park_token = self._watchdog.schedule(
            self.config.server.statement_timeout.total_seconds() or 300, lambda: self._expire(query_id)
        )

    def unpark(self, query_id: str) -> None:
        with self._lock:
            self._pending.pop(query_id, None)

    def unpark_if_parked(self, query_id: str) -> bool:
        with self._lock:
            return self._pending.pop(query_id, None) is not None

    def take(self, query_id: str) -> Execution | None:
        with self._lock:
            ex = self._pending.pop(query_id, None)
        if ex is not None:
            if not self._slots.acquire(blocking=False):
                ex.finish("overloaded")
                raise Overloaded(
                    f"too many statements in flight (server.max_in_flight = {self.config.server.max_in_flight}); "
                    "retry later"
                )
            ex._holds_slot = True
        return ex

    def _release_slot(self, ex: Execution) -> None:
        with self._lock:
            held, ex._holds_slot = ex._holds_slot, False
        if held:
            self._slots.release()

    def _expire(self, query_id: str) -> None:
        with self._lock:
            ex = self._pending.pop(query_id, None)
        if ex is not None:
            ex.finish("expired")

    def cancel(self, query_id: str) -> bool:
        with self._lock:
            ex = self._running.get(query_id)
            pending = self._pending.pop(query_id, None)
        if pending is not None:
            # Parked: nothing runs, so finishing it (which closes its cursor) is the cancel.
            pending.finish("cancelled")
        elif ex is not None:
            ex.cancel()
        return ex is not None or pending is not None

    def _finished(self, ex: Execution, status: str) -> None:
        if ex._deadline_token is not None:
            self._watchdog.cancel(ex._deadline_token)
        with self._lock:
            self._running.pop(ex.query_id, None)
            self._pending.pop(ex.query_id, None)
        self._release_slot(ex)
        self._last_finished = time.monotonic()
        self._log(
            ex.query_id,
            ex.client_sql or ex.statement.sql,
            ex.user,
            ex.route,
            ex.rows,
            ex.bytes,
            ex.started,
            ex.plan_ms,
            status,
            ex.reused,
        )

    def _log(
        self,
        query_id: str,
        sql: str,
        user: str,
        route: Route | None,
        rows: int,
        nbytes: int,
        started: float,
        plan_ms: float,
        status: str,
        reused: bool = False,
    ) -> None:
        total_ms = (time.perf_counter() - started) * 1000
        tier = route.tier if route else "none"
        rollup = route.rollup if route else None
        finished_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self.recent.append(
            QueryRecord(query_id, sql, user, tier, rollup, rows, nbytes, total_ms, status, reused, finished_at)
        )
        self.observer.statement(tier, rollup, status, total_ms / 1000)
        log.info(
            "statement",
            query_id=query_id,
            user=user,
            statement_hash=statement_hash(sql),
            tier=tier,
            rollup=rollup,
            rows=rows,
            bytes=nbytes,
            plan_ms=round(plan_ms, 3),
            exec_ms=round(total_ms - plan_ms, 3),
            total_ms=round(total_ms, 3),
            status=status,
            reused=reused,
        )

    def queries_table(self, user: str | None = None) -> pa.Table:
        """The recent statements of ``user`` (None: of everyone)."""
        records = [r for r in self.recent if user is None or r.user == user]
        return pa.table(
            {
                "query_id": pa.array([r.query_id for r in records], pa.string()),
                "sql": pa.array([r.sql for r in records], pa.string()),
                "user": pa.array([r.user for r in records], pa.string()),
                "tier": pa.array([r.tier for r in records], pa.string()),
                "rollup": pa.array([r.rollup for r in records], pa.string()),
                "rows": pa.array([r.rows for r in records], pa.int64()),
                "bytes": pa.array([r.bytes for r in records], pa.int64()),
                "total_ms": pa.array([r.total_ms for r in records], pa.float64()),
                "status": pa.array([r.status for r in records], pa.string()),
                "reused": pa.array([r.reused for r in records], pa.bool_()),
                "finished_at": pa.array([r.finished_at for r in records], pa.timestamp("us")),
            }
        )

    def busy(self, within: float) -> bool:
        """Whether a statement is in flight or finished less than ``within`` seconds ago."""
        return time.monotonic() - self._last_finished < within or self.in_flight() > 0

    def in_flight(self) -> int:
        """Statements planning, running or streaming (parked ones wait for a DoGet: not counted)."""
        with self._lock:
            return len(self._starting) + sum(1 for q in self._running if q not in self._pending)

    def cancel_all(self) -> int:
        """Interrupt every statement in flight (shutdown after its grace); how many there were."""
        with self._lock:
            stops = [s for q, s in self._stops.items() if q not in self._pending]
        for stop in stops:
            stop(StopReason.SHUTDOWN)
        return len(stops)

    def close(self) -> None:
        self._monitor.stop()
        self._watchdog.stop()
