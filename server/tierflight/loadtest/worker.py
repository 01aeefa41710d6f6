"""A load-generator worker process: a few client threads, each with its own Flight connection.

Each statement is two RPCs over plain pyarrow.flight: GetFlightInfo(CommandStatementQuery),
whose ``app_metadata`` carries the route JSON (``{"tier": ..., "rollup": ...}``), then DoGet.
ADBC would add CreatePreparedStatement / ClosePreparedStatement round trips and hides the
FlightInfo, and the route is what tells which tier answered. Like a proper Flight client
(ADBC keeps a client per location too), each endpoint is fetched from its first location,
through a connection kept per location with the same TLS and auth options, or from the
server that answered GetFlightInfo when it has none (``serve --workers`` names a worker).

A statement with ``{pool}`` placeholders (:mod:`.vary`) is filled per call from the
client's seeded generator: written into the text (``literal``), or bound to a statement the
client prepared once (``bind``: DoPut of the values, then GetFlightInfo of the prepared
statement and DoGet, as ADBC does for a statement with parameters). Each worker keeps a key
per value set it sent, so the parent can count how many statements repeated an earlier one.

Threads are enough inside a process because pyarrow releases the GIL during RPCs; processes
(spawned by :mod:`tierflight.loadtest.runner`) spread the Python work over cores. Results go
to the parent in chunks every :data:`FLUSH_SECONDS` through one multiprocessing queue.
"""

from __future__ import annotations

import collections
import json
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from tierflight.loadtest.vary import ParameterMode, Template, Value, client_rng, value_key

# (statement index, start in s since the measurement began, latency ms, rows, bytes, tier,
#  error code or None, error message or None)
Record = tuple[int, float, float, int, int, str, str | None, str | None]

FLUSH_SECONDS = 0.25
WARMUP_SQL = "SELECT 1"
REUSE_CONNECTION = "arrow-flight-reuse-connection://?"  # Flight: "the server you asked"
# Value-set keys a worker keeps for the repeat count (about 70 bytes each); past this the
# count covers the first statements only.
MAX_TRACKED_KEYS = 1_000_000


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs; picklable, since workers are spawned."""

    worker_id: int
    thread_ids: tuple[int, ...]  # global client numbers of this worker's threads
    total_threads: int
    uri: str
    sqls: tuple[str, ...]
    duration: float | None  # seconds of measurement (after warmup)
    warmup: float
    quotas: tuple[int | None, ...]  # statements per thread (None: until the time is up)
    time_cap: float  # hard bound on measurement seconds, whatever else is set
    rate: float | None  # total statements per second over all threads (open loop)
    request_timeout: float
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_root_certs: bytes | None = None
    tls_skip_verify: bool = False
    templates: tuple[Template | None, ...] = ()  # per statement, when its text varies
    parameter_mode: ParameterMode = ParameterMode.LITERAL
    seed: int = 0


def _pack(message: Any) -> bytes:
    from google.protobuf import any_pb2

    command = any_pb2.Any()
    command.Pack(message, type_url_prefix="type.googleapis.com/")
    return bytes(command.SerializeToString())


class _Client:
    """One Flight connection with the call options (auth header, timeout) it needs."""

    def __init__(self, spec: WorkerSpec) -> None:
        import pyarrow.flight as flight

        kwargs: dict[str, Any] = {}
        if spec.tls_root_certs is not None:
            kwargs["tls_root_certs"] = spec.tls_root_certs
        if spec.tls_skip_verify:
            kwargs["disable_server_verification"] = True
        self._connect_kwargs = kwargs
        self.client = flight.connect(spec.uri, **kwargs)
        # Endpoint locations (bytes, as pyarrow gives them) -> their connection.
        self._at: dict[bytes, Any] = {REUSE_CONNECTION.encode(): self.client, spec.uri.encode(): self.client}
        headers: list[tuple[bytes, bytes]] = []
        if spec.token is not None:
            headers.append((b"authorization", f"Bearer {spec.token}".encode()))
        elif spec.user is not None and spec.password is not None:
            headers.append(self.client.authenticate_basic_token(spec.user, spec.password))
        self.options = flight.FlightCallOptions(timeout=spec.request_timeout, headers=headers)

    def at(self, endpoint: Any) -> Any:
        """The connection an endpoint is fetched through: its first location's (opened once,
        with the same options; the call options carry the same auth header), or this one."""
        locations = endpoint.locations
        if not locations:
            return self.client
        uri = locations[0].uri
        client = self._at.get(uri)
        if client is None:
            import pyarrow.flight as flight

            client = self._at[uri] = flight.connect(uri.decode(), **self._connect_kwargs)
        return client

    def fetch(self, descriptor: Any) -> Any:
        """The whole answer of one statement, as an Arrow table (endpoints concatenated)."""
        import pyarrow as pa

        info = self.client.get_flight_info(descriptor, self.options)
        tables = [self.at(e).do_get(e.ticket, self.options).read_all() for e in info.endpoints]
        return pa.concat_tables(tables) if tables else pa.table({})

    def execute(self, descriptor: Any) -> tuple[int, int, str]:
        """Run one statement: (rows, Arrow bytes, tier)."""
        info = self.client.get_flight_info(descriptor, self.options)
        tier = "unknown"
        if info.app_metadata:
            tier = str(json.loads(info.app_metadata).get("tier") or "unknown")
        rows = nbytes = 0
        for endpoint in info.endpoints:
            table = self.at(endpoint).do_get(endpoint.ticket, self.options).read_all()
            rows += table.num_rows
            nbytes += table.nbytes
        return rows, nbytes, tier

    def prepare(self, sql: str) -> bytes:
        """CreatePreparedStatement: the statement's handle (values are bound per call)."""
        import pyarrow.flight as flight
        from google.protobuf import any_pb2

        from tierflight.protocol import flightsql_pb2 as pb

        action = flight.Action("CreatePreparedStatement", _pack(pb.ActionCreatePreparedStatementRequest(query=sql)))
        results = list(self.client.do_action(action, self.options))
        wrapped = any_pb2.Any()
        wrapped.ParseFromString(results[0].body.to_pybytes())
        answer = pb.ActionCreatePreparedStatementResult()
        wrapped.Unpack(answer)
        return bytes(answer.prepared_statement_handle)

    def execute_bound(self, handle: bytes, values: tuple[Value, ...]) -> tuple[int, int, str]:
        """Bind one value set (DoPut) to a prepared statement and run it."""
        import pyarrow as pa
        import pyarrow.flight as flight

        from tierflight.protocol import flightsql_pb2 as pb

        command = pb.CommandPreparedStatementQuery(prepared_statement_handle=handle)
        descriptor = flight.FlightDescriptor.for_command(_pack(command))
        batch = pa.record_batch([pa.array([v]) for v in values], names=[f"parameter_{i + 1}" for i in range(len(values))])
        writer, reader = self.client.do_put(descriptor, batch.schema, self.options)
        try:
            writer.write_batch(batch)
            writer.done_writing()
            answer = reader.read()
        finally:
            writer.close()
        if answer is not None:
            # A server may answer with a new handle for the bound statement (Flight SQL 15).
            result = pb.DoPutPreparedStatementResult()
            result.ParseFromString(answer.to_pybytes())
            if result.prepared_statement_handle:
                descriptor = flight.FlightDescriptor.for_command(
                    _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=result.prepared_statement_handle))
                )
        return self.execute(descriptor)

    def close(self) -> None:
        for client in {id(c): c for c in self._at.values()}.values():
            client.close()


