"""Ingest: sustained ADBC bulk ingest, its effect on concurrent queries, and ack-to-visibility.

A ``tierflight serve`` subprocess on a copy of the data set (the cache stays untouched) takes
``cursor.adbc_ingest("events", batch, mode="append")`` calls with 65,536-row batches of demo
events dated on the last day before ``now`` (2024-12-31, so they are valid and land in the hot
tail, then the warm tier). Each call is acknowledged after the server validated the batch,
appended it to its write-ahead log and fsynced it, added it to the hot tail and merged it into
the rollups; the hot tail is flushed to Parquet past ``[ingest] flush_rows`` in the background.
The batches are generated before timing, and reused (appending the same rows again is fine).

Phases, one after the other on the same server:

1. *idle*: a query client runs the statements of a workload file round robin, alone;
2. *ingest alone*: one ingest client appends batches back to back (sustained rows/s);
3. *ingest + queries*: both at once; the query client's latency against phase 1;
4. *visibility*: a small batch with a unique marker (an ``advertiser_id`` and ``auction_id`` no
   other row has) is ingested, and the very next statement counts the marker rows, once
   through a rollup (routed to ``day_advertiser_type``) and once through the raw tiers (an
   ``auction_id`` lookup): whether it saw every row, and the time from the ack to its answer.

Clients run on the same 2 cores as the server, with one ADBC connection each: the query
client as a thread of the benchmark process, the ingest client of phase 3 as a process of its
own (two client threads of one process would share its GIL, and the query latencies would
count the benchmark's own contention); both clients measure with their cyclic garbage
collector paused (``gc_paused``, as the other benchmarks), since a collection in a client
stops its calls for tens of milliseconds and would count as server latency. The server
freezes its start-up heap before it reports ready (``lifecycle.settle_heap``), so its own
collections stay short. The server keeps its defaults for ingest, among them
``[ingest] yield_rows_per_s``: while statements run, each acknowledgement waits so that ingest
stays under that rate (alone, phase 2, it runs at full speed).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import BenchContext, gc_paused, load_average, log, start_tierflight, summarize_ms
from bench.dataset import (
    DATA_ENV,
    NO_REUSE_ENV,
    NOW,
    WORKLOADS,
    connect,
    data_description,
    ensure_dataset,
    ensure_rollups,
    explain_route,
    fetch,
    mutable_dataset,
    read_workload,
    rel,
    route_label,
)
from bench.registry import Result, benchmark

BATCH_ROWS = 65_536
POOL_BATCHES = 8
TARGET_ROWS_PER_S = 250_000
TARGET_P99_RATIO = 2.0
QUERY_WORKLOAD = "adtech-examples.sql"
VISIBILITY_ROWS = 1000


def _batches() -> list[Any]:
    import datetime as dt

    from tierflight.demo.generate import generate_days

    day = NOW - dt.timedelta(days=1)
    [(_, table)] = list(generate_days(BATCH_ROWS * POOL_BATCHES, day, 1, seed=4242))
    return [table.slice(i * BATCH_ROWS, BATCH_ROWS).combine_chunks() for i in range(POOL_BATCHES)]


class QueryLoop(threading.Thread):
    """Runs ``statements`` round robin on its own connection until stopped; records latencies."""

    def __init__(self, uri: str, statements: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True, name="bench-queries")
        self.conn = connect(uri)
        self.cur = self.conn.cursor()
        self.statements = statements
        self.samples: list[tuple[float, str, float]] = []  # (start, statement, ms)
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._record = threading.Event()
        self.phase = ""

    def run(self) -> None:
        i = 0
        while not self._halt.is_set():
            name, sql = self.statements[i % len(self.statements)]
            i += 1
            t0 = time.perf_counter()
            try:
                fetch(self.cur, sql)
            except Exception as exc:  # reported, never fatal for the loop
                self.errors.append(f"{name}: {str(exc).splitlines()[0][:200]}")
                continue
            if self._record.is_set():
                self.samples.append((t0, f"{self.phase}:{name}", (time.perf_counter() - t0) * 1000))

    def record(self, phase: str) -> None:
        self.phase = phase
        self._record.set()

    def pause(self) -> None:
        self._record.clear()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=120)
        self.cur.close()
        self.conn.close()

    def phase_ms(self, phase: str) -> list[float]:
        return [ms for _, name, ms in self.samples if name.startswith(phase + ":")]


def _ingest_for(cur: Any, batches: list[Any], seconds: float) -> dict[str, Any]:
    acks: list[float] = []
    rows = 0
    i = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        batch = batches[i % len(batches)]
        i += 1
        t0 = time.perf_counter()
        n = cur.adbc_ingest("events", batch, mode="append")
        acks.append((time.perf_counter() - t0) * 1000)
        rows += batch.num_rows if n in (None, -1) else int(n)
    elapsed = time.perf_counter() - started
    return {
        "rows": rows,
        "batches": len(acks),
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "ack_ms": summarize_ms(acks),
    }


def _ingest_client(uri: str, seconds: float, out: Any) -> None:
    """A process of its own for the ingest client: as threads of one process the ingest and
    query clients would share that process's GIL, and the query latencies would count the
    benchmark's own contention."""
    conn = connect(uri)
    cur = conn.cursor()
    try:
        batches = _batches()
        _ingest_for(cur, batches[:2], 1.0)  # warm-up
        out.put(("ready", None))
        with gc_paused():
            out.put(("done", _ingest_for(cur, batches, seconds)))
    except Exception as exc:  # reported by the parent
        out.put(("failed", str(exc).splitlines()[0][:300]))
    finally:
        cur.close()
        conn.close()


