"""Hot-tier load: 16 concurrent clients on the rollup-routed dashboard statements.

Run twice, one after the other on the same data: with the server's defaults (repeated texts
are answered from the result cache after their first call) and with the result cache off
(``TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0``: every statement plans (the plan cache hits) and
runs on DuckDB). The workload is every statement of ``../shared/workloads/adtech-examples.sql`` and
``adtech-dashboard.sql`` that the server answers from a rollup (hot tier): each statement is
routed once before the run (the route in the FlightInfo's ``app_metadata``) and the others
are left out, so the figures are the hot path alone. ``tierflight loadtest`` then runs them
round-robin from 16 closed-loop clients (2 worker processes x 8 threads, each client its own
Flight connection; every statement is GetFlightInfo + DoGet over pyarrow.flight) for 60 s
after a short warm-up. QPS counts successful statements per second of measurement; latency
is per statement, from sending GetFlightInfo to holding the whole result.

"2 cores": on a machine with 4 or more cores the server's threads are pinned to two of them
and the load generator runs on the others; with fewer, server and load generator share the
machine (the load generator's own CPU use then counts against the server).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    BenchContext,
    ExternalServer,
    TierflightServer,
    load_average,
    log,
    start_floor,
    start_tierflight,
)
from bench.registry import Result, benchmark

TARGET_QPS = 1500.0
NO_CACHE_ENV = {"TIERFLIGHT_SERVER__RESULT_CACHE_BYTES": "0"}
TARGET_P99_MS = 25.0
CLIENTS = 16
PROCESSES = 2
SERVER_CORES = 2
WORKLOADS = ("adtech-examples.sql", "adtech-dashboard.sql")
WORKLOAD_DIR = ROOT.parent / "shared" / "workloads"
DEMO_ROWS = 5_000_000  # the demo data set `tierflight serve` generates


def _affinity() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far (from /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin_threads(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid`` (threads created later inherit it from their creator)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cores)


def _select_hot(uri: str, statements: list[Any]) -> tuple[list[Any], list[list[Any]]]:
    """The statements a rollup answers, and a table of every statement's route."""
    import tierflight_client

    chosen: list[Any] = []
    rows: list[list[Any]] = []
    with tierflight_client.connect(uri, timeout=300) as conn:
        for source, st in statements:
            route = conn.route(st.sql)
            hot = bool(route.get("rollup")) and route.get("tier") == "hot"
            rows.append(
                [st.name, source, route.get("tier"), route.get("rollup") or "-", "yes" if hot else "no"]
            )
            if hot:
                chosen.append(st)
    return chosen, rows


@dataclass(frozen=True)
class HotSetup:
    """What a load benchmark on the hot tier needs: durations, data and statements."""

    duration: float
    warmup: float
    rows: int
    work: Path
    data_dir: Path
    env: dict[str, str]
    statements: list[Any]


def hot_setup(ctx: BenchContext, name: str, duration: float) -> HotSetup:
    from tierflight.loadtest import load_workload

    rows = 200_000 if ctx.quick else DEMO_ROWS
    data_dir, env = ctx.demo_data(rows=rows, days=366)
    return HotSetup(
        duration=min(duration, 10.0) if ctx.quick else duration,
        warmup=2.0 if ctx.quick else 5.0,
        rows=rows,
        work=ctx.scratch(name),
        data_dir=data_dir,
        env=env,
        statements=[(wl, st) for wl in WORKLOADS for st in load_workload(WORKLOAD_DIR / wl)],
    )


@dataclass
class LoadRun:
    """One load test against one server set-up, with its CPU accounting."""

    label: str
    result: Any  # tierflight.loadtest.LoadTestResult
    statements: tuple[Any, ...]
    server_cpu_ms: float  # server CPU per statement (all its processes)
    client_cpu_ms: float  # load generator CPU per statement
    ceiling: float  # QPS the two CPU figures allow on these cores
    placement: str
    report: Path
    chart: Path
    load: list[list[float]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.result.figures["summary"])


