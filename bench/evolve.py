"""Schema evolution: ingest rows/s of batches that add a column, against batches that do not.

A ``tierflight serve`` subprocess with ``[tables.events] evolve = "add_columns"``
(``TIERFLIGHT_TABLES__EVENTS__EVOLVE``) on a copy of a small demo data dir takes
``adbc_ingest`` calls of demo events dated on the day before the pinned ``now``, one client,
back to back (after one warm-up batch), in three phases:

1. *same schema*: batches with the table's columns;
2. *each batch adds a column*: batch k carries a new nullable column ``extra_k`` (DOUBLE), so
   every call evolves the schema: validation against the evolved schema, the schema registry
   written and fsynced, the hot tail conformed and every cached schema (planner, catalog,
   parameter types) dropped under the swap lock, then the usual WAL write and rollup merge;
3. *after*: batches carrying every added column (the table's new schema, no change).

Rows per second count the rows acknowledged over the wall time of the calls.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from typing import Any

from bench.common import BenchContext, log, start_tierflight
from bench.registry import Result, benchmark

NOW = dt.date(2025, 1, 1)


def _batches(rows: int, count: int) -> list[Any]:
    from tierflight.demo.generate import generate_days

    day = NOW - dt.timedelta(days=1)
    [(_, table)] = list(generate_days(rows * count, day, 1, seed=77))
    return [table.slice(i * rows, rows).combine_chunks() for i in range(count)]


def _ingest(uri: str, batches: list[Any]) -> tuple[int, float]:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        rows = sum(int(cur.adbc_ingest("events", b, mode="append")) for b in batches)
        return rows, time.perf_counter() - started


@benchmark("evolve")
def run(ctx: BenchContext) -> Result:
    import pyarrow as pa

    # The last phase carries every added column: a batch stays under ADBC's 16 MiB message.
    rows, count = (10_000, 8) if ctx.quick else (32_768, 20)
    source, env = ctx.demo_data(20_000 if ctx.quick else 200_000, days=30)
    work = ctx.scratch("evolve") / "data"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    env = {**env, "TIERFLIGHT_TABLES__EVENTS__EVOLVE": "add_columns"}
    plain = _batches(rows, count)
    adding = [b.append_column(f"extra_{k}", pa.array([float(i % 7) for i in range(b.num_rows)])) for k, b in enumerate(plain)]
    names = [f"extra_{k}" for k in range(count)]
    after = []
    for b in plain:
        for n in names:
            b = b.append_column(n, pa.array([1.0] * b.num_rows) if n == names[0] else pa.nulls(b.num_rows, pa.float64()))
        after.append(b)
    server = start_tierflight(work, env=env, log_path=ctx.scratch("evolve") / "server.log")
    phases: list[tuple[str, int, float]] = []
    try:
        _ingest(server.uri, plain[:1])  # warm-up: connection, first rollup merge
        for label, batches in (("same schema", plain), ("each batch adds a column", adding), ("after: every added column", after)):
            n, seconds = _ingest(server.uri, batches)
            phases.append((label, n, seconds))
            log(f"evolve: {label}: {n:,} rows in {seconds:.2f} s ({n / seconds:,.0f} rows/s)")
    finally:
        server.stop()
    base = phases[0][1] / phases[0][2]
    evolving = phases[1][1] / phases[1][2]
    return {
        "title": "Schema evolution: ingest of batches that add a column",
        "description": __doc__,
        "data": f"{count} batches of {rows:,} demo events per phase, one ADBC client",
        "summary": [
            {"metric": "ingest, each batch adds a column", "value": round(evolving), "unit": "rows/s"},
            {"metric": "ingest, same schema", "value": round(base), "unit": "rows/s"},
            {"metric": "cost of a schema change per batch", "value": round((1 / evolving - 1 / base) * rows * 1000, 1), "unit": "ms"},
        ],
        "tables": [
            {
                "title": "Phases",
                "columns": ["phase", "rows", "seconds", "rows/s", "ms per batch"],
                "rows": [[p, n, round(s, 2), round(n / s), round(s / count * 1000, 1)] for p, n, s in phases],
            }
        ],
        "raw": {"phases": phases, "batch_rows": rows, "batches": count},
    }
