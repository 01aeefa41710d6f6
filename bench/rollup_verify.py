"""Rollup verification: throughput of `rollups verify`, and what the background verifier costs.

*Throughput*: in-process, every configured rollup of ``conf/tierflight.toml`` verified against
the raw tiers with every group recomputed (``Verifier.verify_one(state, 1.0)`` on the server's
DuckDB, as `tierflight rollups verify` runs it); groups checked per second over all rollups.
Then one background round (``verify_sample`` 0.01, the one-thread DuckDB at ingest's nice
level): its seconds. Each rollup's recompute scans the raw rows once (the sampled groups are
chosen by a hash of their key, so every file is read), which is what a round costs.

*Cost to statements*: an in-process server, one client looping over rollup-routed dashboard
statements (GetFlightInfo + DoGet through ADBC) for a fixed time, alternating phases without
and with the background verifier running rounds back to back (the worst case: an interval of
zero); p50/p99 per phase.
"""

from __future__ import annotations

import threading
import time

from bench.common import BenchContext, load_average, log, summarize_ms
from bench.registry import Result, benchmark

STATEMENTS = (
    "SELECT day, sum(bid_price) FROM events WHERE type = 'impression' GROUP BY day ORDER BY day",
    "SELECT country, type, count(*) FROM events GROUP BY ALL ORDER BY ALL",
    "SELECT hour, count(*) FROM events WHERE type = 'click' GROUP BY hour ORDER BY hour",
)


def _latencies(uri: str, seconds: float) -> list[float]:
    import adbc_driver_flightsql.dbapi as fsql

    out: list[float] = []
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            started = time.perf_counter()
            cur.execute(STATEMENTS[i % len(STATEMENTS)])
            cur.fetch_arrow_table()
            out.append((time.perf_counter() - started) * 1000)
            i += 1
    return out


@benchmark("rollup_verify")
def run(ctx: BenchContext) -> Result:
    import os

    from bench.common import CONFIG
    from tierflight.app import App
    from tierflight.core.config import load_config
    from tierflight.core.log import configure_logging
    from tierflight.protocol.server import build_server
    from tierflight.rollups.verifier import Verifier

    rows = 200_000 if ctx.quick else 2_000_000
    phase_s = 3.0 if ctx.quick else 15.0
    data_dir, env = ctx.demo_data(rows)
    configure_logging("warning")
    config = load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **env, "TIERFLIGHT_ROLLUPS__VERIFY_INTERVAL": "0s"})
    app = App(config)
    server = build_server(app.flight_services(), "127.0.0.1", 0)
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        full = Verifier(app.rollups, app.swap_lock, cursor=app.database.cursor())
        per = []
        for state in app.rollups.states.values():
            r = full.verify_one(state, 1.0)
            per.append([state.group.name, r.groups, r.mismatches, round(r.seconds, 3), round(r.groups / r.seconds) if r.seconds else 0])
        groups = sum(p[1] for p in per)
        seconds = sum(p[3] for p in per)
        mismatches = sum(p[2] for p in per)
        background = app.rollup_verifier()
        started = time.perf_counter()
        sampled = background.round(0.01)
        round_s = time.perf_counter() - started
        log(f"verified {groups:,} groups in {seconds:.2f} s; a 1% round: {round_s:.2f} s")

        uri = f"grpc://127.0.0.1:{server.port}"
        _latencies(uri, 1.0)  # warm-up: plans cached, connections open
        phases: dict[str, list[float]] = {"off": [], "on": []}
        stop = threading.Event()
        rounds = [0]
        for _ in range(2):
            phases["off"] += _latencies(uri, phase_s)
            stop.clear()

            def loop() -> None:
                from tierflight.core.threads import lower_thread_priority

                lower_thread_priority(config.ingest.nice)
                while not stop.is_set():
                    background.round(0.01)
                    rounds[0] += 1

            worker = threading.Thread(target=loop, daemon=True)
            worker.start()
            phases["on"] += _latencies(uri, phase_s)
            stop.set()
            worker.join()
        off, on = summarize_ms(phases["off"]), summarize_ms(phases["on"])
    finally:
        server.shutdown()
        app.close()
    return {
        "title": "Rollup verification",
        "description": __doc__.split("\n\n", 1)[1] if __doc__ else "",
        "data": f"{rows:,} demo events over 30 days, {len(per)} rollups",
        "summary": [
            {"metric": "verify throughput (every group)", "value": round(groups / seconds) if seconds else 0, "unit": "groups/s"},
            {"metric": "mismatches", "value": mismatches, "unit": "", "target": "0", "ok": mismatches == 0},
            {"metric": "background round (1% sample, all rollups)", "value": round(round_s, 3), "unit": "s"},
            {"metric": "statement p99, verifier idle", "value": round(off["p99"], 2), "unit": "ms"},
            {"metric": "statement p99, rounds back to back", "value": round(on["p99"], 2), "unit": "ms"},
        ],
        "tables": [
            {"title": "Every group, per rollup", "columns": ["rollup", "groups", "mismatches", "seconds", "groups/s"], "rows": per},
            {
                "title": "Rollup-routed statements (one client), without and with background rounds",
                "columns": ["verifier", "statements", "p50 ms", "p99 ms", "max ms"],
                "rows": [
                    ["idle", off["n"], round(off["p50"], 2), round(off["p99"], 2), round(off["max"], 2)],
                    [f"rounds back to back ({rounds[0]} rounds)", on["n"], round(on["p50"], 2), round(on["p99"], 2), round(on["max"], 2)],
                ],
            },
        ],
        "notes": [f"load average {load_average()}", f"sampled round groups: {sum(r.groups for r in sampled)}"],
        "raw": {"per_rollup": per, "off": off, "on": on, "round_s": round_s},
    }
