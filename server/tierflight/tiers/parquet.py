"""How the tiers write data files: ZSTD Parquet laid out for pruning, per the table's config.

Every writer (the generator, ingest flushes, compaction, bulk loads into Iceberg) sorts a
file's rows by the table's time column, so the file says so (``sorting_columns``) and the
time column is delta-encoded. Which columns get dictionaries and Bloom filters is the
table's ``parquet_dictionary`` / ``parquet_bloom_filter`` (see conf/tierflight.toml):
a dictionary only pays on low-cardinality columns, and a Bloom filter lets a lookup of one
value (an id) skip every row group that cannot hold it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tierflight.core.config import TableConfig

ROW_GROUP_ROWS = 512 * 1024
BLOOM_FPP = 0.05
# Physical types DELTA_BINARY_PACKED applies to (integers, dates, timestamps).
_DELTA_TYPES = {"TIMESTAMP", "DATE", "BIGINT", "INTEGER", "SMALLINT"}


def write_options(table: TableConfig | None, rows: int) -> dict[str, Any]:
    """``pyarrow.parquet.write_table`` options for ``rows`` rows of ``table``, in its column
    order and sorted by its time column (None: no table, generic options)."""
    options: dict[str, Any] = {"row_group_size": ROW_GROUP_ROWS, "compression": "zstd", "write_statistics": True}
    if table is None:
        return options
    names = list(table.column_names)
    time_type = next(c.type for c in table.columns if c.name == table.time_column)
    delta = table.time_column if time_type in _DELTA_TYPES else None
    dictionary = table.parquet_dictionary if table.parquet_dictionary is not None else names
    options["use_dictionary"] = [c for c in dictionary if c != delta]
    if delta is not None:
        # Sorted: deltas are small, smaller and cheaper than plain values + zstd.
        options["column_encoding"] = {delta: "DELTA_BINARY_PACKED"}
    options["sorting_columns"] = [pq.SortingColumn(names.index(table.time_column))]
    if table.parquet_bloom_filter:
        ndv = max(1, min(rows, ROW_GROUP_ROWS))  # sized for one row group's distinct values
        options["bloom_filter_options"] = {c: {"ndv": ndv, "fpp": BLOOM_FPP} for c in table.parquet_bloom_filter}
    return options


def write_file(data: pa.Table, path: Path, options: dict[str, Any]) -> int:
    """Atomically write one local Parquet file (aside, then renamed in); returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(data, tmp, **options)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size
