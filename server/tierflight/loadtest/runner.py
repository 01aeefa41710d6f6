"""Running a load test: spawn worker processes, start them together, collect, summarize.

The parent spawns ``processes`` workers (``spawn``: no forked gRPC or DuckDB state), each
with its share of the ``concurrency`` client threads. Once every worker has connected, the
parent publishes a start time on the shared monotonic clock (CLOCK_MONOTONIC is
system-wide, so open-loop schedules line up across processes) and sets ``go``. Nothing runs
unbounded: the measurement stops at ``duration`` or after ``max_statements``, every run has
a hard time cap, every request a timeout, and workers still alive past the deadline are
terminated.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tierflight.loadtest.stats import latency_summary, summarize
from tierflight.loadtest.vary import ParameterMode, Pool, Template, Value, VaryError
from tierflight.loadtest.worker import FLUSH_SECONDS, Record, WorkerSpec, run_worker
from tierflight.loadtest.workload import Statement

# A run given only a statement count still stops after this long.
DEFAULT_TIME_CAP = 600.0
MAX_DURATION = 24 * 3600.0
MAX_CONCURRENCY = 1024
CONNECT_TIMEOUT = 60.0


class LoadTestError(Exception):
    """The load test could not run (bad options, unreachable server); the message says why."""


@dataclass(frozen=True)
class LoadTestConfig:
    uri: str
    statements: tuple[Statement, ...]
    concurrency: int
    duration: float | None = None
    max_statements: int | None = None
    rate: float | None = None
    processes: int | None = None  # default: one per core, at most one per client
    warmup: float = 0.0
    request_timeout: float = 30.0
    time_cap: float = DEFAULT_TIME_CAP
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_root_certs: Path | None = None
    tls_skip_verify: bool = False
    workload: str | None = None  # the file the statements came from, for the report
    parameter_mode: ParameterMode = ParameterMode.LITERAL  # how {pool} placeholders are sent
    seed: int = 0  # the clients' value draws: same seed, same values

    def validated(self) -> LoadTestConfig:
        """Check the options; returns the config with ``processes`` resolved."""
        if not self.statements:
            raise LoadTestError("the workload has no statements")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise LoadTestError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        if self.duration is None and self.max_statements is None:
            raise LoadTestError("give --duration SECONDS or --statements N (or both)")
        if self.duration is not None and not 0 < self.duration <= MAX_DURATION:
            raise LoadTestError(f"--duration must be more than 0 and at most {MAX_DURATION:.0f} s")
        if self.max_statements is not None and self.max_statements < 1:
            raise LoadTestError("--statements must be at least 1")
        if self.rate is not None and not 0 < self.rate <= 1e6:
            raise LoadTestError("--rate must be a positive number of statements per second")
        if not 0 <= self.warmup <= 3600:
            raise LoadTestError("--warmup must be between 0 and 3600 s")
        if not 0 < self.request_timeout <= 3600:
            raise LoadTestError("--timeout must be more than 0 and at most 3600 s")
        if (self.user is None) != (self.password is None):
            raise LoadTestError("--user and --password go together")
        if self.token is not None and self.user is not None:
            raise LoadTestError("give either --user/--password or --token, not both")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        processes = self.processes if self.processes is not None else min(self.concurrency, cores)
        if not 1 <= processes <= self.concurrency:
            raise LoadTestError("--processes must be between 1 and --concurrency")
        return LoadTestConfig(**{**asdict(self), "statements": self.statements, "processes": processes})

    def describe(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "workload": self.workload,
            "statements": [s.name for s in self.statements],
            "concurrency": self.concurrency,
            "processes": self.processes,
            "duration_s": self.duration,
            "max_statements": self.max_statements,
            "mode": "open loop" if self.rate else "closed loop",
            "rate_qps": self.rate,
            "warmup_s": self.warmup,
            "request_timeout_s": self.request_timeout,
            "varying": sum(1 for s in self.statements if s.template is not None),
            "parameter_mode": self.parameter_mode.value,
            "seed": self.seed,
        }


@dataclass
class LoadTestResult:
    config: dict[str, Any]
    figures: dict[str, Any]
    started_at: str
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "tierflight_loadtest": 1,
            "started_at": self.started_at,
            "interrupted": self.interrupted,
            "config": self.config,
            **self.figures,
            "notes": self.notes,
        }


def _quotas(total: int | None, threads: int) -> list[int | None]:
    if total is None:
        return [None] * threads
    return [total // threads + (1 if g < total % threads else 0) for g in range(threads)]


def _specs(cfg: LoadTestConfig, templates: tuple[Template | None, ...]) -> list[WorkerSpec]:
    assert cfg.processes is not None
    threads = cfg.concurrency
    quotas = _quotas(cfg.max_statements, threads)
    certs = cfg.tls_root_certs.read_bytes() if cfg.tls_root_certs is not None else None
    specs = []
    for w in range(cfg.processes):
        ids = tuple(range(w, threads, cfg.processes))  # clients dealt round-robin to processes
        specs.append(
            WorkerSpec(
                worker_id=w,
                thread_ids=ids,
                total_threads=threads,
                uri=cfg.uri,
                sqls=tuple(s.sql for s in cfg.statements),
                duration=cfg.duration,
                warmup=cfg.warmup,
                quotas=tuple(quotas[g] for g in ids),
                time_cap=min(cfg.duration, cfg.time_cap) if cfg.duration else cfg.time_cap,
                rate=cfg.rate,
                request_timeout=cfg.request_timeout,
                user=cfg.user,
                password=cfg.password,
                token=cfg.token,
                tls_root_certs=certs,
                tls_skip_verify=cfg.tls_skip_verify,
                templates=templates,
                parameter_mode=cfg.parameter_mode,
                seed=cfg.seed,
            )
        )
    return specs


def _pool_values(client: Any, query: str) -> list[Value]:
    """The first column of ``query``'s answer, as Python values (at most MAX_POOL_VALUES)."""
    from tierflight.loadtest.vary import MAX_POOL_VALUES
    from tierflight.loadtest.worker import descriptors

    limited = f"SELECT * FROM ({query}) AS pool LIMIT {MAX_POOL_VALUES}"
    table = client.fetch(descriptors((limited,))[0])
    if table.num_columns == 0:
        return []
    return [v for v in table.column(0).to_pylist() if v is not None]


