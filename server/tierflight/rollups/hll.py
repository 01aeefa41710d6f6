"""HyperLogLog sketch functions DuckDB calls when a query reads ``hll`` states."""

from __future__ import annotations

import datasketches
import duckdb
import pyarrow as pa

# Byte 3 of a serialized DataSketches HLL sketch (any mode) is its lg_k.
_LG_K_BYTE = 3


def merge_estimate(sketch_lists: pa.Array) -> pa.Array:
    """For each list of serialized sketches: the estimate of their union (NULL if none)."""
    out: list[float | None] = []
    for sketches in sketch_lists.to_pylist():
        if not sketches:
            out.append(None)
            continue
        blobs = [b for b in sketches if b is not None]
        if not blobs:
            out.append(0.0)  # as approx_count_distinct of only NULLs
            continue
        # The union keeps as many registers as the sketches have (rollups choose lg_k).
        union = datasketches.hll_union(max(b[_LG_K_BYTE] for b in blobs))
        for blob in blobs:
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