def descriptors(sqls: tuple[str, ...]) -> list[Any]:
    """One Flight descriptor per statement: ``Any(CommandStatementQuery)``, packed once."""
    import pyarrow.flight as flight
    from google.protobuf import any_pb2

    # Only the generated messages: tierflight.protocol.server would import DuckDB and sqlglot
    # into every worker.
    from tierflight.protocol import flightsql_pb2 as pb

    out = []
    for sql in sqls:
        command = any_pb2.Any()
        command.Pack(pb.CommandStatementQuery(query=sql), type_url_prefix="type.googleapis.com/")
        out.append(flight.FlightDescriptor.for_command(command.SerializeToString()))
    return out


class _Keys:
    """Value-set keys of the measured statements, shared by a worker's client threads."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.counted = 0
        self._lock = threading.Lock()

    def add(self, key: int) -> None:
        with self._lock:
            if len(self.seen) < MAX_TRACKED_KEYS:
                self.seen.add(key)
                self.counted += 1


class _Filler:
    """One client's next statement: a fixed descriptor, or a template filled per call."""

    def __init__(self, spec: WorkerSpec, slot: int, client: _Client, descs: list[Any]) -> None:
        self.spec, self.client, self.descs = spec, client, descs
        self.rng = client_rng(spec.seed, spec.thread_ids[slot])
        self.handles: dict[int, bytes] = {}
        # A fixed statement's key never changes: computed once, not hashed on every call.
        self.fixed_keys = [value_key(i, ()) for i in range(len(descs))]
        if spec.parameter_mode is ParameterMode.BIND:
            for i, tpl in enumerate(spec.templates):
                if tpl is not None:
                    self.handles[i] = client.prepare(tpl.placeholders)

    def run(self, index: int, keys: _Keys | None) -> tuple[int, int, str]:
        tpl = self.spec.templates[index] if self.spec.templates else None
        if tpl is None:
            if keys is not None:
                keys.add(self.fixed_keys[index])
            return self.client.execute(self.descs[index])
        values = tpl.draw(self.rng)
        if keys is not None:
            keys.add(value_key(index, values))
        handle = self.handles.get(index)
        if handle is not None:
            return self.client.execute_bound(handle, values)
        return self.client.execute(descriptors((tpl.literal(values),))[0])


