"""The front of ``serve --workers``: authenticates, answers or forwards, hands out workers.

The front does no SQL work: it decodes just enough of each Flight SQL message to know
which worker a call belongs to (a prepared statement's handle, a ticket, an ingest) and
passes the rest through over the workers' Unix sockets.

Results do not pass through it: every FlightInfo it returns has endpoints whose ticket it
signed (see :mod:`tierflight.protocol.tickets`) and whose location is the DoGet port of the
worker that is to answer (:mod:`tierflight.workers.direct`), so clients that follow
locations (ADBC, the load tester) fetch results from the worker directly. A statement
the front has seen before in the current data state (a CommandStatementQuery, or a prepared
statement without parameters whose first execution was taken) is not forwarded at all: the
front knows its schema and route from the earlier FlightInfo and answers GetFlightInfo
itself with a ticket that runs the statement on the next eligible worker. A client that
ignores locations sends the ticket back here; the front passes it to the worker it names.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.flight as flight
from prometheus_client import CollectorRegistry, Counter

from tierflight.core.errors import InvalidArgument, PermissionDenied, WorkerUnavailable
from tierflight.core.log import get_logger
from tierflight.protocol import flight_actions_pb2 as fa
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.auth import AuthMiddleware, current_auth
from tierflight.protocol.boundary import to_flight_error
from tierflight.protocol.session_options import HANDLERS as SESSION_HANDLERS
from tierflight.protocol.tickets import TicketKey, identity_of, worker_of
from tierflight.protocol.wire import ACTIONS, encode_ticket, pack, unpack
from tierflight.workers.handles import FrontStatement, FrontStatements
from tierflight.workers.trust import identity_headers

log = get_logger("tierflight.workers")

_PASSTHROUGH = (flight.FlightError, pa.ArrowException)
F = TypeVar("F", bound=Callable[..., Any])
MAX_KNOWN = 4096  # statements whose FlightInfo the front remembers (per data state)


@dataclass
class Worker:
    index: int
    location: str  # its Unix socket: the front's own calls
    # The URI of its DoGet port while it runs (set by the supervisor once it is ready, None
    # from the moment it exits): what endpoints name as their location.
    direct: str | None = None
    _client: flight.FlightClient | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def primary(self) -> bool:
        return self.index == 0

    @property
    def client(self) -> flight.FlightClient:
        # One gRPC channel per worker, shared by every thread (FlightClient is thread-safe).
        with self._lock:
            if self._client is None:
                self._client = flight.connect(self.location)
            return self._client

    def reset(self) -> None:
        """Drop the channel (the worker restarted)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class Router:
    """Which workers may answer statements now (see the package doc)."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)
        self._lock = threading.Lock()
        self._eligible: list[Worker] = [self.workers[0]]
        self._epoch = 0  # moves whenever the followers are excluded
        self._next = itertools.count()
        # Moves whenever the data state may have changed (a write starts or is answered, the
        # poll sees a new primary state): what the front learned holds for one generation.
        self.generation = 0
        self._seen: dict[str, Any] | None = None

    def pick(self) -> Worker:
        eligible = self._eligible
        return eligible[next(self._next) % len(eligible)]

    def eligible(self) -> list[int]:
        return [w.index for w in self._eligible]

    def exclude(self, worker: Worker) -> None:
        """A worker that stopped answering takes no statements until a poll re-admits it."""
        with self._lock:
            self._eligible = [w for w in self._eligible if w is not worker] or [self.workers[0]]

    def exclude_followers(self) -> None:
        """Only the primary answers until a poll that starts after this call re-admits the
        followers. Called before a write is forwarded (once the ack is out only the primary
        has its rows) and again before each answer of the write goes back to the client: a
        poll may have admitted a follower while the write ran, by comparing states from
        before the primary applied it. Polls are not held off while a write runs, so a
        client that opens a write and stalls does not keep the followers out."""
        with self._lock:
            self._epoch += 1
            self.generation += 1
            self._eligible = [self.workers[0]]

    def poll(self, state: Callable[[Worker], dict[str, Any] | None]) -> None:
        """Re-admit the followers whose data state equals the primary's (no hot rows)."""
        with self._lock:
            epoch = self._epoch
        primary = state(self.workers[0])
        admitted = [self.workers[0]]
        if primary is not None and primary.get("hot_rows") == 0:
            want = {k: v for k, v in primary.items() if k != "hot_rows"}
            for w in self.workers[1:]:
                got = state(w)
                if (
                    got is not None
                    and got.get("hot_rows") == 0
                    and {k: v for k, v in got.items() if k != "hot_rows"} == want
                ):
                    admitted.append(w)
        with self._lock:
            if primary is not None and primary != self._seen:
                self._seen = primary
                self.generation += 1
            if self._epoch == epoch:  # no exclusion meanwhile: the states compared are current
                self._eligible = admitted


