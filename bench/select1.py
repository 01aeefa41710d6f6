"""``SELECT 1`` round trips: tierflight against ROAPI, through ADBC and through raw Flight.

Three ways a client runs one statement, each timed call by call:

* ``adbc_prepare_each``: a new ADBC cursor per call (``with conn.cursor() as cur:
  cur.execute(sql); cur.fetchall()``), the common application pattern. The ADBC Flight SQL
  driver prepares every statement, so that is four RPCs: CreatePreparedStatement,
  GetFlightInfo(CommandPreparedStatementQuery), DoGet, ClosePreparedStatement.
* ``adbc_cursor_reuse``: one cursor, ``cur.execute(sql); cur.fetchall()`` again and again.
  ADBC's DB-API layer keeps the prepared statement while the SQL text is unchanged, so each
  call is GetFlightInfo(CommandPreparedStatementQuery) + DoGet.
* ``flight_raw``: pyarrow.flight GetFlightInfo(CommandStatementQuery) + DoGet, no prepare and
  no ADBC.

The same clients run against ROAPI (a Rust Flight SQL server on DataFusion, from PyPI) and
against the *floor*: a minimal pyarrow.flight server in Python that answers these RPCs with
constants (``bench/floor.py``); no Python server can be faster, and its figures show how
much of a round trip is the client and the transport rather than the server.

tierflight runs twice, side by side in the same rounds: with its defaults (``SELECT 1`` reads
no table, so after the first call its answer is reused from the result cache, ``[server]
result_cache_bytes``, and DuckDB does not run: the cost of the protocol path) and with the
result cache off (``TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0``: every call plans, opens a DuckDB
cursor and runs, as every statement with a new text does; the plan cache still answers).
The uncached-path profile splits the second by stage.

Rounds rotate the order of the servers so background load hits them alike; the report gives
the round with the best p50 and the spread of p50 over rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    BenchContext,
    ExternalServer,
    TierflightServer,
    Unavailable,
    flightsql_command,
    load_average,
    log,
    measure_latency,
    server_copy,
    start_floor,
    start_roapi,
    start_tierflight,
    summarize_ms,
)
from bench.registry import Result, benchmark

SQL = "SELECT 1"
TARGET_P50_MS = 1.3
TARGET_ROAPI_RATIO = 1.1  # result cache off, ADBC reused and new cursor (issue 20)
NO_CACHE = "tierflight_nocache"
NO_CACHE_ENV = {"TIERFLIGHT_SERVER__RESULT_CACHE_BYTES": "0"}
VARIANTS = ("adbc_prepare_each", "adbc_cursor_reuse", "flight_raw")
VARIANT_LABELS = {
    "adbc_prepare_each": "ADBC, new cursor per call (prepare + execute + close: 4 RPCs)",
    "adbc_cursor_reuse": "ADBC, one cursor reused (prepared once: GetFlightInfo + DoGet)",
    "flight_raw": "pyarrow.flight GetFlightInfo + DoGet (no prepare, no ADBC)",
}


class Client:
    """Connections to one server and a call function per variant."""

    def __init__(self, uri: str) -> None:
        import adbc_driver_flightsql.dbapi as fsql
        import pyarrow.flight as flight

        self.conn = fsql.connect(uri, autocommit=True)
        self.cursor = self.conn.cursor()
        self.flight = flight.connect(uri)
        self.descriptor = flight.FlightDescriptor.for_command(flightsql_command(SQL))

    def adbc_prepare_each(self) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(SQL)
            return cur.fetchall()

    def adbc_cursor_reuse(self) -> list[tuple[Any, ...]]:
        self.cursor.execute(SQL)
        return self.cursor.fetchall()

    def flight_raw(self) -> Any:
        info = self.flight.get_flight_info(self.descriptor)
        return self.flight.do_get(info.endpoints[0].ticket).read_all()

    def call(self, variant: str) -> Callable[[], object]:
        fn: Callable[[], object] = getattr(self, variant)
        return fn

    def check(self) -> None:
        for variant in VARIANTS:
            out: Any = self.call(variant)()
            rows = out if isinstance(out, list) else out.to_pylist()
            values = [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]
            if values != [(1,)]:
                raise RuntimeError(f"{variant}: SELECT 1 returned {values!r}")

    def close(self) -> None:
        self.cursor.close()
        self.conn.close()
        self.flight.close()


def _roapi_table(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = path / "t.parquet"
    if not file.exists():
        pq.write_table(pa.table({"a": pa.array(range(1000), pa.int64())}), file)
    return file


@benchmark("select1")
def run(ctx: BenchContext) -> Result:
    calls, warmup = (300, 50) if ctx.quick else (2000, 200)
    rounds = 1 if ctx.quick else max(1, ctx.repeats)
    work = ctx.scratch("select1")
    data_dir, env = ctx.demo_data(rows=100_000, days=30)
    notes: list[str] = []

    servers: dict[str, TierflightServer | ExternalServer] = {}
    clients: dict[str, Client] = {}
    nocache_dir = server_copy(data_dir, "nocache")  # one server per data dir
    try:
        tf = start_tierflight(data_dir, env, log_path=work / "tierflight.log")
        servers["tierflight"] = tf
        log(f"tierflight at {tf.uri} (pid {tf.pid})")
        nc = start_tierflight(nocache_dir, {**env, **NO_CACHE_ENV}, log_path=work / "tierflight-nocache.log")
        servers[NO_CACHE] = nc
        log(f"tierflight, result cache off, at {nc.uri} (pid {nc.pid})")
        roapi_version = None
        try:
            ro = start_roapi({"t": _roapi_table(work)}, log_path=work / "roapi.log")
            servers["roapi"] = ro
            roapi_version = ro.version
            log(f"{ro.version} at {ro.uri}")
        except Unavailable as exc:
            reason = f"ROAPI skipped: {exc}"
            log(reason)
            notes.append(reason)
        try:
            servers["floor"] = start_floor()
            log(f"floor server at {servers['floor'].uri}")
        except Unavailable as exc:
            notes.append(str(exc))
        for name, server in servers.items():
            clients[name] = Client(server.uri)
            clients[name].check()

        runs: dict[str, dict[str, list[dict[str, float]]]] = {n: {v: [] for v in VARIANTS} for n in servers}
        load: list[list[float]] = [load_average()]
        for r in range(rounds):
            order = list(servers)[r % len(servers) :] + list(servers)[: r % len(servers)]
            for name in order:
                for variant in VARIANTS:
                    samples = measure_latency(clients[name].call(variant), calls, warmup)
                    stats = summarize_ms(samples)
                    runs[name][variant].append(stats)
                    log(
                        f"round {r + 1}/{rounds} {name:10s} {variant:18s} "
                        f"p50 {stats['p50']:.3f} ms  p99 {stats['p99']:.3f} ms"
                    )
            load.append(load_average())
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.stop()

    def best(name: str, variant: str) -> dict[str, float]:
        return min(runs[name][variant], key=lambda s: s["p50"])

    table_rows: list[list[Any]] = []
    for name in servers:
        for variant in VARIANTS:
            b = best(name, variant)
            p50s = [s["p50"] for s in runs[name][variant]]
            table_rows.append(
                [
                    name,
                    VARIANT_LABELS[variant],
                    round(b["p50"], 3),
                    round(b["p99"], 3),
                    round(b["mean"], 3),
                    f"{min(p50s):.3f} - {max(p50s):.3f}",
                ]
            )

    summary: list[dict[str, Any]] = []
    for variant in ("adbc_prepare_each", "adbc_cursor_reuse"):
        p50 = best("tierflight", variant)["p50"]
        summary.append(
            {
                "metric": f"tierflight p50, {VARIANT_LABELS[variant]}",
                "value": round(p50, 3),
                "unit": "ms",
                "target": f"≤ {TARGET_P50_MS} ms",
                "ok": p50 <= TARGET_P50_MS,
            }
        )
    for variant in VARIANTS:
        summary.append(
            {
                "metric": f"tierflight p50, result cache off, {VARIANT_LABELS[variant]}",
                "value": round(best(NO_CACHE, variant)["p50"], 3),
                "unit": "ms",
            }
        )
    summary.append(
        {
            "metric": "tierflight p99, ADBC new cursor per call",
            "value": round(best("tierflight", "adbc_prepare_each")["p99"], 3),
            "unit": "ms",
        }
    )
    summary.append(
        {
            "metric": f"tierflight p50, {VARIANT_LABELS['flight_raw']}",
            "value": round(best("tierflight", "flight_raw")["p50"], 3),
            "unit": "ms",
        }
    )
    ratios: dict[str, float] = {}
    if "roapi" in servers:
        for variant in VARIANTS:
            ratio = best("tierflight", variant)["p50"] / best("roapi", variant)["p50"]
            ratios[variant] = ratio
            summary.append(
                {
                    "metric": f"p50 ratio tierflight / ROAPI, {VARIANT_LABELS[variant]}",
                    "value": round(ratio, 2),
                    "unit": "x",
                }
            )
        for variant in VARIANTS:
            ratio = best(NO_CACHE, variant)["p50"] / best("roapi", variant)["p50"]
            ratios[f"{variant}_nocache"] = ratio
            targeted = variant != "flight_raw"
            summary.append(
                {
                    "metric": f"p50 ratio tierflight (result cache off) / ROAPI, {VARIANT_LABELS[variant]}",
                    "value": round(ratio, 2),
                    "unit": "x",
                    **(
                        {"target": f"≤ {TARGET_ROAPI_RATIO}x", "ok": ratio <= TARGET_ROAPI_RATIO}
                        if targeted
                        else {}
                    ),
                }
            )
    if "floor" in servers:
        for variant in ("adbc_prepare_each", "adbc_cursor_reuse"):
            summary.append(
                {
                    "metric": f"floor server p50 (client + transport only), {VARIANT_LABELS[variant]}",
                    "value": round(best("floor", variant)["p50"], 3),
                    "unit": "ms",
                }
            )
    notes.append(
        f"{calls:,} sequential calls per run after {warmup} warm-up calls, {rounds} round(s) per server and "
        "variant, rounds rotating the order of the servers; 'best' is the run with the lowest p50, and the last "
        "column is the range of p50 over all rounds (the noise). Client: Python in the same machine, GC paused "
        f"while timing. Load average (1/5/15 min) before and after each round: {load}."
    )
    if roapi_version:
        notes.append(f"ROAPI: `{roapi_version}` from PyPI serving a 1,000-row Parquet table as `t`.")
    return {
        "title": "SELECT 1 round trip (tierflight vs ROAPI)",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": "tierflight (result cache on, and off: `tierflight_nocache`) on 100,000 demo events (30 days, "
        "the query reads no table); ROAPI on a 1,000-row table",
        "summary": summary,
        "tables": [
            {
                "title": "Per server and client path (best round)",
                "columns": ["server", "client path", "p50 ms", "p99 ms", "mean ms", "p50 over rounds"],
                "rows": table_rows,
            }
        ],
        "notes": notes,
        "raw": {
            "calls": calls,
            "warmup": warmup,
            "rounds": rounds,
            "runs": runs,
            "ratios": ratios,
            "load": load,
        },
    }
