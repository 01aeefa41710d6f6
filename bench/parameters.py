"""Prepared statements with parameters: 100 value sets for one text vs 100 literal texts.

One rollup-routed dashboard statement (``day_country_type``: a country's events by type over a
day range) run 100 times through one ADBC cursor, each time with values never used before in
the run:

* ``bound``: one text with ``?`` placeholders; ADBC prepares it once and each call binds one
  value set (DoPut of the parameters, GetFlightInfo, DoGet). What a prepared-statement API
  promises: plan once per statement shape, bind per value set.
* ``literal``: the same values written into the text, a new text per call (ADBC prepares
  each: CreatePreparedStatement, GetFlightInfo, DoGet, then closes the previous one).

Each mode has its own cursor (ADBC re-prepares when a cursor's text changes), and the first
bound call on a new cursor (CreatePreparedStatement of the text with placeholders, whose
result schema the server plans with NULL values, then the bound run) is timed apart.

The two alternate call by call, against two servers on the same data, side by side in the
same rounds: the result cache off (``TIERFLIGHT_SERVER__RESULT_CACHE_BYTES=0``) and on (its
default: new values miss it anyway). ``SELECT 1`` through the same cursor (a repeated text)
is the round-trip reference.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from bench.common import (
    BenchContext,
    TierflightServer,
    load_average,
    log,
    server_copy,
    start_tierflight,
    summarize_ms,
)
from bench.registry import Result, benchmark

CALLS = 100
PREPARES = 10
PARAM_SQL = (
    "SELECT type, COUNT(*) AS events, SUM(bid_price) AS spend FROM events "
    "WHERE country = ? AND day BETWEEN ? AND ? GROUP BY type ORDER BY type"
)
COUNTRIES = ("US", "GB", "DE", "JP", "FR", "BR", "IN", "CA", "AU", "ES", "IT", "NL")
FIRST_DAY = dt.date(2024, 1, 1)
NO_CACHE_ENV = {"TIERFLIGHT_SERVER__RESULT_CACHE_BYTES": "0"}
MODES = ("bound", "literal")


def literal_sql(values: tuple[str, dt.date, dt.date]) -> str:
    country, lo, hi = values
    return PARAM_SQL.replace("country = ?", f"country = '{country}'").replace(
        "BETWEEN ? AND ?", f"BETWEEN DATE '{lo.isoformat()}' AND DATE '{hi.isoformat()}'"
    )


def value_sets(seed: int = 20) -> Iterator[tuple[str, dt.date, dt.date]]:
    """Distinct (country, first day, last day) triples in random order, never repeating."""
    rng = random.Random(seed)
    seen: set[tuple[str, dt.date, dt.date]] = set()
    while True:
        lo = FIRST_DAY + dt.timedelta(days=rng.randrange(330))
        values = (rng.choice(COUNTRIES), lo, lo + dt.timedelta(days=rng.randrange(1, 30)))
        if values not in seen:
            seen.add(values)
            yield values


def _bound(cur: Any, values: tuple[str, dt.date, dt.date]) -> None:
    cur.execute(PARAM_SQL, values)
    cur.fetch_arrow_table()


def _literal(cur: Any, values: tuple[str, dt.date, dt.date]) -> None:
    cur.execute(literal_sql(values))
    cur.fetch_arrow_table()


def _select1(cur: Any) -> None:
    cur.execute("SELECT 1")
    cur.fetchall()


def _timed(fn: Any) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


@benchmark("parameters")
def run(ctx: BenchContext) -> Result:
    import adbc_driver_flightsql.dbapi as fsql

    rows = ctx.rows
    rounds = 1 if ctx.quick else max(1, ctx.repeats)
    data_dir, env = ctx.demo_data(rows=rows, days=366)
    work = ctx.scratch("parameters")
    values = value_sets()
    servers: dict[str, TierflightServer] = {}
    samples: dict[str, dict[str, list[list[float]]]] = {}
    select1: dict[str, list[float]] = {}
    load = [load_average()]
    nocache_dir = server_copy(data_dir, "nocache")  # one server per data dir
    try:
        servers["result cache off"] = start_tierflight(
            nocache_dir, {**env, **NO_CACHE_ENV}, log_path=work / "nocache.log", timeout=1800
        )
        servers["result cache on"] = start_tierflight(
            data_dir, env, log_path=work / "cache.log", timeout=1800
        )
        conns = {name: fsql.connect(s.uri, autocommit=True) for name, s in servers.items()}
        # A cursor per mode: ADBC keeps a prepared statement while its cursor's text is unchanged,
        # so alternating texts on one cursor would prepare the bound text again every call.
        bound_cur = {name: c.cursor() for name, c in conns.items()}
        literal_cur = {name: c.cursor() for name, c in conns.items()}
        try:
            # Same answers both ways, and warm (connection, rollups, first prepare).
            for name in servers:
                v = next(values)
                bound_cur[name].execute(PARAM_SQL, v)
                bound = bound_cur[name].fetch_arrow_table()
                literal_cur[name].execute(literal_sql(v))
                if literal_cur[name].fetch_arrow_table().to_pylist() != bound.to_pylist():
                    raise RuntimeError("bound and literal statements gave different answers")
            for name in servers:
                samples[name] = {m: [] for m in (*MODES, "prepare")}
                select1[name] = []
            for r in range(rounds):
                order = list(servers) if r % 2 == 0 else list(servers)[::-1]
                for name in order:
                    bound_ms: list[float] = []
                    literal_ms: list[float] = []
                    for _ in range(CALLS):
                        bound_ms.append(_timed(partial(_bound, bound_cur[name], next(values))))
                        literal_ms.append(_timed(partial(_literal, literal_cur[name], next(values))))
                    for _ in range(CALLS):
                        select1[name].append(_timed(partial(_select1, literal_cur[name])))
                    # What the first call on a new cursor pays: CreatePreparedStatement of the
                    # text with placeholders (its result schema planned with NULL values), then
                    # bind and run.
                    prepare_ms: list[float] = []
                    for _ in range(PREPARES):
                        with conns[name].cursor() as fresh:
                            prepare_ms.append(_timed(partial(_bound, fresh, next(values))))
                    samples[name]["bound"].append(bound_ms)
                    samples[name]["literal"].append(literal_ms)
                    samples[name]["prepare"].append(prepare_ms)
                    log(
                        f"round {r + 1}/{rounds} {name}: bound p50 {summarize_ms(bound_ms)['p50']:.2f} ms, "
                        f"literal p50 {summarize_ms(literal_ms)['p50']:.2f} ms, "
                        f"new cursor's first bound call p50 {summarize_ms(prepare_ms)['p50']:.2f} ms"
                    )
                load.append(load_average())
        finally:
            for cur in (*bound_cur.values(), *literal_cur.values()):
                cur.close()
            for conn in conns.values():
                conn.close()
    finally:
        for server in servers.values():
            server.stop()

    def best(name: str, mode: str) -> dict[str, float]:
        stats = [summarize_ms(s) for s in samples[name][mode]]
        best_stats = min(stats, key=lambda s: s["p50"])
        best_stats["total"] = min(sum(s) for s in samples[name][mode])
        return best_stats

    table_rows: list[list[Any]] = []
    summary: list[dict[str, Any]] = []
    for name in servers:
        b, lit = best(name, "bound"), best(name, "literal")
        s1 = summarize_ms(select1[name])
        pre = best(name, "prepare")
        for mode, st in (
            ("bound (one text, 100 value sets)", b),
            ("literal (100 texts)", lit),
            (f"new cursor: prepare + first bound call ({PREPARES} calls)", pre),
        ):
            table_rows.append(
                [
                    name,
                    mode,
                    round(st["p50"], 3),
                    round(st["p99"], 3),
                    round(st["mean"], 3),
                    round(st["total"], 1),
                ]
            )
        table_rows.append([name, "SELECT 1, same text (reference)", round(s1["p50"], 3), round(s1["p99"], 3),
                           round(s1["mean"], 3), "-"])  # fmt: skip
        summary.append(
            {
                "metric": f"{name}: p50 bound / p50 literal",
                "value": round(b["p50"] / lit["p50"], 2),
                "unit": "x",
            }
        )
        summary.append(
            {
                "metric": f"{name}: 100 calls, bound vs literal (best round)",
                "value": f"{b['total']:.1f} / {lit['total']:.1f}",
                "unit": "ms",
            }
        )
        summary.append(
            {
                "metric": f"{name}: bound p50 minus SELECT 1 p50",
                "value": round(b["p50"] - s1["p50"], 3),
                "unit": "ms",
            }
        )
    return {
        "title": "Prepared statements with parameters: 100 value sets for one text vs 100 literal texts",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": f"{rows:,} demo events over 366 days; the statement is answered by the `day_country_type` rollup",
        "summary": summary,
        "tables": [
            {
                "title": f"Per call, ms (best round of {rounds}; {CALLS} calls per mode and round)",
                "columns": ["server", "statement", "p50 ms", "p99 ms", "mean ms", "100 calls ms"],
                "rows": table_rows,
            }
        ],
        "notes": [
            f"Statement: `{PARAM_SQL}`; values: a country and a day range of 2 to 30 days in 2024, every set "
            "used once in the run. Bound and literal calls alternate (a cursor each); rounds alternate the order of "
            "the servers.",
            "The machine is shared with other work: compare the rows of this section with each other. Load "
            f"average (1/5/15 min) at the start and after each round: {load}.",
        ],
        "raw": {"samples": samples, "select1": select1, "load": load},
    }
