"""Flight SQL over pyarrow.flight: decode commands, dispatch, stream Arrow back.

pyarrow has no Flight SQL server classes, so commands arrive as ``google.protobuf.Any`` in
descriptors, tickets and action bodies and are decoded here with our own generated module.
Every handler passes through :func:`boundary`, the one place errors become Flight statuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.flight as flight

from tierflight.core.config import AuthConfig, ServerConfig, TableConfig
from tierflight.core.errors import InvalidArgument, NotFound, PermissionDenied, Unsupported
from tierflight.core.lru import LRU
from tierflight.core.names import Names
from tierflight.core.statement import Statement, StatementKind
from tierflight.engine.execution import Execution
from tierflight.engine.sandbox import check_statement, large_statement_turn
from tierflight.protocol import flight_actions_pb2 as fa
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.auth import ADMIN, MIDDLEWARE_KEY, AuthMiddleware, current_auth
from tierflight.protocol.boundary import boundary, guarded, schema_boundary
from tierflight.protocol.metadata import CatalogSource, Metadata
from tierflight.protocol.parameters import (
    ParameterTyper,
    check_parameter_count,
    read_parameters,
    require_bound,
    warn_null_comparison,
)
from tierflight.protocol.prepared import PreparedStatements
from tierflight.protocol.schemas import schema_with_column_metadata
from tierflight.protocol.session_options import HANDLERS as SESSION_HANDLERS
from tierflight.protocol.tickets import TicketKey, identity_of, is_signed, new_key, ttl_for
from tierflight.protocol.wire import ACTIONS, STATE_ACTION, decode_ticket, encode_ticket, pack, unpack

# pyarrow's defaults (IPC format V5), built once: left unset, each DoGet stream reads two
# environment variables to build them again.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions()


class StatementService(Protocol):
    """Starting, parking, fetching and cancelling statements (engine.executor.Executor)."""

    def start(
        self,
        statement: Statement,
        params: Sequence[Sequence[Any]] | None,
        user: str,
        query_id: str | None = None,
        *,
        sees_all: bool = False,
    ) -> Execution: ...
    def park(self, ex: Execution) -> None: ...
    def take(self, query_id: str) -> Execution | None: ...
    def schema(self, statement: Statement, parameter_count: int = 0) -> pa.Schema: ...
    def cancel(self, query_id: str) -> bool: ...


class NodeService(Protocol):
    """What DoPut ingest and the operations actions reach (tierflight.app.App)."""

    def ingest(self, cmd: Any, reader: Any, user: str) -> int: ...
    def health(self) -> dict[str, Any]: ...
    def data_state(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class FlightServices:
    """Everything the Flight SQL server is handed (built by ``App.flight_services``)."""

    server: ServerConfig
    auth: AuthConfig
    tables: Mapping[str, TableConfig]
    names: Names
    statements: StatementService
    catalog: CatalogSource
    node: NodeService
    # Registers a callback run when a table's columns change (ingest evolved its schema,
    # tiers.evolution), under the swap lock; ``tables`` then holds the new columns.
    on_schema_change: Callable[[Callable[[], None]], None] = lambda _listener: None


class FlightSqlServer(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(self, services: FlightServices, location: str, tickets: TicketKey | None = None, **kwargs: Any) -> None:
        super().__init__(location, **kwargs)
        self.settings = services.server
        self.node = services.node
        # Statement tickets are signed (protocol.tickets) and name their user. Given
        # ``tickets``, this is a worker of `serve --workers`: its front signs the tickets it
        # hands out; otherwise they are signed here, under a key of this process.
        self.signs = tickets is None
        self.tickets = tickets or TicketKey(new_key(), ttl_for(self.settings.statement_timeout.total_seconds()))
        self.executor = services.statements
        self.prepared = PreparedStatements()
        self.metadata = Metadata(services.catalog, services.statements)
        self.parameter_types = ParameterTyper(services.tables, services.names)
        services.on_schema_change(self.parameter_types.schema_changed)
        self._schema_bytes: LRU[bytes, bytes] = LRU(1024)
        self._info_handlers: dict[str, Callable[[Any, flight.FlightDescriptor, Any], flight.FlightInfo]] = {
            "CommandStatementQuery": self._info_statement,
            "CommandPreparedStatementQuery": self._info_prepared,
        }

    # -- helpers ------------------------------------------------------------------------

    def _user(self, context: flight.ServerCallContext, permission: str = "read") -> str:
        return self._caller(context, permission).user

    def _caller(self, context: flight.ServerCallContext, permission: str = "read") -> AuthMiddleware:
        auth = current_auth(context)
        allowed(auth.user, auth.permissions, permission)
        return auth

    def _check(self, sql: str) -> Statement:
        return check_statement(sql, self.settings.max_statement_bytes)

    def _turn(self, sql: str) -> AbstractContextManager[None]:
        """A large statement's turn to be parsed, planned and started (see the sandbox)."""
        return large_statement_turn(sql, self.settings.max_statement_bytes)

    def _command(self, descriptor: flight.FlightDescriptor) -> tuple[str, Any]:
        if descriptor.descriptor_type != flight.DescriptorType.CMD or descriptor.command is None:
            raise Unsupported("only command descriptors (Flight SQL) are supported")
        return unpack(descriptor.command)

    def _flight_info(self, descriptor: flight.FlightDescriptor, ex: Execution, ticket: bytes) -> flight.FlightInfo:
        endpoint = flight.FlightEndpoint(ticket, [])
        return flight.FlightInfo(
            ex.schema, descriptor, [endpoint], -1, -1, app_metadata=ex.route.to_json().encode()
        )

    def _start(
        self,
        descriptor: flight.FlightDescriptor,
        statement: Statement,
        params: list[tuple[Any, ...]] | None,
        caller: AuthMiddleware,
        started: Execution | None = None,
    ) -> flight.FlightInfo:
        ex = started or self.executor.start(statement, params, caller.user, sees_all=ADMIN in caller.permissions)
        if started is None:
            self.executor.park(ex)
        ticket = encode_ticket(ex.query_id, statement_text(statement), params)
        if self.signs:
            ticket = self.tickets.sign(0, identity_of(caller.user, caller.permissions), ticket)
        return self._flight_info(descriptor, ex, ticket)

    # -- GetFlightInfo / GetSchema -------------------------------------------------------

    @boundary
    def get_flight_info(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        name, cmd = self._command(descriptor)
        caller = self._caller(context)
        handler = self._info_handlers.get(name)
        if handler is not None:
            return handler(caller, descriptor, cmd)
        table = self.metadata.command_table(name, cmd)
        return flight.FlightInfo(table.schema, descriptor, [flight.FlightEndpoint(descriptor.command, [])], table.num_rows, -1)

    def _info_statement(self, caller: AuthMiddleware, descriptor: flight.FlightDescriptor, cmd: Any) -> flight.FlightInfo:
        if cmd.HasField("transaction_id"):
            raise Unsupported("transactions are not supported: tierflight is read-only and autocommit")
        with self._turn(cmd.query):
            statement = self._check(cmd.query)
            # A CommandStatementQuery carries no values: DuckDB would otherwise be asked to run
            # it unbound (or a client's rendering bug would go unnoticed).
            check_parameter_count(statement)
            require_bound(statement, None)
            warn_null_comparison(statement, caller.user)
            return self._start(descriptor, statement, None, caller)

    def _info_prepared(self, caller: AuthMiddleware, descriptor: flight.FlightDescriptor, cmd: Any) -> flight.FlightInfo:
        item = self.prepared.get(cmd.prepared_statement_handle)
        require_bound(item.statement, item.params)
        with self._turn(item.statement.sql):
            return self._start(descriptor, item.statement, item.params, caller, item.take_pending())

    @schema_boundary
    def get_schema(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor) -> flight.SchemaResult:
        name, cmd = self._command(descriptor)
        self._user(context)
        if name == "CommandStatementQuery":
            # Only the result's schema: placeholders need no values for it (typed NULL).
            with self._turn(cmd.query):
                statement = self._check(cmd.query)
                check_parameter_count(statement)
                return flight.SchemaResult(self.executor.schema(statement, statement.parameter_count))
        if name == "CommandPreparedStatementQuery":
            return flight.SchemaResult(self.prepared.get(cmd.prepared_statement_handle).dataset_schema)
        return flight.SchemaResult(self.metadata.command_schema(name, cmd))

    # -- DoGet ----------------------------------------------------------------------------

    @boundary
    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        data = ticket.ticket
        caller = current_auth(context)
        if is_signed(data):
            return self.stream_signed(data, caller)
        name, _ = unpack(data)
        if name == "TicketStatementQuery":
            # Statement tickets are capabilities: only signed ones (see protocol.tickets).
            raise InvalidArgument("malformed ticket: not issued by this server (request a FlightInfo again)")
        return self.stream(data, allowed(caller.user, caller.permissions, "read"), caller.permissions)

    def stream_signed(self, data: bytes, caller: AuthMiddleware | None) -> flight.FlightDataStream:
        """A signed ticket: served to the user it names (``caller`` None: whoever holds it,
        on a worker's DoGet port, where no authentication runs)."""
        signed = self.tickets.verify(data)
        if caller is not None and caller.user != signed.user:
            raise PermissionDenied("this ticket was issued to another user; request a FlightInfo of your own")
        return self.stream(signed.inner, allowed(signed.user, signed.permissions, "read"), signed.permissions)

    def stream(self, data: bytes, user: str, permissions: frozenset[str]) -> flight.FlightDataStream:
        name, msg = unpack(data)
        if name != "TicketStatementQuery":
            table = self.metadata.command_table(name, msg)
            return flight.RecordBatchStream(table, _IPC_OPTIONS)
        # Only signed tickets get here with a statement (do_get refuses unsigned ones).
        query_id, sql, params = decode_ticket(msg.statement_handle, signed=True)
        ex = self.executor.take(query_id) if query_id else None
        if ex is None:
            with self._turn(sql):
                ex = self.executor.start(self._check(sql), params, user, sees_all=ADMIN in permissions)
        table = ex.table()
        if table is not None:
            return flight.RecordBatchStream(table, _IPC_OPTIONS)
        return flight.GeneratorStream(ex.schema, guarded(ex.batches()), _IPC_OPTIONS)

    # -- DoPut ----------------------------------------------------------------------------

    @boundary
    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        name, cmd = self._command(descriptor)
        if name == "CommandPreparedStatementQuery":
            self._user(context)
            item = self.prepared.get(cmd.prepared_statement_handle)
            item.params = read_parameters(reader, item.statement.parameter_count)
            result = pb.DoPutPreparedStatementResult(prepared_statement_handle=item.handle)
            writer.write(pa.py_buffer(result.SerializeToString()))
            return
        if name == "CommandStatementIngest":
            user = self._user(context, "ingest")
            rows = self.node.ingest(cmd, reader, user)
            writer.write(pa.py_buffer(pb.DoPutUpdateResult(record_count=rows).SerializeToString()))
            return
        if name in ("CommandStatementUpdate", "CommandPreparedStatementUpdate", "CommandStatementSubstraitPlan"):
            raise Unsupported("updates are not supported: tierflight is read-only (use bulk ingest to append rows)")
        raise Unsupported(f"DoPut of {name} is not supported")

    # -- Actions --------------------------------------------------------------------------

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        return ACTIONS

    @boundary
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[flight.Result]:
        kind = action.type
        body = action.body.to_pybytes() if action.body is not None else b""
        if kind == "CreatePreparedStatement":
            return iter([self._create_prepared(context, body)])
        if kind == "ClosePreparedStatement":
            req = _expect(body, "ActionClosePreparedStatementRequest", kind)
            self.prepared.close(req.prepared_statement_handle)
            return iter([])
        if kind == "CancelFlightInfo":
            return iter([self._cancel_flight_info(body, current_auth(context))])
        if kind == "CancelQuery":
            req = _expect(body, "ActionCancelQueryRequest", kind)
            try:
                info = flight.FlightInfo.deserialize(req.info)
            except Exception:  # noqa: BLE001 - any decoding failure is the client's malformed request
                raise InvalidArgument("malformed ActionCancelQueryRequest: info is not a FlightInfo") from None
            # CancelQuery's result enum has the same numbers as CancelFlightInfo's status.
            status = self._cancel_info(info, current_auth(context))
            answer = pb.ActionCancelQueryResult(result=pb.ActionCancelQueryResult.CancelResult.Name(status))
            return iter([flight.Result(pack(answer))])
        if kind in SESSION_HANDLERS:
            return iter([flight.Result(SESSION_HANDLERS[kind](body))])
        if kind == "healthcheck":
            return iter([flight.Result(json.dumps(self.node.health()).encode())])
        if kind == STATE_ACTION:
            self._user(context)
            return iter([flight.Result(json.dumps(self.node.data_state()).encode())])
        if kind in ("BeginTransaction", "EndTransaction", "BeginSavepoint", "EndSavepoint"):
            raise Unsupported("transactions are not supported: tierflight is read-only and autocommit")
        raise Unsupported(f"action {kind!r} is not supported")

    def _create_prepared(self, context: flight.ServerCallContext, body: bytes) -> flight.Result:
        caller = self._caller(context)
        name, req = unpack(body)
        if name != "ActionCreatePreparedStatementRequest":
            raise InvalidArgument(f"CreatePreparedStatement expects ActionCreatePreparedStatementRequest, got {name}")
        if req.HasField("transaction_id"):
            raise Unsupported("transactions are not supported: tierflight is read-only and autocommit")
        pending = None
        with self._turn(req.query):
            statement = self._check(req.query)
            check_parameter_count(statement)
            warn_null_comparison(statement, caller.user)
            if statement.parameter_count:
                dataset_schema = self.executor.schema(statement, statement.parameter_count)
            else:
                pending = self.executor.start(statement, None, caller.user, sees_all=ADMIN in caller.permissions)
                self.executor.park(pending)
                dataset_schema = pending.schema
        parameter_schema = self.parameter_types.schema(statement)
        item = self.prepared.add(statement, caller.user, dataset_schema, parameter_schema)
        item.pending = pending
        result = pb.ActionCreatePreparedStatementResult(
            prepared_statement_handle=item.handle,
            dataset_schema=self._dataset_schema_bytes(dataset_schema),
            parameter_schema=parameter_schema.serialize().to_pybytes() if statement.parameter_count else b"",
        )
        return flight.Result(pack(result))

    def _dataset_schema_bytes(self, schema: pa.Schema) -> bytes:
        # Keyed by the serialized schema: pa.Schema equality ignores field metadata.
        key = schema.serialize().to_pybytes()
        out = self._schema_bytes.get(key)
        if out is None:
            out = schema_with_column_metadata(schema).serialize().to_pybytes()
            self._schema_bytes.put(key, out)
        return out

    def _cancel_info(self, info: flight.FlightInfo, caller: AuthMiddleware) -> fa.CancelStatus:
        """Cancel the executions the FlightInfo's signed tickets name: only the user a ticket
        was issued to, or one with the ``admin`` permission, may."""
        cancelled = False
        for endpoint in info.endpoints:
            data = endpoint.ticket.ticket
            if not is_signed(data):
                continue  # a metadata command, or not ours: nothing runs for it
            try:
                signed = self.tickets.verify(data)
                name, msg = unpack(signed.inner)
            except Exception:  # noqa: BLE001 - forged, altered or expired: not ours to cancel
                continue
            if signed.user != caller.user and ADMIN not in caller.permissions:
                raise PermissionDenied("this statement was started by another user; only they (or an admin) may cancel it")
            if name == "TicketStatementQuery":
                query_id, _, _ = decode_ticket(msg.statement_handle, signed=True)
                cancelled = self.executor.cancel(query_id) or cancelled
        return fa.CANCEL_STATUS_CANCELLED if cancelled else fa.CANCEL_STATUS_NOT_CANCELLABLE

    def _cancel_flight_info(self, body: bytes, caller: AuthMiddleware) -> flight.Result:
        req = fa.CancelFlightInfoRequest()
        try:
            req.ParseFromString(body)
            info = flight.FlightInfo.deserialize(req.info)
        except Exception:  # noqa: BLE001 - any decoding failure is the client's malformed request
            raise InvalidArgument("malformed CancelFlightInfoRequest") from None
        status = self._cancel_info(info, caller)
        return flight.Result(fa.CancelFlightInfoResult(status=status).SerializeToString())


def allowed(user: str, permissions: frozenset[str], permission: str) -> str:
    """``user``, or PERMISSION_DENIED when ``permissions`` lack ``permission``."""
    if permission not in permissions:
        raise PermissionDenied(f"user {user!r} lacks the {permission!r} permission")
    return user


def _expect(body: bytes, expected: str, action: str) -> Any:
    name, msg = unpack(body)
    if name != expected:
        raise InvalidArgument(f"{action} expects {expected}, got {name}")
    return msg


def statement_text(statement: Statement) -> str:
    return f"EXPLAIN ROUTE {statement.sql}" if statement.kind is StatementKind.EXPLAIN_ROUTE else statement.sql


__all__ = ["MIDDLEWARE_KEY", "FlightSqlServer", "NotFound"]


def build_server(services: FlightServices, host: str, port: int, *, insecure: bool = False) -> FlightSqlServer:
    """The Flight SQL server over ``services``, with auth, TLS and the traceback guard in place."""
    from tierflight.protocol.auth import (
        AuthSettings,
        check_bind_allowed,
        server_auth_options,
        tls_certificates,
    )
    from tierflight.protocol.boundary import install_traceback_guard

    settings = AuthSettings.from_config(services.auth)
    check_bind_allowed(host, settings.enabled, insecure)
    certs = tls_certificates(services.server.tls_cert, services.server.tls_key)
    scheme = "grpc+tls" if certs else "grpc"
    install_traceback_guard()
    return FlightSqlServer(
        services,
        f"{scheme}://{host}:{port}",
        tls_certificates=certs or None,
        **server_auth_options(settings),
    )