def _ingest_beside(uri: str, seconds: float, loop: QueryLoop) -> dict[str, Any]:
    """Ingest for ``seconds`` from another process while ``loop`` records its statements."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_ingest_client, args=(uri, seconds, out), daemon=True)
    proc.start()
    try:
        kind, value = out.get(timeout=300)
        if kind != "ready":
            raise RuntimeError(f"the ingest client failed: {value}")
        loop.record("ingest")
        kind, value = out.get(timeout=seconds + 300)
        if kind != "done":
            raise RuntimeError(f"the ingest client failed: {value}")
        return dict(value)
    finally:
        loop.pause()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()


@benchmark("ingest")
def run(ctx: BenchContext) -> Result:
    rows = ctx.rows
    source = ensure_dataset(rows)
    ensure_rollups(source)
    work = ctx.scratch("ingest")
    idle_s, ingest_s = (3.0, 5.0) if ctx.quick else (10.0, 20.0)
    statements = read_workload(WORKLOADS / QUERY_WORKLOAD)
    batches = _batches()
    load: list[list[float]] = [load_average()]
    with mutable_dataset(rows) as data_dir:
        log(f"ingesting into {rel(data_dir)} (restored afterwards)")
        return _measure(rows, data_dir, work, statements, batches, idle_s, ingest_s, load, ctx.quick)


def _measure(
    rows: int,
    data_dir: Path,
    work: Path,
    statements: list[tuple[str, str]],
    batches: list[Any],
    idle_s: float,
    ingest_s: float,
    load: list[list[float]],
    quick: bool,
) -> Result:
    server = start_tierflight(data_dir, {**DATA_ENV, **NO_REUSE_ENV}, log_path=work / "tierflight.log")
    samples: list[tuple[float, str, float]] = []
    errors: list[str] = []
    try:
        conn = connect(server.uri)
        cur = conn.cursor()
        try:
            routes = {name: route_label(explain_route(cur, sql)) for name, sql in statements}
            with gc_paused():  # the clients' own collector pauses would count as latency
                alone, during = _phases(server.uri, cur, statements, batches, idle_s, ingest_s, load, samples, errors)
            # 4. visibility
            vis = _visibility_probe(cur, batches, 6 if quick else 20)
            load.append(load_average())
        finally:
            cur.close()
            conn.close()
    finally:
        server.stop()
    return _result(rows, routes, samples, errors, alone, during, vis, load, statements)


def _phases(
    uri: str,
    cur: Any,
    statements: list[tuple[str, str]],
    batches: list[Any],
    idle_s: float,
    ingest_s: float,
    load: list[list[float]],
    samples: list[tuple[float, str, float]],
    errors: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Phases 1-3: queries alone, ingest alone, both (samples and errors appended)."""
    # 1. queries alone
    idle_loop = QueryLoop(uri, statements)
    idle_loop.start()
    time.sleep(1.0)  # a warm-up round of the workload, not recorded
    idle_loop.record("idle")
    time.sleep(idle_s)
    idle_loop.stop()
    samples += idle_loop.samples
    errors += idle_loop.errors
    load.append(load_average())
    log(f"idle: {len(idle_loop.phase_ms('idle'))} statements")
    # 2. ingest alone
    _ingest_for(cur, batches[:2], 1.0)  # warm-up
    alone = _ingest_for(cur, batches, ingest_s)
    load.append(load_average())
    log(f"ingest alone: {alone['rows']:,} rows in {alone['seconds']:.1f} s = {alone['rows_per_s']:,.0f} rows/s")
    # 3. both
    busy_loop = QueryLoop(uri, statements)
    busy_loop.start()
    time.sleep(1.0)
    during = _ingest_beside(uri, ingest_s, busy_loop)
    busy_loop.stop()
    samples += busy_loop.samples
    errors += busy_loop.errors
    load.append(load_average())
    log(f"ingest + queries: {during['rows_per_s']:,.0f} rows/s, {len(busy_loop.phase_ms('ingest'))} statements")
    return alone, during


