"""How data files are written (tiers.parquet): from the table's config, never from the demo's
column names. Checked in the files' own metadata: the sort column and its encoding, which
columns carry dictionaries and Bloom filters, and that the rows come back unchanged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_config

METRICS_TABLE = {
    "tables.metrics": {
        "time_column": "at",
        "columns": {"host": "VARCHAR", "at": "TIMESTAMP", "value": "DOUBLE", "trace_id": "VARCHAR"},
        "parquet_dictionary": ["host"],
        "parquet_bloom_filter": ["trace_id"],
    }
}


def _layout(path: Path) -> dict[str, Any]:
    meta = pq.ParquetFile(path).metadata
    rg = meta.row_group(0)
    columns = {rg.column(i).path_in_schema: rg.column(i) for i in range(meta.num_columns)}
    return {
        "sorting": [c.column_index for c in rg.sorting_columns],
        "dictionary": sorted(n for n, c in columns.items() if c.has_dictionary_page),
        "bloom": sorted(n for n, c in columns.items() if c.bloom_filter_offset is not None),
        "encodings": {n: c.encodings for n, c in columns.items()},
        "compression": {c.compression for c in columns.values()},
    }


def test_a_table_that_is_not_the_demo_is_written_by_its_own_config(tmp_path: Path) -> None:
    from tierflight.tiers.parquet import write_file, write_options

    table = make_config(tmp_path, **METRICS_TABLE).table("metrics")
    n = 5_000
    data = pa.table(
        {
            "host": [f"h{i % 4}" for i in range(n)],
            "at": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
            "value": [float(i) for i in range(n)],
            "trace_id": [f"t{i:08d}" for i in range(n)],
        }
    )
    path = tmp_path / "f.parquet"
    size = write_file(data, path, write_options(table, n))
    assert size == path.stat().st_size and [p.name for p in tmp_path.iterdir()] == ["f.parquet"]
    assert pq.read_table(path).equals(data)
    layout = _layout(path)
    assert layout["sorting"] == [1]  # "at", the time column, is the second column
    assert "DELTA_BINARY_PACKED" in layout["encodings"]["at"]
    assert layout["dictionary"] == ["host"]
    assert layout["bloom"] == ["trace_id"]
    assert layout["compression"] == {"ZSTD"}


def test_the_demo_table_has_its_lookup_column_bloom_filtered(tmp_path: Path) -> None:
    """The shipped config: dictionaries on the low-cardinality columns, a Bloom filter on
    auction_id (the drill-down lookup), ts sorted and delta-encoded; an empty file too."""
    from tierflight.demo.generate import EVENTS_SCHEMA, generate_days
    from tierflight.tiers.parquet import write_file, write_options

    table = make_config(tmp_path).table("events")
    [(_, data)] = list(generate_days(3_000, dt.date(2024, 6, 1), 1, 5))
    path = tmp_path / "events.parquet"
    write_file(data, path, write_options(table, data.num_rows))
    assert pq.read_table(path).equals(data)
    layout = _layout(path)
    assert layout["sorting"] == [EVENTS_SCHEMA.get_field_index("ts")]
    assert layout["dictionary"] == ["advertiser_id", "country", "publisher_id", "type"]
    assert layout["bloom"] == ["auction_id"]
    empty = tmp_path / "empty.parquet"
    write_file(EVENTS_SCHEMA.empty_table(), empty, write_options(table, 0))
    assert pq.read_table(empty).num_rows == 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("parquet_bloom_filter", ["nope"], r"parquet_bloom_filter names unknown column\(s\) nope"),
        ("parquet_dictionary", "host", "parquet_dictionary must be a list of column names"),
    ],
)
def test_parquet_settings_naming_no_column_are_refused(tmp_path: Path, key: str, value: Any, message: str) -> None:
    from tierflight.core.errors import ConfigError

    bad = {"tables.metrics": {**METRICS_TABLE["tables.metrics"], key: value}}
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, **bad)
