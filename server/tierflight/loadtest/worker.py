"""A load-generator worker process: a few client threads, each with its own Flight connection.

Each statement is two RPCs over plain pyarrow.flight: GetFlightInfo(CommandStatementQuery),
whose ``app_metadata`` carries the route JSON (``{"tier": ..., "rollup": ...}``), then DoGet.
ADBC would add CreatePreparedStatement / ClosePreparedStatement round trips and hides the
FlightInfo, and the route is what tells which tier answered. Like a proper Flight client
(ADBC keeps a client per location too), each endpoint is fetched from its first location,
through a connection kept per location with the same TLS and auth options, or from the
server that answered GetFlightInfo when it has none (``serve --workers`` names a worker).

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

# (statement index, start in s since the measurement began, latency ms, rows, bytes, tier,
#  error code or None, error message or None)
Record = tuple[int, float, float, int, int, str, str | None, str | None]

FLUSH_SECONDS = 0.25
WARMUP_SQL = "SELECT 1"
REUSE_CONNECTION = "arrow-flight-reuse-connection://?"  # Flight: "the server you asked"


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


def _client_loop(
    spec: WorkerSpec,
    slot: int,
    client: _Client,
    descs: list[Any],
    t0: float,
    stop: Any,
    out: collections.deque[Record],
) -> None:
    from tierflight_client.errors import from_flight_error

    g = spec.thread_ids[slot]
    quota = spec.quotas[slot]
    measure_from = t0 + spec.warmup
    hard_end = measure_from + min(spec.duration or spec.time_cap, spec.time_cap)
    interval = spec.total_threads / spec.rate if spec.rate else 0.0
    # Open loop: the global send sequence is n / rate; thread g takes n = g, g + T, g + 2T, ...
    next_at = t0 + g / spec.rate if spec.rate else t0
    n_stmt = len(descs)
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
        try:
            rows, nbytes, tier = client.execute(descs[index])
        except Exception as exc:  # noqa: BLE001 - every failure is a data point, counted by code
            err = from_flight_error(exc)
            code, message = err.code, err.message
        latency_ms = (clock() - scheduled) * 1000.0
        if scheduled >= measure_from:
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
    try:
        descs = descriptors(spec.sqls)
        (probe,) = descriptors((WARMUP_SQL,))
        for _ in spec.thread_ids:
            client = _Client(spec)
            clients.append(client)
            # One round trip per connection before the clock starts: channel set-up and auth
            # are not part of any statement's latency, and an unreachable server or bad
            # credentials fail here, once, with a clear message.
            client.execute(probe)
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
    threads = [
        threading.Thread(target=_client_loop, args=(spec, i, c, descs, t0, stop, out), daemon=True, name=f"client-{g}")
        for i, (c, g) in enumerate(zip(clients, spec.thread_ids, strict=True))
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
    results.put(("done", wid, {"cpu_s": cpu}))
