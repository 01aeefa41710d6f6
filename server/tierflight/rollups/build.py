"""Build rollups: one DuckDB GROUPING SETS pass per filter over every tier of the table.

HyperLogLog states of integer columns are computed for whole batches (rollups/sketches.py)
and handed to Apache DataSketches as sketches; other columns go through DataSketches one
distinct value at a time.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tierflight.core.decimals import bad_value_sql, describe
from tierflight.core.errors import ConfigError
from tierflight.core.sql import quote_ident, table_view_sql
from tierflight.rollups import lattice
from tierflight.rollups.definition import (
    HLL_TYPE,
    Measure,
    StorageGroup,
    dimension_expr,
    exact_sum_sql,
    storage_order,
)
from tierflight.rollups.sketches import SketchBuilder, sketch_of
from tierflight.rollups.snapshot import SourceState
from tierflight.tiers.base import TierKind
from tierflight.tiers.store import TableStore


def state_expr(m: Measure, digits: int | None = None) -> str | None:
    """The SQL of a measure's state over rows (``digits``: of a decimal column it sums)."""
    if m.kind == "count":
        return "count(*)"
    if m.kind == "hll":
        return None
    col = quote_ident(m.column or "")
    if m.kind == "sum" and digits is not None:
        return exact_sum_sql(col, digits)
    fn = "count" if m.kind == "count_col" else m.kind
    return f"{fn}({col})"


def source_state(store: TableStore, files_through: int | None = None) -> SourceState:
    """The table's stored rows per partition (hot tail excluded: ingest merges it)."""
    rows: dict[str, int] = {}
    for p in store.partitions():
        if p.tier is not TierKind.HOT:
            rows[p.partition] = rows.get(p.partition, 0) + p.rows
    return SourceState(rows, files_through)


@dataclass
class BuildResult:
    tables: dict[str, pa.Table]
    source_rows: int
    watermark: dt.datetime | None
    seconds: float


def retention_cutoff(group: StorageGroup, now: dt.datetime) -> dt.datetime | None:
    from tierflight.rollups.definition import retention_start

    return retention_start(group, now)


def build_groups(
    store: TableStore,
    groups: Sequence[StorageGroup],
    cursor: duckdb.DuckDBPyConnection,
    now: dt.datetime,
    source_sql: str | None = None,
    rows: pa.Table | None = None,
) -> BuildResult:
    """States of ``groups`` over every tier of the table, or over ``source_sql`` (the rows of
    one ingest batch, whose states are then merged into the loaded rollups)."""
    began = time.perf_counter()
    table_cfg = store.table
    ts = table_cfg.time_column
    if source_sql:
        sources = [source_sql]
    else:
        tier_sources = store.sources()
        sources = [s.sql for s in tier_sources]
        # S3 data reaches DuckDB as Arrow datasets registered on this cursor.
        for src in tier_sources:
            for name, obj in src.registrations:
                cursor.register(name, obj)
    source = f"({table_view_sql(table_cfg, sources)})"
    digits = {c: d for g in groups for c, d in g.digits}
    if rows is not None:
        # The rows of an ingest batch are at hand (and were checked by ingest): no scan for
        # their count and newest time.
        stats = (rows.num_rows, pc.max(rows[ts]).as_py() if rows.num_rows else None)
    else:
        stats = _scan_stats(cursor, source, ts, table_cfg.name, digits)
    out: dict[str, pa.Table] = {}
    by_filter: dict[str | None, list[StorageGroup]] = {}
    for g in groups:
        by_filter.setdefault(g.filter, []).append(g)
    for flt, members in by_filter.items():
        out.update(_grouping_sets_pass(cursor, source, flt, members, ts, now, digits))
        for g in members:
            hll = [m for m in g.measures if m.kind == "hll"]
            if hll:
                out[g.name] = _add_hll(cursor, source, g, hll, out[g.name], ts, now)
    return BuildResult(out, int(stats[0]), stats[1], time.perf_counter() - began)


