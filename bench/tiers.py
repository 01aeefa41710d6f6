"""Raw tier scans: a partition-pruned week, and the whole range, through tierflight vs DuckDB in-process on the same files.

One week of the warm tier (Parquet partitions) and one week of the cold tier (Iceberg) are
aggregated by country::

    SELECT country, count(*), sum(bid_price) FROM events
    WHERE day BETWEEN DATE '<first day>' AND DATE '<last day>' GROUP BY country

through a ``tierflight serve`` subprocess with routing off and no result cache
(``TIERFLIGHT_ROUTER__ENABLED=false``, ``TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0``, so the raw
tiers answer every call: partition pruning, Iceberg planning, DuckDB over the files), via ADBC
(one cursor reused: GetFlightInfo + DoGet per call, result fetched as Arrow), and by DuckDB
in the benchmark process over exactly the Parquet files of that week (``read_parquet`` of the
7 files plus the derived ``day`` column), same thread count. Calls alternate between the two,
so background load hits both alike; the ratio of p50s is the cost of serving (round trip,
planning, the tier union) over the bare scan.

Whole range: statements without a time filter (clicks per publisher, and per day; spend per
publisher and country; count and spend per country) read every cold and warm partition, against DuckDB over all of the data set's files.
Run it at 100M rows for the issue's target (``--rows 100000000``).

Cold planning: a ``TableStore`` built in-process on the same data, timing
``ColdTier.files(range)`` for the cold week: the first (uncached) call, uncached calls (the
plan cache cleared before each), and repeated (cached) calls; ``ColdTier.planned`` counts the
manifest reads and confirms which calls planned.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from bench.common import CONFIG, BenchContext, load_average, log, start_tierflight, summarize_ms
from bench.dataset import (
    DATA_ENV,
    RAW_ENV,
    connect,
    data_description,
    data_files,
    day_files,
    duckdb_connection,
    ensure_dataset,
    ensure_rollups,
    explain_route,
    fetch,
    interleaved_runs,
    route_label,
    same_rows,
    timed_runs,
)
from bench.registry import Result, benchmark

TARGET_RATIO = 1.3
TARGET_YEAR_RATIO = 1.15  # whole-range raw scans (issue 20)
WEEKS = {
    "warm": (dt.date(2024, 12, 1), dt.date(2024, 12, 7)),
    "cold": (dt.date(2024, 3, 1), dt.date(2024, 3, 7)),
}
SQL = (
    "SELECT country, count(*), sum(bid_price) FROM events "
    "WHERE day BETWEEN DATE '{first}' AND DATE '{last}' GROUP BY country"
)
# Every partition of every tier: no rollup answers them with routing off.
YEAR = {
    "publisher clicks": "SELECT publisher_id, count(*) AS clicks FROM events WHERE type = 'click' GROUP BY publisher_id",
    "publisher clicks by day": (
        "SELECT day, publisher_id, count(*) AS clicks FROM events WHERE type = 'click' GROUP BY ALL ORDER BY ALL"
    ),
    "publisher country spend": (
        "SELECT publisher_id, country, sum(bid_price) AS spend FROM events GROUP BY ALL ORDER BY ALL"
    ),
    "country spend": "SELECT country, count(*) AS n, sum(bid_price) AS spend FROM events GROUP BY country",
}


def _cold_planning(data_dir: Path, first: dt.date, last: dt.date, quick: bool) -> dict[str, Any]:
    from tierflight.core.config import load_config
    from tierflight.tiers.base import ALL_TIME, TimeRange
    from tierflight.tiers.store import TableStore

    config = load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **DATA_ENV})
    store = TableStore(config, config.table(config.demo.table))
    cold = store.cold
    out: dict[str, Any] = {}
    for label, rng in (
        (
            "one week",
            TimeRange(
                dt.datetime.combine(first, dt.time()),
                dt.datetime.combine(last + dt.timedelta(days=1), dt.time()),
            ),
        ),
        ("all cold days", ALL_TIME),
    ):
        planned0 = cold.planned
        first_ms = timed_runs(
            lambda rng=rng: cold.files(rng), min_runs=1, max_runs=1, budget_s=0, warmup=0
        )[0]
        files = len(cold.files(rng))
        planned_first = cold.planned - planned0

        def uncached(rng: TimeRange = rng) -> None:
            cold._plans.clear()  # the planning cache (private): what a new snapshot or range meets
            cold.files(rng)

        planned0 = cold.planned
        n_uncached = 5 if quick else 20
        miss = timed_runs(uncached, min_runs=n_uncached, max_runs=n_uncached, budget_s=0, warmup=0)
        planned_miss = cold.planned - planned0
        cold.files(rng)
        planned0 = cold.planned
        hit = timed_runs(
            lambda rng=rng: cold.files(rng), min_runs=2000, max_runs=2000, budget_s=0, warmup=10
        )
        planned_hit = cold.planned - planned0
        out[label] = {
            "files": files,
            "first_ms": first_ms,
            "first_planned": planned_first,
            "uncached": summarize_ms(miss),
            "uncached_planned": planned_miss,
            "cached": summarize_ms(hit),
            "cached_planned": planned_hit,
        }
        log(
            f"cold planning, {label}: first {first_ms:.1f} ms, uncached p50 {out[label]['uncached']['p50']:.1f} ms, "
            f"cached p50 {out[label]['cached']['p50'] * 1000:.1f} µs ({files} files)"
        )
    return out


def _side_by_side(cur: Any, sql: str, files: list[Path], runs: int, tiers: str) -> dict[str, Any]:
    """``sql`` through tierflight (``cur``) and DuckDB over ``files``, calls alternating;
    the route must start with ``tiers`` and the answers must agree."""
    duck = duckdb_connection(files)
    try:
        route = route_label(explain_route(cur, sql))
        if not route.startswith(tiers):
            raise RuntimeError(f"{sql}: EXPLAIN ROUTE says {route!r}, not {tiers}")
        if not same_rows(fetch(cur, sql), duck.sql(sql).to_arrow_table()):
            raise RuntimeError(f"{sql}: tierflight and DuckDB disagree")
        samples = interleaved_runs(
            {
                "tierflight": lambda: fetch(cur, sql),
                "duckdb": lambda: duck.sql(sql).to_arrow_table(),
            },
            min_runs=runs,
            max_runs=runs,
            budget_s=0,
            warmup=3,
        )
    finally:
        duck.close()
    tf, dk = summarize_ms(samples["tierflight"]), summarize_ms(samples["duckdb"])
    log(f"{sql[:60]}...: tierflight p50 {tf['p50']:.2f} ms, DuckDB p50 {dk['p50']:.2f} ms ({tf['p50'] / dk['p50']:.2f}x)")
    return {
        "sql": sql,
        "route": route,
        "files": len(files),
        "rows": sum(_rows_in(files)),
        "bytes": sum(f.stat().st_size for f in files),
        "tierflight": tf,
        "duckdb": dk,
        "ratio": tf["p50"] / dk["p50"],
    }


@benchmark("tiers")
def run(ctx: BenchContext) -> Result:
    rows = ctx.rows
    data_dir = ensure_dataset(rows)
    ensure_rollups(data_dir)  # else the server would build them at start
    runs = 10 if ctx.quick else 30
    work = ctx.scratch("tiers")
    load: list[list[float]] = [load_average()]
    results: dict[str, dict[str, Any]] = {}
    year: dict[str, dict[str, Any]] = {}
    server = start_tierflight(data_dir, RAW_ENV, log_path=work / "tierflight.log")
    try:
        conn = connect(server.uri)
        cur = conn.cursor()
        try:
            # The round-trip floor of this server and client path, for reference.
            select1 = summarize_ms(
                timed_runs(
                    lambda: fetch(cur, "SELECT 1"), min_runs=200, max_runs=1000, budget_s=3.0, warmup=20
                )
            )
            for tier, (first, last) in WEEKS.items():
                sql = SQL.format(first=first, last=last)
                results[tier] = _side_by_side(cur, sql, day_files(data_dir, first, last), runs, tier)
                load.append(load_average())
            every_file = data_files(data_dir)
            for shape, sql in YEAR.items():
                year[shape] = _side_by_side(cur, sql, every_file, max(5, runs // 3), "cold")
                load.append(load_average())
        finally:
            cur.close()
            conn.close()
    finally:
        server.stop()
    first, last = WEEKS["cold"]
    planning = _cold_planning(data_dir, first, last, ctx.quick)
    load.append(load_average())

    summary: list[dict[str, Any]] = []
    for tier, r in results.items():
        summary.append(
            {
                "metric": f"{tier} week, tierflight p50 (ADBC, routing off)",
                "value": round(r["tierflight"]["p50"], 2),
                "unit": "ms",
            }
        )
        summary.append(
            {
                "metric": f"{tier} week, DuckDB in-process p50 (same files)",
                "value": round(r["duckdb"]["p50"], 2),
                "unit": "ms",
            }
        )
        summary.append(_ratio(f"{tier} week", r["ratio"], TARGET_RATIO))
    for shape, r in year.items():
        summary.append(_ratio(f"whole range, {shape}", r["ratio"], TARGET_YEAR_RATIO))
    summary.append(
        {
            "metric": "for reference: SELECT 1 p50 on the same server and client path (the round-trip floor)",
            "value": round(select1["p50"], 2),
            "unit": "ms",
        }
    )
    week = planning["one week"]
    summary.append(
        {
            "metric": "cold planning of one week, first call (uncached)",
            "value": round(week["first_ms"], 2),
            "unit": "ms",
        }
    )
    summary.append(
        {
            "metric": "cold planning of one week, uncached p50",
            "value": round(week["uncached"]["p50"], 2),
            "unit": "ms",
        }
    )
    summary.append(
        {
            "metric": "cold planning of one week, cached p50",
            "value": round(week["cached"]["p50"] * 1000, 2),
            "unit": "µs",
        }
    )

    tables = [
        {
            "title": f"Scans ({runs} calls each, alternating)",
            "columns": [
                "week",
                "route (EXPLAIN ROUTE)",
                "files",
                "rows",
                "MB",
                "tierflight p50 ms",
                "p99 ms",
                "DuckDB p50 ms",
                "p99 ms",
                "ratio",
            ],
            "rows": [_scan_row(f"{tier}: {WEEKS[tier][0]} .. {WEEKS[tier][1]}", r) for tier, r in results.items()]
            + [_scan_row(f"whole range: {shape}", r) for shape, r in year.items()],
        },
        {
            "title": "Cold planning (ColdTier.files), in-process",
            "columns": [
                "range",
                "files",
                "first call ms",
                "uncached p50 ms",
                "uncached p99 ms",
                "cached p50 µs",
                "cached p99 µs",
                "manifest reads: first / uncached / cached",
            ],
            "rows": [
                [
                    label,
                    p["files"],
                    round(p["first_ms"], 2),
                    round(p["uncached"]["p50"], 2),
                    round(p["uncached"]["p99"], 2),
                    round(p["cached"]["p50"] * 1000, 2),
                    round(p["cached"]["p99"] * 1000, 2),
                    f"{p['first_planned']} / {p['uncached_planned']} of {p['uncached']['n']} / {p['cached_planned']} of {p['cached']['n']}",
                ]
                for label, p in planning.items()
            ],
        },
    ]
    notes = [
        "Statements: "
        + "; ".join(f"{label}: `{r['sql']}`" for label, r in (*results.items(), *year.items()))
        + ".",
        "DuckDB in-process reads the same files with the same `threads` as the server's `[duckdb] threads`; "
        "its figure has no network round trip, no planning and no result transfer, so the ratio is the whole "
        "serving overhead. The SELECT 1 section gives the round-trip floor.",
        f"Server started with {' '.join(f'{k}={v}' for k, v in RAW_ENV.items())} "
        "(plus no metrics port and no maintenance). The machine is shared with other test runs; load average "
        f"(1/5/15 min) at the start and after each measurement: {load}.",
    ]
    return {
        "title": "Tiers: pruned warm and cold scans and whole-range scans vs DuckDB, and cold planning",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": data_description(rows),
        "summary": summary,
        "tables": tables,
        "notes": notes,
        "raw": {"select1": select1, "scans": results, "whole_range": year, "planning": planning, "load": load, "runs": runs},
    }


def _ratio(label: str, ratio: float, target: float) -> dict[str, Any]:
    """The summary line of a scan's p50 ratio and its target."""
    return {
        "metric": f"{label}, p50 ratio tierflight / DuckDB",
        "value": round(ratio, 3),
        "unit": "x",
        "target": f"≤ {target}x",
        "ok": ratio <= target,
    }


def _scan_row(label: str, r: dict[str, Any]) -> list[Any]:
    """One line of the scans table."""
    tf, dk = r["tierflight"], r["duckdb"]
    return [
        label,
        r["route"],
        r["files"],
        r["rows"],
        round(r["bytes"] / 1e6, 1),
        round(tf["p50"], 2),
        round(tf["p99"], 2),
        round(dk["p50"], 2),
        round(dk["p99"], 2),
        round(r["ratio"], 2),
    ]


def _rows_in(files: list[Path]) -> list[int]:
    import pyarrow.parquet as pq

    return [pq.ParquetFile(f).metadata.num_rows for f in files]
