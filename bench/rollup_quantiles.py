"""Quantile rollups: what `quantiles(col)` measures cost a build, in time and in bytes.

In-process, over the demo data: the states of two rollups (``day, type`` and ``hour, country,
type``, counts and sums) built in one pass (``rollups.build.build_groups``, as `tierflight
rollups build` does, without writing snapshots), then the same rollups with ``quantiles`` of
``bid_price`` and ``total_price`` added (KLL sketches, k = 200). Source rows per second of the
build, best of the runs; bytes of the states (Arrow, as snapshotted) and how many of them the
sketches take; the process RSS the build with sketches adds.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import BenchContext, load_average, log
from bench.registry import Result, benchmark

BASE = [
    {"name": "day_type", "dimensions": ["day", "type"], "measures": ["count", "count(bid_price)", "sum(bid_price)"]},
    {"name": "hour_country_type", "dimensions": ["hour", "country", "type"], "measures": ["count", "sum(bid_price)"]},
]
SKETCHES = ["quantiles(bid_price)", "quantiles(total_price)"]


def _build(data_dir: Any, env: dict[str, str], rollups: list[dict[str, Any]]) -> tuple[float, int, int, int]:
    """Seconds, source rows, state bytes, sketch bytes of one build."""
    import os

    from bench.common import CONFIG
    from tierflight.core.config import load_config
    from tierflight.engine.database import Database
    from tierflight.rollups.build import build_groups
    from tierflight.rollups.definition import parse_rollups, storage_groups
    from tierflight.tiers.store import TableStore

    config = load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **env}, overrides={"tables.events.rollups": rollups})
    database = Database(config)
    try:
        table = config.table("events")
        store = TableStore(config, table)
        groups = storage_groups(parse_rollups(table))
        cur = database.cursor()
        started = time.perf_counter()
        result = build_groups(store, groups, cur, config.tiers.current_time())
        seconds = time.perf_counter() - started
        cur.close()
        total = sum(t.nbytes for t in result.tables.values())
        sketch = sum(t[c].nbytes for t in result.tables.values() for c in t.column_names if c.startswith("quantiles__"))
        return seconds, result.source_rows, total, sketch
    finally:
        database.close()


@benchmark("rollup_quantiles")
def run(ctx: BenchContext) -> Result:
    from bench.dataset import rss_bytes
    from tierflight.core.log import configure_logging

    configure_logging("warning")
    from bench.dataset import DATA_ENV, ensure_dataset

    # The shared data set of the router benchmark (20,000,000 events over a year; --quick: 200,000).
    data_dir, env = ensure_dataset(ctx.rows), dict(DATA_ENV)
    with_sketches = [{**r, "measures": [*r["measures"], *SKETCHES]} for r in BASE]
    runs: dict[str, list[float]] = {"without": [], "with": []}
    sizes: dict[str, tuple[int, int]] = {}
    rss: dict[str, int] = {}
    source_rows = 0
    for _ in range(max(1, ctx.repeats if not ctx.quick else 2)):
        for label, rollups in (("without", BASE), ("with", with_sketches)):
            before = rss_bytes()
            seconds, source_rows, total, sketch = _build(data_dir, env, rollups)
            rss[label] = max(rss.get(label, 0), rss_bytes() - before)
            runs[label].append(seconds)
            sizes[label] = (total, sketch)
    best = {k: min(v) for k, v in runs.items()}
    rate = {k: source_rows / v for k, v in best.items()}
    log(f"build without sketches {rate['without']:,.0f} rows/s, with {rate['with']:,.0f} rows/s")
    return {
        "title": "Quantile rollups: build cost",
        "description": __doc__.split("\n\n", 1)[1] if __doc__ else "",
        "data": f"{source_rows:,} demo events (the router benchmark's data set); 2 rollups, then the same with 2 quantiles measures each",
        "summary": [
            {"metric": "build without quantiles", "value": round(rate["without"]), "unit": "rows/s"},
            {"metric": "build with quantiles", "value": round(rate["with"]), "unit": "rows/s"},
            {"metric": "sketch bytes / all state bytes", "value": round(100 * sizes["with"][1] / max(1, sizes["with"][0]), 1), "unit": "%"},
        ],
        "tables": [
            {
                "title": "Builds (best of the runs)",
                "columns": ["measures", "seconds", "rows/s", "state bytes", "sketch bytes", "RSS added"],
                "rows": [
                    [label, round(best[label], 3), round(rate[label]), sizes[label][0], sizes[label][1], rss[label]]
                    for label in ("without", "with")
                ],
            }
        ],
        "notes": [f"load average {load_average()}", f"runs (s): {runs}"],
        "raw": {"runs": runs, "sizes": sizes, "rss": rss},
    }
