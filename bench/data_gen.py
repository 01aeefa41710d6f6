"""Demo data generation: ``tierflight generate`` rows/s, and what loading into Iceberg costs.

*Overall*: one ``tierflight generate --rows N --start 2024-01-01 --days 366`` process with
``TIERFLIGHT_TIERS__NOW=2025-01-01`` into an empty data dir, timed from outside (process start
to exit: imports, generating, writing ZSTD Parquet, the Iceberg commit of the cold days). The
generator's own figure (the ``wrote ... in X s`` line: generation and writing, without start-up
and the commit) is reported next to it.

*Cold part*: the 276 days before the warm boundary (the rows that land in Iceberg), generated
in-process three ways into fresh directories: generation only (tables discarded), generation +
plain Parquet files (``generate_to_hive`` into a directory), and generation + Iceberg bulk load
(``generate_into`` a fresh table store: the same Parquet writes into the Iceberg data directory,
then one ``add_files`` commit and a refresh). The difference between the last two is what Iceberg
costs on top of writing the Parquet; each variant runs the same rows, and rounds rotate the
order. The data dir of the overall run is kept as the cache ``bench/.data/<rows>`` that the
other data benchmarks use.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import CONFIG, BenchContext, load_average, log
from bench.dataset import (
    CACHE_ROOT,
    DATA_ENV,
    DAYS,
    SEED,
    START,
    cache_dir,
    cold_boundary,
    cold_files,
    data_description,
    is_complete,
    mark_complete,
    rel,
    run_generate,
    warm_files,
)
from bench.registry import Result, benchmark

TARGET_ROWS_PER_S = 2_000_000


def _cold_variants(rows: int, days: int, work: Path) -> dict[str, Callable[[], dict[str, Any]]]:
    from tierflight.core.config import load_config

    from tierflight.demo.generate import generate_to_hive
    from tierflight.demo.load import generate_into
    from tierflight.tiers.base import TierKind
    from tierflight.tiers.store import TableStore

    def fresh(name: str) -> Path:
        path = work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def generate_only() -> dict[str, Any]:
        root = fresh("gen-only")
        started = time.perf_counter()
        stats = generate_to_hive(root, rows, START, days, SEED, progress=False, write_day=lambda _d, _t: 0)
        return {"seconds": time.perf_counter() - started, "rows": stats.rows, "bytes": 0, "files": 0}

    def plain_parquet() -> dict[str, Any]:
        root = fresh("plain-parquet")
        started = time.perf_counter()
        events = load_config(CONFIG, data_dir=root, environ={**os.environ, **DATA_ENV}).table("events")
        stats = generate_to_hive(root, rows, START, days, SEED, progress=False, table_config=events)
        return {
            "seconds": time.perf_counter() - started,
            "rows": stats.rows,
            "bytes": stats.bytes,
            "files": stats.files,
        }

    def iceberg() -> dict[str, Any]:
        data_dir = fresh("iceberg-load")
        config = load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **DATA_ENV})
        store = TableStore(config, config.table(config.demo.table))
        if store.warm_boundary() < START + dt.timedelta(days=days):
            raise RuntimeError("the cold-part days are not all older than the warm window")
        started = time.perf_counter()
        stats = generate_into(store, rows, START, days, SEED, progress=False)
        seconds = time.perf_counter() - started
        cold_rows = sum(p.rows for p in store.partitions() if p.tier is TierKind.COLD)
        if cold_rows != stats.rows:
            raise RuntimeError(f"Iceberg holds {cold_rows:,} rows after loading {stats.rows:,}")
        return {
            "seconds": seconds,
            "write_seconds": stats.seconds,  # generate + write (generate_to_hive's figure)
            "commit_seconds": seconds - stats.seconds,  # Iceberg add_files commit + refresh
            "rows": stats.rows,
            "bytes": stats.bytes,
            "files": stats.files,
        }

    return {
        "generate only": generate_only,
        "generate + Parquet dir": plain_parquet,
        "generate + Iceberg bulk load": iceberg,
    }


@benchmark("data_gen")
def run(ctx: BenchContext) -> Result:
    from tierflight.demo.generate import rows_per_day

    rows = ctx.rows
    notes: list[str] = []
    load: list[list[float]] = [load_average()]

    # 1. The CLI, end to end; into the cache when there is none yet.
    cached = is_complete(cache_dir(rows))
    target = CACHE_ROOT / f"{rows}.measure" if cached else cache_dir(rows)
    log(f"tierflight generate --rows {rows:,} into {rel(target)}")
    overall = run_generate(target, rows)
    load.append(load_average())
    warm = warm_files(target)
    cold = cold_files(target)
    warm_bytes = sum(p.stat().st_size for p in warm)
    cold_bytes = sum(p.stat().st_size for p in cold)
    if cached:
        shutil.rmtree(target, ignore_errors=True)
    else:
        mark_complete(target)
    overall_rps = rows / overall.wall_seconds
    log(
        f"overall: {overall.wall_seconds:.1f} s wall ({overall_rps:,.0f} rows/s), generator {overall.reported_seconds:.1f} s"
    )

    # 2. The cold part, three ways.
    boundary = cold_boundary()
    cold_days = (boundary - START).days
    cold_rows = sum(rows_per_day(rows, START, DAYS)[:cold_days])
    work = CACHE_ROOT / f"{rows}.cold-compare"
    variants = _cold_variants(cold_rows, cold_days, work)
    rounds = ctx.repeats if rows <= 20_000_000 else 1
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    try:
        names = list(variants)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                res = variants[name]()
                runs[name].append(res)
                log(
                    f"cold part round {r + 1}/{rounds}: {name}: {res['seconds']:.2f} s ({cold_rows / res['seconds']:,.0f} rows/s)"
                )
            load.append(load_average())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {name: min(rs, key=lambda x: x["seconds"]) for name, rs in runs.items()}
    gen_s = best["generate only"]["seconds"]
    parquet_s = best["generate + Parquet dir"]["seconds"]
    ice = best["generate + Iceberg bulk load"]
    ice_s = ice["seconds"]

    summary: list[dict[str, Any]] = [
        {
            "metric": "tierflight generate, rows/s overall (CLI wall clock)",
            "value": round(overall_rps),
            "unit": "rows/s",
            "target": f"≥ {TARGET_ROWS_PER_S:,} rows/s",
            "ok": overall_rps >= TARGET_ROWS_PER_S,
        },
        {
            "metric": "tierflight generate, rows/s by the generator's own clock (no start-up, no commit)",
            "value": round(rows / overall.reported_seconds) if overall.reported_seconds > 0 else float("nan"),
            "unit": "rows/s",
        },
        {"metric": "cold part: generate only", "value": round(cold_rows / gen_s), "unit": "rows/s"},
        {
            "metric": "cold part: generate + plain Parquet",
            "value": round(cold_rows / parquet_s),
            "unit": "rows/s",
        },
        {
            "metric": "cold part: generate + Iceberg bulk load",
            "value": round(cold_rows / ice_s),
            "unit": "rows/s",
        },
        {
            "metric": "Iceberg bulk load time / plain Parquet time (cold part)",
            "value": round(ice_s / parquet_s, 3),
            "unit": "x",
        },
    ]
    table_rows = []
    for name in variants:
        b = best[name]
        table_rows.append(
            [
                name,
                f"{b['rows']:,}",
                round(b["seconds"], 2),
                round(cold_rows / b["seconds"]),
                round(b["bytes"] / 1e6, 1) if b["bytes"] else "-",
                ", ".join(f"{x['seconds']:.2f}" for x in runs[name]),
            ]
        )
    notes.append(
        f"Overall: {overall.files} files, {(warm_bytes + cold_bytes) / 1e6:,.1f} MB "
        f"({(warm_bytes + cold_bytes) / rows:.1f} bytes/row): {len(cold)} cold files ({cold_bytes / 1e6:,.1f} MB), "
        f"{len(warm)} warm files ({warm_bytes / 1e6:,.1f} MB). Process wall {overall.wall_seconds:.2f} s, "
        f"generator {overall.reported_seconds:.2f} s; the rest is interpreter start-up, imports, the Iceberg commit "
        "and the final refresh."
    )
    notes.append(
        f"Iceberg bulk load of the cold part: {ice['write_seconds']:.2f} s generating and writing the Parquet, "
        f"{ice['commit_seconds']:.2f} s for the `add_files` commit and the refresh."
    )
    notes.append(
        f"Generation and writing run on a pool of min(4, cores) threads; {rounds} round(s) per cold-part variant "
        f"(best shown, all listed). The machine is shared with other test runs: load average "
        f"(1/5/15 min) before, after the CLI run and after each round: {load}."
    )
    return {
        "title": "Demo data generation and Iceberg bulk load",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": data_description(rows),
        "summary": summary,
        "tables": [
            {
                "title": f"Cold part: {cold_rows:,} rows over {cold_days} days ({START} .. {boundary - dt.timedelta(days=1)})",
                "columns": [
                    "variant",
                    "rows",
                    "seconds (best)",
                    "rows/s",
                    "Parquet MB",
                    "seconds, every round",
                ],
                "rows": table_rows,
            }
        ],
        "notes": notes,
        "raw": {
            "command": overall.command,
            "overall": {
                "wall_seconds": overall.wall_seconds,
                "reported_seconds": overall.reported_seconds,
                "files": overall.files,
                "bytes": overall.bytes,
                "warm_files": len(warm),
                "cold_files": len(cold),
                "warm_bytes": warm_bytes,
                "cold_bytes": cold_bytes,
            },
            "cold_part": {"rows": cold_rows, "days": cold_days, "runs": runs},
            "load": load,
        },
    }