def load_run(
    setup: HotSetup,
    label: str,
    statements: Sequence[Any] | Callable[[str], Sequence[Any]],
    *,
    env: dict[str, str] | None = None,
    workers: int = 1,
    parameter_mode: Any = None,
    workload_file: Path | None = None,
    floor: bool = False,
) -> LoadRun:
    """Start a server (``serve --workers N`` when N > 1; with ``floor``, bench/floor.py's
    constant-answer server instead), run the load test on ``statements`` (or on what
    ``statements(uri)`` picks once the server is up), stop it."""
    from bench.workers import _cpu, _free_ports, _tree, _wait_admitted
    from tierflight.loadtest import LoadTestConfig, run_loadtest, write_report
    from tierflight.loadtest.vary import ParameterMode

    cores = sorted(_affinity())
    split = len(cores) >= 2 * SERVER_CORES and workers == 1
    metrics = _free_ports(workers + 2)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
    server: TierflightServer | ExternalServer
    if floor:
        server = start_floor()
        pid = server.proc.pid
    else:
        server = start_tierflight(
            setup.data_dir,
            {**setup.env, "TIERFLIGHT_METRICS__PORT": str(metrics), **(env or {})},
            ("--workers", str(workers)) if workers > 1 else (),
            log_path=setup.work / f"tierflight-{slug}.log",
            timeout=1800,
        )
        pid = server.pid
    saved_affinity = _affinity()
    load = [load_average()]
    try:
        log(f"{label}: server at {server.uri} (pid {pid})")
        if workers > 1:
            eligible = _wait_admitted(metrics, workers)
            log(f"{label}: eligible workers {eligible}")
        if split:
            server_cores = set(cores[:SERVER_CORES])
            _pin_threads(pid, server_cores)
            os.sched_setaffinity(0, set(cores) - server_cores)
        chosen = tuple(statements(server.uri) if callable(statements) else statements)
        if workload_file is None:
            workload_file = setup.work / f"{slug}.sql"
            workload_file.write_text("".join(f"-- name: {st.name}\n{st.sql};\n\n" for st in chosen))
        last = [0.0]

        def progress(status: dict[str, Any]) -> None:
            if time.monotonic() - last[0] >= 5:
                last[0] = time.monotonic()
                log(
                    f"{label}: {status['elapsed']:5.1f} s  {status['statements']:,} statements  {status['qps']:,.0f} QPS"
                )

        config = LoadTestConfig(
            uri=server.uri,
            statements=chosen,
            concurrency=CLIENTS,
            processes=PROCESSES,
            duration=setup.duration,
            warmup=setup.warmup,
            workload=_shown(workload_file),
            parameter_mode=parameter_mode or ParameterMode.LITERAL,
        )
        load.append(load_average())
        cpu0 = _cpu(_tree(pid))
        result = run_loadtest(config, progress)
        server_cpu = _cpu(_tree(pid)) - cpu0
        load.append(load_average())
    finally:
        if split:
            os.sched_setaffinity(0, saved_affinity)
        server.stop()
    report = setup.work / f"{slug}_report.json"
    chart = write_report(result, report)
    s = result.figures["summary"]
    # CPU per statement on each side (the server's includes the warm-up, so it is a slight
    # overestimate): with both on the same cores, their sum bounds what the cores can serve.
    done = max(s["ok"] + s["errors"], 1)
    server_ms = server_cpu * 1000 / (done * (setup.duration + setup.warmup) / setup.duration)
    client_ms = result.figures["load_generator"]["cpu_ms_per_statement"] or float("nan")
    ceiling = len(cores) * 1000 / (server_ms + client_ms) if not split else SERVER_CORES * 1000 / server_ms
    placement = (
        f"server pinned to cores {cores[:SERVER_CORES]}, load generator on {cores[SERVER_CORES:]}"
        if split
        else f"server and load generator share the machine's {len(cores)} cores"
    )
    return LoadRun(label, result, chosen, server_ms, client_ms, ceiling, placement, report, chart, load)


def run_row(run: LoadRun) -> list[Any]:
    """One line of a comparison table of load runs."""
    s = run.summary
    vary = run.result.figures.get("variation") or {}
    repeat = vary.get("text_repeat_rate")
    return [
        run.label,
        round(s["qps"], 1),
        s["p50"],
        s["p99"],
        s["errors"],
        round(run.result.figures["tiers"].get("hot", 0.0) * 100, 1),
        "-" if repeat is None else f"{repeat:.2%}",
        round(run.server_cpu_ms, 3),
        round(run.client_cpu_ms, 3),
        round(run.ceiling),
    ]


RUN_COLUMNS = [
    "set-up",
    "QPS",
    "p50 ms",
    "p99 ms",
    "errors",
    "hot %",
    "texts repeated",
    "server CPU ms / stmt",
    "load gen CPU ms / stmt",
    "QPS the CPU allows",
]


def per_statement_rows(run: LoadRun) -> list[list[Any]]:
    return [
        [st["name"], st["ok"], st["errors"], st["qps"], st["p50"], st["p95"], st["p99"], st["max"],
         ", ".join(st["tiers"]) or "-"]
        for st in run.result.figures["statements"]
    ]  # fmt: skip


PER_STATEMENT_COLUMNS = ["statement", "ok", "errors", "QPS", "p50 ms", "p95 ms", "p99 ms", "max ms", "tier"]


