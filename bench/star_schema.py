"""Star schema: joins of the fact table to its dimension tables, routing on vs off vs DuckDB.

The statements of ``bench/workloads/star-schema.sql`` (a dashboard over ``events`` joined to
``advertisers`` and ``publishers`` on their keys: spend by vertical per week, top publishers by
category, ..., in ``JOIN ... ON``, ``USING``, comma and ``LEFT JOIN`` spellings) run through
ADBC (one cursor per server, reused; result fetched as Arrow) against two ``tierflight serve``
subprocesses on the same data, both with the result cache off
(``TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0``): one with routing on (a join is answered by
aggregating a rollup by the join keys, then joining that small result to the dimension
tables), one with ``TIERFLIGHT_ROUTER__ENABLED=false`` (the raw tiers answer everything); and
through DuckDB in the benchmark process over a view of every data file with the derived
columns (as the router benchmark does) plus the dimension tables as the server holds them
(the version ``<data>/<table>/dimension/current.json`` names, read with the server's reader),
same thread count as the server. The route is what ``EXPLAIN ROUTE`` reports.

Timing, per statement: the three systems alternate call by call (side by side), then the
routing-on server alone for up to a few hundred calls; its p50 is the figure the workload sum
uses (DuckDB's p50 sum / routing on's, target ≥ 30x). Every statement of the workload is a join
and must be routed to a rollup. ``bench/workloads/star-schema-raw.sql`` holds joins the raw
tiers answer (by design, or a spelling the join rule does not split yet): measured side by
side and reported apart, with EXPLAIN ROUTE's reason; they count in neither target.

A join that runs again at the same data version is answered from its joined rollup (the
rollup's rows joined to the dimension tables once, grouped by the columns the statement reads;
README, "Joined rollups"): the routing-on server builds it on a statement's second call, so
the calls timed read it, as a dashboard's refreshes and its other filter values of the same
join do. The table gives the rows EXPLAIN ROUTE says it holds after the runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import BenchContext, load_average, log, server_copy, start_tierflight, summarize_ms
from bench.dataset import (
    DATA_ENV,
    NO_REUSE_ENV,
    RAW_ENV,
    add_dimension_tables,
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

WORKLOAD = Path(__file__).resolve().parent / "workloads" / "star-schema.sql"
RAW_WORKLOAD = Path(__file__).resolve().parent / "workloads" / "star-schema-raw.sql"
TARGET_SPEEDUP = 30.0
# approx_count_distinct: tierflight's HLL (lg_k 10 in the demo rollups, ~3% standard error)
# and DuckDB's own estimate differ by up to a few of their errors.
APPROX_REL_TOL = 0.10


def _labels(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(repr(v) for v in row.values() if not isinstance(v, int | float))


def same_answer(a: Any, b: Any, sql: str) -> bool:
    """Sorted rows equal: exact (floats within 1e-9) unless the statement estimates distinct counts."""
    if "approx_count_distinct" not in sql.lower():
        return same_rows(a, b)
    ra, rb = a.to_pylist(), b.to_pylist()
    if len(ra) != len(rb) or (ra and ra[0].keys() != rb[0].keys()):
        return False
    # Estimates sort differently on each side: match rows by their non-numeric values.
    ra, rb = sorted(ra, key=_labels), sorted(rb, key=_labels)
    for x, y in zip(ra, rb, strict=True):
        for u, v in zip(x.values(), y.values(), strict=True):
            if isinstance(u, int | float) and isinstance(v, int | float):
                if not math.isclose(u, v, rel_tol=APPROX_REL_TOL, abs_tol=1e-9):
                    return False
            elif u != v:
                return False
    return True


def _duckdb_answer(con: Any, sql: str) -> Any:
    return con.sql(sql).to_arrow_table()


def _raw_reason(rows: list[dict[str, Any]]) -> str:
    """Why EXPLAIN ROUTE says a statement reads the raw tiers (its rejection of every rollup)."""
    for r in rows:
        if r.get("tier") == "rejected" and r.get("source") == "*":
            return str(r.get("reason", ""))
    return "; ".join(str(r.get("reason", "")) for r in rows if r.get("tier") == "rejected")[:300]


@benchmark("star_schema")
def run(ctx: BenchContext) -> Result:
    rows = ctx.rows
    data_dir = ensure_dataset(rows)
    ensure_rollups(data_dir)
    work = ctx.scratch("star_schema")
    workloads = {"routed": read_workload(WORKLOAD), "raw": read_workload(RAW_WORKLOAD)}
    load: list[list[float]] = [load_average()]
    min_runs, max_runs, budget = (3, 10, 5.0) if ctx.quick else (5, 30, 12.0)
    alone_runs = 100 if ctx.quick else 400

    files = data_files(data_dir)
    duck = duckdb_connection(files)
    dimension_rows = add_dimension_tables(duck, data_dir)
    # One server per data dir (serve locks it): the routing-off server runs on a copy.
    off_dir = server_copy(data_dir, "star-routing-off")
    on = start_tierflight(data_dir, {**DATA_ENV, **NO_REUSE_ENV}, log_path=work / "routing-on.log")
    off = None
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        off = start_tierflight(off_dir, RAW_ENV, log_path=work / "routing-off.log")
        conn_on, conn_off = connect(on.uri), connect(off.uri)
        cur_on, cur_off = conn_on.cursor(), conn_off.cursor()
        try:
            # The round-trip floor of this server and client path, for reference.
            select1 = summarize_ms(
                timed_runs(
                    partial(fetch, cur_on, "SELECT 1"), min_runs=100, max_runs=500, budget_s=2.0, warmup=10
                )
            )
            log(f"SELECT 1 through the routing-on server: p50 {select1['p50']:.2f} ms")
            for kind, statements in workloads.items():
                results[kind] = {}
                for name, sql in statements:
                    route_rows = explain_route(cur_on, sql)
                    rollup = route_rollup(route_rows)
                    a_on, a_off = fetch(cur_on, sql), fetch(cur_off, sql)
                    a_duck = _duckdb_answer(duck, sql)
                    agree_on, agree_off = same_answer(a_on, a_duck, sql), same_answer(a_off, a_duck, sql)
                    fns: dict[str, Callable[[], object]] = {
                        "on": partial(fetch, cur_on, sql),
                        "off": partial(fetch, cur_off, sql),
                        "duckdb": partial(_duckdb_answer, duck, sql),
                    }
                    side, alone = on_off_duckdb_runs(
                        fns,
                        routed=bool(rollup),
                        min_runs=min_runs,
                        max_runs=max_runs,
                        budget_s=budget,
                        alone_runs=alone_runs,
                    )
                    after = explain_route(cur_on, sql)
                    joined = [x.get("estimated_rows") for x in after if str(x.get("source", "")).startswith("joined rollup:")]
                    r: dict[str, Any] = {
                        "joined_rows": joined[0] if joined else None,
                        "sql": sql,
                        "route": route_label(route_rows),
                        "rollup": rollup,
                        "raw_reason": None if rollup else _raw_reason(route_rows),
                        "result_rows": a_on.num_rows,
                        "on_agrees": agree_on,
                        "off_agrees": agree_off,
                        "on_alone": summarize_ms(alone),
                        "side_by_side": {k: summarize_ms(v) for k, v in side.items()},
                    }
                    results[kind][name] = r
                    s = r["side_by_side"]
                    log(
                        f"{name}: {r['route']}: on {r['on_alone']['p50']:.2f} ms (interleaved {s['on']['p50']:.2f}), "
                        f"off {s['off']['p50']:.1f} ms, DuckDB {s['duckdb']['p50']:.1f} ms; "
                        f"answers agree: {agree_on and agree_off}"
                    )
                load.append(load_average())
        finally:
            cur_on.close()
            cur_off.close()
            conn_on.close()
            conn_off.close()
    finally:
        on.stop()
        if off is not None:
            off.stop()
        duck.close()

    routed = results["routed"]
    t_on = sum(r["on_alone"]["p50"] for r in routed.values())
    t_off = sum(r["side_by_side"]["off"]["p50"] for r in routed.values())
    t_duck = sum(r["side_by_side"]["duckdb"]["p50"] for r in routed.values())
    speedup = t_duck / t_on if t_on > 0 else float("nan")
    n_routed = sum(1 for r in routed.values() if r["rollup"])
    disagree = [
        name for w in results.values() for name, r in w.items() if not (r["on_agrees"] and r["off_agrees"])
    ]
    summary: list[dict[str, Any]] = [
        {
            "metric": "workload speedup, DuckDB p50 sum / tierflight (routing on, result cache off) p50 sum",
            "value": round(speedup, 1),
            "unit": "x",
            "target": f"≥ {TARGET_SPEEDUP:.0f}x",
            "ok": speedup >= TARGET_SPEEDUP,
        },
        {
            "metric": "join statements routed to a rollup",
            "value": f"{n_routed} of {len(routed)}",
            "target": "all",
            "ok": n_routed == len(routed),
        },
        {
            "metric": "sum of p50, routing on / routing off / DuckDB",
            "value": f"{t_on:.1f} / {t_off:.1f} / {t_duck:.1f}",
            "unit": "ms",
        },
        {
            "metric": "statements whose answers agree with DuckDB (routing on and off)",
            "value": f"{sum(len(w) for w in results.values()) - len(disagree)} of {sum(len(w) for w in results.values())}",
            "target": "all",
            "ok": not disagree,
        },
        {
            "metric": "for reference: SELECT 1 p50 on the routing-on server and client path (the round-trip floor)",
            "value": round(select1["p50"], 2),
            "unit": "ms",
        },
    ]

    def table_rows(w: dict[str, dict[str, Any]], *, reason: bool) -> list[list[Any]]:
        return [
            [
                name,
                r["route"],
                *([r["raw_reason"] or ""] if reason else []),
                r["result_rows"],
                "-" if r.get("joined_rows") is None else f"{r['joined_rows']:,}",
                round(r["on_alone"]["p50"], 2),
                round(r["on_alone"]["p99"], 2),
                round(r["side_by_side"]["on"]["p50"], 2),
                round(r["side_by_side"]["off"]["p50"], 1),
                round(r["side_by_side"]["duckdb"]["p50"], 1),
                round(r["side_by_side"]["duckdb"]["p50"] / r["on_alone"]["p50"], 1),
                r["on_agrees"] and r["off_agrees"],
            ]
            for name, r in w.items()
        ]

    timing_columns = [
        "rows",
        "joined rollup rows",
        "on, alone",
        "on, p99 alone",
        "on, side by side",
        "off",
        "DuckDB",
        "DuckDB / on",
        "answers agree",
    ]
    tables = [
        {
            "title": f"{WORKLOAD.name}: joins answered from rollups (p50 ms, result cache off)",
            "columns": ["statement", "route (EXPLAIN ROUTE)", *timing_columns],
            "rows": [
                *table_rows(routed, reason=False),
                [
                    "**total**",
                    "",
                    "",
                    "",
                    round(t_on, 2),
                    "",
                    "",
                    round(t_off, 1),
                    round(t_duck, 1),
                    round(speedup, 1),
                    "",
                ],
            ],
        },
        {
            "title": f"{RAW_WORKLOAD.name}: joins the raw tiers answer, apart from the targets (p50 ms, result cache off)",
            "columns": ["statement", "route (EXPLAIN ROUTE)", "why raw", *timing_columns],
            "rows": table_rows(results["raw"], reason=True),
        },
    ]
    notes = [
        "Both servers run with the result cache off (`TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0`): every call "
        "executes (routing on: the fact side on the rollup, then the join to the dimension tables; routing off: "
        "the raw tiers). The statement texts repeat, so the plan cache hits, as for a dashboard refreshed "
        "with the same filters.",
        f"Side by side: {min_runs} to {max_runs} calls per system and statement within {budget:g} s; alone: up to "
        f"{alone_runs} calls within 3 s (rollup-routed) or 5 s (raw). The workload sum uses 'on, alone'.",
        f"DuckDB: {len(files)} Parquet files in one `read_parquet` view with the derived columns, plus the "
        f"dimension tables loaded from the data dir ({', '.join(f'{k}: {v:,} rows' for k, v in dimension_rows.items())}); "
        "the same `threads` as the server; no network, no result transfer.",
        "Answers are compared as sorted rows: exact (floats within a relative 1e-9), approx_count_distinct within "
        f"{APPROX_REL_TOL:.0%}" + (f"; differing: {', '.join(disagree)}." if disagree else "; all agree."),
        f"The machine is shared with other test runs; load average (1/5/15 min) at the start and after each step: {load}.",
    ]
    return {
        "title": "Star schema: joins to dimension tables, routing on / off vs DuckDB",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": data_description(rows),
        "summary": summary,
        "tables": tables,
        "notes": notes,
        "raw": {
            "select1": select1,
            "workloads": results,
            "totals": {"on": t_on, "off": t_off, "duckdb": t_duck},
            "load": load,
        },
    }