def _scan_stats(
    cursor: duckdb.DuckDBPyConnection, source: str, ts: str, table: str, digits: Mapping[str, int]
) -> tuple[int, dt.datetime | None]:
    """The rows' count and newest time, and (same scan) that the decimal columns the
    rollups sum hold what the table declares: else their exact sums would be rounded."""
    checks = "".join(
        f", min({quote_ident(c)}) FILTER (WHERE {bad_value_sql(quote_ident(c), d)})" for c, d in digits.items()
    )
    row = cursor.sql(f"SELECT count(*), max({quote_ident(ts)}){checks} FROM {source}").fetchall()[0]
    for (column, d), bad in zip(digits.items(), row[2:], strict=True):
        if bad is not None:
            raise ConfigError(
                f"table {table}: {describe(table, column, d, bad)}; raise the digits or remove the "
                "column from decimals (its rollup sums are then kept as DOUBLE)"
            )
    return int(row[0]), row[1]


def _grouping_sets_pass(
    cursor: duckdb.DuckDBPyConnection,
    source: str,
    flt: str | None,
    groups: Sequence[StorageGroup],
    ts: str,
    now: dt.datetime,
    digits: Mapping[str, int],
) -> dict[str, pa.Table]:
    """The non-HLL states of ``groups`` (one filter): the lattice roots in one GROUPING
    SETS pass over the rows, then every other group merged (lattice.merge) from the states
    of the smallest root that holds its dimensions."""
    scanned = lattice.roots(groups)
    # Every state of the pass is computed for every root, so any root can feed any group.
    states = list(dict.fromkeys(m for g in groups for m in g.measures if m.kind != "hll"))
    where = f"WHERE {flt}" if flt else ""
    full = _scan_roots(cursor, f"(SELECT * FROM {source} {where})", scanned, ts, states, digits)
    for g in groups:
        if g.name not in full:
            parent = min((p for p in scanned if lattice.derivable(p, g)), key=lambda p: full[p.name].num_rows)
            full[g.name] = lattice.merge(full[parent.name], parent, g, states, digits)
    out = {}
    for g in groups:
        part = full[g.name].select([*g.dimensions, *(m.state for m in g.measures if m.kind != "hll")])
        cutoff = retention_cutoff(g, now)
        if cutoff is not None and g.grain:
            part = part.filter(
                pc.greater_equal(
                    pc.cast(part[g.grain], pa.timestamp("us")), pa.scalar(cutoff, pa.timestamp("us"))
                )
            )
        out[g.name] = part.combine_chunks()
    return out


def _scan_roots(
    cursor: duckdb.DuckDBPyConnection,
    relation: str,
    groups: Sequence[StorageGroup],
    ts: str,
    states: Sequence[Measure],
    digits: Mapping[str, int],
) -> dict[str, pa.Table]:
    """One GROUPING SETS query over the rows in ``relation``: per group, its dimensions and
    every one of ``states``, in the group's storage order."""
    dims = list(dict.fromkeys(d for g in groups for d in g.dimensions))

    def alias(d: str) -> str:
        # Dimension values are computed under private names: the source view has derived
        # columns called day/hour/... that GROUP BY would otherwise bind to.
        return quote_ident(f"__dim__{d}")

    inner_dims = "".join(f"{dimension_expr(d, ts)} AS {alias(d)}, " for d in dims)
    dim_sql = [f"{alias(d)} AS {quote_ident(d)}" for d in dims]
    state_sql = [f"{state_expr(m, digits.get(m.column or ''))} AS {quote_ident(m.state)}" for m in states]
    sets = ", ".join(dict.fromkeys("(" + ", ".join(alias(d) for d in g.dimensions) + ")" for g in groups))
    grouping = f"GROUPING({', '.join(alias(d) for d in dims)})" if dims else "0"
    sql = (
        f"SELECT {', '.join([*dim_sql, f'{grouping} AS __gid', *state_sql])} "
        f"FROM (SELECT {inner_dims}* FROM {relation}) GROUP BY GROUPING SETS ({sets}) "
        # Each set's rows come out together (slices), in storage order.
        f"ORDER BY {', '.join(['__gid', *(quote_ident(d) for d in storage_order(dims))])}"
    )
    result = cursor.sql(sql).to_arrow_table()
    gids = result["__gid"].to_numpy()
    out: dict[str, pa.Table] = {}
    for g in groups:
        # GROUPING() sets bit i (from the right, last argument = bit 0) for dims NOT grouped.
        gid = sum(1 << (len(dims) - 1 - i) for i, d in enumerate(dims) if d not in g.dimensions)
        start, stop = np.searchsorted(gids, gid, "left"), np.searchsorted(gids, gid, "right")
        part = result.slice(int(start), int(stop - start)).select([*g.dimensions, *(m.state for m in states)])
        if g.order:  # the slice is in the default order of the pass's dimensions
            part = part.sort_by([(d, "ascending") for d in g.stored_order])
        out[g.name] = part
    return out


