"""Hot-tier load with statements that vary: 16 clients, almost no text repeated.

The workload is ``bench/workloads/dashboard-varying.sql``: the rollup-routed shapes of
``../shared/workloads/`` with their filters drawn per call (day ranges, countries and
advertisers from the data, thresholds, top-N), so a dashboard's users asking slightly
different things is what the server sees, not one repeated text its caches answer.
``tierflight loadtest`` fills them as literals (a new text per call; the observed share of
texts that repeated an earlier one is in the table) from 16 closed-loop clients (2 processes x
8 threads) for 60 s after a warm-up, against:

* one process with the result cache off (``TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0``) and on;
* ``serve --workers 2``, result cache off and on;
* one process, result cache off, the same statements as prepared statements with bound
  parameters (``--parameters bind``: one text per statement, prepared once per client; each
  call is DoPut of the values + GetFlightInfo + DoGet);
* one process, result cache off, ``[duckdb] threads = 1`` (a diagnostic: what DuckDB's worker
  threads cost on statements this small, in server CPU per statement);
* the floor: ``bench/floor.py``, a pyarrow.flight server that answers every statement with a
  constant and does nothing else, under the same load generator on the same cores. No server
  built on pyarrow.flight can serve more statements per second here: it bounds what the
  targets can ask of this architecture on this machine.

Every statement is routed once before the run from a drawn value set, to check that all of
them are answered by a rollup. The runs go one after the other on the same data and machine.
"""

from __future__ import annotations

from typing import Any

from bench.common import ROOT, BenchContext, log
from bench.hot_load import (
    CLIENTS,
    NO_CACHE_ENV,
    PER_STATEMENT_COLUMNS,
    PROCESSES,
    RUN_COLUMNS,
    LoadRun,
    _shown,
    hot_setup,
    load_run,
    per_statement_rows,
    run_row,
)
from bench.registry import Result, benchmark

WORKLOAD = ROOT / "bench" / "workloads" / "dashboard-varying.sql"
TARGET_QPS = 1200.0
TARGET_P99_MS = 25.0
TARGET_WORKERS_RATIO = 1.3
ONE_THREAD = {"TIERFLIGHT_DUCKDB__THREADS": "1"}
FLOOR_LABEL = "the floor: constant answers (bench/floor.py), same load generator"


def _routes(uri: str, statements: list[Any]) -> list[list[Any]]:
    """Each statement's route for one drawn value set."""
    import tierflight_client
    from tierflight.loadtest.runner import LoadTestConfig, resolve_templates
    from tierflight.loadtest.vary import client_rng

    config = LoadTestConfig(uri, tuple(statements), concurrency=1, duration=1).validated()
    rng = client_rng(0, 0)
    rows = []
    with tierflight_client.connect(uri, timeout=300) as conn:
        for st, tpl in zip(statements, resolve_templates(config), strict=True):
            sql = tpl.literal(tpl.draw(rng)) if tpl is not None else st.sql
            route = conn.route(sql)
            rows.append([st.name, route.get("tier"), route.get("rollup") or "-"])
    return rows


