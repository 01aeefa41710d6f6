"""HyperLogLog sketch functions DuckDB calls when a query reads ``hll`` states."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tierflight.rollups.hll_merge import merge_lists


def merge_estimate(sketch_lists: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """For each list of serialized sketches: the estimate of their union (NULL if none).

    Equal, float for float, to DataSketches' union of the sketches fed one by one
    (``hll_merge.union_estimate``); merged from the Arrow buffers with numpy where that is
    provably the same (see hll_merge)."""
    return merge_lists(sketch_lists)


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    # Functions are global to the database, so every cursor sees them.
    con.create_function(  # type: ignore[call-overload]
        "tf_hll_estimate",
        merge_estimate,
        [duckdb.list_type(duckdb.sqltype("BLOB"))],
        duckdb.sqltype("DOUBLE"),
        type="arrow",
    )
