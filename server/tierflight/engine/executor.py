"""Every statement runs through :meth:`Executor.start`: limits, routing, tracing, logging.

An execution starts when the client asks for a FlightInfo (so its schema is known) and is
streamed by the DoGet of its ticket; it runs exactly once. If the ticket is fetched again, or
by a server that never saw the FlightInfo, the statement is run again from the ticket.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from tierflight.core.config import Config
from tierflight.core.errors import (
    Cancelled,
    MemoryCeilingReached,
    Overloaded,
    StatementTimeout,
    Status,
    TierflightError,
)
from tierflight.core.log import get_logger
from tierflight.core.lru import LRU
from tierflight.core.rwlock import RWLock
from tierflight.core.statement import Statement, StatementKind
from tierflight.core.threads import Slots
from tierflight.engine.calls import current_call
from tierflight.engine.database import Database
from tierflight.engine.duck_errors import translate
from tierflight.engine.execution import (
    Execution,
    QueryRecord,
    QueryStatus,
    ResultLimits,
    Started,
    queries_table,
    read_small,
    statement_hash,
)
from tierflight.engine.joined import JoinedRollups
from tierflight.engine.monitor import Monitor, Stop, StopReason, human_size, resolve_ceiling
from tierflight.engine.plain import (
    plain_reader,
    plain_schema,
    renamed_reader,
    renamed_schema,
    shows_rewritten_text,
)
from tierflight.engine.session import mentions_session_user, set_session_user
from tierflight.engine.watchdog import Watchdog
from tierflight.router.route import Route

log = get_logger("tierflight.statement")

Params = Sequence[Sequence[Any]]  # one row of values per execution of the statement

__all__ = ["Execution", "Executor", "QueryRecord", "QueryStatus", "new_query_id", "statement_hash"]


class Planner(Protocol):
    def plan(self, statement: Statement) -> Route: ...


class StatementObserver(Protocol):
    """Told of every finished statement (metrics); must be cheap and must not raise."""

    def statement(self, tier: str, rollup: str | None, status: QueryStatus, seconds: float) -> None: ...


class ShapeSink(Protocol):
    """Told of every finished query (the advisor's query log); must only enqueue."""

    def __call__(self, tree: Any, tier: str, rollup: str | None, rows: int, ms: float) -> None: ...


class _NoObserver:
    def statement(self, tier: str, rollup: str | None, status: QueryStatus, seconds: float) -> None:
        return None


def arrow_stream(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None, batch_rows: int
) -> pa.RecordBatchReader:
    """Run ``sql`` on ``cursor``, its answer as a stream of Arrow batches.

    DuckDB 2's ``cursor.sql(...)`` parses and binds the statement to build a relation (and
    looks for Python variables named like its tables), then parses, binds and plans it again
    to run it: for a small statement that doubled DuckDB's share. Its connection's ``_submit``
    runs the statement once; it is private to DuckDB's Python package, hence the fallback
    for versions without it (every statement was checked before it gets here: only reads).
    """
    submit = getattr(cursor, "_submit", None)
    if submit is not None:
        reader: pa.RecordBatchReader = submit(sql, params, "stream", batch_rows).arrow_reader()
        return reader
    return cursor.sql(sql, params=params).to_arrow_reader(batch_rows)


class _QueryIds:
    """Random query ids from the OS's generator, drawn in blocks: one getrandom call per
    statement was a visible part of a cached statement's cost."""

    BLOCK = 16 * 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        # A forked worker must not hand out its parent's ids.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        with self._lock:
            if self._at >= len(self._pool):
                self._pool, self._at = secrets.token_bytes(self.BLOCK), 0
            chunk = self._pool[self._at : self._at + 16]
            self._at += 16
        return chunk.hex()


# Random, not a counter: a query id names an execution a ticket or a cancel refers to, and
# nobody may guess another user's.
new_query_id = _QueryIds()


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


def _at_deadline(stop: Stop) -> Callable[[], None]:
    return lambda: stop(StopReason.DEADLINE)


class Executor:
    """Starts statements (slots, deadline, plan, DuckDB) and keeps what each holds until it
    ends; the :class:`~tierflight.engine.execution.ExecutionHooks` of every execution."""

    def __init__(
        self,
        config: Config,
        database: Database,
        planner: Planner,
        swap_lock: RWLock | None = None,
        observer: StatementObserver | None = None,
        column_names: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.swap_lock = swap_lock or RWLock()
        # DuckDB's output names of the client's statement (engine.columns): a rewritten
        # statement's unaliased expressions are named after the SQL run, not the client's.
        self._column_names = column_names
        self.config = config
        self.database = database
        self.planner = planner
        self._slots = Slots(config.server.max_in_flight)
        self._watchdog = Watchdog()
        self._schemas: LRU[tuple[object, ...], pa.Schema] = LRU(1024)
        self._pending: dict[str, Execution] = {}
        self._running: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self._max_parked = 4 * config.server.max_in_flight
        # What the executor holds for an execution, by the execution (not its query id): its
        # in-flight slot, its statement deadline, the expiry timer while it is parked.
        self._holding_slot: set[Execution] = set()
        self._deadlines: dict[Execution, int] = {}
        self._park_timers: dict[Execution, int] = {}
        self._limits_of = config.server
        self._limits = ResultLimits.of(config.server)
        self.recent: deque[QueryRecord] = deque(maxlen=config.server.query_log_size)
        self.results = ResultCache(config.server.result_cache_bytes)
        self.joined = JoinedRollups(database, config.router.joined_rollup_rows)
        self.observer: StatementObserver = observer or _NoObserver()
        self.shape_sink: ShapeSink | None = None
        # Statements still inside start() (not yet in _running): a shutdown past its grace
        # period, a cancelled RPC or the memory ceiling must reach a blocking aggregate there too.
        self._starting: dict[str, Stop] = {}
        # Every statement that holds a cursor (starting, running, streaming or parked).
        self._stops: dict[str, Stop] = {}
        self._last_finished = float("-inf")
        self.memory_ceiling = resolve_ceiling(config.server.memory_ceiling)
        self._monitor = Monitor(self, self.memory_ceiling)

    @property
    def limits(self) -> ResultLimits:
        # Follows the config (tests replace it live); rebuilt only when it changed.
        server = self.config.server
        if server is not self._limits_of:
            self._limits, self._limits_of = ResultLimits.of(server), server
        return self._limits

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
        if not self._slots.take():
            raise Overloaded(
                f"too many statements in flight (server.max_in_flight = {self.config.server.max_in_flight}); retry later"
            )
        query_id = query_id or new_query_id()
        started = time.perf_counter()
        client_sql = statement.sql  # logged as the client sent it, not as bound
        if (
            params
            and len(params) == 1
            and statement.parameter_count
            and statement.kind is not StatementKind.EXPLAIN
        ):
            # One value set: bind it, so the statement routes (and caches) like a literal one.
            from tierflight.router.binding import bind

            try:
                statement, params = bind(statement, params[0]), None
            except TierflightError:
                self._slots.give()
                raise
        cursor: duckdb.DuckDBPyConnection | None = None
        stop = Stop(query_id)
        running = False  # DuckDB runs it on ``cursor``, under ``stop``
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
                start = Started(query_id, statement, client_sql, route, user, started, plan_ms)
                if statement.kind is StatementKind.EXPLAIN_ROUTE:
                    ex = Execution.answered(start, self.joined.explain(route), self, self.limits)
                elif cached is not None:
                    table, nbytes = cached
                    ex = Execution.answered(start, table, self, self.limits, known_bytes=nbytes, reused=True)
                else:
                    if route.system_tables:  # resolved by the raw planner (core.names)
                        self.database.refresh_system_tables(route.system_tables)
                    cursor = self.database.cursor()
                    stop.cursor = cursor
                    with self._lock:
                        self._starting[query_id] = stop
                        self._stops[query_id] = stop
                    for name, obj in route.registrations:
                        cursor.register(name, obj)
                    for name, obj in self.database.caller_registrations(
                        route.system_tables, None if sees_all else user
                    ):
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
                        sql = route.sql if params else self.joined.sql(route, cursor)
                        try:
                            first, rest = self._run(cursor, sql, params, statement)
                        except duckdb.CatalogException:
                            if sql == route.sql:
                                raise
                            # Its joined rollup went (another statement built a newer data
                            # version, or the row budget) after it was chosen: the join answers.
                            first, rest = self._run(cursor, route.sql, params, statement)
                        # DuckDB has run it to its first batch; a small answer is read whole.
                        whole = (
                            read_small(first, self.config.server.batch_rows, self.limits.max_batch_bytes)
                            if rest is None
                            else first
                        )
                    remember = (
                        functools.partial(self.results.put, cache_key) if cache_key is not None else None
                    )
                    if isinstance(whole, pa.Table):
                        # The answer is in memory: the cursor goes now, and the DoGet stream
                        # needs no Python per batch (pyarrow sends the table by itself).
                        cursor.close()
                        cursor = stop.cursor = None
                        self._forget(stop)
                        if deadline_token is not None:
                            self._watchdog.cancel(deadline_token)
                            deadline_token = None
                        ex = Execution.answered(start, whole, self, self.limits, remember=remember)
                    else:
                        ex = Execution.running(
                            start, cursor, whole, rest, stop, self, self.limits, remember=remember
                        )
                        running = True
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised
            with self._lock:
                self._starting.pop(query_id, None)
            self._forget(stop)
            self._slots.give()
            if deadline_token is not None:
                self._watchdog.cancel(deadline_token)
            if cursor is not None:
                cursor.close()
            err = self.stop_error(stop) or translate(exc, query_id)
            self._record(
                QueryRecord.ended(query_id, client_sql, user, None, QueryStatus.of(err), started=started)
            )
            if err.status is Status.INTERNAL:
                log.error("statement_failed", query_id=query_id, error=repr(exc))
            raise err from None
        with self._lock:
            self._starting.pop(query_id, None)
            self._running[query_id] = ex
            self._holding_slot.add(ex)
            if deadline_token is not None:
                self._deadlines[ex] = deadline_token
        if running:
            stop.on_stop = ex.stopped
            stopped = self.stop_error(stop)
            if stopped is not None:  # stopped after DuckDB had started it, before on_stop was set
                ex.finish(QueryStatus.of(stopped))
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
        self, cursor: duckdb.DuckDBPyConnection, sql: str, params: Params | None, statement: Statement
    ) -> tuple[pa.RecordBatchReader, Iterator[pa.RecordBatchReader] | None]:
        batch_rows = self.config.server.batch_rows
        rows = list(params) if params else [()]
        first = plain_reader(arrow_stream(cursor, sql, list(rows[0]) or None, batch_rows))
        names = self._client_names(statement, first.schema.names)
        if names is not None:
            first = renamed_reader(first, names)

        def rest() -> Iterator[pa.RecordBatchReader]:
            # Each further parameter row is one more execution; results are concatenated.
            for row in rows[1:]:
                reader = plain_reader(arrow_stream(cursor, sql, list(row) or None, batch_rows))
                yield reader if names is None else renamed_reader(reader, names)

        return first, (rest() if len(rows) > 1 else None)

    def _client_names(self, statement: Statement, names: list[str]) -> list[str] | None:
        """The names the client's statement gives its columns, where DuckDB named one after
        the rewritten SQL (None: the names are right as they are)."""
        if not shows_rewritten_text(names):
            return None
        own: list[str] = []
        if self._column_names is not None:
            with contextlib.suppress(Exception):
                own = self._column_names(statement.sql)
        if len(own) != len(names):  # not bindable on its own: positional names, never the SQL
            own = [name if not shows_rewritten_text([name]) else f"column{i}" for i, name in enumerate(names)]
        return own

    def schema(self, statement: Statement, parameter_count: int = 0) -> pa.Schema:
        """The result schema without running the statement (LIMIT 0 is planned, not scanned).

        Kept per statement and route: a dashboard prepares the same statement on each new
        cursor, and planning a raw route over every partition file took milliseconds. A new
        route (files, rollups) or a schema change (:meth:`schema_changed`) plans it again."""
        # Planned and bound under the swap lock's read side, as a statement is planned and
        # started: what the route names (a dimension version's table) is not dropped between.
        with self.swap_lock.read():
            route = self.planner.plan(statement)
            if statement.kind is StatementKind.EXPLAIN_ROUTE:
                return route.explain_table().schema
            # Registered objects (the hot tail) change with every ingest but not their columns.
            names = tuple(name for name, _ in route.registrations)
            key = (statement.kind, statement.sql, parameter_count, route.sql, route.version, names)
            known = self._schemas.get(key)
            if known is None:
                known = self._plan_schema(statement, route, parameter_count)
                self._schemas.put(key, known)
            return known

    def schema_changed(self) -> None:
        self._schemas.clear()

    def _plan_schema(self, statement: Statement, route: Route, parameter_count: int) -> pa.Schema:
        cursor = self.database.cursor()
        try:
            for name, obj in route.registrations:
                cursor.register(name, obj)
            for name, table in self.database.caller_registrations(route.system_tables, ""):
                cursor.register(name, table)  # no rows: only the schema is asked for
            self.database.check_statement_type(cursor, route.sql)
            params = [None] * parameter_count or None
            schema = cursor.sql(route.sql, params=params).limit(0).to_arrow_table().schema
            schema = plain_schema(schema) or schema
            names = self._client_names(statement, schema.names)
            return schema if names is None else renamed_schema(schema, names)
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
            old.finish(QueryStatus.EXPIRED)
        if not ex.holds_cursor:
            # Holds no cursor (an answer in memory): the bound on parked executions is enough.
            return
        # The timer holds the query id, not the execution: it must not keep it (and its cursor) alive.
        query_id = ex.query_id
        token = self._watchdog.schedule(
            self.config.server.statement_timeout.total_seconds() or 300, lambda: self._expire(query_id)
        )
        with self._lock:
            self._park_timers[ex] = token

    def unpark(self, query_id: str) -> bool:
        """Take an execution off the parked list; whether it was parked (ExecutionHooks)."""
        with self._lock:
            return self._pending.pop(query_id, None) is not None

    def take(self, query_id: str) -> Execution | None:
        with self._lock:
            ex = self._pending.pop(query_id, None)
            timer = self._park_timers.pop(ex, None) if ex is not None else None
        if timer is not None:
            self._watchdog.cancel(timer)  # not parked any more: its stream finishes it
        if ex is not None:
            if not self._slots.take():
                ex.finish(QueryStatus.OVERLOADED)
                raise Overloaded(
                    f"too many statements in flight (server.max_in_flight = {self.config.server.max_in_flight}); "
                    "retry later"
                )
            with self._lock:
                self._holding_slot.add(ex)
        return ex

    def _release_slot(self, ex: Execution) -> None:
        with self._lock:
            held = ex in self._holding_slot
            self._holding_slot.discard(ex)
        if held:
            self._slots.give()

    def _expire(self, query_id: str) -> None:
        with self._lock:
            ex = self._pending.pop(query_id, None)
        if ex is not None:
            ex.finish(QueryStatus.EXPIRED)

    def cancel(self, query_id: str) -> bool:
        with self._lock:
            ex = self._running.get(query_id)
            pending = self._pending.pop(query_id, None)
        if pending is not None:
            # Parked: nothing runs, so finishing it (which closes its cursor) is the cancel.
            pending.finish(QueryStatus.CANCELLED)
        elif ex is not None:
            ex.cancel()
        return ex is not None or pending is not None

    # -- ExecutionHooks: how executions report back ----------------------------------------

    def settled(self, ex: Execution, status: QueryStatus) -> None:
        with self._lock:
            deadline = self._deadlines.pop(ex, None)
            self._running.pop(ex.query_id, None)
            self._pending.pop(ex.query_id, None)
        if deadline is not None:
            self._watchdog.cancel(deadline)
        self._release_slot(ex)
        self._last_finished = time.monotonic()
        self._record(ex.record(status))
        if (
            self.shape_sink is not None
            and status is QueryStatus.OK
            and ex.statement.kind is StatementKind.QUERY
        ):
            self.shape_sink(
                ex.statement.tree,
                ex.route.tier,
                ex.route.rollup,
                ex.rows,
                (time.perf_counter() - ex.started) * 1000,
            )

    def closed(self, ex: Execution, stop: Stop | None) -> None:
        with self._lock:
            timer = self._park_timers.pop(ex, None)
        if timer is not None:
            self._watchdog.cancel(timer)
        if stop is not None:
            self._forget(stop)

    def _record(self, record: QueryRecord) -> None:
        self.recent.append(record)
        self.observer.statement(record.tier, record.rollup, record.status, record.total_ms / 1000)
        record.log()

    def queries_table(self, user: str | None = None) -> pa.Table:
        """The recent statements of ``user`` (None: of everyone)."""
        return queries_table(r for r in self.recent if user is None or r.user == user)

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