def _client_loop(
    spec: WorkerSpec,
    slot: int,
    filler: _Filler,
    t0: float,
    stop: Any,
    out: collections.deque[Record],
    keys: _Keys,
) -> None:
    from tierflight_client.errors import from_flight_error

    g = spec.thread_ids[slot]
    quota = spec.quotas[slot]
    measure_from = t0 + spec.warmup
    hard_end = measure_from + min(spec.duration or spec.time_cap, spec.time_cap)
    interval = spec.total_threads / spec.rate if spec.rate else 0.0
    # Open loop: the global send sequence is n / rate; thread g takes n = g, g + T, g + 2T, ...
    next_at = t0 + g / spec.rate if spec.rate else t0
    n_stmt = len(filler.descs)
    k = g % n_stmt  # threads start at different statements so the mix is even from the start
    done = 0
    clock = time.monotonic
    while not stop.is_set():
        if spec.rate:
            wait = next_at - clock()
            if wait > 0:
                # Sleep in slices so a stop request is noticed at once.
                if stop.wait(min(wait, 0.05)):
                    break
                if next_at - clock() > 0:
                    continue
            scheduled = next_at
            next_at += interval
        else:
            scheduled = clock()
        if scheduled >= hard_end:
            break
        index = k
        k = (k + 1) % n_stmt
        code: str | None = None
        message: str | None = None
        rows = nbytes = 0
        tier = ""
        measured = scheduled >= measure_from
        try:
            rows, nbytes, tier = filler.run(index, keys if measured else None)
        except Exception as exc:  # noqa: BLE001 - every failure is a data point, counted by code
            err = from_flight_error(exc)
            code, message = err.code, err.message
        latency_ms = (clock() - scheduled) * 1000.0
        if measured:
            out.append((index, scheduled - measure_from, latency_ms, rows, nbytes, tier, code, message))
            done += 1
            if quota is not None and done >= quota:
                break


def run_worker(spec: WorkerSpec, results: Any, go: Any, start_at: Any, stop: Any) -> None:
    """Process entry point: connect, report ready, wait for ``go``, run, stream records."""
    # The parent handles Ctrl-C and tells workers to stop through ``stop``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wid = spec.worker_id
    clients: list[_Client] = []
    fillers: list[_Filler] = []
    try:
        descs = descriptors(spec.sqls)
        (probe,) = descriptors((WARMUP_SQL,))
        for slot, _ in enumerate(spec.thread_ids):
            client = _Client(spec)
            clients.append(client)
            # One round trip per connection before the clock starts: channel set-up and auth
            # are not part of any statement's latency, and an unreachable server or bad
            # credentials fail here, once, with a clear message.
            client.execute(probe)
            fillers.append(_Filler(spec, slot, client, descs))  # bind mode: prepares here
    except Exception as exc:  # noqa: BLE001 - whatever stops a worker, the parent reports it
        from tierflight_client.errors import from_flight_error

        results.put(("failed", wid, str(from_flight_error(exc))))
        for c in clients:
            c.close()
        return
    results.put(("ready", wid, None))
    if not go.wait(120) or stop.is_set():
        for c in clients:
            c.close()
        results.put(("done", wid, None))
        return
    t0 = start_at.value
    cpu_start: float | None = None
    out: collections.deque[Record] = collections.deque()
    keys = _Keys()
    threads = [
        threading.Thread(target=_client_loop, args=(spec, i, f, t0, stop, out, keys), daemon=True, name=f"client-{g}")
        for i, (f, g) in enumerate(zip(fillers, spec.thread_ids, strict=True))
    ]
    for t in threads:
        t.start()

    def flush() -> None:
        chunk = [out.popleft() for _ in range(len(out))]
        if chunk:
            results.put(("records", wid, chunk))

    while any(t.is_alive() for t in threads):
        time.sleep(FLUSH_SECONDS)
        if cpu_start is None and time.monotonic() >= t0 + spec.warmup:
            cpu_start = time.process_time()  # the measurement began (to within a flush interval)
        flush()
    flush()
    # This process's own CPU over the measurement (all threads): what the clients cost.
    cpu = time.process_time() - cpu_start if cpu_start is not None else 0.0
    for c in clients:
        c.close()
    results.put(("done", wid, {"cpu_s": cpu, "keys": sorted(keys.seen), "counted": keys.counted}))
