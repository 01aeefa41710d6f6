"""Where the server's time goes in one ADBC ``SELECT 1`` (prepare, execute, fetch, close).

An in-process tierflight server with its Flight handlers wrapped by timers. A raw
pyarrow.flight client replays exactly the RPCs the ADBC driver sends for a new cursor
(CreatePreparedStatement, GetFlightInfo(CommandPreparedStatementQuery), DoGet,
ClosePreparedStatement) and times each one; the server side records how long its Python
handler ran (for DoGet: the handler plus streaming the result generator). Client time minus
handler time is what gRPC, pyarrow's Flight server and loopback cost. For scale, the same
RPCs against a minimal pyarrow.flight server in the same process (handlers that return a
constant 1-row answer) give the floor of this architecture. A second pass with cProfile
enabled inside the handlers lists the hottest functions (times under cProfile are inflated;
read them as proportions).
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    CONFIG,
    BenchContext,
    gc_paused,
    log,
    summarize_ms,
)
from bench.floor import start_in_thread as start_floor_in_thread
from bench.registry import Result, benchmark

SQL = "SELECT 1"
RPCS = ("CreatePreparedStatement", "GetFlightInfo", "DoGet", "ClosePreparedStatement")
ANY_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def _pack(msg: Any) -> bytes:
    from google.protobuf import any_pb2

    out = any_pb2.Any()
    out.Pack(msg, type_url_prefix="type.googleapis.com/")
    return out.SerializeToString()


class Recorder:
    """Server-side handler timings (and optional cProfile) per RPC."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.profiles: dict[str, cProfile.Profile] | None = None
        self._lock = threading.Lock()

    def add(self, rpc: str, ms: float) -> None:
        with self._lock:
            self.samples.setdefault(rpc, []).append(ms)

    def profiler(self, rpc: str) -> cProfile.Profile | None:
        if self.profiles is None:
            return None
        with self._lock:
            return self.profiles.setdefault(rpc, cProfile.Profile())


def _rpc_name(method: str, args: tuple[Any, ...]) -> str:
    if method == "do_action":
        return str(args[1].type)
    return {
        "get_flight_info": "GetFlightInfo",
        "do_get": "DoGet",
        "get_schema": "GetSchema",
        "do_put": "DoPut",
    }[method]


def instrument(server: Any, recorder: Recorder) -> None:
    """Wrap the server's handlers (instance attributes shadow the class's methods)."""
    import time

    for method in ("do_action", "get_flight_info", "do_get", "get_schema", "do_put"):
        original = getattr(server, method)

        def wrapper(*args: Any, _original: Callable[..., Any] = original, _method: str = method) -> Any:
            rpc = _rpc_name(_method, args)
            prof = recorder.profiler(rpc)
            t0 = time.perf_counter_ns()
            if prof is not None:
                prof.enable()
            try:
                out = _original(*args)
                if _method == "do_action":
                    out = list(out)  # the results are produced lazily otherwise
                return out
            finally:
                if prof is not None:
                    prof.disable()
                recorder.add(rpc, (time.perf_counter_ns() - t0) / 1e6)

        setattr(server, method, functools.update_wrapper(wrapper, original))


def instrument_streams(recorder: Recorder) -> Callable[[], None]:
    """Time the DoGet result generators (pyarrow pulls them after the handler returns)."""
    import time

    import tierflight.protocol.server as srv

    # The server wraps each result generator in protocol.server.guarded; if that ever
    # changes, the DoGet row shows the handler time alone.
    original = getattr(srv, "guarded", None)
    if original is None:
        return lambda: None

    def timed(batches: Iterator[Any]) -> Iterator[Any]:
        # Only the time spent producing batches counts, not pyarrow's writes in between.
        inner = original(batches)
        prof = recorder.profiler("DoGet")
        total = 0
        try:
            while True:
                t0 = time.perf_counter_ns()
                if prof is not None:
                    prof.enable()
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    if prof is not None:
                        prof.disable()
                    total += time.perf_counter_ns() - t0
                yield item
        finally:
            recorder.add("DoGet stream", total / 1e6)

    setattr(srv, "guarded", timed)  # noqa: B010 - the attribute is not re-exported

    def restore() -> None:
        setattr(srv, "guarded", original)  # noqa: B010

    return restore