def resolve_templates(cfg: LoadTestConfig) -> tuple[Template | None, ...]:
    """Each statement's template with its query pools' values fetched from the server once."""
    templates = tuple(s.template for s in cfg.statements)
    queries = {p.name: p for t in templates if t is not None for p in t.pools if p.query is not None}
    if not queries:
        return templates if any(t is not None for t in templates) else ()
    from tierflight.loadtest.worker import _Client
    from tierflight_client.errors import from_flight_error

    client = _Client(_specs(cfg, ())[0])
    resolved: dict[str, Pool] = {}
    try:
        for name, pool in queries.items():
            assert pool.query is not None
            try:
                resolved[name] = pool.resolved(_pool_values(client, pool.query))
            except VaryError as exc:
                raise LoadTestError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - the server's refusal, said plainly
                raise LoadTestError(f"pool {name!r}: its query failed: {from_flight_error(exc)}") from None
    finally:
        client.close()
    return tuple(t.with_pools(resolved) if t is not None else None for t in templates)


Progress = Callable[[dict[str, Any]], None]


def run_loadtest(config: LoadTestConfig, progress: Progress | None = None) -> LoadTestResult:
    """Run the load test described by ``config``; ``progress`` gets a status dict a few times
    a second (elapsed, statements, errors, recent QPS and p99)."""
    cfg = config.validated()
    specs = _specs(cfg, resolve_templates(cfg))
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    go = ctx.Event()
    stop = ctx.Event()
    start_at: Any = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=run_worker, args=(s, results, go, start_at, stop), name=f"loadtest-{s.worker_id}", daemon=True)
        for s in specs
    ]
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    records: list[Record] = []
    cpu = [0.0]
    keys: set[int] = set()
    counted = [0]
    interrupted = False
    try:
        for p in procs:
            p.start()
        _await_ready(results, procs)
        measure_seconds = min(cfg.duration, cfg.time_cap) if cfg.duration else cfg.time_cap
        # A short lead so every worker is waiting on `go` when the clock starts.
        t0 = time.monotonic() + 0.05
        start_at.value = t0
        go.set()
        deadline = t0 + cfg.warmup + measure_seconds + cfg.request_timeout + 10.0
        interrupted = _collect(
            results, procs, records, t0 + cfg.warmup, deadline, stop, progress, cpu, (keys, counted)
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        go.set()  # workers still waiting to start exit at once
        _drain_records(results, records)
        for p in procs:
            p.join(5)
        for p in procs:
            if p.is_alive():
                p.terminate()  # our own worker, past every deadline
                p.join(5)
        results.close()
        results.cancel_join_thread()
    notes = []
    if cfg.duration is None and cfg.max_statements is not None:
        expected = cfg.max_statements
        if len(records) < expected and not interrupted:
            notes.append(f"stopped at the time cap of {cfg.time_cap:.0f} s before {expected} statements")
    if interrupted:
        notes.append("interrupted: figures cover the statements completed until then")
    figures = summarize(records, [s.name for s in cfg.statements])
    # The load generator's own CPU during the measurement: on a machine shared with the
    # server, this is what the clients took from it.
    figures["load_generator"] = {
        "cpu_s": round(cpu[0], 3),
        "cpu_ms_per_statement": round(cpu[0] * 1000 / len(records), 3) if records else None,
    }
    figures["variation"] = variation(cfg, len(keys), counted[0])
    return LoadTestResult(cfg.describe(), figures, started_at, interrupted, notes)


def variation(cfg: LoadTestConfig, distinct: int, counted: int) -> dict[str, Any]:
    """How much the measured statements repeated: a value set (statement and its drawn
    values) seen before in the run, by any client, is a repeat. In ``bind`` mode the texts
    repeat by construction (one per statement); the value sets are what vary."""
    varying = sum(1 for s in cfg.statements if s.template is not None)
    rate = round(1 - distinct / counted, 6) if counted else None
    literal = cfg.parameter_mode is ParameterMode.LITERAL or not varying
    return {
        "varying_statements": varying,
        "parameter_mode": cfg.parameter_mode.value,
        "counted": counted,
        "distinct_value_sets": distinct,
        "repeat_rate": rate,
        "distinct_texts": distinct if literal else len(cfg.statements),
        "text_repeat_rate": rate if literal else (round(1 - len(cfg.statements) / counted, 6) if counted else None),
    }


def _await_ready(results: Any, procs: Sequence[Any]) -> None:
    ready: set[int] = set()
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while len(ready) < len(procs):
        try:
            kind, wid, payload = results.get(timeout=0.2)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise LoadTestError(f"workers did not connect within {CONNECT_TIMEOUT:.0f} s") from None
            dead = [p for p in procs if p.exitcode is not None]
            if dead:
                raise LoadTestError(f"worker process {dead[0].name} exited (code {dead[0].exitcode})") from None
            continue
        if kind == "failed":
            raise LoadTestError(f"cannot run statements: {payload}")
        if kind == "ready":
            ready.add(wid)


def _collect(
    results: Any,
    procs: Sequence[Any],
    records: list[Record],
    measure_from: float,
    deadline: float,
    stop: Any,
    progress: Progress | None,
    cpu: list[float],
    keys: tuple[set[int], list[int]],
) -> bool:
    """Gather records until every worker is done; True when stopped at the deadline.
    ``cpu[0]`` accumulates the CPU seconds the workers report, ``keys`` the value-set keys
    they saw and how many statements those cover."""
    done: set[int] = set()
    window: list[Record] = []
    last_report = 0.0
    errors = 0
    while len(done) < len(procs):
        now = time.monotonic()
        if now > deadline:
            stop.set()
            return True
        try:
            kind, wid, payload = results.get(timeout=0.1)
        except queue.Empty:
            payload, kind = None, ""
            if all(p.exitcode is not None for p in procs):
                break  # every worker is gone (one crashed without saying done)
        if kind == "records":
            records.extend(payload)
            window.extend(payload)
            errors += sum(1 for r in payload if r[6] is not None)
        elif kind == "done":
            done.add(wid)
            if payload:
                cpu[0] += payload.get("cpu_s", 0.0)
                keys[0].update(payload.get("keys", ()))
                keys[1][0] += payload.get("counted", 0)
        if progress is not None and now - last_report >= 0.25:
            last_report = now
            elapsed = max(now - measure_from, 0.0)
            # Completions of the second before the last flush interval (records arrive up
            # to FLUSH_SECONDS after their statement ends), for a "now" rate and latency.
            lo, hi = elapsed - 1.0 - FLUSH_SECONDS, elapsed - FLUSH_SECONDS
            recent = [r for r in window if lo <= r[1] + r[2] / 1000.0 < hi and r[6] is None]
            window = [r for r in window if r[1] + r[2] / 1000.0 >= lo]
            progress(
                {
                    "elapsed": elapsed,
                    "statements": len(records),
                    "errors": errors,
                    "qps": len(recent) / max(min(hi, 1.0), 1e-3) if hi > 0 else 0.0,
                    "p99": latency_summary([r[2] for r in recent])["p99"],
                    "warming_up": now < measure_from,
                }
            )
    return False


def _drain_records(results: Any, records: list[Record]) -> None:
    while True:
        try:
            kind, _, payload = results.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return
        if kind == "records":
            records.extend(payload)
