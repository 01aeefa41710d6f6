"""HyperLogLog sketch functions DuckDB calls when a query reads ``hll`` states."""

from __future__ import annotations

import datasketches
import duckdb
import pyarrow as pa

from tierflight.rollups.definition import HLL_LG_K


def merge_estimate(sketch_lists: pa.Array) -> pa.Array:
    """For each list of serialized sketches: the estimate of their union (NULL if none)."""
    out: list[float | None] = []
    for sketches in sketch_lists.to_pylist():
        if not sketches:
            out.append(None)
            continue
        union = datasketches.hll_union(HLL_LG_K)
        for blob in sketches:
            if blob is not None:
                union.update(datasketches.hll_sketch.deserialize(blob))
        out.append(union.get_result().get_estimate())
    return pa.array(out, pa.float64())


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    # Functions are global to the database, so every cursor sees them.
    con.create_function(  # type: ignore[call-overload]
        "tf_hll_estimate",
        merge_estimate,
        [duckdb.list_type(duckdb.sqltype("BLOB"))],
        duckdb.sqltype("DOUBLE"),
        type="arrow",
    )