def new_cursor_rpcs(client: Any, sql: str) -> tuple[float, ...]:
    """ADBC's RPCs for one statement on a new cursor (CreatePreparedStatement, GetFlightInfo,
    DoGet, ClosePreparedStatement), replayed with pyarrow.flight: ms per RPC (RPCS order),
    then the total."""
    import time

    import pyarrow.flight as flight
    from google.protobuf import any_pb2

    from tierflight.protocol import flightsql_pb2 as pb

    clock = time.perf_counter_ns
    create = flight.Action(
        "CreatePreparedStatement", _pack(pb.ActionCreatePreparedStatementRequest(query=sql))
    )
    t0 = clock()
    res = list(client.do_action(create))
    wrapped = any_pb2.Any()
    wrapped.ParseFromString(res[0].body.to_pybytes())
    answer = pb.ActionCreatePreparedStatementResult()
    wrapped.Unpack(answer)
    handle = answer.prepared_statement_handle
    t1 = clock()
    descriptor = flight.FlightDescriptor.for_command(
        _pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    )
    info = client.get_flight_info(descriptor)
    t2 = clock()
    client.do_get(info.endpoints[0].ticket).read_all()
    t3 = clock()
    close = _pack(pb.ActionClosePreparedStatementRequest(prepared_statement_handle=handle))
    list(client.do_action(flight.Action("ClosePreparedStatement", close)))
    t4 = clock()
    return (
        *((b - a) / 1e6 for a, b in zip((t0, t1, t2, t3), (t1, t2, t3, t4), strict=True)),
        (t4 - t0) / 1e6,
    )


def keep(samples: dict[str, list[float]], times: tuple[float, ...]) -> None:
    """Add one statement's :func:`new_cursor_rpcs` times to ``samples`` (by RPC, and total)."""
    for rpc, ms in zip((*RPCS, "total"), times, strict=True):
        samples[rpc].append(ms)


def replay(uri: str, calls: int, warmup: int) -> dict[str, list[float]]:
    """Per-RPC client time of ADBC's new-cursor sequence, replayed with pyarrow.flight."""
    import pyarrow.flight as flight

    client = flight.connect(uri)
    samples: dict[str, list[float]] = {rpc: [] for rpc in (*RPCS, "total")}
    try:
        for _ in range(warmup):
            new_cursor_rpcs(client, SQL)
        with gc_paused():
            for _ in range(calls):
                keep(samples, new_cursor_rpcs(client, SQL))
    finally:
        client.close()
    return samples


def adbc_loop(uri: str, calls: int, warmup: int) -> list[float]:
    import time

    import adbc_driver_flightsql.dbapi as fsql

    out: list[float] = []
    with fsql.connect(uri, autocommit=True) as conn:
        for i in range(warmup + calls):
            t0 = time.perf_counter_ns()
            with conn.cursor() as cur:
                cur.execute(SQL)
                cur.fetchall()
            if i >= warmup:
                out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def _top_functions(stats: pstats.Stats, calls: int, limit: int, key: str) -> list[list[Any]]:
    rows: list[list[Any]] = []
    entries = stats.stats  # type: ignore[attr-defined]
    ordered = sorted(entries.items(), key=lambda kv: kv[1][3 if key == "cumulative" else 2], reverse=True)
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in ordered:
        if func in ("wrapper", "timed") and "bench" in file:
            continue
        where = _short_path(file)
        rows.append(
            [
                f"{func} ({where}:{line})" if line else func,
                round(ncalls / calls, 1),
                round(tottime * 1000 / calls, 4),
                round(cumtime * 1000 / calls, 4),
            ]
        )
        if len(rows) >= limit:
            break
    return rows


def _short_path(file: str) -> str:
    if file.startswith("~") or file.startswith("<"):
        return file
    parts = Path(file).parts
    for anchor in ("tierflight", "site-packages"):
        if anchor in parts:
            idx = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[idx + (1 if anchor == "site-packages" else 0) :])
    return Path(file).name