_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
_HLL_BATCH_ROWS = 1 << 20


def _add_hll(
    cursor: duckdb.DuckDBPyConnection,
    source: str,
    g: StorageGroup,
    measures: Sequence[Measure],
    base: pa.Table,
    ts: str,
    now: dt.datetime,
) -> pa.Table:
    """Append the HLL states of ``measures`` to ``base`` (the group's other states, one row
    per group): each source row is matched to its group's row by a join, so groups outside
    the retention (absent from ``base``) take nothing."""
    inner_dims = "".join(f"{dimension_expr(d, ts)} AS {quote_ident('__dim__' + d)}, " for d in g.dimensions)
    rows = f"(SELECT {inner_dims}* FROM {source} {'WHERE ' + g.filter if g.filter else ''})"
    keys = base.select(list(g.dimensions)).append_column("__gi", pa.array(range(base.num_rows), pa.int64()))
    match = " AND ".join(
        f"s.{quote_ident('__dim__' + d)} IS NOT DISTINCT FROM k.{quote_ident(d)}" for d in g.dimensions
    )
    cursor.register("__tf_hll_keys", keys)
    try:
        for m in measures:
            col = f"s.{quote_ident(m.column or '')}"
            pairs = (
                f"SELECT k.__gi, {col} AS v FROM {rows} s JOIN __tf_hll_keys k ON {match} WHERE {col} IS NOT NULL"
                if g.dimensions
                else f"SELECT 0::BIGINT AS __gi, {col} AS v FROM {rows} s WHERE {col} IS NOT NULL"
            )
            value_type = str(cursor.sql(f"SELECT {col} FROM {rows} s LIMIT 0").types[0])
            if value_type in _INTEGER_TYPES:
                builder = SketchBuilder(base.num_rows, m.sketch_lg_k, HLL_TYPE)
                reader = cursor.sql(f"SELECT __gi, CAST(v AS BIGINT) AS v FROM ({pairs})").to_arrow_reader(
                    _HLL_BATCH_ROWS
                )
                for batch in reader:
                    builder.add(batch.column(0).to_numpy(), batch.column(1).to_numpy())
                blobs = builder.sketches()
            else:
                blobs = _sketches_by_value(cursor, pairs, base.num_rows, m.sketch_lg_k)
            base = base.append_column(m.state, pa.array(blobs, pa.binary()))
    finally:
        cursor.unregister("__tf_hll_keys")
    return base


def _sketches_by_value(cursor: duckdb.DuckDBPyConnection, pairs: str, groups: int, lg_k: int) -> list[bytes]:
    # Strings, floats and wide integers go through DataSketches' own hashing, one call per
    # distinct value.
    res = cursor.sql(f"SELECT __gi, list(DISTINCT v) AS vs FROM ({pairs}) GROUP BY __gi").to_arrow_table()
    values = dict(zip(res["__gi"].to_pylist(), res["vs"].to_pylist(), strict=True))
    return [sketch_of(values.get(gi, ()), lg_k, HLL_TYPE) for gi in range(groups)]
