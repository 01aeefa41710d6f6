"""Start, watch and stop the worker processes of ``serve --workers N``, and run the front.

Workers run ``tierflight worker`` on Unix sockets in a fresh private directory. They are
forked from a fork server (multiprocessing's ``forkserver``: a fresh interpreter that
imports what a worker needs, see preload.py, and forks a worker per request), so the
libraries' heap is shared by the workers rather than built in each, while no gRPC, DuckDB
or thread state crosses a fork: the fork server never starts any. The primary starts
first (it recovers an interrupted flush, replays the WAL and builds missing rollups);
followers start once it is ready, so they load the snapshots it wrote. A worker that
exits while the server runs is started again; its calls fail with UNAVAILABLE meanwhile.

Each worker also serves DoGet on a TCP port of the front's host (any free port, or
``--worker-ports BASE`` + its index; reported on its ready line), where clients fetch results with tickets the front signed under a key
drawn here for this ``serve`` (see tickets.py). The front names a worker's port in the
endpoints it returns only while the worker runs: its location is dropped the moment the
process exits (a thread waits on every worker's exit) and set again once the new one is
ready.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any

import pyarrow.flight as flight
from prometheus_client import CollectorRegistry, Gauge

from tierflight.core.config import Config
from tierflight.core.errors import ConfigError
from tierflight.core.log import get_logger
from tierflight.lifecycle import SignalLatch
from tierflight.protocol.tickets import KEY_ENV, TicketKey, new_key, ttl_for
from tierflight.protocol.wire import STATE_ACTION
from tierflight.workers.front import FrontServer, Worker

log = get_logger("tierflight.workers")

READY_LINE = "tierflight worker ready"  # then " direct=<port>": its DoGet port
START_TIMEOUT_S = 1800.0  # a first start may generate data and build every rollup
POLL_INTERVAL_S = 0.25
MAX_WORKERS = 64
WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def ticket_ttl_s(config: Config) -> float:
    """How long a signed ticket is valid: as long as a parked execution waits for its DoGet
    (``[server] statement_timeout``; 5 minutes when that is 0)."""
    return ttl_for(config.server.statement_timeout.total_seconds())


def advertised_host(host: str, advertise: str | None) -> str:
    """The host name the workers' locations use: ``advertise``, else the address the front
    binds, or this machine's host name when that is a wildcard address."""
    name = advertise or (socket.gethostname() if host in WILDCARDS else host)
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


_FORKS = multiprocessing.get_context("forkserver")
_FORKS.set_forkserver_preload(["tierflight.workers.preload"])


def run_worker(args: list[str], env: dict[str, str], out: Any) -> None:
    """The body of a forked worker: its environment, its stdout on ``out``, then the CLI."""
    os.environ.clear()
    os.environ.update(env)
    os.dup2(out.fileno(), 1)
    out.close()
    _name_process(f"tierflight-w{args[args.index('--index') + 1]}")
    from tierflight.cli import app

    app(args, prog_name="tierflight")


