"""Which rollups a build computes from another rollup's states instead of from the rows.

A DuckDB GROUPING SETS pass costs about one hash-table insert per source row per set, so
every set dropped from the pass saves a full pass's worth of work. Count, sum, min and
max states merge exactly, so a rollup whose dimensions are a subset of another's in the
same pass (after coarsening a time grain, e.g. day from hour) is computed from that
rollup's states, which are thousands of times fewer rows. HyperLogLog states are built
from the rows separately and are not affected.
"""

from __future__ import annotations

from collections.abc import Sequence

from tierflight.engine.database import quote_ident
from tierflight.rollups.definition import DERIVABLE, TIME_GRAINS, Measure, StorageGroup, time_expr

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


def coarsen(dimension: str, parent: StorageGroup) -> str:
    """SQL for ``dimension`` over ``parent``'s stored rows (a time grain from the parent's)."""
    if dimension in TIME_GRAINS:
        return time_expr(dimension, parent.grain or dimension)
    return quote_ident(dimension)


def merge_expr(m: Measure) -> str:
    """SQL merging the stored states of measure ``m`` (not HLL)."""
    col = quote_ident(m.state)
    if m.kind in ("count", "count_col"):
        # An empty input still gives the () grouping set a row: its count is 0, not NULL.
        return f"CAST(coalesce(sum({col}), 0) AS BIGINT)"
    if m.kind in ("sum", "min", "max"):
        return f"{m.kind}({col})"
    raise ValueError(f"{m.label()} states are not merged here")
