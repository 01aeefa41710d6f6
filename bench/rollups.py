"""Rollups: build throughput, size against the raw data, preload cost, and engines for routed queries.

*Build*: ``tierflight rollups build`` on the cached data set (every configured rollup of
``conf/tierflight.toml``, one DuckDB GROUPING SETS pass per filter over all tiers, then the
HyperLogLog states, then the checksummed snapshots), timed by the command itself (``built N
rollups in X s``) and from outside; throughput is source rows per second of the build.

*Size*: per rollup, rows and bytes: what the server holds in memory once it is loaded (DuckDB's
own accounting, ``duckdb_memory()``, of the compressed in-memory rollup database), the Arrow
bytes recorded in the snapshot manifest, and the snapshot file on disk; the in-memory total
against the bytes of the raw Parquet files of the warm and cold tiers.

*Preload*: what a server start with existing snapshots pays per rollup, in-process:
``RollupRegistry.load(build_missing=False)`` with only that rollup registered (read and
verify the snapshot, load it into a DuckDB table, sort the bucket starts for estimates), its
time and the memory it adds (DuckDB's own accounting from ``duckdb_memory()``, and the process
RSS); then a whole ``App`` start on the data.

*Engines*: a routed query's work is an aggregation over a small rollup table. The same
aggregation, on the rollup read from its snapshot file under ``<data_dir>/rollups/``, through
candidate engines in the benchmark process (result materialised as an Arrow table in each):
tierflight's own rewritten SQL (``Router.plan(...).sql``) on its DuckDB with the rollups
loaded, DuckDB over an in-memory table, DuckDB over a registered Arrow table, Polars, and
pyarrow.compute. Calls alternate between engines.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import CONFIG, BenchContext, load_average, log, summarize_ms
from bench.dataset import (
    DATA_ENV,
    data_description,
    data_files,
    ensure_dataset,
    interleaved_runs,
    rollup_manifests,
    rollups_build_argv,
    rss_bytes,
    run_rollups_build,
    same_rows,
    shell_command,
)
from bench.registry import Result, benchmark

TARGET_BUILD_ROWS_PER_S = 3_000_000
TARGET_SIZE_PCT = 2.0

# The rollup-side shape of two dashboard queries (../shared/workloads/adtech-dashboard.sql);
# the minute one on a day inside the minute rollup's retention (90 days before now).
MINUTE_DAY = dt.date(2024, 12, 15)
ENGINE_QUERIES = {
    "revenue_per_day": {
        "sql": "SELECT day, SUM(bid_price) FROM events WHERE type = 'impression' GROUP BY day",
        "rollup": "day_type",
        "duck": "SELECT day, sum(sum__bid_price) AS revenue FROM {t} WHERE type = 'impression' GROUP BY day",
    },
    "spend_per_minute_one_day": {
        "sql": (
            f"SELECT minute, SUM(bid_price) FROM events WHERE type = 'impression' AND day = DATE '{MINUTE_DAY}' "
            "GROUP BY minute ORDER BY minute ASC"
        ),
        "rollup": "minute_impressions",
        "duck": (
            "SELECT minute, sum(sum__bid_price) AS revenue FROM {t} "
            f"WHERE minute >= TIMESTAMP '{MINUTE_DAY}' AND minute < TIMESTAMP '{MINUTE_DAY + dt.timedelta(days=1)}' "
            "GROUP BY minute ORDER BY minute"
        ),
    },
}


def _duckdb_memory(cur: Any) -> int:
    return int(cur.sql("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()").fetchall()[0][0])


def _preload(data_dir: Path) -> dict[str, Any]:
    """Per-rollup RollupRegistry.load time and memory, then a whole App start."""
    import gc

    from tierflight.core.config import load_config
    from tierflight.core.log import configure_logging

    from tierflight.app import App
    from tierflight.engine.database import Database
    from tierflight.rollups.registry import RollupRegistry
    from tierflight.tiers.store import TableStore

    configure_logging("warning")
    config = load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **DATA_ENV})
    database = Database(config)
    per: dict[str, dict[str, Any]] = {}
    try:
        stores = {name: TableStore(config, table) for name, table in config.tables.items()}
        registry = RollupRegistry(config, database, stores)
        everything = dict(registry.states)
        cur = database.cursor()
        for name, state in everything.items():
            registry.states = {name: state}
            gc.collect()
            mem0, rss0 = _duckdb_memory(cur), rss_bytes()
            started = time.perf_counter()
            registry.load(build_missing=False)
            seconds = time.perf_counter() - started
            if state.status != "active":
                raise RuntimeError(
                    f"rollup {name} is {state.status} after load ({state.error}); rebuild the data set"
                )
            per[name] = {
                "ms": seconds * 1000,
                "rows": state.rows,
                "arrow_bytes": state.bytes,
                "duckdb_bytes": _duckdb_memory(cur) - mem0,
                "rss_bytes": rss_bytes() - rss0,
            }
        registry.states = everything
        total_duck = _duckdb_memory(cur)
        cur.close()
    finally:
        database.close()
    gc.collect()
    rss0 = rss_bytes()
    started = time.perf_counter()
    app = App(load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **DATA_ENV}), build_rollups=False)
    app_seconds = time.perf_counter() - started
    app_rss = rss_bytes() - rss0
    return {
        "per_rollup": per,
        "duckdb_total_bytes": total_duck,
        "app": app,
        "app_ms": app_seconds * 1000,
        "app_rss_bytes": app_rss,
    }


def _engines(app: Any, data_dir: Path, runs: int) -> dict[str, dict[str, Any]]:
    import duckdb
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    from tierflight.engine.sandbox import check_statement
    from tierflight.rollups.snapshot import read_meta, read_snapshot

    threads = app.config.duckdb.threads
    out: dict[str, dict[str, Any]] = {}
    for qname, q in ENGINE_QUERIES.items():
        meta = read_meta(data_dir / "rollups", q["rollup"])
        if meta is None:
            raise RuntimeError(f"no snapshot of rollup {q['rollup']}")
        table: pa.Table = read_snapshot(data_dir / "rollups", meta)
        route = app.router.plan(check_statement(q["sql"]))
        if f"rollup:{q['rollup']}" not in [p.source for p in route.parts]:
            raise RuntimeError(f"{qname} is routed to {[p.source for p in route.parts]}, not {q['rollup']}")
        tf_cur = app.database.cursor()
        con = duckdb.connect()
        con.execute(f"SET threads = {int(threads)}")
        con.register("rollup_arrow", table)
        con.execute("CREATE TABLE rollup_mem AS SELECT * FROM rollup_arrow")
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        sql_mem = q["duck"].format(t="rollup_mem")
        sql_arrow = q["duck"].format(t="rollup_arrow")

        if qname == "revenue_per_day":

            def polars_fn(df: pl.DataFrame = df) -> pa.Table:
                return (
                    df.filter(pl.col("type") == "impression")
                    .group_by("day")
                    .agg(pl.col("sum__bid_price").sum().alias("revenue"))
                    .to_arrow()
                )

            def arrow_fn(table: pa.Table = table) -> pa.Table:
                return (
                    table.filter(pc.equal(table["type"], "impression"))
                    .group_by("day")
                    .aggregate([("sum__bid_price", "sum")])
                )

        else:
            lo = dt.datetime.combine(MINUTE_DAY, dt.time())
            hi = lo + dt.timedelta(days=1)

            def polars_fn(df: pl.DataFrame = df, lo: dt.datetime = lo, hi: dt.datetime = hi) -> pa.Table:
                return (
                    df.filter((pl.col("minute") >= lo) & (pl.col("minute") < hi))
                    .group_by("minute")
                    .agg(pl.col("sum__bid_price").sum().alias("revenue"))
                    .sort("minute")
                    .to_arrow()
                )

            def arrow_fn(table: pa.Table = table, lo: dt.datetime = lo, hi: dt.datetime = hi) -> pa.Table:
                m = table["minute"]
                mask = pc.and_(pc.greater_equal(m, pa.scalar(lo, m.type)), pc.less(m, pa.scalar(hi, m.type)))
                return (
                    table.filter(mask)
                    .group_by("minute")
                    .aggregate([("sum__bid_price", "sum")])
                    .sort_by("minute")
                )

        rewritten_mem = re.sub(rf"\btf_rollup\.(?:main\.)?{re.escape(q['rollup'])}\b", "rollup_mem", route.sql)
        if rewritten_mem == route.sql:
            raise RuntimeError(f"the rewritten SQL does not name tf_rollup.main.{q['rollup']}: {route.sql}")
        fns: dict[str, Callable[[], Any]] = {
            "tierflight rewritten SQL on its DuckDB (rollup table)": lambda sql=route.sql, c=tf_cur: c.sql(
                sql
            ).to_arrow_table(),
            "tierflight rewritten SQL on a plain DuckDB (in-memory table)": lambda sql=rewritten_mem, c=con: (
                c.sql(sql).to_arrow_table()
            ),
            "DuckDB, in-memory table": lambda sql=sql_mem, c=con: c.sql(sql).to_arrow_table(),
            "DuckDB, registered Arrow table": lambda sql=sql_arrow, c=con: c.sql(sql).to_arrow_table(),
            "Polars": polars_fn,
            "pyarrow.compute": arrow_fn,
        }
        answers = {name: fn() for name, fn in fns.items()}
        reference = answers["DuckDB, in-memory table"]
        wrong = [name for name, a in answers.items() if not same_rows(_two(a), _two(reference))]
        if wrong:
            raise RuntimeError(f"{qname}: {', '.join(wrong)} disagree with DuckDB")
        samples = interleaved_runs(fns, min_runs=runs, max_runs=runs, budget_s=0, warmup=5)
        out[qname] = {
            "sql": q["sql"],
            "rollup": q["rollup"],
            "rollup_rows": table.num_rows,
            "result_rows": reference.num_rows,
            "rewritten_sql": route.sql,
            "engines": {name: summarize_ms(s) for name, s in samples.items()},
        }
        tf_cur.close()
        con.close()
        for name, s in out[qname]["engines"].items():
            log(f"{qname}: {name}: p50 {s['p50'] * 1000:.0f} µs")
    return out


def _two(table: Any) -> Any:
    """The key and the value column under common names (engines name their outputs differently)."""
    return table.select([0, 1]).rename_columns(["key", "value"])


@benchmark("rollups")
def run(ctx: BenchContext) -> Result:
    rows = ctx.rows
    data_dir = ensure_dataset(rows)
    load: list[list[float]] = [load_average()]

    log("tierflight rollups build")
    wall, stderr = run_rollups_build(data_dir)
    load.append(load_average())
    m = re.search(r"built (\d+) rollups in ([\d.]+) s", stderr)
    build_s = float(m.group(2)) if m else wall
    m_rows = re.search(r"source_rows\W+(\d+)", stderr)
    source_rows = int(m_rows.group(1)) if m_rows else rows
    build_rps = source_rows / build_s
    log(f"build: {build_s:.1f} s ({build_rps:,.0f} source rows/s), {wall:.1f} s wall")

    raw_bytes = sum(p.stat().st_size for p in data_files(data_dir))
    manifests = {}
    import json

    for path in rollup_manifests(data_dir):
        meta = json.loads(path.read_text())
        manifests[meta["name"]] = {
            "rows": int(meta["rows"]),
            "bytes": int(meta["bytes"]),
            "file_bytes": (data_dir / "rollups" / meta["file"]).stat().st_size,
        }
    total_bytes = sum(v["bytes"] for v in manifests.values())
    total_file = sum(v["file_bytes"] for v in manifests.values())

    log("preloading rollups in-process")
    pre = _preload(data_dir)
    in_memory = sum(p["duckdb_bytes"] for p in pre["per_rollup"].values())
    pct = 100.0 * in_memory / raw_bytes
    load.append(load_average())
    app = pre.pop("app")
    try:
        engines = _engines(app, data_dir, runs=100 if ctx.quick else 500)
    finally:
        app.close()
    load.append(load_average())

    summary: list[dict[str, Any]] = [
        {
            "metric": "rollups build, source rows/s",
            "value": round(build_rps),
            "unit": "rows/s",
            "target": f"≥ {TARGET_BUILD_ROWS_PER_S:,} rows/s",
            "ok": build_rps >= TARGET_BUILD_ROWS_PER_S,
        },
        {"metric": "rollups build time (all rollups)", "value": round(build_s, 2), "unit": "s"},
        {
            "metric": "rollups in memory as % of raw Parquet bytes",
            "value": round(pct, 2),
            "unit": "%",
            "target": f"< {TARGET_SIZE_PCT}%",
            "ok": pct < TARGET_SIZE_PCT,
        },
        {"metric": "rollups in memory (DuckDB, compressed)", "value": round(in_memory / 1e6, 1), "unit": "MB"},
        {
            "metric": "rollups as Arrow (snapshot manifests), % of raw Parquet bytes",
            "value": round(100.0 * total_bytes / raw_bytes, 2),
            "unit": "%",
        },
        {"metric": "raw Parquet bytes (warm + cold)", "value": round(raw_bytes / 1e6, 1), "unit": "MB"},
        {
            "metric": "preload of all rollups (sum of per-rollup loads)",
            "value": round(sum(p["ms"] for p in pre["per_rollup"].values()), 1),
            "unit": "ms",
        },
        {"metric": "App start with existing snapshots", "value": round(pre["app_ms"], 1), "unit": "ms"},
    ]
    for qname, e in engines.items():
        tf = e["engines"]["tierflight rewritten SQL on its DuckDB (rollup table)"]
        summary.append(
            {
                "metric": f"{qname} on rollup {e['rollup']}: tierflight's rewritten SQL p50",
                "value": round(tf["p50"] * 1000),
                "unit": "µs",
            }
        )

    size_rows = []
    for name, v in manifests.items():
        p = pre["per_rollup"].get(name, {})
        size_rows.append(
            [
                name,
                v["rows"],
                round(v["bytes"] / 1e6, 2),
                round(v["file_bytes"] / 1e6, 2),
                round(p.get("duckdb_bytes", 0) / 1e6, 2),
                f"{100.0 * p.get('duckdb_bytes', 0) / raw_bytes:.2f}%",
                round(p.get("ms", float("nan")), 1),
                round(p.get("rss_bytes", 0) / 1e6, 1),
            ]
        )
    size_rows.append(
        [
            "**total**",
            sum(v["rows"] for v in manifests.values()),
            round(total_bytes / 1e6, 2),
            round(total_file / 1e6, 2),
            round(in_memory / 1e6, 2),
            f"{pct:.2f}%",
            round(sum(p["ms"] for p in pre["per_rollup"].values()), 1),
            round(sum(p["rss_bytes"] for p in pre["per_rollup"].values()) / 1e6, 1),
        ]
    )
    engine_tables = []
    for qname, e in engines.items():
        engine_tables.append(
            {
                "title": f"{qname}: {e['rollup']} ({e['rollup_rows']:,} rows) → {e['result_rows']:,} result rows",
                "columns": ["engine", "p50 µs", "p90 µs", "p99 µs", "min µs"],
                "rows": [
                    [
                        name,
                        round(s["p50"] * 1000),
                        round(s["p90"] * 1000),
                        round(s["p99"] * 1000),
                        round(s["min"] * 1000),
                    ]
                    for name, s in e["engines"].items()
                ],
            }
        )
    build_cmd = shell_command(rollups_build_argv(data_dir), DATA_ENV)
    notes = [
        f"Build command: `{build_cmd}`; {build_s:.2f} s by its own clock, {wall:.2f} s wall (with start-up).",
        "In memory: DuckDB's accounting (`duckdb_memory()`) of the rollup once loaded into the compressed "
        "in-memory rollup database (what the server holds); Arrow MB is its Arrow size (`system.rollups.bytes`, "
        "the snapshot manifest); file MB is the Arrow IPC snapshot on disk; raw bytes are the ZSTD Parquet "
        "files of the warm and cold tiers. RSS MB: the process RSS growth while loading that rollup alone "
        "(the Arrow table read from the snapshot is freed after the DuckDB copy; RSS deltas are noisy, the "
        "allocator reuses freed memory, so one can even be negative).",
        f"App start (stores, tier listing, every rollup loaded, router, executor): {pre['app_ms']:.0f} ms, "
        f"RSS +{pre['app_rss_bytes'] / 1e6:.0f} MB.",
        "Engines: "
        + "; ".join(f"{q}: `{e['sql']}` → rewritten `{e['rewritten_sql']}`" for q, e in engines.items())
        + ".",
        f"The machine is shared with other test runs; load average (1/5/15 min) at the start and after each step: {load}.",
    ]
    return {
        "title": "Rollups: build, size, preload and query engines",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": data_description(rows),
        "summary": summary,
        "tables": [
            {
                "title": "Per rollup",
                "columns": [
                    "rollup",
                    "rows",
                    "Arrow MB",
                    "file MB",
                    "in memory MB (DuckDB)",
                    "in memory, % of raw",
                    "preload ms",
                    "RSS MB",
                ],
                "rows": size_rows,
            },
            *engine_tables,
        ],
        "notes": notes,
        "raw": {
            "build": {
                "seconds": build_s,
                "wall_seconds": wall,
                "source_rows": source_rows,
                "command": build_cmd,
            },
            "raw_bytes": raw_bytes,
            "rollups": manifests,
            "preload": pre,
            "engines": engines,
            "load": load,
        },
    }
