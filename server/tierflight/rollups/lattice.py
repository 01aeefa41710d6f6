"""Which rollups a build computes from another rollup's states instead of from the rows.

A DuckDB GROUPING SETS pass costs about one hash-table insert per source row per set, so
every set dropped from the pass saves a full pass's worth of work. Count, sum, min and
max states merge exactly, so a rollup whose dimensions are a subset of another's in the
same pass (after coarsening a time grain, e.g. day from hour) is computed from that
rollup's states, which are thousands of times fewer rows. HyperLogLog states are built
from the rows separately and are not affected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from tierflight.rollups.definition import DERIVABLE, TIME_GRAINS, Measure, StorageGroup

# Finer grains rank higher: a rollup is only ever derived from one that ranks higher.
_GRAIN_RANK = {None: 0, "month": 1, "week": 2, "day": 3, "hour": 4, "minute": 5}


def _columns(g: StorageGroup) -> frozenset[str]:
    return frozenset(d for d in g.dimensions if d not in TIME_GRAINS)


def derivable(parent: StorageGroup, child: StorageGroup) -> bool:
    """``child``'s non-HLL states can be merged from ``parent``'s (same filter assumed)."""
    if parent is child or not _columns(child) <= _columns(parent):
        return False
    if child.grain is None:
        return _columns(child) != _columns(parent) or parent.grain is not None
    return (
        parent.grain is not None
        and child.grain in DERIVABLE[parent.grain]
        and (child.grain != parent.grain or _columns(child) != _columns(parent))
    )


def size_rank(g: StorageGroup) -> tuple[int, int]:
    """Strictly larger for any rollup ``g`` can be derived from."""
    return (len(_columns(g)), _GRAIN_RANK[g.grain])


def roots(groups: Sequence[StorageGroup]) -> list[StorageGroup]:
    """The groups no other group of the pass can produce: the ones the pass must scan for."""
    return [g for g in groups if not any(derivable(p, g) for p in groups)]


# How Arrow computes a time grain from a finer one, as DuckDB's ``time_expr`` does from a
# timestamp (weeks start on Monday, as ``date_trunc('week', ...)``).
_DATED = ("day", "week", "month")
_MERGE = {"count": "sum", "count_col": "sum", "sum": "sum", "min": "min", "max": "max"}


def merge(
    parent_rows: pa.Table,
    parent: StorageGroup,
    child: StorageGroup,
    states: Sequence[Measure],
    digits: Mapping[str, int],
) -> pa.Table:
    """``child``'s rows merged from ``parent``'s stored rows: its dimensions, then every state
    of ``states`` (not HLL), in the parent's types and in the child's storage order. Arrow,
    not DuckDB: a rollup's states are few rows, and a query per child cost DuckDB ~8 ms of
    planning for a thousand rows on every ingested batch. Sums of decimal columns
    (``digits``) are added as scaled integers, so they stay exact."""
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for d in child.dimensions:
        if d in TIME_GRAINS:
            floored = pc.floor_temporal(parent_rows[parent.grain or d], unit=d, week_starts_monday=True)
            columns[d] = pc.cast(floored, pa.date32()) if d in _DATED else floored
        else:
            columns[d] = parent_rows[d]
    scaled = {m.state: 10 ** digits[m.column or ""] for m in states if m.kind == "sum" and m.column in digits}
    for m in states:
        values = parent_rows[m.state]
        if m.state in scaled:  # a short decimal times 10**digits is within an ulp of an integer
            ints = pc.round(pc.multiply(values, float(scaled[m.state])))
            # Exact while every sum is an integer a double holds; beyond, a DOUBLE sum.
            if (pc.sum(pc.abs(ints)).as_py() or 0) < 2**53:
                values = pc.cast(ints, pa.int64())
            else:
                del scaled[m.state]
        columns[m.state] = values
    grouped = pa.table(columns).group_by(list(child.dimensions), use_threads=False)
    merged = grouped.aggregate([(m.state, _MERGE[m.kind]) for m in states])
    out = {d: merged[d] for d in child.dimensions}
    for m in states:
        values = merged[f"{m.state}_{_MERGE[m.kind]}"]
        if m.kind in ("count", "count_col"):
            values = pc.fill_null(values, 0)  # no rows: a count of 0, not NULL
        if m.state in scaled:  # one correctly rounded division: the nearest double
            values = pc.divide(pc.cast(values, pa.float64()), float(scaled[m.state]))
        out[m.state] = pc.cast(values, parent_rows.schema.field(m.state).type)
    table = pa.table(out)
    order = child.stored_order
    return table.sort_by([(d, "ascending") for d in order]) if order else table
