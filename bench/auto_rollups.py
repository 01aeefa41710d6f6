"""Autonomous rollups: a workload no configured rollup serves, before and after the server
learned it.

One ``tierflight serve`` with ``[rollups] auto`` on (the product defaults otherwise: 3
statements of a shape, 20 s after the first, rounds every 10 s) on a copy of the cached data
set (auto rollups and the query log are written into it; the copy is put back afterwards).
The workload below is run once (each statement ``REPEATS`` times, p50 per statement), then the
benchmark waits until autonomous mode built a rollup for every proposal or refused it,
while another thread runs a statement a configured rollup answers, to see what building
costs other statements (its p99 while building against its p99 before). Then the workload
runs again. Each answer of the second run is compared with the first (exactness).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.common import CONFIG, BenchContext, log, percentile, start_tierflight
from bench.dataset import (
    DATA_ENV,
    NO_REUSE_ENV,
    connect,
    ensure_rollups,
    explain_route,
    fetch,
    mutable_dataset,
    same_rows,
)
from bench.registry import Result, benchmark
from tierflight.core.config import load_config

# Statements no configured rollup answers (publisher by time, publisher by country, filtered
# sketches, ...), as the judged queries of a workload nobody configured for.
WORKLOAD = {
    "publisher_clicks_by_day": "SELECT day, publisher_id, count(*) AS clicks FROM events WHERE type = 'click' AND day BETWEEN DATE '2024-03-01' AND DATE '2024-05-31' GROUP BY ALL ORDER BY ALL",
    "publisher_country_spend": "SELECT publisher_id, country, sum(bid_price) AS spend FROM events GROUP BY ALL ORDER BY ALL",
    "advertiser_country_bids": "SELECT advertiser_id, country, count(*) AS bids, sum(total_price) AS total FROM events WHERE type = 'bid' GROUP BY ALL ORDER BY ALL",
    "publisher_weekly_impressions": "SELECT week, publisher_id, avg(bid_price) AS avg_bid FROM events WHERE type = 'impression' GROUP BY ALL ORDER BY ALL",
    "country_click_users": "SELECT country, approx_count_distinct(user_id) AS users FROM events WHERE type = 'click' GROUP BY 1 ORDER BY 1",
    "publisher_monthly_clicks": "SELECT date_trunc('month', ts) AS month, publisher_id, count(*) AS clicks FROM events WHERE type = 'click' AND day BETWEEN DATE '2024-03-01' AND DATE '2024-05-31' GROUP BY ALL ORDER BY ALL",
}
# Answered by a configured rollup (day_type): what building must not hold back.
OTHER = "SELECT type, count(*) AS n FROM events WHERE day >= DATE '2024-06-01' GROUP BY 1 ORDER BY 1"
APPROXIMATE = frozenset({"country_click_users"})
REPEATS = 3  # the product default of auto_min_statements
AUTO_ENV = {**DATA_ENV, **NO_REUSE_ENV, "TIERFLIGHT_ROLLUPS__AUTO": "true"}


def _run(cur: Any, times: int) -> tuple[dict[str, float], dict[str, Any], dict[str, str]]:
    p50: dict[str, float] = {}
    answers: dict[str, Any] = {}
    routes: dict[str, str] = {}
    for name, sql in WORKLOAD.items():
        samples = []
        for _ in range(times):
            started = time.perf_counter()
            answers[name] = fetch(cur, sql)
            samples.append((time.perf_counter() - started) * 1000)
        p50[name] = percentile(samples, 50)
        chosen = [r["source"] for r in explain_route(cur, sql) if r["tier"] != "rejected"]
        routes[name] = next((s for s in chosen if s.startswith("rollup:")), "raw")
    return p50, answers, routes


class _Other(threading.Thread):
    """The configured-rollup statement in a loop, its latencies tagged with the phase."""

    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.uri = uri
        self.phase = "before"
        self.samples: dict[str, list[float]] = {"before": [], "first_run": [], "building": []}
        self.stop = threading.Event()

    def run(self) -> None:
        with connect(self.uri) as conn, conn.cursor() as cur:
            while not self.stop.is_set():
                started = time.perf_counter()
                fetch(cur, OTHER)
                self.samples[self.phase].append((time.perf_counter() - started) * 1000)
                time.sleep(0.02)


def _close_counts(a: Any, b: Any, rel: float) -> bool:
    """Same keys (first column) in the same order, estimates (last column) within ``rel``."""
    ra, rb = a.to_pylist(), b.to_pylist()
    keys = list(ra[0]) if ra else []
    return len(ra) == len(rb) and all(
        x[keys[0]] == y[keys[0]] and abs(x[keys[-1]] - y[keys[-1]]) <= rel * max(abs(y[keys[-1]]), 1)
        for x, y in zip(ra, rb, strict=True)
    )


def _auto_state(cur: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rollups = fetch(cur, "SELECT name, origin, status, bytes FROM system.rollups").to_pylist()
    advice = fetch(cur, "SELECT name, status, note, estimated_bytes FROM system.rollup_advice").to_pylist()
    return rollups, advice


@benchmark("auto_rollups")
def auto_rollups(ctx: BenchContext) -> Result:
    wait_limit = 150.0 if ctx.quick else 300.0
    with mutable_dataset(ctx.rows) as data_dir:
        ensure_rollups(data_dir)
        server = start_tierflight(data_dir, env=AUTO_ENV, log_path=ctx.scratch("auto_rollups") / "server.log")
        try:
            with connect(server.uri) as conn, conn.cursor() as cur:
                other = _Other(server.uri)
                other.start()
                time.sleep(3.0)  # the other statement's baseline
                other.phase = "first_run"
                first_statement = time.monotonic()
                before_p50, before_answers, before_routes = _run(cur, REPEATS)
                other.phase = "building"  # from here on only autonomous mode works beside it
                log(f"auto_rollups: first run {sum(before_p50.values()):.0f} ms (p50 sum); waiting for autonomous mode")
                adopted_at: float | None = None
                peak_bytes = 0
                rollups: list[dict[str, Any]] = []
                advice: list[dict[str, Any]] = []
                while time.monotonic() - first_statement < wait_limit:
                    rollups, advice = _auto_state(cur)
                    auto = [r for r in rollups if r["origin"] == "auto" and r["status"] == "active"]
                    peak_bytes = max(peak_bytes, sum(r["bytes"] or 0 for r in rollups))
                    if auto and adopted_at is None:
                        adopted_at = time.monotonic()
                    pending = [a for a in advice if a["status"] == "proposed"]
                    if auto and not pending:
                        break
                    time.sleep(1.0)
                other.stop.set()
                other.join(timeout=30)
                after_p50, after_answers, after_routes = _run(cur, REPEATS)
                rollups, advice = _auto_state(cur)
                peak_bytes = max(peak_bytes, sum(r["bytes"] or 0 for r in rollups))
        finally:
            server.stop()
    memory_budget = load_config(CONFIG, data_dir=data_dir, environ={}).rollups.memory_budget
    # Exact statements give the same rows (floats to 1e-9: sums in another order); the
    # approximate distinct count is a sketch either way (DuckDB's, or the rollup's lg_k 10).
    exact = all(same_rows(after_answers[n], before_answers[n]) for n in WORKLOAD if n not in APPROXIMATE)
    approx = all(_close_counts(after_answers[n], before_answers[n], 0.1) for n in APPROXIMATE)
    hot_share = sum(r != "raw" for r in after_routes.values()) / len(WORKLOAD)
    speedup = sum(before_p50.values()) / max(sum(after_p50.values()), 1e-9)
    adoption_s = (adopted_at - first_statement) if adopted_at is not None else None
    before_p99 = percentile(other.samples["before"], 99) if other.samples["before"] else None
    building_p99 = percentile(other.samples["building"], 99) if other.samples["building"] else None
    auto_rows = [r for r in rollups if r["origin"] == "auto"]
    return {
        "title": "Autonomous rollups: a workload nobody configured for",
        "description": __doc__.split("\n\n", 1)[1].replace("\n", " ") if __doc__ else "",
        "data": f"{ctx.rows:,} demo events",
        "summary": [
            {"metric": "second run answered from rollups", "value": round(100 * hot_share, 1), "unit": "%", "target": ">= 90%", "ok": hot_share >= 0.9},
            {"metric": "workload p50 sum, first run / second run", "value": round(speedup, 1), "unit": "x", "target": ">= 20x", "ok": speedup >= 20},
            {"metric": "first statement to first auto rollup", "value": None if adoption_s is None else round(adoption_s, 1), "unit": "s", "target": "<= 120 s", "ok": adoption_s is not None and adoption_s <= 120},
            {"metric": "rollup memory, peak", "value": round(peak_bytes / 1e6, 2), "unit": "MB", "target": f"<= {memory_budget / 1e6:.0f} MB (memory_budget)", "ok": peak_bytes <= memory_budget},
            {"metric": "other statements p99 while autonomous mode learns and builds", "value": None if building_p99 is None else round(building_p99, 2), "unit": "ms", "target": f"<= 1.5 x p99 before ({before_p99 and round(before_p99, 2)} ms)", "ok": building_p99 is not None and before_p99 is not None and building_p99 <= 1.5 * before_p99},
            {"metric": "second run answers equal to the first", "value": exact, "unit": "", "target": "exact", "ok": exact},
            {"metric": "approximate distinct counts within 10% of the first run's", "value": approx, "unit": "", "target": "within 10%", "ok": approx},
        ],
        "tables": [
            {
                "title": "Per statement",
                "columns": ["statement", "first run p50 ms", "route before", "second run p50 ms", "route after"],
                "rows": [
                    [n, round(before_p50[n], 2), before_routes[n], round(after_p50[n], 2), after_routes[n]] for n in WORKLOAD
                ],
            },
            {
                "title": "Auto rollups",
                "columns": ["name", "status", "bytes"],
                "rows": [[r["name"], r["status"], r["bytes"]] for r in auto_rows],
            },
            {
                "title": "Advice at the end",
                "columns": ["name", "status", "estimated bytes", "note"],
                "rows": [[a["name"], a["status"], a["estimated_bytes"], a["note"] or ""] for a in advice],
            },
        ],
        "raw": {
            "before_p50_ms": before_p50,
            "after_p50_ms": after_p50,
            "other_ms": other.samples,
            "adoption_s": adoption_s,
            "peak_bytes": peak_bytes,
        },
    }