def _visibility_probe(cur: Any, batches: list[Any], rounds: int) -> dict[str, Any]:
    """Ingest a marker batch, then count it with the next statement (rollup and raw)."""
    import datetime as dt

    import pyarrow as pa

    template = batches[0].slice(0, VISIBILITY_ROWS)
    day = (NOW - dt.timedelta(days=1)).isoformat()
    adv_idx = template.schema.get_field_index("advertiser_id")
    auc_idx = template.schema.get_field_index("auction_id")
    out: dict[str, Any] = {"rollup": [], "raw": []}
    routes: dict[str, str] = {}
    for i in range(rounds):
        for kind in ("rollup", "raw") if i % 2 == 0 else ("raw", "rollup"):
            marker_adv = -(100_000 + 2 * i + (kind == "raw"))
            marker_auction = f"bench-marker-{uuid.uuid4()}"
            batch = template.set_column(
                adv_idx, "advertiser_id", pa.array([marker_adv] * VISIBILITY_ROWS, pa.int32())
            ).set_column(auc_idx, "auction_id", pa.array([marker_auction] * VISIBILITY_ROWS, pa.string()))
            sql = (
                f"SELECT count(*) FROM events WHERE advertiser_id = {marker_adv} AND day = DATE '{day}'"
                if kind == "rollup"
                else f"SELECT count(*) FROM events WHERE auction_id = '{marker_auction}' AND day = DATE '{day}'"
            )
            if kind not in routes:
                routes[kind] = route_label(explain_route(cur, sql))
            t0 = time.perf_counter()
            cur.adbc_ingest("events", batch, mode="append")
            acked = time.perf_counter()
            count = fetch(cur, sql).column(0)[0].as_py()
            out[kind].append(
                {
                    "seen": int(count),
                    "ok": int(count) == VISIBILITY_ROWS,
                    "ingest_ms": (acked - t0) * 1000,
                    "visible_ms": (time.perf_counter() - acked) * 1000,
                }
            )
    out["routes"] = routes
    return out


