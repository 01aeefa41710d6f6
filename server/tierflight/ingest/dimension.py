"""Ingest into a dimension table: the whole next version, checked, written, then swapped in.

ADBC's ingest modes arrive as CommandStatementIngest's table definition options:
``replace`` (if_exists REPLACE) makes the batch the table; ``append`` and ``create_append``
(if_exists APPEND) add its rows, refusing a key already there; ``create`` (if_exists FAIL)
is refused, since the configured table exists. Nothing is written unless every row passes
(types as for fact tables, the key unique and not NULL); the new version is durable before
it is served, and served under the swap lock's write side, so a statement reads the old
version or the new one, never a mix.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from tierflight.core.errors import IngestTooLarge, PermissionDenied
from tierflight.core.log import get_logger
from tierflight.core.rwlock import RWLock
from tierflight.ingest.validate import conform
from tierflight.tiers.dimension import DimensionStore

log = get_logger("tierflight.ingest")

# Flight SQL TableDefinitionOptions.TableExistsOption (FlightSql.proto).
_IF_EXISTS_FAIL = 1
_IF_EXISTS_APPEND = 2
_IF_EXISTS_REPLACE = 3


class DimensionMode(enum.StrEnum):
    REPLACE = "replace"
    APPEND = "append"


def dimension_mode(table: str, if_exists: int) -> DimensionMode:
    """The ingest mode a command's if_exists option asks for (unspecified: append)."""
    if if_exists == _IF_EXISTS_REPLACE:
        return DimensionMode.REPLACE
    if if_exists == _IF_EXISTS_FAIL:
        raise PermissionDenied(
            f"table {table} exists (a configured dimension table): use mode='replace' to load it "
            "or mode='append' to add rows"
        )
    return DimensionMode.APPEND


def read_bounded(reader: Any, table: str, limit: int) -> pa.Table:
    """The whole stream, refused as soon as it passes ``limit`` bytes (a dimension table is
    held in memory: a huge upload must not be read in full first)."""
    batches: list[pa.RecordBatch] = []
    size = 0
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        if chunk.data is None:
            continue
        size += chunk.data.nbytes
        if size > limit:
            raise IngestTooLarge(
                f"ingest into {table}: a dimension table holds at most {limit:,} bytes "
                "([ingest] max_dimension_bytes); nothing was written"
            )
        batches.append(chunk.data)
    return pa.Table.from_batches(batches, schema=reader.schema)


def ingest_dimension(
    store: DimensionStore,
    data: pa.Table,
    mode: DimensionMode,
    swap_lock: RWLock,
    on_swap: Callable[[], None],
    limit: int,
) -> int:
    """Check ``data``, write the next version and serve it; the rows ingested."""
    started = time.perf_counter()
    clean = conform(data, store.table, store.schema)
    with store.write_lock:
        rows = store.combined(clean, append=mode is DimensionMode.APPEND)
        if rows.nbytes > limit:
            raise IngestTooLarge(
                f"ingest into {store.table.name}: the table would hold {rows.nbytes:,} bytes, more than "
                f"{limit:,} ([ingest] max_dimension_bytes); nothing was written"
            )
        version = store.write(rows)
        with swap_lock.write():
            store.serve(version)
            on_swap()  # cached plans name the old version's rows
        store.remove_old()
    log.info(
        "dimension_ingest",
        table=store.table.name,
        mode=mode.value,
        rows=clean.num_rows,
        total_rows=version.rows,
        version=version.version,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return int(clean.num_rows)
