"""A large result streamed to the client: 10M rows x 5 columns through ADBC vs DuckDB in-process.

The statement generates its rows (no storage is read), so this measures how fast tierflight
gets DuckDB's Arrow output to a client: DuckDB executes, the server splits the result into
Flight messages, gRPC carries them over loopback, and the ADBC driver assembles an Arrow
table (``cursor.fetch_arrow_table()``). The reference is DuckDB producing the same Arrow
table in the benchmark process (``duckdb.connect().sql(...).to_arrow_table()``), the
ceiling for a server built on DuckDB. Raw pyarrow.flight (GetFlightInfo + DoGet +
``read_all``) separates the ADBC driver's share, and the floor server of ``bench/floor.py``
streaming a prebuilt table of the same shape gives the transport's ceiling (gRPC and
pyarrow.flight with no query engine behind them). Throughput is ``table.nbytes`` (the
Arrow buffers' size) divided by the wall time from sending the statement to holding the
whole table; GB is 10^9 bytes.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import Any

from bench.common import (
    BenchContext,
    Stopwatch,
    Unavailable,
    flightsql_command,
    gc_paused,
    load_average,
    log,
    start_floor,
    start_tierflight,
)
from bench.registry import Result, benchmark

TARGET_GBPS = 1.0
TARGET_RATIO = 0.5


def statement(rows: int) -> str:
    return (
        "SELECT range AS a, range * 2 AS b, range::DOUBLE AS c, range % 1000 AS d, (range * 7)::DOUBLE AS e "
        f"FROM range({rows})"
    )


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    with gc_paused(), Stopwatch() as sw:
        table = fn()
    return sw.seconds, table


@benchmark("large_result")
def run(ctx: BenchContext) -> Result:
    import adbc_driver_flightsql.dbapi as fsql
    import duckdb
    import pyarrow.flight as flight

    rows = 1_000_000 if ctx.quick else 10_000_000
    runs = 2 if ctx.quick else max(3, ctx.repeats + 2)
    sql = statement(rows)
    work = ctx.scratch("large_result")
    data_dir, env = ctx.demo_data(rows=100_000, days=30)

    def in_process() -> Any:
        con = duckdb.connect()
        try:
            return con.sql(sql).to_arrow_table()
        finally:
            con.close()

    def in_process_reader() -> Any:
        con = duckdb.connect()
        try:
            return con.sql(sql).to_arrow_reader().read_all()
        finally:
            con.close()

    with contextlib.ExitStack() as stack:
        server = start_tierflight(data_dir, env, log_path=work / "tierflight.log")
        stack.callback(server.stop)
        log(f"tierflight at {server.uri} (pid {server.pid})")
        conn = fsql.connect(server.uri, autocommit=True)
        stack.callback(conn.close)
        client = flight.connect(server.uri)
        stack.callback(client.close)
        descriptor = flight.FlightDescriptor.for_command(flightsql_command(sql))

        def adbc() -> Any:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()

        def raw() -> Any:
            info = client.get_flight_info(descriptor)
            return client.do_get(info.endpoints[0].ticket).read_all()

        paths: dict[str, Callable[[], Any]] = {
            "duckdb_in_process": in_process,
            "duckdb_reader": in_process_reader,
            "adbc": adbc,
            "flight_raw": raw,
        }
        try:
            floor = start_floor()
            stack.callback(floor.stop)
            floor_client = flight.connect(floor.uri)
            stack.callback(floor_client.close)
            ticket = flight.Ticket(f"range:{rows}".encode())
            paths["floor_transport"] = lambda: floor_client.do_get(ticket).read_all()
        except Unavailable as exc:
            log(str(exc))

        seconds: dict[str, list[float]] = {name: [] for name in paths}
        nbytes: dict[str, int] = {}
        batches: dict[str, int] = {}
        load = [load_average()]
        reference: Any = None
        for name, fn in paths.items():  # warm-up, and check every path returns the same table
            _, table = _timed(fn)
            if reference is None:
                reference = table
            elif table.num_rows != reference.num_rows or table.schema.types != reference.schema.types:
                raise RuntimeError(f"{name}: {table.num_rows} rows {table.schema} != {reference.schema}")
            nbytes[name] = table.nbytes
            batches[name] = table.column(0).num_chunks
            del table
        for r in range(runs):
            for name, fn in paths.items():
                secs, table = _timed(fn)
                del table
                seconds[name].append(secs)
                log(f"run {r + 1}/{runs} {name:18s} {secs:.3f} s  {nbytes[name] / secs / 1e9:.2f} GB/s")
            load.append(load_average())

    def gbps(name: str, secs: float) -> float:
        return nbytes[name] / secs / 1e9

    best = {name: gbps(name, min(s)) for name, s in seconds.items()}
    med = {name: gbps(name, statistics.median(s)) for name, s in seconds.items()}
    ratio_best = best["adbc"] / best["duckdb_in_process"]
    ratio_med = med["adbc"] / med["duckdb_in_process"]
    fastest = max(best["duckdb_in_process"], best["duckdb_reader"])
    ratio_fastest = best["adbc"] / fastest
    labels = {
        "duckdb_in_process": "DuckDB in-process `to_arrow_table()`",
        "duckdb_reader": "DuckDB in-process `to_arrow_reader().read_all()`",
        "adbc": "tierflight → ADBC `fetch_arrow_table()`",
        "flight_raw": "tierflight → pyarrow.flight DoGet `read_all()`",
        "floor_transport": "floor server, prebuilt table → pyarrow.flight DoGet `read_all()`",
    }
    table_rows = [
        [
            labels[name],
            f"{nbytes[name] / 1e6:,.0f}",
            batches[name],
            round(min(seconds[name]), 3),
            round(statistics.median(seconds[name]), 3),
            round(best[name], 2),
            round(med[name], 2),
        ]
        for name in paths
    ]
    return {
        "title": f"Large result: {rows:,} rows x 5 columns",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": f"{rows:,} rows x 5 columns (3 BIGINT, 2 DOUBLE) generated by `range()`, "
        f"{nbytes['adbc'] / 1e6:,.0f} MB of Arrow",
        "summary": [
            {
                "metric": "ADBC throughput, best run",
                "value": round(best["adbc"], 2),
                "unit": "GB/s",
                "target": f"≥ {TARGET_GBPS:g} GB/s",
                "ok": best["adbc"] >= TARGET_GBPS,
            },
            {"metric": "ADBC throughput, median run", "value": round(med["adbc"], 2), "unit": "GB/s"},
            {
                "metric": "ADBC / DuckDB in-process `to_arrow_table()`, best runs",
                "value": round(ratio_best, 2),
                "unit": "x",
                "target": f"≥ {TARGET_RATIO:g}x",
                "ok": ratio_best >= TARGET_RATIO,
            },
            {
                "metric": "ADBC / DuckDB in-process `to_arrow_table()`, median runs",
                "value": round(ratio_med, 2),
                "unit": "x",
            },
            {
                "metric": "ADBC / fastest in-process DuckDB path, best runs",
                "value": round(ratio_fastest, 2),
                "unit": "x",
                "target": f"≥ {TARGET_RATIO:g}x",
                "ok": ratio_fastest >= TARGET_RATIO,
            },
            {
                "metric": "DuckDB in-process `to_arrow_table()`, best run",
                "value": round(best["duckdb_in_process"], 2),
                "unit": "GB/s",
            },
            {"metric": "raw Flight DoGet, best run", "value": round(best["flight_raw"], 2), "unit": "GB/s"},
            *(
                [
                    {
                        "metric": "transport ceiling (floor server, prebuilt table), best run",
                        "value": round(best["floor_transport"], 2),
                        "unit": "GB/s",
                    }
                ]
                if "floor_transport" in best
                else []
            ),
        ],
        "tables": [
            {
                "title": f"Per path ({runs} timed runs each after one warm-up, interleaved)",
                "columns": ["path", "MB", "batches", "best s", "median s", "best GB/s", "median GB/s"],
                "rows": table_rows,
            }
        ],
        "notes": [
            "`SQL: " + sql + "`",
            "Server and client share the machine's cores (DuckDB in the server runs with duckdb.threads from "
            "conf/tierflight.toml; in-process DuckDB uses its default, all cores). "
            f"Load average (1/5/15 min) before and after each round: {load}.",
        ],
        "raw": {
            "rows": rows,
            "runs": runs,
            "seconds": seconds,
            "nbytes": nbytes,
            "batches": batches,
            "load": load,
        },
    }
