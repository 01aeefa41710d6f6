"""Multi-process serving: the hot-tier load test against 1, 2 and 3 worker processes.

The rollup-routed dashboard statements of the hot-load benchmark, run by ``tierflight
loadtest`` with 16 closed-loop clients against a single-process server (``serve``) and
against ``serve --workers 2`` and ``--workers 3``, one after another on the same data and
machine. With workers, a front process authenticates and answers GetFlightInfo itself for a
statement it has seen in the current data state (else it forwards it over a Unix socket),
with an endpoint whose signed ticket names a worker's own DoGet port; the load tester, like
ADBC, fetches the result there, so planning, execution and streaming happen in the worker.
Followers are admitted (see ``/readyz``) before each run.

CPU per statement is the server's whole process tree and the load generator's own
processes, from /proc; the server's is also split into the front (the ``serve`` process)
and the workers (every other process of its tree). Memory is the proportional set size
(PSS) of the server's processes after the run: pages shared between processes are split
between them, so the sum is what the server really occupies.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import BenchContext, load_average, log, start_tierflight
from bench.hot_load import CLIENTS, PROCESSES, _select_hot, _shown, hot_setup
from bench.registry import Result, benchmark

SETUPS = ((1, "single process (`serve`)"), (2, "`serve --workers 2`"), (3, "`serve --workers 3`"))


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            out += _tree(int(child))
    return out


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _free_ports(n: int) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        try:
            for p in range(base, base + n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue


def _wait_admitted(port: int, workers: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    eligible: list[int] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                eligible = list(json.loads(r.read()).get("eligible", []))
        except OSError:
            pass
        if len(eligible) == workers:
            return eligible
        time.sleep(0.25)
    return eligible


def _front_counters(port: int) -> dict[str, float]:
    """The front's call counters from its /metrics (see workers.front)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith('tierflight_front_statement_infos_total{by="front"}'):
            out["front"] = float(line.split()[-1])
        elif line.startswith('tierflight_front_statement_infos_total{by="worker"}'):
            out["worker"] = float(line.split()[-1])
        elif line.startswith("tierflight_front_forwarded_doget_total"):
            out["doget"] = float(line.split()[-1])
    return out