def _name_process(name: str) -> None:
    """What ``ps -o comm`` and ``top`` show (the command line stays the fork server's)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME (Linux)
    except (OSError, AttributeError):
        pass


@dataclass
class WorkerProcess:
    worker: Worker
    socket: Path
    args: list[str]
    env: dict[str, str]
    direct_base: str = "grpc://127.0.0.1"  # the DoGet port's URI without the port
    proc: BaseProcess | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    restarts: int = 0
    direct_port: int | None = None

    def start(self) -> None:
        self.ready.clear()
        self.worker.direct = None
        self.direct_port = None
        self.socket.unlink(missing_ok=True)
        reader, writer = _FORKS.Pipe(duplex=False)
        self.proc = _FORKS.Process(target=run_worker, args=(self.args, self.env, writer), name=f"tierflight-worker-{self.worker.index}")
        self.proc.start()
        writer.close()
        # The worker writes plain lines to the pipe (its stdout): read them as text.
        stream = os.fdopen(os.dup(reader.fileno()), "r")
        reader.close()
        threading.Thread(target=self._read_stdout, args=(stream,), daemon=True).start()

    def _read_stdout(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                if line.startswith(READY_LINE):
                    _, _, port = line.strip().rpartition(" direct=")
                    self.direct_port = int(port) if port.isdigit() else None
                    self.ready.set()
                else:
                    sys.stdout.write(line)
                    sys.stdout.flush()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc is not None and not self.proc.is_alive():
                raise ConfigError(
                    f"worker {self.worker.index} exited with status {self.proc.exitcode} while starting; "
                    "its log lines above say why"
                )
            if time.monotonic() > deadline:
                raise ConfigError(f"worker {self.worker.index} did not become ready within {timeout:.0f} s")
        self.worker.reset()
        if self.direct_port is None:
            raise ConfigError(f"worker {self.worker.index} did not report its DoGet port")
        self.worker.direct = f"{self.direct_base}:{self.direct_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    @property
    def status(self) -> int | None:
        return self.proc.exitcode if self.proc is not None else None

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()

    def wait(self, timeout: float) -> None:
        """Wait for the worker to exit; kill it if it has not within ``timeout``."""
        if self.proc is None:
            return
        self.proc.join(timeout)
        if self.proc.is_alive():
            log.error("worker_killed", worker=self.worker.index)
            self.proc.kill()
            self.proc.join()


def worker_args(
    config: Config,
    index: int,
    socket: Path,
    log_level: str,
    demo: bool = False,
    direct_host: str = "127.0.0.1",
    direct_port: int = 0,
) -> list[str]:
    """The ``tierflight`` command line of a worker (without the program); ``demo``: it
    generates the demo data first when there is none (the primary, on ``serve``);
    ``direct_host``/``direct_port``: where its DoGet port binds (the front's host; 0: any
    free port)."""
    args = ["--log-level", log_level]
    if config.path is not None:
        args += ["--config", str(Path(config.path).resolve())]
    args += ["--data-dir", str(config.data_dir.resolve()), "worker", "--socket", str(socket), "--index", str(index)]
    args += ["--direct-host", direct_host, "--direct-port", str(direct_port)]
    return [*args, "--demo"] if demo else args


def worker_env(config: Config, index: int, key: bytes | None = None) -> dict[str, str]:
    """A worker's environment: this one, its metrics port, and the ticket key (handed over
    here, not on its command line; the worker takes it out of its environment at once)."""
    env = dict(os.environ)
    if key is not None:
        env[KEY_ENV] = key.hex()
    # Each worker has its own metrics endpoint next to the front's (front port + 1 + index).
    port = config.metrics.port
    env["TIERFLIGHT_METRICS__PORT"] = str(port + 1 + index) if port > 0 else str(port)
    if index > 0:
        env["TIERFLIGHT_TIERS__MAINTENANCE_INTERVAL"] = "0s"  # only the primary rewrites files
    return env


class Supervisor:
    def __init__(
        self,
        config: Config,
        count: int,
        log_level: str = "info",
        demo: bool = False,
        host: str = "127.0.0.1",
        advertise: str | None = None,
        worker_ports: int = 0,
    ) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS}, got {count}")
        if worker_ports and not 1 <= worker_ports <= 65536 - count:
            raise ConfigError(f"--worker-ports must leave room for {count} ports below 65536, got {worker_ports}")
        self.config = config
        # Tickets are signed with a key that lives only in this serve's processes.
        key = new_key()
        self.tickets = TicketKey(key, ticket_ttl_s(config))
        scheme = "grpc+tls" if config.server.tls_cert else "grpc"
        base = f"{scheme}://{advertised_host(host, advertise)}"
        # Unix socket paths are short (108 bytes) and this directory is private (0700).
        self.dir = Path(tempfile.mkdtemp(prefix="tierflight-"))
        self.processes: list[WorkerProcess] = []
        for i in range(count):
            sock = self.dir / f"w{i}.sock"
            worker = Worker(i, f"grpc+unix://{sock}")
            port = worker_ports + i if worker_ports else 0
            args = worker_args(config, i, sock, log_level, demo and i == 0, direct_host=host, direct_port=port)
            self.processes.append(WorkerProcess(worker, sock, args, worker_env(config, i, key), base))
        self._stop = threading.Event()

    @property
    def workers(self) -> Sequence[Worker]:
        return [p.worker for p in self.processes]

    def start(self) -> None:
        primary, followers = self.processes[0], self.processes[1:]
        primary.start()
        primary.wait_ready(START_TIMEOUT_S)
        for p in followers:
            p.start()
        for p in followers:
            p.wait_ready(START_TIMEOUT_S)
        log.info("workers_ready", workers=len(self.processes), pids=[p.proc.pid for p in self.processes if p.proc])

    def state(self, worker: Worker) -> dict[str, Any] | None:
        try:
            results = list(
                worker.client.do_action(
                    flight.Action(STATE_ACTION, b""), flight.FlightCallOptions(timeout=30)
                )
            )
            return dict(json.loads(results[0].body.to_pybytes()))
        except (flight.FlightError, OSError, ValueError, IndexError):
            return None

    def watch(self, front: FrontServer) -> None:
        """Poll data states (re-admitting followers) and restart workers that died."""

        def exits() -> None:
            # At once, not at the next round of the loop below (whose state calls can take a
            # while): a dead worker's location is no longer handed out.
            while not self._stop.is_set():
                running = [p for p in self.processes if p.proc is not None and p.worker.direct is not None]
                sentinels = {p.proc.sentinel: p for p in running if p.proc is not None}
                if not sentinels:
                    self._stop.wait(POLL_INTERVAL_S)
                    continue
                for ready in multiprocessing.connection.wait(list(sentinels), timeout=POLL_INTERVAL_S):
                    p = sentinels[ready]  # type: ignore[index]
                    p.worker.direct = None
                    front.router.exclude(p.worker)

        threading.Thread(target=exits, name="tierflight-worker-exits", daemon=True).start()

        def loop() -> None:
            while not self._stop.wait(POLL_INTERVAL_S):
                for p in self.processes:
                    if not p.alive() and not self._stop.is_set():
                        front.router.exclude(p.worker)
                        log.error("worker_exited", worker=p.worker.index, status=p.status, restarts=p.restarts)
                        p.restarts += 1
                        time.sleep(min(5.0, 0.5 * p.restarts))
                        try:
                            p.start()
                            p.wait_ready(START_TIMEOUT_S)
                        except (ConfigError, OSError) as exc:
                            log.error("worker_restart_failed", worker=p.worker.index, error=str(exc))
                try:
                    front.router.poll(self.state)
                except Exception as exc:  # noqa: BLE001 - polled again next round
                    log.error("worker_poll_failed", error=repr(exc))

        threading.Thread(target=loop, name="tierflight-workers", daemon=True).start()

    def stop(self, grace_s: float) -> None:
        """SIGTERM every worker (each drains and flushes), then wait; kill what is left."""
        self._stop.set()
        for p in self.processes:
            p.terminate()
        deadline = time.monotonic() + grace_s + 30
        for p in self.processes:
            p.wait(max(0.1, deadline - time.monotonic()))
        for p in self.processes:
            p.worker.reset()
        shutil.rmtree(self.dir, ignore_errors=True)

    def readiness(self, front_draining: threading.Event) -> dict[str, Any]:
        down = [p.worker.index for p in self.processes if not (p.alive() and p.ready.is_set())]
        reasons = []
        if front_draining.is_set():
            reasons.append("shutting down: finishing in-flight statements")
        if down:
            reasons.append(f"workers not running: {', '.join(map(str, down))}")
        return {
            "status": "not_ready" if reasons else "ready",
            "reasons": reasons,
            "workers": len(self.processes),
            "pids": [p.proc.pid if p.proc is not None else None for p in self.processes],
            # The DoGet port of each worker as endpoints name it (None: not running).
            "locations": [p.worker.direct for p in self.processes],
        }


def serve_workers(
    config: Config,
    host: str,
    port: int,
    count: int,
    *,
    insecure: bool,
    log_level: str,
    demo: bool = False,
    advertise: str | None = None,
    worker_ports: int = 0,
) -> None:
    """The body of ``tierflight serve --workers N`` (N >= 2): returns after a graceful stop."""
    from tierflight.observability.httpd import OpsServer
    from tierflight.protocol.auth import (
        AuthSettings,
        check_bind_allowed,
        server_auth_options,
        tls_certificates,
    )
    from tierflight.protocol.boundary import install_traceback_guard

    settings = AuthSettings.from_config(config.auth)
    check_bind_allowed(host, settings.enabled, insecure)
    certs = tls_certificates(config.server.tls_cert, config.server.tls_key)
    scheme = "grpc+tls" if certs else "grpc"
    supervisor = Supervisor(
        config, count, log_level, demo=demo, host=host, advertise=advertise, worker_ports=worker_ports
    )
    latch = SignalLatch()
    registry = CollectorRegistry()
    try:
        supervisor.start()
        install_traceback_guard()
        front = FrontServer(
            f"{scheme}://{host}:{port}",
            supervisor.workers,
            call_timeout=config.server.statement_timeout.total_seconds() + 30,
            tickets=supervisor.tickets,
            registry=registry,
            tls_certificates=certs or None,
            **server_auth_options(settings),
        )
    except BaseException:
        supervisor.stop(0)
        raise
    draining = threading.Event()
    up = Gauge("tierflight_workers_up", "Worker processes running", registry=registry)
    up.set_function(lambda: sum(p.alive() for p in supervisor.processes))
    eligible = Gauge("tierflight_workers_eligible", "Workers statements may go to now", registry=registry)
    eligible.set_function(lambda: len(front.router.eligible()))

    def ready() -> dict[str, Any]:
        out = supervisor.readiness(draining)
        out["eligible"] = front.router.eligible()
        return out

    ops = (
        OpsServer(config.metrics.host, config.metrics.port, registry, ready).start()
        if config.metrics.enabled
        else None
    )
    supervisor.watch(front)
    log.info("ready", host=host, port=front.port, workers=count, metrics_port=ops.port if ops else None)
    print(f"tierflight ready at {scheme}://{host}:{front.port} ({count} workers)", flush=True)
    while not latch.first.wait(0.5):
        pass
    grace = config.server.shutdown_grace.total_seconds()
    log.info("shutdown", signal=latch.signum, grace_s=grace)
    draining.set()
    stopped = threading.Thread(target=front.shutdown, daemon=True)
    stopped.start()
    stopped.join(grace)
    # Workers drain their own statements (their grace) and flush; front calls then end.
    supervisor.stop(grace)
    stopped.join(5)
    if ops is not None:
        ops.stop()
    log.info("stopped", drained=not stopped.is_alive())
