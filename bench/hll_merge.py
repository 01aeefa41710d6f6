"""TF_HLL_ESTIMATE: the numpy merge against DataSketches' union fed one sketch at a time.

Rollup states as the build stores them (``SketchBuilder``, HLL_4, lg_k 10 as the demo's
``day_country_users``), grouped into lists the way ``SELECT country,
approx_count_distinct(user_id) ... GROUP BY country`` groups them. Both implementations run
in the same process on the same Arrow array, first directly (the UDF's own time) and then
through DuckDB (``SELECT g, f(LIST(h)) FROM t GROUP BY g``, the statement shape the router
writes). Every answer is checked equal, float for float.

Standalone: ``PYTHONPATH=server python -m bench.hll_merge``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from bench.registry import Result, benchmark
from tierflight.rollups.definition import HLL_TYPE
from tierflight.rollups.hll_merge import merge_lists, union_estimate
from tierflight.rollups.sketches import SketchBuilder

LG_K = 10


def _states(groups: int, events_per_group: int, users: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    # Group sizes vary (quiet days, small countries): a Poisson around the mean, some empty.
    size = rng.poisson(events_per_group, groups)
    builder = SketchBuilder(groups, LG_K, HLL_TYPE)
    group = np.repeat(np.arange(groups), size)
    builder.add(group, rng.zipf(1.2, len(group)) % users)
    return builder.sketches()


def _reference(lists: pa.Array) -> pa.Array:
    """The previous TF_HLL_ESTIMATE: to_pylist, then a union per list."""
    return pa.array([None if b is None else union_estimate(b) for b in lists.to_pylist()], pa.float64())


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _case(name: str, lists: int, per_list: int, events: int, repeats: int) -> list[Any]:
    blobs = _states(lists * per_list, events, 1_000_000, seed=lists + per_list + events)
    arr = pa.array([blobs[i * per_list : (i + 1) * per_list] for i in range(lists)], pa.list_(pa.binary()))
    old_s, old = _best(lambda: _reference(arr), repeats)
    new_s, new = _best(lambda: merge_lists(arr), repeats)
    assert old.to_pylist() == new.to_pylist()

    con = duckdb.connect()
    con.create_function("est_old", _reference, ["BLOB[]"], "DOUBLE", type="arrow")  # type: ignore[call-overload]
    con.create_function("est_new", merge_lists, ["BLOB[]"], "DOUBLE", type="arrow")  # type: ignore[call-overload]
    table = pa.table({"g": np.repeat(np.arange(lists), per_list), "h": pa.array(blobs, pa.binary())})
    con.register("t", table)
    sql = "SELECT g, {}(LIST(h)) AS e FROM t GROUP BY g ORDER BY g"
    q_old, r_old = _best(lambda: con.sql(sql.format("est_old")).fetchall(), repeats)
    q_new, r_new = _best(lambda: con.sql(sql.format("est_new")).fetchall(), repeats)
    assert r_old == r_new
    con.close()
    total = sum(len(b) for b in blobs)
    return [name, lists * per_list, lists, f"{total / 1e6:.1f}", *(round(x * 1e3, 2) for x in (old_s, new_s)),
            f"{old_s / new_s:.1f}x", *(round(x * 1e3, 2) for x in (q_old, q_new)), f"{q_old / q_new:.1f}x"]


@benchmark("hll_merge")
def run(ctx: Any) -> Result:
    repeats = 3 if ctx.quick else 5
    cases = [
        ("day x country, ~30 events a row (coupon sketches)", 12, 366, 30),
        ("day x country, ~5,000 events a row (HLL_4 registers)", 12, 366, 5_000),
        ("100,000 states in 50 lists, ~300 events a row (mixed)", 50, 2_000, 300),
    ]
    rows = [_case(*c, repeats=repeats) for c in cases]
    return {
        "title": "TF_HLL_ESTIMATE: numpy merge vs one-by-one DataSketches union",
        "description": __doc__,
        "data": f"synthetic rollup states, lg_k 10, HLL_4 (SketchBuilder); best of {repeats}",
        "tables": [{
            "title": "milliseconds per call (UDF alone) and per statement (through DuckDB)",
            "columns": ["states", "sketches", "lists", "MB", "old ms", "new ms", "speedup",
                        "duckdb old ms", "duckdb new ms", "speedup"],
            "rows": rows,
        }],
        "summary": [{"metric": f"speedup, {r[0]}", "value": r[6], "unit": ""} for r in rows],
    }


if __name__ == "__main__":
    import types

    for row in run(types.SimpleNamespace(quick=False))["tables"][0]["rows"]:
        print(*row, sep=" | ")
