"""Hot-tier load: 16 concurrent clients on the rollup-routed dashboard statements.

The workload is every statement of ``../shared/workloads/adtech-examples.sql`` and
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchContext, load_average, log, start_tierflight
from bench.registry import Result, benchmark

TARGET_QPS = 1500.0
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
            rows.append([st.name, source, route.get("tier"), route.get("rollup") or "-", "yes" if hot else "no"])
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


@benchmark("hot_load")
def run(ctx: BenchContext) -> Result:
    from tierflight.loadtest import LoadTestConfig, run_loadtest, write_report

    setup = hot_setup(ctx, "hot_load", 60.0)
    duration, warmup, rows, work = setup.duration, setup.warmup, setup.rows, setup.work
    data_dir, env, statements = setup.data_dir, setup.env, setup.statements

    cores = sorted(_affinity())
    split = len(cores) >= 2 * SERVER_CORES
    server = start_tierflight(data_dir, env, log_path=work / "tierflight.log", timeout=1800)
    saved_affinity = _affinity()
    load = [load_average()]
    try:
        log(f"tierflight at {server.uri} (pid {server.pid})")
        if split:
            server_cores = set(cores[:SERVER_CORES])
            _pin_threads(server.pid, server_cores)
            # Worker processes inherit this process's affinity when spawned.
            os.sched_setaffinity(0, set(cores) - server_cores)
        chosen, routes = _select_hot(server.uri, statements)
        if not chosen:
            raise RuntimeError("no statement of the workloads is answered by a rollup")
        workload_file = work / "hot_load.sql"
        workload_file.write_text("".join(f"-- name: {st.name}\n{st.sql};\n\n" for st in chosen))
        log(f"{len(chosen)} of {len(statements)} statements are rollup-routed; {CLIENTS} clients for {duration:g} s")
        last = [0.0]

        def progress(status: dict[str, Any]) -> None:
            if time.monotonic() - last[0] >= 5:
                last[0] = time.monotonic()
                log(f"{status['elapsed']:5.1f} s  {status['statements']:,} statements  {status['qps']:,.0f} QPS")

        config = LoadTestConfig(
            uri=server.uri,
            statements=tuple(chosen),
            concurrency=CLIENTS,
            processes=PROCESSES,
            duration=duration,
            warmup=warmup,
            workload=_shown(workload_file),
        )
        load.append(load_average())
        server_cpu = _cpu_seconds(server.pid)
        result = run_loadtest(config, progress)
        server_cpu = _cpu_seconds(server.pid) - server_cpu
        load.append(load_average())
    finally:
        if split:
            os.sched_setaffinity(0, saved_affinity)
        server.stop()
    report = work / "hot_load_report.json"
    chart = write_report(result, report)
    s = result.figures["summary"]
    qps, p99, errors = s["qps"], s["p99"] or float("inf"), s["errors"]
    hot_share = result.figures["tiers"].get("hot", 0.0)
    # CPU per statement on each side (the server's includes the warm-up, so it is a slight
    # overestimate): with both on the same cores, their sum bounds what the cores can serve.
    done = max(s["ok"] + s["errors"], 1)
    server_ms = server_cpu * 1000 / (done * (duration + warmup) / duration)
    client_ms = result.figures["load_generator"]["cpu_ms_per_statement"] or float("nan")
    ceiling = len(cores) * 1000 / (server_ms + client_ms) if not split else SERVER_CORES * 1000 / server_ms
    per_statement = [
        [st["name"], st["ok"], st["errors"], st["qps"], st["p50"], st["p95"], st["p99"], st["max"],
         ", ".join(st["tiers"]) or "-"]
        for st in result.figures["statements"]
    ]  # fmt: skip
    placement = (
        f"server pinned to cores {cores[:SERVER_CORES]}, load generator on {cores[SERVER_CORES:]}"
        if split
        else f"server and load generator share the machine's {len(cores)} cores (fewer than {2 * SERVER_CORES})"
    )
    return {
        "title": f"Hot-tier load: {CLIENTS} clients on rollup-routed statements",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": f"{rows:,} demo events over 366 days; {len(chosen)} rollup-routed statements",
        "summary": [
            {
                "metric": "throughput (successful statements / s)",
                "value": round(qps, 1),
                "unit": "QPS",
                "target": f"≥ {TARGET_QPS:,.0f} QPS",
                "ok": qps >= TARGET_QPS,
            },
            {
                "metric": "p99 latency",
                "value": round(p99, 2),
                "unit": "ms",
                "target": f"≤ {TARGET_P99_MS:g} ms",
                "ok": p99 <= TARGET_P99_MS,
            },
            {"metric": "errors", "value": errors, "unit": "", "target": "0", "ok": errors == 0},
            {"metric": "p50 latency", "value": s["p50"], "unit": "ms"},
            {"metric": "share answered by the hot tier", "value": round(hot_share * 100, 1), "unit": "%"},
            {"metric": "server CPU per statement", "value": round(server_ms, 3), "unit": "ms"},
            {"metric": "load generator CPU per statement", "value": round(client_ms, 3), "unit": "ms"},
            {"metric": "QPS the CPU figures allow on these cores", "value": round(ceiling), "unit": "QPS"},
        ],
        "tables": [
            {
                "title": f"Per statement ({s['elapsed_s']:.0f} s measured after {warmup:g} s warm-up)",
                "columns": ["statement", "ok", "errors", "QPS", "p50 ms", "p95 ms", "p99 ms", "max ms", "tier"],
                "rows": per_statement,
            },
            {
                "title": "Workload selection (route of each statement before the run)",
                "columns": ["statement", "file", "tier", "rollup", "in the run"],
                "rows": routes,
            },
        ],
        "notes": [
            f"{placement}. Load average (1/5/15 min) before the run, at its start and after: {load}.",
            f"CPU per statement: server {server_ms:.2f} ms + load generator {client_ms:.2f} ms (pyarrow.flight "
            f"GetFlightInfo + DoGet in Python); these cores can serve at most about {ceiling:,.0f} QPS at that cost.",
            f"Same run by hand: `tierflight loadtest --uri URI --workload {config.workload} "
            f"--concurrency {CLIENTS} --processes {PROCESSES} --duration {duration:g} --warmup {warmup:g}`.",
            f"Latency over time and per statement: `{_shown(chart)}` (JSON: `{_shown(report)}`).",
            *(f"Errors {code}: {e['count']} (e.g. {e['example']})" for code, e in result.figures["errors"].items()),
        ],
        "raw": result.to_json(),
    }