@dataclass(frozen=True)
class Known:
    """What a worker's FlightInfo said about a statement: enough to answer it again."""

    schema: pa.Schema
    app_metadata: bytes  # the route, as the worker reported it
    inner: bytes  # the worker's ticket that runs the statement


class KnownStatements:
    """Statements the front has seen a FlightInfo of, by their SQL text, for one generation
    of the data state (``Router.generation``): the schema and the route can change with it."""

    def __init__(self, limit: int = MAX_KNOWN) -> None:
        self._items: dict[str, Known] = {}
        self._generation = -1
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, sql: str, generation: int) -> Known | None:
        if generation != self._generation:
            return None
        return self._items.get(sql)

    def learn(self, sql: str, generation: int, info: flight.FlightInfo) -> None:
        """Remember ``info``, which a worker answered in ``generation``."""
        if len(info.endpoints) != 1:
            return
        known = Known(info.schema, info.app_metadata or b"", encode_ticket("", sql))
        with self._lock:
            if generation < self._generation:
                return
            if generation > self._generation:
                self._items.clear()
                self._generation = generation
            self._items[sql] = known
            if len(self._items) > self._limit:  # the oldest goes (no reordering on reads)
                self._items.pop(next(iter(self._items)))

    def __len__(self) -> int:
        return len(self._items)


def _call(worker: Worker, fn: Callable[[flight.FlightClient], Any]) -> Any:
    try:
        return fn(worker.client)
    except flight.FlightUnavailableError as exc:
        text = str(exc).lower()
        if "connect" in text or "socket" in text:
            worker.reset()
            raise WorkerUnavailable(f"worker {worker.index} is not answering (restarting?); retry") from None
        raise _relayed(exc) from None
    except _PASSTHROUGH as exc:
        raise _relayed(exc) from None


def _relayed(exc: Exception) -> Exception:
    """The worker's error with its own status, without the detail pyarrow appended on the
    worker (the front's pyarrow appends its own)."""
    text = str(exc)
    cut = text.find(". Detail: ")
    if cut < 0:
        return exc
    try:
        return type(exc)(text[:cut])
    except TypeError:  # a class with another constructor: keep it as it came
        return exc