@benchmark("select1_profile")
def run(ctx: BenchContext) -> Result:
    from tierflight.app import App
    from tierflight.core.config import load_config
    from tierflight.core.log import configure_logging
    from tierflight.protocol.server import build_server

    calls, warmup = (200, 50) if ctx.quick else (2000, 200)
    data_dir, env = ctx.demo_data(rows=100_000, days=30)
    overrides = {
        "metrics.port": 0,
        "tiers.maintenance_interval": "0s",
        "tiers.now": env["TIERFLIGHT_TIERS__NOW"],
    }
    config = load_config(CONFIG, data_dir=data_dir, environ={}, overrides=overrides)
    # The server's JSON log, as `tierflight serve` writes it, but into a file.
    server_log = (ctx.scratch("select1_profile") / "tierflight.log").open("w")
    # Back to stderr (with a flush into this file first) when the benchmark ends.
    configure_logging("info", json_format=True, stream=server_log)
    app = App(config)
    saved_limit = getattr(sys, "tracebacklimit", None)
    server = build_server(
        app.flight_services(), "127.0.0.1", 0
    )  # sets sys.tracebacklimit = 0 for the process
    threading.Thread(target=server.serve, daemon=True, name="tierflight-inprocess").start()
    uri = f"grpc://127.0.0.1:{server.port}"
    recorder = Recorder()
    instrument(server, recorder)
    restore = instrument_streams(recorder)
    floor, floor_uri = start_floor_in_thread()
    try:
        log(f"in-process tierflight at {uri}; floor server at {floor_uri}")
        # Which RPCs does ADBC send for a new cursor? Count them on the server.
        adbc_loop(uri, 20, 0)
        counts = {rpc: len(v) / 20 for rpc, v in recorder.samples.items()}
        recorder.samples.clear()
        adbc_ms = summarize_ms(adbc_loop(uri, calls // 2, warmup))
        recorder.samples.clear()
        client = replay(uri, calls, warmup)
        server_ms = {rpc: list(v[-calls:]) for rpc, v in recorder.samples.items()}
        floor_client = replay(floor_uri, calls, warmup)
        # cProfile pass
        recorder.samples.clear()
        recorder.profiles = {}
        replay(uri, calls // 2, 0)
        profiles = recorder.profiles
        recorder.profiles = None
    finally:
        restore()
        floor.shutdown()
        server.shutdown()
        app.close()
        configure_logging("warning")
        server_log.close()
        if saved_limit is None:
            del sys.tracebacklimit
        else:
            sys.tracebacklimit = saved_limit

    rows: list[list[Any]] = []
    for rpc in RPCS:
        c = summarize_ms(client[rpc])
        handler = server_ms.get(rpc, [])
        h = summarize_ms(handler) if handler else {"p50": float("nan"), "mean": float("nan")}
        extra = ""
        if rpc == "DoGet" and server_ms.get("DoGet stream"):
            s = summarize_ms(server_ms["DoGet stream"])
            extra = f"handler {h['p50']:.3f} + stream {s['p50']:.3f}"
            h = {"p50": h["p50"] + s["p50"], "mean": h["mean"] + s["mean"]}
        f = summarize_ms(floor_client[rpc])
        rows.append(
            [
                rpc,
                round(c["p50"], 3),
                round(h["p50"], 3),
                round(c["p50"] - h["p50"], 3),
                round(f["p50"], 3),
                round(c["p50"] - f["p50"], 3),
                extra,
            ]
        )
    total = summarize_ms(client["total"])
    floor_total = summarize_ms(floor_client["total"])
    rows.append(
        [
            "all four",
            round(total["p50"], 3),
            "",
            "",
            round(floor_total["p50"], 3),
            round(total["p50"] - floor_total["p50"], 3),
            "",
        ]
    )

    tables: list[dict[str, Any]] = [
        {
            "title": "Per RPC, p50 ms (client: replayed with pyarrow.flight; server: Python handler time)",
            "columns": [
                "RPC",
                "client",
                "server handler",
                "client - handler (gRPC + Flight + loopback)",
                "floor server, client",
                "above floor",
                "DoGet split",
            ],
            "rows": rows,
        }
    ]
    prof_calls = max(1, calls // 2)
    for rpc in RPCS:
        prof = profiles.get(rpc)
        if prof is None:
            continue
        tables.append(
            {
                "title": f"cProfile: {rpc}, top functions by cumulative time (ms per call, under the profiler)",
                "columns": ["function", "calls per RPC", "own ms", "cumulative ms"],
                "rows": _top_functions(pstats.Stats(prof), prof_calls, 14, "cumulative"),
            }
        )
    if profiles:
        stats = [pstats.Stats(prof) for prof in profiles.values()]
        for more in stats[1:]:
            stats[0].add(more)
        tables.append(
            {
                "title": "cProfile: all four RPCs, top functions by own time (ms per statement)",
                "columns": ["function", "calls per statement", "own ms", "cumulative ms"],
                "rows": _top_functions(stats[0], prof_calls, 20, "own"),
            }
        )
    handler_total = sum(r[2] for r in rows[:4] if isinstance(r[2], float) and r[2] == r[2])
    return {
        "title": "SELECT 1 server profile (per RPC)",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": "in-process tierflight on 100,000 demo events (30 days); the query reads no table",
        "summary": [
            {
                "metric": "ADBC new cursor per call, p50 (in-process server)",
                "value": round(adbc_ms["p50"], 3),
                "unit": "ms",
            },
            {"metric": "replayed four RPCs, p50", "value": round(total["p50"], 3), "unit": "ms"},
            {
                "metric": "server handler time for the four RPCs (sum of p50s)",
                "value": round(handler_total, 3),
                "unit": "ms",
            },
            {
                "metric": "floor server, same four RPCs, p50",
                "value": round(floor_total["p50"], 3),
                "unit": "ms",
            },
        ],
        "tables": tables,
        "notes": [
            f"RPCs the ADBC driver sent per new-cursor SELECT 1 (counted on the server): {counts}.",
            f"{calls:,} replayed statements after {warmup} warm-up; profile pass {prof_calls:,} statements. "
            "Client and server share one Python process (and its GIL) here; the select1 benchmark measures "
            "against a separate server process.",
        ],
        "raw": {
            "counts": counts,
            "adbc": adbc_ms,
            "client": {k: summarize_ms(v) for k, v in client.items()},
            "server": {k: summarize_ms(v) for k, v in server_ms.items()},
            "floor": {k: summarize_ms(v) for k, v in floor_client.items()},
        },
    }
