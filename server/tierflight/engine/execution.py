"""One started statement (:class:`Execution`), how it ended (:class:`QueryStatus`) and what is
recorded of it (:class:`QueryRecord`: the ``statement`` log event and a ``system.queries`` row).

An execution is made by the executor through one of two constructors: :meth:`Execution.answered`
(an answer already in memory: EXPLAIN ROUTE, a reused result) or :meth:`Execution.running` (a
DuckDB cursor that streams). It reports back only through :class:`ExecutionHooks`: once when it
is settled (logged, slot given back) and once when it has let go of its cursor.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import duckdb
import pyarrow as pa

from tierflight.core.config import ServerConfig
from tierflight.core.errors import Cancelled, ResultTooLarge, Status, TierflightError
from tierflight.core.log import get_logger, log_later
from tierflight.core.statement import Statement
from tierflight.engine.calls import current_call
from tierflight.engine.duck_errors import translate
from tierflight.engine.monitor import Stop, StopReason
from tierflight.router.route import Route

log = get_logger("tierflight.statement")

# Results up to this size are kept by the result cache (when the route allows reuse).
RESULT_CACHE_MAX_BYTES = 1 << 20


class QueryStatus(StrEnum):
    """How a statement ended, as the statement log and ``system.queries`` spell it: one of the
    outcomes below, or the Flight status of the error it failed with (errors.Status)."""

    OK = "ok"
    ERROR = "error"  # a stream that ended by no known path (not expected)
    EXPIRED = "expired"  # parked, its ticket never fetched in time (or its deadline passed there)
    DISCARDED = "discarded"  # parked, dropped by its prepared statement
    OVERLOADED = "overloaded"  # its ticket came when every in-flight slot was taken
    CANCELLED = "cancelled"
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNIMPLEMENTED = "unimplemented"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

    @classmethod
    def of(cls, err: TierflightError) -> QueryStatus:
        return cls(err.status.value)


# Statuses of statements that never ran for a client (a FlightInfo whose ticket was never fetched).
NOT_RUN = frozenset({QueryStatus.DISCARDED, QueryStatus.EXPIRED})


def statement_hash(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()[:16]


# Slots: one kept per statement (system.queries), one object for the collector to walk, not two.
@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One finished statement: written once to the statement log and kept for system.queries."""

    query_id: str
    sql: str  # as the client sent it (not as bound)
    user: str
    tier: str
    rollup: str | None
    rows: int
    bytes: int
    plan_ms: float
    total_ms: float
    status: QueryStatus
    reused: bool  # answered from the result cache
    # Query ids are random: this gives the statements' order (UTC, like the data).
    finished_at_us: int  # microseconds since the epoch (system.queries shows a UTC timestamp)

    @classmethod
    def ended(
        cls,
        query_id: str,
        sql: str,
        user: str,
        route: Route | None,
        status: QueryStatus,
        *,
        started: float,
        plan_ms: float = 0.0,
        rows: int = 0,
        nbytes: int = 0,
        reused: bool = False,
    ) -> QueryRecord:
        """The record of a statement that ends now (``started``: its perf_counter start)."""
        return cls(
            query_id=query_id,
            sql=sql,
            user=user,
            tier=route.tier if route else "none",
            rollup=route.rollup if route else None,
            rows=rows,
            bytes=nbytes,
            plan_ms=plan_ms,
            total_ms=(time.perf_counter() - started) * 1000,
            status=status,
            reused=reused,
            finished_at_us=time.time_ns() // 1000,
        )

    def log(self) -> None:
        """The ``statement`` event, written by the log's flush thread."""
        log_later("statement", self._log_fields)

    def _log_fields(self) -> dict[str, object]:
        # The text only as its hash: the log may travel further.
        return {
            "query_id": self.query_id,
            "user": self.user,
            "statement_hash": statement_hash(self.sql),
            "tier": self.tier,
            "rollup": self.rollup,
            "rows": self.rows,
            "bytes": self.bytes,
            "plan_ms": round(self.plan_ms, 3),
            "exec_ms": round(self.total_ms - self.plan_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "status": self.status.value,
            "reused": self.reused,
        }


def queries_table(records: Iterable[QueryRecord]) -> pa.Table:
    """``system.queries`` of ``records``."""
    rs = list(records)
    return pa.table(
        {
            "query_id": pa.array([r.query_id for r in rs], pa.string()),
            "sql": pa.array([r.sql for r in rs], pa.string()),
            "user": pa.array([r.user for r in rs], pa.string()),
            "tier": pa.array([r.tier for r in rs], pa.string()),
            "rollup": pa.array([r.rollup for r in rs], pa.string()),
            "rows": pa.array([r.rows for r in rs], pa.int64()),
            "bytes": pa.array([r.bytes for r in rs], pa.int64()),
            "total_ms": pa.array([r.total_ms for r in rs], pa.float64()),
            "status": pa.array([r.status.value for r in rs], pa.string()),
            "reused": pa.array([r.reused for r in rs], pa.bool_()),
            "finished_at": pa.array([r.finished_at_us for r in rs], pa.int64()).cast(pa.timestamp("us")),
        }
    )


@dataclass(frozen=True)
class ResultLimits:
    """[server] bounds every result stream keeps to."""

    max_batch_bytes: int
    max_rows: int  # 0: unbounded
    max_bytes: int  # 0: unbounded

    @classmethod
    def of(cls, server: ServerConfig) -> ResultLimits:
        return cls(server.max_batch_bytes, server.max_result_rows, server.max_result_bytes)


class ExecutionHooks(Protocol):
    """What an execution needs of the executor that started it."""

    def settled(self, ex: Execution, status: QueryStatus) -> None:
        """Once per execution: record it and give its slot and deadline back."""

    def closed(self, ex: Execution, stop: Stop | None) -> None:
        """Its cursor is closed and ``stop`` detached: drop what the executor keeps for it."""

    def unpark(self, query_id: str) -> bool:
        """Take it off the parked list; whether it was parked."""

    def stop_error(self, stop: Stop | None) -> TierflightError | None:
        """The error of a stopped statement, None if it was not stopped."""


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


def read_small(
    reader: pa.RecordBatchReader, batch_rows: int, max_batch_bytes: int
) -> pa.Table | pa.RecordBatchReader:
    """The whole answer as a table when its first batch is also its last, else a reader of the
    same batches. DuckDB fills every batch to ``batch_rows`` but the last, so a shorter first
    batch ends the answer and reading on cannot block (a long stream keeps its first-batch
    latency: nothing past the first batch is read here)."""
    try:
        first = reader.read_next_batch()
    except StopIteration:
        return pa.Table.from_batches([], schema=reader.schema)
    if first.num_rows >= batch_rows or first.nbytes > RESULT_CACHE_MAX_BYTES:
        return pa.RecordBatchReader.from_batches(reader.schema, itertools.chain([first], reader))
    rest = list(itertools.islice(reader, 1))  # the end, as DuckDB filled the batch
    if rest:  # not DuckDB's filling after all: stream what there is
        return pa.RecordBatchReader.from_batches(reader.schema, itertools.chain([first], rest, reader))
    return pa.Table.from_batches(list(_split(first, max_batch_bytes)), schema=reader.schema)


@dataclass(frozen=True)
class Started:
    """What every execution knows from its start: identity, statement, route and timings."""

    query_id: str
    statement: Statement
    client_sql: str  # logged as the client sent it, not as bound
    route: Route
    user: str
    started: float  # perf_counter at the start
    plan_ms: float


class Execution:
    """A started statement; :meth:`batches` (or :meth:`table`) hands its answer over and
    finishes its bookkeeping. Build it with :meth:`answered` or :meth:`running`."""

    def __init__(
        self,
        start: Started,
        schema: pa.Schema,
        hooks: ExecutionHooks,
        limits: ResultLimits,
        *,
        first: pa.RecordBatchReader | pa.Table | None,
        cursor: duckdb.DuckDBPyConnection | None = None,
        rest: Iterator[pa.RecordBatchReader] | None = None,
        stop: Stop | None = None,
        remember: Callable[[pa.Table, int], None] | None = None,
        known_bytes: int = 0,
        reused: bool = False,
    ) -> None:
        self.query_id = start.query_id
        self.statement = start.statement
        self.client_sql = start.client_sql
        self.route = start.route
        self.user = start.user
        self.started = start.started
        self.plan_ms = start.plan_ms
        self.schema = schema
        self.reused = reused  # the answer comes from the result cache
        self.rows = 0
        self.bytes = 0
        self._hooks = hooks
        self._limits = limits
        self._first = first
        self._cursor = cursor
        self._readers = rest
        # Interrupts the statement and says why (server.statement_timeout, a client's cancel,
        # the memory ceiling); None for an answer already in memory, which runs nothing.
        self._stop = stop
        self._remember = remember  # keeps the whole answer (result cache) if it is small
        self._known_bytes = known_bytes  # the size of a cached result, kept with it
        self._finished = False
        self._lock = threading.Lock()

    @classmethod
    def answered(
        cls,
        start: Started,
        table: pa.Table,
        hooks: ExecutionHooks,
        limits: ResultLimits,
        *,
        known_bytes: int = 0,
        reused: bool = False,
        remember: Callable[[pa.Table, int], None] | None = None,
    ) -> Execution:
        """An answer already in memory (EXPLAIN ROUTE, a result reused from the cache, a small
        answer read whole from DuckDB: ``remember`` gets it when it is handed over)."""
        return cls(
            start,
            table.schema,
            hooks,
            limits,
            first=table,
            known_bytes=known_bytes,
            reused=reused,
            remember=remember,
        )

    @classmethod
    def running(
        cls,
        start: Started,
        cursor: duckdb.DuckDBPyConnection,
        first: pa.RecordBatchReader,
        rest: Iterator[pa.RecordBatchReader] | None,
        stop: Stop,
        hooks: ExecutionHooks,
        limits: ResultLimits,
        *,
        remember: Callable[[pa.Table, int], None] | None = None,
    ) -> Execution:
        """A statement DuckDB runs on ``cursor``: ``first`` streams, then each of ``rest`` (one
        per further parameter row); ``remember`` gets the whole answer if it stays small."""
        return cls(
            start,
            first.schema,
            hooks,
            limits,
            first=first,
            cursor=cursor,
            rest=rest,
            stop=stop,
            remember=remember,
        )

    @property
    def holds_cursor(self) -> bool:
        return self._cursor is not None

    def cancel(self) -> None:
        if self._stop is not None:
            self._stop(StopReason.CANCELLED)

    def stopped(self, reason: StopReason) -> None:
        """The statement was stopped: its slot and log entry are settled now, not when its
        stream next moves (a client that stopped reading may never let it move again). The
        stream fails at its next batch and closes the cursor then; a parked execution, which
        nobody streams, is finished at once (past its deadline: "expired", it never ran for
        a client)."""
        if self._hooks.unpark(self.query_id):
            self.finish(
                QueryStatus.EXPIRED if reason is StopReason.DEADLINE else QueryStatus.of(self._error(None))
            )
        else:
            self._settle(QueryStatus.of(self._error(None)))

    def batches(self) -> Iterator[pa.RecordBatch]:
        # Captured here, in the DoGet handler: the generator body runs after it has returned.
        return self._batches(current_call.get())

    def _batches(self, call: Callable[[], bool] | None) -> Iterator[pa.RecordBatch]:
        stop = self._stop
        with stop.watching(call) if stop is not None else contextlib.nullcontext():
            yield from self._stream()

    def _stream(self) -> Iterator[pa.RecordBatch]:
        status = QueryStatus.ERROR
        try:
            keep: list[pa.RecordBatch] | None = [] if self._remember is not None else None
            for reader in self._iter_sources():
                for batch in reader.to_batches() if isinstance(reader, pa.Table) else reader:
                    for piece in _split(batch, self._limits.max_batch_bytes):
                        self.rows += piece.num_rows
                        self.bytes += piece.nbytes
                        if keep is not None:
                            keep.append(piece)
                            if self.bytes > RESULT_CACHE_MAX_BYTES:
                                keep = None
                        self._check_limits()
                        yield piece
            status = QueryStatus.OK
            if keep is not None and self._remember is not None:
                self._remember(pa.Table.from_batches(keep, schema=self.schema), self.bytes)
        except GeneratorExit:
            status = QueryStatus.CANCELLED
            raise
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised
            err = self._error(exc)
            status = QueryStatus.of(err)
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
            self.finish(QueryStatus.of(err))
            raise
        if self._remember is not None and self.bytes <= RESULT_CACHE_MAX_BYTES:
            self._remember(first, self.bytes)
        self.finish(QueryStatus.OK)
        return first

    def _check_limits(self) -> None:
        if self._stop is not None and self._stop.reason is not None:
            raise self._error(None)
        limits = self._limits
        if limits.max_rows and self.rows > limits.max_rows:
            raise ResultTooLarge(f"result exceeds server.max_result_rows = {limits.max_rows}; add a LIMIT")
        if limits.max_bytes and self.bytes > limits.max_bytes:
            raise ResultTooLarge(f"result exceeds server.max_result_bytes = {limits.max_bytes}; add a LIMIT")

    def _iter_sources(self) -> Iterator[pa.RecordBatchReader | pa.Table]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        if self._readers is not None:
            yield from self._readers

    def _error(self, exc: BaseException | None) -> TierflightError:
        stopped = self._hooks.stop_error(self._stop)
        if stopped is not None or exc is None:
            return stopped or Cancelled("statement was cancelled")
        err = translate(exc, self.query_id)
        if err.status is Status.INTERNAL:
            log.error("statement_failed", query_id=self.query_id, error=repr(exc))
        return err

    def discard(self) -> None:
        """Drop a parked execution that will never be streamed."""
        self._hooks.unpark(self.query_id)
        self.finish(QueryStatus.DISCARDED)

    def record(self, status: QueryStatus) -> QueryRecord:
        return QueryRecord.ended(
            self.query_id,
            self.client_sql,
            self.user,
            self.route,
            status,
            started=self.started,
            plan_ms=self.plan_ms,
            rows=self.rows,
            nbytes=self.bytes,
            reused=self.reused,
        )

    def _settle(self, status: QueryStatus) -> bool:
        """Log the statement and give its slot back, once; False if that was done already."""
        with self._lock:
            if self._finished:
                return False
            self._finished = True
        self._hooks.settled(self, status)
        return True

    def finish(self, status: QueryStatus) -> None:
        self._settle(status)
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):
                cursor.close()
        if self._stop is not None:
            # A late stop must not touch the closed cursor; and no cycle is left for the collector.
            self._stop.cursor, self._stop.on_stop = None, None
        self._hooks.closed(self, self._stop)
        # Drop what the finished statement held: DuckDB 2 slows down with many live cursors.
        self._first, self._readers = None, None
