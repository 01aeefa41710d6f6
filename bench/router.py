"""The router: the shared workloads with routing on vs off vs DuckDB on the raw files, and plan cost.

Every statement of ``../shared/workloads/adtech-examples.sql`` and ``adtech-dashboard.sql``
runs through ADBC (one cursor per server, reused; result fetched as Arrow) against two
``tierflight serve`` subprocesses on the same data dir, one with routing on (the default) and
one with ``TIERFLIGHT_ROUTER__ENABLED=false`` (the raw tiers answer everything), and through
DuckDB in the benchmark process over a view of every data file (warm
``<data>/events/warm/day=*/*.parquet`` and the Iceberg data files ``<data>/iceberg/**/*.parquet``)
with the derived columns of ``conf/tierflight.toml`` (day, week, hour, minute) added, same
thread count as the server. The route is what ``EXPLAIN ROUTE`` reports for the statement.

Timing, per statement: first the three systems alternate call by call (side by side, so
background load hits them alike; 5 to 30 calls within a time budget per statement), then the
routing-on server alone for a few hundred calls (its p50 is the figure checked against the
2 ms target). The workload speedup is the sum over the workload's statements of DuckDB's p50
divided by the sum of tierflight's (routing on, alone).

New texts, result cache off: a third server with routing on and
``TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0`` runs each statement with a text it has not seen
(the statement plus ``LIMIT 1000000000+i``: same answer, new text, so neither the plan cache
nor a reused answer helps), alternating call by call with ``SELECT 1 LIMIT 1000000000+i`` (the
same client path: ADBC prepares every new text); a rollup-routed statement's p50 is checked
against that SELECT 1 p50 + 0.5 ms.

Router overhead, in-process: an ``App`` on the same data; for each statement (already parsed
by the sandbox's cached ``check_statement``), ``App.router.plan(statement)`` on a cached plan
(hit: what a repeated dashboard statement pays) and ``App.router._plan(statement)`` (a miss:
choosing among the rollups and rewriting).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    CONFIG,
    BenchContext,
    load_average,
    log,
    measure_latency,
    server_copy,
    start_tierflight,
    summarize_ms,
)
from bench.dataset import (
    DATA_ENV,
    NO_REUSE_ENV,
    RAW_ENV,
    WORKLOADS,
    connect,
    data_description,
    data_files,
    duckdb_connection,
    ensure_dataset,
    ensure_rollups,
    explain_route,
    fetch,
    on_off_duckdb_runs,
    read_workload,
    route_label,
    route_rollup,
    same_rows,
    timed_runs,
)
from bench.registry import Result, benchmark

WORKLOAD_FILES = ("adtech-examples.sql", "adtech-dashboard.sql")
TARGET_SPEEDUP = 100.0
TARGET_ROUTED_P50_MS = 2.0
TARGET_HIT_US = 100.0
TARGET_MISS_US = 1000.0
TARGET_NEW_TEXT_OVER_SELECT1_MS = 0.5  # result cache off, same client path (issue 20)


def _plan_overhead(
    data_dir: Path, statements: list[tuple[str, str]], quick: bool
) -> dict[str, dict[str, Any]]:
    from tierflight.app import App
    from tierflight.core.config import load_config
    from tierflight.core.log import configure_logging
    from tierflight.engine.sandbox import check_statement

    configure_logging("warning")
    app = App(load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **DATA_ENV}), build_rollups=False)
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, sql in statements:
            stmt = check_statement(sql)
            route = app.router.plan(stmt)
            hit = measure_latency(lambda stmt=stmt: app.router.plan(stmt), 500 if quick else 5000, 50)

            # A statement never seen: nothing of it cached (rewrites and output names too).
            def fresh_miss(stmt: Any = stmt) -> None:
                app.column_names.clear()
                app.router._rewrites.clear()
                app.router._plan(stmt)

            miss = measure_latency(fresh_miss, 20 if quick else 200, 3)
            # A statement planned before, after a data change emptied the plan cache.
            replan = measure_latency(lambda stmt=stmt: app.router._plan(stmt), 20 if quick else 200, 3)
            parse = measure_latency(lambda sql=sql: check_statement(sql), 500 if quick else 5000, 10)
            out[name] = {
                "route": ", ".join(
                    p.source.split(":", 1)[-1] if p.source.startswith("rollup:") else p.tier
                    for p in route.parts
                ),
                "hit_us": summarize_ms([x * 1000 for x in hit]),
                "miss_us": summarize_ms([x * 1000 for x in miss]),
                "replan_us": summarize_ms([x * 1000 for x in replan]),
                "parse_cached_us": summarize_ms([x * 1000 for x in parse]),
            }
            log(
                f"plan {name}: hit p50 {out[name]['hit_us']['p50']:.1f} µs, miss p50 {out[name]['miss_us']['p50']:.0f} µs"
            )
    finally:
        app.close()
    return out


@benchmark("router")
def run(ctx: BenchContext) -> Result:
    rows = ctx.rows
    data_dir = ensure_dataset(rows)
    ensure_rollups(data_dir)
    work = ctx.scratch("router")
    workloads = {f: read_workload(WORKLOADS / f) for f in WORKLOAD_FILES}
    load: list[list[float]] = [load_average()]
    min_runs, max_runs, budget = (3, 10, 5.0) if ctx.quick else (5, 30, 12.0)
    alone_runs = 100 if ctx.quick else 400
    fresh_runs = 5 if ctx.quick else 15
    new_text_runs = 10 if ctx.quick else 40
    new_text_counter = [0]

    def new_text(sql: str) -> str:
        new_text_counter[0] += 1
        return f"{sql} LIMIT {1_000_000_000 + new_text_counter[0]}"

    files = data_files(data_dir)
    duck = duckdb_connection(files)
    # One server per data dir (serve locks it): the others run on copies.
    off_dir, nocache_dir = server_copy(data_dir, "routing-off"), server_copy(data_dir, "nocache")
    on = start_tierflight(data_dir, DATA_ENV, log_path=work / "routing-on.log")
    off = nocache = None
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        off = start_tierflight(off_dir, RAW_ENV, log_path=work / "routing-off.log")
        nocache = start_tierflight(
            nocache_dir, {**DATA_ENV, **NO_REUSE_ENV}, log_path=work / "routing-on-nocache.log"
        )
        conn_on, conn_off, conn_nc = connect(on.uri), connect(off.uri), connect(nocache.uri)
        cur_on, cur_off, cur_nc = conn_on.cursor(), conn_off.cursor(), conn_nc.cursor()
        try:
            # The round-trip floor of this server and client path, for reference.
            select1 = summarize_ms(
                timed_runs(
                    lambda: fetch(cur_on, "SELECT 1"), min_runs=200, max_runs=1000, budget_s=3.0, warmup=20
                )
            )
            log(f"SELECT 1 through the routing-on server: p50 {select1['p50']:.2f} ms")
            select1_nc = summarize_ms(
                timed_runs(
                    lambda: fetch(cur_nc, "SELECT 1"), min_runs=200, max_runs=1000, budget_s=3.0, warmup=20
                )
            )
            select1_new: list[float] = []
            for wfile, statements in workloads.items():
                results[wfile] = {}
                for name, sql in statements:
                    route_rows = explain_route(cur_on, sql)
                    route = route_label(route_rows)
                    rollup = route_rollup(route_rows)
                    a_on, a_off, a_duck = (
                        fetch(cur_on, sql),
                        fetch(cur_off, sql),
                        duck.sql(sql).to_arrow_table(),
                    )
                    agree = same_rows(a_on, a_duck) and same_rows(a_off, a_duck)
                    fns: dict[str, Callable[[], object]] = {
                        "on": lambda sql=sql: fetch(cur_on, sql),
                        "off": lambda sql=sql: fetch(cur_off, sql),
                        "duckdb": lambda sql=sql: duck.sql(sql).to_arrow_table(),
                    }
                    side, alone = on_off_duckdb_runs(
                        fns,
                        routed=bool(rollup),
                        min_runs=min_runs,
                        max_runs=max_runs,
                        budget_s=budget,
                        alone_runs=alone_runs,
                    )
                    # A statement text the server has not seen: neither the plan cache nor the
                    # result cache (keyed by the SQL run) can answer, so this is planning plus
                    # executing (on the rollup, or on the raw tiers). A LIMIT far above the result
                    # size makes the text new without changing the answer (statements with a
                    # LIMIT: skipped).
                    fresh: list[float] = []
                    if " limit " not in f" {sql.lower()} ":
                        for i in range(fresh_runs):
                            text = f"{sql} LIMIT {1_000_000_000 + i}"
                            t0 = time.perf_counter()
                            fetch(cur_on, text)
                            fresh.append((time.perf_counter() - t0) * 1000)
                    # Result cache off, new texts, alternating with SELECT 1 (new texts too).
                    nc_new: list[float] = []
                    if " limit " not in f" {sql.lower()} ":
                        for _ in range(new_text_runs):
                            for target, text in (
                                (nc_new, new_text(sql)),
                                (select1_new, new_text("SELECT 1")),
                            ):
                                t0 = time.perf_counter()
                                fetch(cur_nc, text)
                                target.append((time.perf_counter() - t0) * 1000)
                    r = {
                        "sql": sql,
                        "nocache_new_text": summarize_ms(nc_new) if nc_new else None,
                        "route": route,
                        "rollup": rollup,
                        "result_rows": a_on.num_rows,
                        "answers_agree": agree,
                        "on_alone": summarize_ms(alone),
                        "on_new_text": summarize_ms(fresh) if fresh else None,
                        "side_by_side": {k: summarize_ms(v) for k, v in side.items()},
                    }
                    results[wfile][name] = r
                    s = r["side_by_side"]
                    log(
                        f"{name}: {route}: on {r['on_alone']['p50']:.2f} ms (interleaved {s['on']['p50']:.2f}), "
                        f"off {s['off']['p50']:.1f} ms, DuckDB {s['duckdb']['p50']:.1f} ms; answers agree: {agree}"
                    )
                load.append(load_average())
        finally:
            cur_on.close()
            cur_off.close()
            cur_nc.close()
            conn_on.close()
            conn_off.close()
            conn_nc.close()
    finally:
        on.stop()
        if off is not None:
            off.stop()
        if nocache is not None:
            nocache.stop()
        duck.close()

    all_statements = [(name, r["sql"]) for w in results.values() for name, r in w.items()]
    log("router plan overhead, in-process")
    plans = _plan_overhead(data_dir, all_statements, ctx.quick)
    load.append(load_average())

    summary: list[dict[str, Any]] = []
    totals: dict[str, dict[str, float]] = {}
    for wfile, w in results.items():
        t_on = sum(r["on_alone"]["p50"] for r in w.values())
        t_off = sum(r["side_by_side"]["off"]["p50"] for r in w.values())
        t_duck = sum(r["side_by_side"]["duckdb"]["p50"] for r in w.values())
        totals[wfile] = {"on": t_on, "off": t_off, "duckdb": t_duck}
        speedup = t_duck / t_on
        summary.append(
            {
                "metric": f"{wfile}: workload speedup, DuckDB p50 sum / tierflight (routing on) p50 sum",
                "value": round(speedup, 1),
                "unit": "x",
                "target": f"≥ {TARGET_SPEEDUP:.0f}x",
                "ok": speedup >= TARGET_SPEEDUP,
            }
        )
        summary.append(
            {
                "metric": f"{wfile}: sum of p50, routing on / routing off / DuckDB",
                "value": f"{t_on:.1f} / {t_off:.1f} / {t_duck:.1f}",
                "unit": "ms",
            }
        )
    routed = [(name, r) for w in results.values() for name, r in w.items() if r["rollup"]]
    if routed:
        worst_name, worst = max(routed, key=lambda x: x[1]["on_alone"]["p50"])
        n_ok = sum(1 for _, r in routed if r["on_alone"]["p50"] <= TARGET_ROUTED_P50_MS)
        summary.append(
            {
                "metric": f"rollup-routed statements with p50 ≤ {TARGET_ROUTED_P50_MS:g} ms",
                "value": f"{n_ok} of {len(routed)}",
                "target": "all",
                "ok": n_ok == len(routed),
            }
        )
        summary.append(
            {
                "metric": f"slowest rollup-routed statement p50 ({worst_name})",
                "value": round(worst["on_alone"]["p50"], 2),
                "unit": "ms",
                "target": f"≤ {TARGET_ROUTED_P50_MS:g} ms",
                "ok": worst["on_alone"]["p50"] <= TARGET_ROUTED_P50_MS,
            }
        )
    select1_new_p50 = summarize_ms(select1_new)["p50"] if select1_new else float("nan")
    limit_ms = select1_new_p50 + TARGET_NEW_TEXT_OVER_SELECT1_MS
    new_routed = [(name, r) for name, r in routed if r["nocache_new_text"]]
    if new_routed:
        worst_name, worst = max(new_routed, key=lambda x: x[1]["nocache_new_text"]["p50"])
        n_ok = sum(1 for _, r in new_routed if r["nocache_new_text"]["p50"] <= limit_ms)
        summary.append(
            {
                "metric": "result cache off, new texts: SELECT 1 p50 (ADBC reused cursor, a new text per call)",
                "value": round(select1_new_p50, 2),
                "unit": "ms",
            }
        )
        summary.append(
            {
                "metric": "result cache off, new texts: rollup-routed statements with p50 ≤ SELECT 1 p50 + "
                f"{TARGET_NEW_TEXT_OVER_SELECT1_MS:g} ms",
                "value": f"{n_ok} of {len(new_routed)}",
                "target": "all",
                "ok": n_ok == len(new_routed),
            }
        )
        summary.append(
            {
                "metric": f"result cache off, new texts: slowest rollup-routed p50 minus SELECT 1 p50 ({worst_name})",
                "value": round(worst["nocache_new_text"]["p50"] - select1_new_p50, 2),
                "unit": "ms",
                "target": f"≤ {TARGET_NEW_TEXT_OVER_SELECT1_MS:g} ms",
                "ok": worst["nocache_new_text"]["p50"] <= limit_ms,
            }
        )
    summary.append(
        {
            "metric": "result cache off: SELECT 1 p50, repeated text (plan cache hit, DuckDB runs)",
            "value": round(select1_nc["p50"], 2),
            "unit": "ms",
        }
    )
    summary.append(
        {
            "metric": "for reference: SELECT 1 p50 on the same server and client path (the round-trip floor)",
            "value": round(select1["p50"], 2),
            "unit": "ms",
        }
    )
    # Per plan figure, the slowest statement against its target.
    for field, label, target, digits in (
        ("hit_us", "router plan, cache hit p50 (slowest statement: {})", TARGET_HIT_US, 1),
        ("miss_us", "router plan, cache miss p50, statement never seen (slowest: {})", TARGET_MISS_US, None),
        (
            "replan_us",
            "router plan, cache miss p50, statement planned before a data change (slowest: {})",
            TARGET_MISS_US,
            None,
        ),
    ):
        worst, figures = max(plans.items(), key=lambda x, field=field: x[1][field]["p50"])
        p50 = figures[field]["p50"]
        summary.append(
            {
                "metric": label.format(worst),
                "value": round(p50, digits),
                "unit": "µs",
                "target": f"≤ {target:g} µs",
                "ok": p50 <= target,
            }
        )

    tables = []
    for wfile, w in results.items():
        tables.append(
            {
                "title": f"{wfile} (p50 ms; 'alone': routing-on server measured by itself, the rest side by side)",
                "columns": [
                    "statement",
                    "route (EXPLAIN ROUTE)",
                    "rows",
                    "on, alone",
                    "on, p99 alone",
                    "on, side by side",
                    "on, new text",
                    "cache off, new text",
                    "off",
                    "DuckDB raw",
                    "DuckDB / on",
                    "≤ 2 ms",
                    "answers agree",
                ],
                "rows": [
                    [
                        name,
                        r["route"],
                        r["result_rows"],
                        round(r["on_alone"]["p50"], 2),
                        round(r["on_alone"]["p99"], 2),
                        round(r["side_by_side"]["on"]["p50"], 2),
                        round(r["on_new_text"]["p50"], 2) if r["on_new_text"] else "-",
                        round(r["nocache_new_text"]["p50"], 2) if r["nocache_new_text"] else "-",
                        round(r["side_by_side"]["off"]["p50"], 1),
                        round(r["side_by_side"]["duckdb"]["p50"], 1),
                        round(r["side_by_side"]["duckdb"]["p50"] / r["on_alone"]["p50"], 1),
                        ("yes" if r["on_alone"]["p50"] <= TARGET_ROUTED_P50_MS else "**no**")
                        if r["rollup"]
                        else "-",
                        r["answers_agree"],
                    ]
                    for name, r in w.items()
                ]
                + [
                    [
                        "**total**",
                        "",
                        "",
                        round(totals[wfile]["on"], 2),
                        "",
                        "",
                        "",
                        "",
                        round(totals[wfile]["off"], 1),
                        round(totals[wfile]["duckdb"], 1),
                        round(totals[wfile]["duckdb"] / totals[wfile]["on"], 1),
                        "",
                        "",
                    ]
                ],
            }
        )
    tables.append(
        {
            "title": "Router plan overhead, in-process (µs)",
            "columns": [
                "statement",
                "route",
                "hit p50",
                "hit p99",
                "miss p50",
                "miss p99",
                "re-plan p50",
                "check_statement (cached) p50",
            ],
            "rows": [
                [
                    name,
                    p["route"],
                    round(p["hit_us"]["p50"], 1),
                    round(p["hit_us"]["p99"], 1),
                    round(p["miss_us"]["p50"]),
                    round(p["miss_us"]["p99"]),
                    round(p["replan_us"]["p50"]),
                    round(p["parse_cached_us"]["p50"], 1),
                ]
                for name, p in plans.items()
            ],
        }
    )
    disagree = [name for w in results.values() for name, r in w.items() if not r["answers_agree"]]
    notes = [
        f"Side by side: {min_runs} to {max_runs} calls per system and statement within {budget:g} s; alone: "
        f"up to {alone_runs} calls within 3 s (rollup-routed) or 5 s (raw). 'on, alone' repeats one statement "
        "text, so after the first call the server answers it from its plan cache and its result cache (keyed by "
        "the SQL run and the data version; rollup-routed and raw statements alike, as long as they read only "
        "configured tables and no clock or random function); 'on, new text' is the p50 of "
        f"{fresh_runs} calls each with a text the server has not seen (the statement plus `LIMIT 1000000000+i`, "
        "same answer): route planning (a plan-cache miss) plus executing on the rollup or the raw tiers.",
        f"DuckDB: {len(files)} Parquet files in one `read_parquet` view, the same `threads` as the server; no network, no "
        "result transfer. Routing off: the server's raw tiers (pruned by the statement's time range), with "
        "no result cache (`TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0`): every call scans.",
        "Answers are compared as sorted rows, floats within a relative 1e-9"
        + (
            f"; differing: {', '.join(disagree)} (approximate distinct counts, ties under LIMIT, or a LIMIT 1 subquery "
            "without ORDER BY pick differently, which is not an error)."
            if disagree
            else "; all agree."
        ),
        f"Result cache off, new texts: {new_text_runs} calls per statement on a third server (routing on, "
        "`TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0`), each a text it has not seen, alternating with a new-text "
        "`SELECT 1 LIMIT n` on the same cursor (ADBC prepares each new text: CreatePreparedStatement, "
        "GetFlightInfo, DoGet, and the previous statement's ClosePreparedStatement); 'cache off, new text' is "
        "their p50 (the plan cache misses; the rollups' rewrite cache may hit).",
        f"The machine is shared with other test runs; load average (1/5/15 min) at the start and after each step: {load}.",
    ]
    return {
        "title": "Router: shared workloads with routing on / off vs DuckDB, and plan overhead",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": data_description(rows),
        "summary": summary,
        "tables": tables,
        "notes": notes,
        "raw": {
            "select1": select1,
            "select1_nocache": select1_nc,
            "select1_nocache_new_text": summarize_ms(select1_new) if select1_new else None,
            "workloads": results,
            "totals": totals,
            "plans": plans,
            "load": load,
        },
    }