@benchmark("workers")
def run(ctx: BenchContext) -> Result:
    from tierflight.loadtest import LoadTestConfig, run_loadtest

    setup = hot_setup(ctx, "workers", 30.0)
    duration, warmup, rows, work = setup.duration, setup.warmup, setup.rows, setup.work
    data_dir, env, statements = setup.data_dir, setup.env, setup.statements
    table: list[list[Any]] = []
    raw: dict[str, Any] = {}
    chosen: list[Any] = []
    loads = [load_average()]
    for count, label in SETUPS:
        metrics = _free_ports(count + 2)
        extra = ("--workers", str(count)) if count > 1 else ()
        server = start_tierflight(
            data_dir,
            {**env, "TIERFLIGHT_METRICS__PORT": str(metrics)},
            extra,
            log_path=work / f"tierflight-{count}.log",
            timeout=1800,
        )
        try:
            eligible = _wait_admitted(metrics, count) if count > 1 else [0]
            if not chosen:
                chosen, _ = _select_hot(server.uri, statements)
                workload = work / "workers.sql"
                workload.write_text("".join(f"-- name: {st.name}\n{st.sql};\n\n" for st in chosen))
            log(f"{label}: eligible workers {eligible}; {len(chosen)} statements, {CLIENTS} clients, {duration:g} s")
            config = LoadTestConfig(
                uri=server.uri,
                statements=tuple(chosen),
                concurrency=CLIENTS,
                processes=PROCESSES,
                duration=duration,
                warmup=warmup,
                workload=_shown(work / "workers.sql"),
            )
            pids = _tree(server.pid)
            front0, cpu0 = _cpu([server.pid]), _cpu(pids)
            forwarded0 = _front_counters(metrics) if count > 1 else {}
            result = run_loadtest(config, None)
            cpu, front = _cpu(_tree(server.pid)) - cpu0, _cpu([server.pid]) - front0
            forwarded = _front_counters(metrics) if count > 1 else {}
            pss = _pss_mb(_tree(server.pid))
            loads.append(load_average())
        finally:
            server.stop()
        s = result.figures["summary"]
        done = max(s["ok"] + s["errors"], 1)
        per_statement = 1000 / (done * (duration + warmup) / duration)
        server_ms, front_ms = cpu * per_statement, front * per_statement
        workers_ms = server_ms - front_ms if count > 1 else float("nan")
        client_ms = result.figures["load_generator"]["cpu_ms_per_statement"] or float("nan")
        calls = {k: forwarded.get(k, 0.0) - forwarded0.get(k, 0.0) for k in forwarded}
        raw[str(count)] = {
            "summary": s, "server_cpu_ms": server_ms, "front_cpu_ms": front_ms if count > 1 else None,
            "workers_cpu_ms": workers_ms if count > 1 else None, "client_cpu_ms": client_ms, "pss_mb": pss,
            "front_calls": calls,
        }  # fmt: skip
        table.append(
            [label, len(pids), round(s["qps"], 1), s["p50"], s["p99"], s["errors"], round(server_ms, 3),
             round(front_ms, 3) if count > 1 else "-", round(workers_ms, 3) if count > 1 else "-",
             round(client_ms, 3), round(pss)]
        )  # fmt: skip
    base = raw["1"]["summary"]["qps"] or float("nan")
    two = raw["2"]["summary"]["qps"]
    return {
        "title": "Multi-process serving: 1 vs 2 vs 3 worker processes",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": f"{rows:,} demo events over 366 days; {len(chosen)} rollup-routed statements",
        "summary": [
            {"metric": "QPS, single process", "value": round(base, 1), "unit": "QPS"},
            {"metric": "QPS, --workers 2", "value": round(two, 1), "unit": "QPS"},
            {"metric": "scaling 1 -> 2 workers (QPS ratio)", "value": round(two / base, 3), "unit": "x"},
            {"metric": "server CPU per statement, single process", "value": round(raw["1"]["server_cpu_ms"], 3),
             "unit": "ms"},
            {"metric": "front CPU per statement, --workers 2", "value": round(raw["2"]["front_cpu_ms"], 3),
             "unit": "ms"},
            {"metric": "workers' CPU per statement, --workers 2", "value": round(raw["2"]["workers_cpu_ms"], 3),
             "unit": "ms"},
            {
                "metric": "errors over all runs",
                "value": sum(r["summary"]["errors"] for r in raw.values()),
                "unit": "",
                "target": "0",
                "ok": all(r["summary"]["errors"] == 0 for r in raw.values()),
            },
        ],
        "tables": [
            {
                "title": f"Load test per setup ({duration:g} s each after {warmup:g} s warm-up, {CLIENTS} clients)",
                "columns": ["setup", "server processes", "QPS", "p50 ms", "p99 ms", "errors",
                            "server CPU ms/stmt", "front", "workers", "load generator CPU ms/stmt",
                            "server PSS MB"],
                "rows": table,
            }
        ],
        "notes": [
            f"Machine: {os.cpu_count()} cores shared by the server and the load generator "
            f"({PROCESSES} processes x {CLIENTS // PROCESSES} clients). Load average before and after each run: {loads}.",
            "Server CPU per statement is the whole process tree; with workers it is split into the front (the "
            "`serve` process: one GetFlightInfo per statement, answered from what it learned) and the workers "
            "(planning, execution and streaming, on their own DoGet ports). The front bounds the design at about "
            "1000 / (front ms per statement) QPS per core it gets; the workers scale with the cores they get.",
            *(
                f"--workers {n}: statement FlightInfos answered by the front {r['front_calls'].get('front', 0):,.0f}, "
                f"forwarded {r['front_calls'].get('worker', 0):,.0f}; DoGets through the front "
                f"{r['front_calls'].get('doget', 0):,.0f}"
                for n, r in raw.items() if r["front_calls"]
            ),
        ],
        "raw": raw,
    }