def _boundary(fn: F) -> F:
    """Errors a worker returned pass through with their status; the front's own errors are
    mapped like the single-process server's (protocol.boundary)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _PASSTHROUGH:
            raise
        except BaseException as exc:  # noqa: BLE001 - mapped to a Flight status and re-raised
            raise to_flight_error(exc) from None

    return wrapper  # type: ignore[return-value]


class FrontServer(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(
        self,
        location: str,
        workers: Sequence[Worker],
        call_timeout: float,
        tickets: TicketKey,
        registry: CollectorRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(location, **kwargs)
        self.router = Router(workers)
        self.workers = self.router.workers
        self._timeout = call_timeout
        self.statements = FrontStatements()
        self.tickets = tickets
        self.known = KnownStatements()
        registry = registry or CollectorRegistry()
        infos = Counter(
            "tierflight_front_statement_infos",
            "Statement FlightInfos: answered by the front itself, or forwarded to a worker",
            ["by"],
            registry=registry,
        )
        self._by_front, self._by_worker = infos.labels("front"), infos.labels("worker")
        self._forwarded_gets = Counter(
            "tierflight_front_forwarded_doget",
            "DoGet calls the front passed to a worker (clients that ignore endpoint locations)",
            registry=registry,
        )

    # -- helpers ------------------------------------------------------------------------

    def _options(self, context: flight.ServerCallContext) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(
            headers=identity_headers(current_auth(context)), timeout=self._timeout
        )

    def _worker(self, index: int) -> Worker:
        if index >= len(self.workers):
            raise InvalidArgument("malformed handle: not issued by this server")
        return self.workers[index]

    def _signed_info(
        self, worker: Worker, info: flight.FlightInfo, descriptor: flight.FlightDescriptor, auth: AuthMiddleware
    ) -> flight.FlightInfo:
        """``info`` as the client gets it: each ticket signed for ``worker``, which is where
        the endpoints say to fetch them."""
        ident = identity_of(auth.user, auth.permissions)
        locations = [worker.direct] if worker.direct is not None else []
        endpoints = [
            flight.FlightEndpoint(self.tickets.sign(worker.index, ident, e.ticket.ticket), locations)
            for e in info.endpoints
        ]
        return flight.FlightInfo(
            info.schema, descriptor, endpoints, info.total_records, info.total_bytes, app_metadata=info.app_metadata
        )

    @staticmethod
    def _decode(descriptor: flight.FlightDescriptor) -> tuple[str, Any]:
        if descriptor.descriptor_type == flight.DescriptorType.CMD and descriptor.command:
            return unpack(descriptor.command)
        return "", None

    def _target(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> tuple[Worker | None, flight.FlightDescriptor]:
        """The worker a descriptor belongs to (None: any eligible one), and the descriptor as
        that worker knows it."""
        name, cmd = self._decode(descriptor)
        if name == "CommandPreparedStatementQuery":
            return self._placed(context, self.statements.get(cmd.prepared_statement_handle))
        if name in ("CommandStatementIngest", "CommandStatementUpdate", "CommandPreparedStatementUpdate"):
            return self.workers[0], descriptor
        return None, descriptor

    def _placed(
        self, context: flight.ServerCallContext, st: FrontStatement
    ) -> tuple[Worker, flight.FlightDescriptor]:
        """Where a prepared statement executes now: its worker while that is eligible,
        otherwise it is prepared again on the primary (with its parameters)."""
        with st.lock:
            if st.worker not in self.router.eligible():
                self._move_to_primary(context, st)
            inner = pb.CommandPreparedStatementQuery(prepared_statement_handle=st.inner)
            return self.workers[st.worker], flight.FlightDescriptor.for_command(pack(inner))

    def _move_to_primary(self, context: flight.ServerCallContext, st: FrontStatement) -> None:
        primary, old = self.workers[0], self.workers[st.worker]
        options = self._options(context)
        request = pack(pb.ActionCreatePreparedStatementRequest(query=st.sql))
        results = _call(
            primary, lambda c: list(c.do_action(flight.Action("CreatePreparedStatement", request), options))
        )
        _, created = unpack(results[0].body.to_pybytes())
        old_inner, st.worker, st.inner = st.inner, 0, created.prepared_statement_handle
        st.consumed = False  # prepared again: a first execution is parked on the primary
        if st.params is not None:
            self._bind(primary, st, st.params, options)
        close = pack(pb.ActionClosePreparedStatementRequest(prepared_statement_handle=old_inner))
        # Best effort: it may have gone with its worker; otherwise it would expire there.
        with contextlib.suppress(flight.FlightError, pa.ArrowException, WorkerUnavailable):
            _call(old, lambda c: list(c.do_action(flight.Action("ClosePreparedStatement", close), options)))
        log.info("prepared_statement_moved", from_worker=old.index)

    def _bind(
        self, worker: Worker, st: FrontStatement, params: pa.Table, options: flight.FlightCallOptions
    ) -> None:
        inner = flight.FlightDescriptor.for_command(
            pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=st.inner))
        )
        put_writer, put_reader = _call(worker, lambda c: c.do_put(inner, params.schema, options))
        try:
            put_writer.write_table(params)
            put_writer.done_writing()
            while (buf := put_reader.read()) is not None:
                result = pb.DoPutPreparedStatementResult()
                result.ParseFromString(buf.to_pybytes())
                if result.HasField("prepared_statement_handle"):
                    st.inner = result.prepared_statement_handle
        finally:
            put_writer.close()

    def _on(self, worker: Worker | None, fn: Callable[[flight.FlightClient], Any]) -> tuple[Worker, Any]:
        """Run ``fn`` on ``worker``, or on an eligible worker; a follower that does not answer
        is dropped and the primary takes the call (nothing ran on the dead one)."""
        if worker is not None:
            return worker, _call(worker, fn)
        picked = self.router.pick()
        try:
            return picked, _call(picked, fn)
        except WorkerUnavailable:
            if picked.primary:
                raise
            self.router.exclude(picked)
            return self.workers[0], _call(self.workers[0], fn)

    # -- statements and metadata ----------------------------------------------------------

    @_boundary
    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        name, cmd = self._decode(descriptor)
        if name == "CommandStatementQuery" and not cmd.HasField("transaction_id"):
            return self._statement_info(context, descriptor, cmd.query, None)
        if name == "CommandPreparedStatementQuery":
            st = self.statements.get(cmd.prepared_statement_handle)
            if not st.parameters:
                return self._statement_info(context, descriptor, st.sql, st)
        target, inner = self._target(context, descriptor)
        worker, info = self._on(target, lambda c: c.get_flight_info(inner, self._options(context)))
        return self._signed_info(worker, info, descriptor, current_auth(context))

    def _statement_info(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        sql: str,
        st: FrontStatement | None,
    ) -> flight.FlightInfo:
        """A statement without parameters: answered here when its FlightInfo is known for
        the current data state (and a prepared statement's parked first execution was taken),
        else forwarded, and what the worker answers is remembered."""
        auth = current_auth(context)
        generation = self.router.generation
        known = self.known.get(sql, generation)
        if known is not None and (st is None or st.consumed):
            worker = self.router.pick()
            if worker.direct is not None:
                if "read" not in auth.permissions:
                    raise PermissionDenied(f"user {auth.user!r} lacks the 'read' permission")
                self._by_front.inc()
                ticket = self.tickets.sign(worker.index, identity_of(auth.user, auth.permissions), known.inner)
                endpoint = flight.FlightEndpoint(ticket, [worker.direct])
                return flight.FlightInfo(
                    known.schema, descriptor, [endpoint], -1, -1, app_metadata=known.app_metadata
                )
        self._by_worker.inc()
        if st is None:
            worker, info = self._on(None, lambda c: c.get_flight_info(descriptor, self._options(context)))
        else:
            target, inner = self._placed(context, st)
            worker, info = self._on(target, lambda c: c.get_flight_info(inner, self._options(context)))
            st.consumed = True
        if self.router.generation == generation:
            self.known.learn(sql, generation, info)
        return self._signed_info(worker, info, descriptor, auth)

    @_boundary
    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.SchemaResult:
        target, inner = self._target(context, descriptor)
        _, result = self._on(target, lambda c: c.get_schema(inner, self._options(context)))
        return flight.SchemaResult(result.schema)

    @_boundary
    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        """A client that ignored the endpoint's location: the worker the ticket names serves
        it (it checks the signature, and that the caller is the user the ticket was issued
        to), or the primary when that worker is down (the ticket carries the statement, and
        the primary has every row)."""
        worker = self._worker(worker_of(ticket.ticket))
        self._forwarded_gets.inc()
        options = self._options(context)
        fetch: Callable[[flight.FlightClient], Any] = lambda c: c.do_get(ticket, options)  # noqa: E731
        try:
            reader = _call(worker, fetch)
        except WorkerUnavailable:
            if worker.primary:
                raise
            reader = _call(self.workers[0], fetch)
        return flight.RecordBatchStream(reader.to_reader())

    @_boundary
    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        name, cmd = self._decode(descriptor)
        if name == "CommandPreparedStatementQuery":
            st = self.statements.get(cmd.prepared_statement_handle)
            # Parameters are small: kept, so the statement can be bound again elsewhere.
            params = reader.read_all()
            with st.lock:
                st.params = params
                self._bind(self.workers[st.worker], st, params, self._options(context))
            result = pb.DoPutPreparedStatementResult(prepared_statement_handle=cmd.prepared_statement_handle)
            writer.write(pa.py_buffer(result.SerializeToString()))
            return
        # Ingest and anything else that writes: the primary (one WAL, one flusher).
        worker, inner = self.workers[0], descriptor
        self.router.exclude_followers()
        put_writer, put_reader = _call(
            worker, lambda c: c.do_put(inner, reader.schema, self._options(context))
        )
        try:
            for chunk in reader:
                if chunk.data is not None:
                    put_writer.write_batch(chunk.data)
            put_writer.done_writing()
            while (buf := put_reader.read()) is not None:
                self.router.exclude_followers()  # the write is applied: before the client hears so
                writer.write(buf)
        finally:
            put_writer.close()
            self.router.exclude_followers()

    # -- actions --------------------------------------------------------------------------

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        return ACTIONS

    @_boundary
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[flight.Result]:
        kind = action.type
        body = action.body.to_pybytes() if action.body is not None else b""
        if kind == "CreatePreparedStatement":
            _, req = unpack(body)
            options = self._options(context)
            worker, results = self._on(None, lambda c: list(c.do_action(flight.Action(kind, body), options)))
            return iter([self._created(worker, req.query, r) for r in results])
        if kind == "ClosePreparedStatement":
            _, req = unpack(body)
            st = self.statements.pop(req.prepared_statement_handle)
            if st is None:
                return iter([])
            inner = pack(pb.ActionClosePreparedStatementRequest(prepared_statement_handle=st.inner))
            return iter(self._forward_action(context, self.workers[st.worker], kind, inner))
        if kind in ("CancelFlightInfo", "CancelQuery"):
            return iter(self._forward_cancel(context, kind, body))
        if kind in SESSION_HANDLERS:
            return iter([flight.Result(SESSION_HANDLERS[kind](body))])
        # healthcheck, tierflight.state and anything unknown: the primary answers.
        return iter(self._forward_action(context, self.workers[0], kind, body))

    def _forward_action(
        self, context: flight.ServerCallContext, worker: Worker, kind: str, body: bytes
    ) -> list[flight.Result]:
        results = _call(
            worker, lambda c: list(c.do_action(flight.Action(kind, body), self._options(context)))
        )
        return [flight.Result(r.body) for r in results]

    def _created(self, worker: Worker, sql: str, result: flight.Result) -> flight.Result:
        _, msg = unpack(result.body.to_pybytes())
        st = FrontStatement(sql, worker.index, msg.prepared_statement_handle, parameters=bool(msg.parameter_schema))
        msg.prepared_statement_handle = self.statements.add(st)
        return flight.Result(pack(msg))

    def _forward_cancel(
        self, context: flight.ServerCallContext, kind: str, body: bytes
    ) -> list[flight.Result]:
        if kind == "CancelFlightInfo":
            req = fa.CancelFlightInfoRequest()
            try:
                req.ParseFromString(body)
                info = flight.FlightInfo.deserialize(req.info)
            except Exception:  # noqa: BLE001 - any decoding failure is the client's malformed request
                raise InvalidArgument("malformed CancelFlightInfoRequest") from None
        else:
            _, query = unpack(body)
            info = flight.FlightInfo.deserialize(query.info)
        if not info.endpoints:
            raise InvalidArgument(f"{kind}: the FlightInfo has no endpoints")
        # The tickets are passed on as they are: the worker checks their signatures.
        return self._forward_action(context, self._worker(worker_of(info.endpoints[0].ticket.ticket)), kind, body)