@benchmark("hot_load_varying")
def run(ctx: BenchContext) -> Result:
    from tierflight.loadtest import load_workload
    from tierflight.loadtest.vary import ParameterMode

    setup = hot_setup(ctx, "hot_load_varying", 60.0)
    statements = load_workload(WORKLOAD)
    routes: list[list[Any]] = []

    def checked(uri: str) -> list[Any]:
        routes.extend(_routes(uri, statements))
        raw = [r[0] for r in routes if r[2] == "-"]
        if raw:
            log(f"not rollup-routed: {', '.join(raw)}")
        return statements

    runs: list[LoadRun] = []
    plan: list[tuple[str, dict[str, str], int, ParameterMode]] = [
        ("one process, result cache off", NO_CACHE_ENV, 1, ParameterMode.LITERAL),
        ("one process, result cache on", {}, 1, ParameterMode.LITERAL),
        ("`--workers 2`, result cache off", NO_CACHE_ENV, 2, ParameterMode.LITERAL),
        ("`--workers 2`, result cache on", {}, 2, ParameterMode.LITERAL),
        ("one process, result cache off, bound parameters", NO_CACHE_ENV, 1, ParameterMode.BIND),
        # Diagnostic: DuckDB's worker threads on statements this small (CPU per statement).
        ("one process, result cache off, `[duckdb] threads = 1`", {**NO_CACHE_ENV, **ONE_THREAD}, 1,
         ParameterMode.LITERAL),
        (FLOOR_LABEL, {}, 1, ParameterMode.LITERAL),
    ]  # fmt: skip
    for label, env, workers, mode in plan:
        runs.append(
            load_run(
                setup,
                label,
                checked if not routes else statements,
                env=env,
                workers=workers,
                parameter_mode=mode,
                workload_file=WORKLOAD,
                floor=label == FLOOR_LABEL,
            )
        )
        s = runs[-1].summary
        log(f"{label}: {s['qps']:,.0f} QPS, p99 {s['p99']} ms, {s['errors']} errors")
    single, workers2, bound, floor = runs[0], runs[2], runs[4], runs[-1]
    s = single.summary
    qps, p99 = s["qps"], s["p99"] or float("inf")
    ratio = workers2.summary["qps"] / qps if qps else float("nan")
    vary = single.result.figures.get("variation") or {}
    summary: list[dict[str, Any]] = [
        {
            "metric": "throughput, one process, result cache off, new texts",
            "value": round(qps, 1),
            "unit": "QPS",
            "target": f"≥ {TARGET_QPS:,.0f} QPS",
            "ok": qps >= TARGET_QPS,
        },
        {
            "metric": "p99 latency, one process, result cache off",
            "value": round(p99, 2),
            "unit": "ms",
            "target": f"≤ {TARGET_P99_MS:g} ms",
            "ok": p99 <= TARGET_P99_MS,
        },
        {"metric": "errors, every run", "value": sum(r.summary["errors"] for r in runs), "target": "0",
         "ok": all(r.summary["errors"] == 0 for r in runs)},
        {
            "metric": "texts that repeated an earlier one (one process, cache off)",
            "value": round((vary.get("text_repeat_rate") or 0.0) * 100, 3),
            "unit": "%",
        },
        {
            "metric": "`--workers 2` / one process QPS, result cache off",
            "value": round(ratio, 2),
            "unit": "x",
            "target": f"≥ {TARGET_WORKERS_RATIO}x",
            "ok": ratio >= TARGET_WORKERS_RATIO,
        },
        {"metric": "throughput, one process, result cache on", "value": round(runs[1].summary["qps"], 1), "unit": "QPS"},
        {"metric": "throughput, bound parameters, result cache off", "value": round(bound.summary["qps"], 1),
         "unit": "QPS"},
        {"metric": "the floor: a pyarrow.flight server answering constants, same load generator and cores",
         "value": round(floor.summary["qps"], 1), "unit": "QPS"},
        {"metric": "the floor: p99 latency", "value": floor.summary["p99"], "unit": "ms"},
    ]  # fmt: skip
    tables: list[dict[str, Any]] = [
        {"title": "Runs (one after the other, same data and machine)", "columns": RUN_COLUMNS,
         "rows": [run_row(r) for r in runs]},
        {"title": f"Per statement, {single.label}", "columns": PER_STATEMENT_COLUMNS,
         "rows": per_statement_rows(single)},
        {"title": "Route of each statement for one drawn value set (before the runs)",
         "columns": ["statement", "tier", "rollup"], "rows": routes},
    ]  # fmt: skip
    notes = [
        *(
            [
                f"A `--quick` run ({setup.duration:g} s per run on {setup.rows:,} rows): a smoke test of the set-up, "
                "not figures to hold against the targets."
            ]
            if ctx.quick
            else []
        ),
        f"{single.placement}. The machine is shared with other work: compare the runs of this section with "
        f"each other. Load average (1/5/15 min) around each run: {[r.load for r in runs]}.",
        "Repeats: a statement whose value set (statement and drawn values) any client had sent before in the "
        f"run; {vary.get('distinct_value_sets', 0):,} distinct in {vary.get('counted', 0):,} measured statements "
        "(one process, cache off). With bound parameters the text repeats by construction (one per statement); "
        "the value sets vary as much.",
        f"Same run by hand: `tierflight loadtest --uri URI --workload {_shown(WORKLOAD)} --concurrency {CLIENTS} "
        f"--processes {PROCESSES} --duration {setup.duration:g} --warmup {setup.warmup:g} [--parameters bind]`.",
        *(
            f"Errors {code} ({r.label}): {e['count']} (e.g. {e['example']})"
            for r in runs
            for code, e in r.result.figures["errors"].items()
        ),
    ]
    return {
        "title": f"Hot-tier load, varying statements: {CLIENTS} clients, new texts (result cache off and on)",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": f"{setup.rows:,} demo events over 366 days; {len(statements)} statement shapes",
        "summary": summary,
        "tables": tables,
        "notes": notes,
        "raw": {r.label: r.result.to_json() for r in runs},
    }