def _result(
    rows: int,
    routes: dict[str, str],
    samples: list[tuple[float, str, float]],
    errors: list[str],
    alone: dict[str, Any],
    during: dict[str, Any],
    vis: dict[str, Any],
    load: list[list[float]],
    statements: list[tuple[str, str]],
) -> Result:
    idle = summarize_ms([ms for _, n, ms in samples if n.startswith("idle:")])
    busy = summarize_ms([ms for _, n, ms in samples if n.startswith("ingest:")])
    ratio = busy["p99"] / idle["p99"] if idle["n"] else float("nan")
    summary: list[dict[str, Any]] = [
        {
            "metric": "sustained ingest, rows/s (64K-row batches, WAL fsync per batch)",
            "value": round(alone["rows_per_s"]),
            "unit": "rows/s",
            "target": f"≥ {TARGET_ROWS_PER_S:,} rows/s",
            "ok": alone["rows_per_s"] >= TARGET_ROWS_PER_S,
        },
        {
            "metric": "ingest call (ack) p50 / p99",
            "value": f"{alone['ack_ms']['p50']:.1f} / {alone['ack_ms']['p99']:.1f}",
            "unit": "ms",
        },
        {
            "metric": "ingest rows/s with the query workload running",
            "value": round(during["rows_per_s"]),
            "unit": "rows/s",
        },
        {"metric": "query p99 idle", "value": round(idle["p99"], 2), "unit": "ms"},
        {"metric": "query p99 during ingest", "value": round(busy["p99"], 2), "unit": "ms"},
        {
            "metric": "query p99 during ingest / idle",
            "value": round(ratio, 2),
            "unit": "x",
            "target": f"≤ {TARGET_P99_RATIO:g}x",
            "ok": ratio <= TARGET_P99_RATIO,
        },
    ]
    for kind in ("rollup", "raw"):
        probes = vis[kind]
        seen = sum(1 for p in probes if p["ok"])
        summary.append(
            {
                "metric": f"ack → next statement saw the batch ({kind}: {vis['routes'].get(kind, '?')})",
                "value": f"{seen} of {len(probes)}",
                "target": "all",
                "ok": seen == len(probes),
            }
        )
        summary.append(
            {
                "metric": f"ack → answer of that statement, p50 ({kind})",
                "value": round(summarize_ms([p["visible_ms"] for p in probes])["p50"], 2),
                "unit": "ms",
            }
        )
    per_statement = []
    for name, _ in statements:
        a = [ms for _, n, ms in samples if n == f"idle:{name}"]
        b = [ms for _, n, ms in samples if n == f"ingest:{name}"]
        sa, sb = summarize_ms(a), summarize_ms(b)
        per_statement.append(
            [
                name,
                routes.get(name, "?"),
                sa["n"],
                round(sa["p50"], 2),
                round(sa["p99"], 2),
                sb["n"],
                round(sb["p50"], 2),
                round(sb["p99"], 2),
            ]
        )
    per_statement.append(
        [
            "**all**",
            "",
            idle["n"],
            round(idle["p50"], 2),
            round(idle["p99"], 2),
            busy["n"],
            round(busy["p50"], 2),
            round(busy["p99"], 2),
        ]
    )
    notes = [
        f"Ingest alone: {alone['rows']:,} rows in {alone['batches']} calls over {alone['seconds']:.1f} s; with queries: "
        f"{during['rows']:,} rows in {during['batches']} calls over {during['seconds']:.1f} s "
        f"(ack p50 {during['ack_ms']['p50']:.1f} ms, p99 {during['ack_ms']['p99']:.1f} ms). The hot tail flushes to "
        "warm Parquet every `[ingest] flush_rows` (1,000,000) rows, in the background.",
        f"Query workload: `{QUERY_WORKLOAD}` round robin on one connection (one statement at a time). The server "
        "runs with no result cache (`TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0`): idle, it would answer these repeated "
        "statements from memory, while every ingest ack moves the data version, so the ratio would measure the cache "
        "rather than what ingest costs the statements that run.",
        f"Visibility: {VISIBILITY_ROWS:,}-row marker batches, alternating which probe goes first; 'ok' means the count "
        "equalled the batch size.",
        f"The machine is shared with other test runs; load average (1/5/15 min) at the start and after each phase: {load}.",
    ]
    if errors:
        notes.append(f"Query errors during the run ({len(errors)}): {'; '.join(errors[:5])}")
    return {
        "title": "Ingest: sustained ADBC bulk ingest, queries under ingest, visibility",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": data_description(rows) + "; the server ingests into a copy",
        "summary": summary,
        "tables": [
            {
                "title": "Query latency (ms), idle vs during ingest",
                "columns": [
                    "statement",
                    "route",
                    "idle n",
                    "idle p50",
                    "idle p99",
                    "ingest n",
                    "ingest p50",
                    "ingest p99",
                ],
                "rows": per_statement,
            },
            {
                "title": "Ack to visibility",
                "columns": [
                    "probe",
                    "route",
                    "saw all rows",
                    "ingest call p50 ms",
                    "ack → answer p50 ms",
                    "ack → answer max ms",
                ],
                "rows": [
                    [
                        kind,
                        vis["routes"].get(kind, "?"),
                        f"{sum(1 for p in vis[kind] if p['ok'])} of {len(vis[kind])}",
                        round(summarize_ms([p["ingest_ms"] for p in vis[kind]])["p50"], 2),
                        round(summarize_ms([p["visible_ms"] for p in vis[kind]])["p50"], 2),
                        round(max(p["visible_ms"] for p in vis[kind]), 2),
                    ]
                    for kind in ("rollup", "raw")
                ],
            },
        ],
        "notes": notes,
        "raw": {
            "alone": alone,
            "during": during,
            "idle": idle,
            "busy": busy,
            "visibility": vis,
            "routes": routes,
            "load": load,
        },
    }