@benchmark("hot_load")
def run(ctx: BenchContext) -> Result:
    setup = hot_setup(ctx, "hot_load", 60.0)
    routes: list[list[Any]] = []

    def pick(uri: str) -> list[Any]:
        chosen, rows = _select_hot(uri, setup.statements)
        routes.extend(rows)
        if not chosen:
            raise RuntimeError("no statement of the workloads is answered by a rollup")
        log(f"{len(chosen)} of {len(setup.statements)} statements are rollup-routed; {CLIENTS} clients")
        return chosen

    cached = load_run(setup, "result cache on (default)", pick, workload_file=setup.work / "hot_load.sql")
    (setup.work / "hot_load.sql").write_text(
        "".join(f"-- name: {st.name}\n{st.sql};\n\n" for st in cached.statements)
    )
    uncached = load_run(
        setup,
        "result cache off",
        cached.statements,
        env=NO_CACHE_ENV,
        workload_file=setup.work / "hot_load.sql",
    )
    # The chart the report shows (bench/charts.py) is the default run's.
    if cached.chart.exists():
        (setup.work / "hot_load_report.png").write_bytes(cached.chart.read_bytes())
    s, n = cached.summary, uncached.summary
    qps, p99, errors = s["qps"], s["p99"] or float("inf"), s["errors"]
    n_p99 = n["p99"] or float("inf")
    hot_share = cached.result.figures["tiers"].get("hot", 0.0)
    return {
        "title": f"Hot-tier load: {CLIENTS} clients on rollup-routed statements (result cache on and off)",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": f"{setup.rows:,} demo events over 366 days; {len(cached.statements)} rollup-routed statements",
        "summary": [
            {
                "metric": "throughput (successful statements / s), result cache on",
                "value": round(qps, 1),
                "unit": "QPS",
                "target": f"≥ {TARGET_QPS:,.0f} QPS",
                "ok": qps >= TARGET_QPS,
            },
            {
                "metric": "p99 latency, result cache on",
                "value": round(p99, 2),
                "unit": "ms",
                "target": f"≤ {TARGET_P99_MS:g} ms",
                "ok": p99 <= TARGET_P99_MS,
            },
            {
                "metric": "errors, result cache on",
                "value": errors,
                "unit": "",
                "target": "0",
                "ok": errors == 0,
            },
            {"metric": "p50 latency, result cache on", "value": s["p50"], "unit": "ms"},
            {"metric": "throughput, result cache off", "value": round(n["qps"], 1), "unit": "QPS"},
            {"metric": "p99 latency, result cache off", "value": round(n_p99, 2), "unit": "ms"},
            {
                "metric": "errors, result cache off",
                "value": n["errors"],
                "unit": "",
                "target": "0",
                "ok": n["errors"] == 0,
            },
            {"metric": "p50 latency, result cache off", "value": n["p50"], "unit": "ms"},
            {"metric": "share answered by the hot tier", "value": round(hot_share * 100, 1), "unit": "%"},
            {
                "metric": "server CPU per statement, cache on / off",
                "value": f"{cached.server_cpu_ms:.3f} / {uncached.server_cpu_ms:.3f}",
                "unit": "ms",
            },
            {
                "metric": "load generator CPU per statement",
                "value": round(cached.client_cpu_ms, 3),
                "unit": "ms",
            },
            {
                "metric": "QPS the CPU figures allow on these cores, cache on / off",
                "value": f"{cached.ceiling:,.0f} / {uncached.ceiling:,.0f}",
                "unit": "QPS",
            },
        ],
        "tables": [
            {
                "title": "Runs (one after the other, same data and machine)",
                "columns": RUN_COLUMNS,
                "rows": [run_row(cached), run_row(uncached)],
            },
            {
                "title": f"Per statement, result cache on ({s['elapsed_s']:.0f} s measured after {setup.warmup:g} s warm-up)",
                "columns": PER_STATEMENT_COLUMNS,
                "rows": per_statement_rows(cached),
            },
            {
                "title": "Per statement, result cache off",
                "columns": PER_STATEMENT_COLUMNS,
                "rows": per_statement_rows(uncached),
            },
            {
                "title": "Workload selection (route of each statement before the run)",
                "columns": ["statement", "file", "tier", "rollup", "in the run"],
                "rows": routes,
            },
        ],
        "notes": [
            f"{cached.placement}. Load average (1/5/15 min) around the runs: {cached.load + uncached.load}. "
            "The machine is shared: compare the two runs with each other rather than with other sections.",
            f"CPU per statement: server {cached.server_cpu_ms:.2f} ms (cache on) / {uncached.server_cpu_ms:.2f} ms "
            f"(cache off) + load generator {cached.client_cpu_ms:.2f} ms (pyarrow.flight GetFlightInfo + DoGet in "
            "Python).",
            f"Same run by hand: `tierflight loadtest --uri URI --workload {_shown(setup.work / 'hot_load.sql')} "
            f"--concurrency {CLIENTS} --processes {PROCESSES} --duration {setup.duration:g} --warmup {setup.warmup:g}` "
            "(the server with `TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0` for the second run).",
            f"Latency over time and per statement: `{_shown(cached.chart)}`, `{_shown(uncached.chart)}`.",
            *(
                f"Errors {code} ({r.label}): {e['count']} (e.g. {e['example']})"
                for r in (cached, uncached)
                for code, e in r.result.figures["errors"].items()
            ),
        ],
        "raw": {"cache_on": cached.result.to_json(), "cache_off": uncached.result.to_json()},
    }
