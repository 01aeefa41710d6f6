"""Verify ``quantiles(col)`` states: the merged KLL sketch of each sampled group against the
group's raw values.

A KLL sketch compacts by coin flips, so a sketch recomputed from the raw rows need not equal
the rollup's, and its answers may differ; what is checked is what the sketch promises:

* the number of values, and the smallest and largest, exactly (a KLL sketch keeps them);
* at a few quantiles q, the value the sketch answers is, among the group's raw values, at a
  normalized rank within ``RANK_SLACK`` times the sketch's own bound of q (the bound holds
  with 99% confidence per quantile; twice it, for any of them over many groups, does not
  happen by chance). A group of at most k values is answered exactly: rank error 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasketches
import duckdb
import pyarrow as pa

from tierflight.rollups.build import _group_pairs
from tierflight.rollups.definition import Measure, StorageGroup
from tierflight.rollups.kll import merged as merged_sketch
from tierflight.rollups.verify import Mismatch, VerifyResult, add_evidence

PROBES = (0.01, 0.25, 0.5, 0.75, 0.99)
RANK_SLACK = 2.0


def rank_bound(k: int) -> float:
    return RANK_SLACK * float(datasketches.kll_doubles_sketch.get_normalized_rank_error(k, False))


def rank_error(q: float, below: int, at_most: int, n: int) -> float:
    """How far q lies from the normalized ranks [below/n, at_most/n] a value spans (0: inside)."""
    lo, hi = below / n, at_most / n
    return max(0.0, lo - q, q - hi)


def check_quantiles(
    cursor: duckdb.DuckDBPyConnection,
    source: str,
    group: StorageGroup,
    measures: Sequence[Measure],
    merged: pa.Table,
    ts: str,
    result: VerifyResult,
) -> None:
    dims = list(group.dimensions)
    keys = merged.select(dims).append_column("__gi", pa.array(range(merged.num_rows), pa.int64()))
    for m in measures:
        bound = rank_bound(m.sketch_k)
        probes: list[dict[str, Any]] = []
        sketches = [merged_sketch(blobs) for blobs in merged[m.state].to_pylist()]
        for gi, sketch in enumerate(sketches):
            if sketch is not None:
                probes += [{"__gk": gi, "q": q, "pv": float(sketch.get_quantile(q))} for q in PROBES]
        probe = pa.Table.from_pylist(probes, pa.schema([("__gk", pa.int64()), ("q", pa.float64()), ("pv", pa.float64())]))
        cursor.register("__tf_sketch_keys", keys)
        cursor.register("__tf_verify_probe", probe)
        try:
            pairs = _group_pairs(source, group, ts, m.column or "")
            stats = cursor.sql(
                f"SELECT __gi, count(*) AS n, min(CAST(v AS DOUBLE)) AS lo, max(CAST(v AS DOUBLE)) AS hi FROM ({pairs}) GROUP BY __gi"
            ).to_arrow_table()
            ranks = cursor.sql(
                "SELECT p.__gk, p.q, p.pv, count(*) FILTER (WHERE CAST(x.v AS DOUBLE) < p.pv) AS below, "
                "count(*) FILTER (WHERE CAST(x.v AS DOUBLE) <= p.pv) AS at_most, count(*) AS n "
                f"FROM ({pairs}) x JOIN __tf_verify_probe p ON x.__gi = p.__gk GROUP BY ALL"
            ).to_arrow_table()
        finally:
            cursor.unregister("__tf_sketch_keys")
            cursor.unregister("__tf_verify_probe")
        raw = {row["__gi"]: row for row in stats.to_pylist()}
        bad: dict[int, list[Mismatch]] = {}

        def key(gi: int) -> dict[str, Any]:
            return {d: merged[d][gi].as_py() for d in dims}

        for gi, sketch in enumerate(sketches):
            n, lo, hi = (sketch.n, sketch.get_min_value(), sketch.get_max_value()) if sketch is not None else (0, None, None)
            want = raw.get(gi, {"n": 0, "lo": None, "hi": None})
            if (n, lo, hi) != (want["n"], want["lo"], want["hi"]):
                bad.setdefault(gi, []).append(
                    Mismatch(key(gi), f"{m.label()} n/min/max", (n, lo, hi), (want["n"], want["lo"], want["hi"]))
                )
                result.largest_error = max(result.largest_error, 1.0)
        for row in ranks.to_pylist():
            err = rank_error(row["q"], row["below"], row["at_most"], row["n"])
            result.largest_error = max(result.largest_error, err)
            if err > bound:
                gi = row["__gk"]
                bad.setdefault(gi, []).append(
                    Mismatch(key(gi), f"{m.label()} q={row['q']} rank error {err:.4f} > {bound:.4f}", row["pv"], None)
                )
        for mismatches in bad.values():
            add_evidence(result, mismatches)
