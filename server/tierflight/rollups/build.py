"""Build rollups: one DuckDB GROUPING SETS pass per filter over every tier of the table.

HyperLogLog states are built with Apache DataSketches from the distinct (group, value)
pairs DuckDB hands over; DataSketches has no vectorised update from Python, so deduplicating
first is what keeps this affordable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import datasketches
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tierflight.engine.database import quote_ident, table_view_sql
from tierflight.rollups.definition import HLL_LG_K, Measure, StorageGroup
from tierflight.tiers.store import TableStore


def time_expr(grain: str, column: str) -> str:
    c = quote_ident(column)
    return {
        "minute": f"date_trunc('minute', {c})",
        "hour": f"date_trunc('hour', {c})",
        "day": f"CAST({c} AS DATE)",
        "week": f"CAST(date_trunc('week', {c}) AS DATE)",
        "month": f"CAST(date_trunc('month', {c}) AS DATE)",
    }[grain]


def dimension_expr(dim: str, time_column: str) -> str:
    from tierflight.rollups.definition import TIME_GRAINS

    return time_expr(dim, time_column) if dim in TIME_GRAINS else quote_ident(dim)


def state_expr(m: Measure) -> str | None:
    if m.kind == "count":
        return "count(*)"
    if m.kind == "hll":
        return None
    col = quote_ident(m.column or "")
    fn = "count" if m.kind == "count_col" else m.kind
    return f"{fn}({col})"


def source_fingerprint(store: TableStore) -> str:
    """Changes whenever the stored rows of the table change (hot tail excluded: ingest merges
    it). Rows per partition, not tiers or files: demotion and compaction move rows without
    changing them, and must not make every rollup stale."""
    h = hashlib.sha256()
    for p in sorted((p for p in store.partitions() if p.tier != "hot"), key=lambda p: p.partition):
        h.update(f"{p.partition}|{p.rows}\n".encode())
    return h.hexdigest()[:16]


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
    if rows is not None:
        # The rows of an ingest batch are at hand: no scan for their count and newest time.
        stats = (rows.num_rows, pc.max(rows[ts]).as_py() if rows.num_rows else None)
    else:
        stats = tuple(cursor.sql(f"SELECT count(*), max({quote_ident(ts)}) FROM {source}").fetchall()[0])
    out: dict[str, pa.Table] = {}
    by_filter: dict[str | None, list[StorageGroup]] = {}
    for g in groups:
        by_filter.setdefault(g.filter, []).append(g)
    for flt, members in by_filter.items():
        out.update(_grouping_sets_pass(cursor, source, flt, members, ts, now))
        for g in members:
            hll = [m for m in g.measures if m.kind == "hll"]
            if hll:
                out[g.name] = _add_hll(cursor, source, g, hll, out[g.name], ts, now)
    return BuildResult(out, int(stats[0]), stats[1], time.perf_counter() - began)


def _grouping_sets_pass(
    cursor: duckdb.DuckDBPyConnection,
    source: str,
    flt: str | None,
    groups: Sequence[StorageGroup],
    ts: str,
    now: dt.datetime,
) -> dict[str, pa.Table]:
    dims = list(dict.fromkeys(d for g in groups for d in g.dimensions))
    states = list(dict.fromkeys(m for g in groups for m in g.measures if m.kind != "hll"))

    def alias(d: str) -> str:
        # Dimension values are computed under private names: the source view has derived
        # columns called day/hour/... that GROUP BY would otherwise bind to.
        return quote_ident(f"__dim__{d}")

    inner_dims = ", ".join(f"{dimension_expr(d, ts)} AS {alias(d)}" for d in dims)
    where = f"WHERE {flt}" if flt else ""
    inner = f"(SELECT {inner_dims + ', ' if dims else ''}* FROM {source} {where})"
    dim_sql = [f"{alias(d)} AS {quote_ident(d)}" for d in dims]
    state_sql = [f"{state_expr(m)} AS {quote_ident(m.state)}" for m in states]
    sets = ", ".join("(" + ", ".join(alias(d) for d in g.dimensions) + ")" for g in groups)
    grouping = f"GROUPING({', '.join(alias(d) for d in dims)})" if dims else "0"
    sql = (
        f"SELECT {', '.join([*dim_sql, f'{grouping} AS __gid', *state_sql])} FROM {inner} "
        f"GROUP BY GROUPING SETS ({sets})"
    )
    result = cursor.sql(sql).to_arrow_table()
    out = {}
    for g in groups:
        # GROUPING() sets bit i (from the right, last argument = bit 0) for dims NOT grouped.
        gid = sum(1 << (len(dims) - 1 - i) for i, d in enumerate(dims) if d not in g.dimensions)
        part = result.filter(pc.equal(result["__gid"], gid)).select([*g.dimensions, *(m.state for m in g.measures if m.kind != "hll")])
        cutoff = retention_cutoff(g, now)
        if cutoff is not None and g.grain:
            part = part.filter(pc.greater_equal(pc.cast(part[g.grain], pa.timestamp("us")), pa.scalar(cutoff, pa.timestamp("us"))))
        if g.grain:
            part = part.sort_by([(g.grain, "ascending")])
        out[g.name] = part.combine_chunks()
    return out


def _add_hll(
    cursor: duckdb.DuckDBPyConnection,
    source: str,
    g: StorageGroup,
    measures: Sequence[Measure],
    base: pa.Table,
    ts: str,
    now: dt.datetime,
) -> pa.Table:
    key_sql = [f"{quote_ident('__dim__' + d)} AS {quote_ident(d)}" for d in g.dimensions]
    inner_dims = "".join(f"{dimension_expr(d, ts)} AS {quote_ident('__dim__' + d)}, " for d in g.dimensions)
    source = f"(SELECT {inner_dims}* FROM {source} {'WHERE ' + g.filter if g.filter else ''})"
    where = ""
    keys = [tuple(r) for r in zip(*(base[d].to_pylist() for d in g.dimensions), strict=True)] if g.dimensions else [()]
    index = {k: i for i, k in enumerate(keys)}
    for m in measures:
        col = quote_ident(m.column or "")
        group_by = f"GROUP BY {', '.join(quote_ident('__dim__' + d) for d in g.dimensions)}" if g.dimensions else ""
        res = cursor.sql(
            f"SELECT {', '.join([*key_sql, f'list(DISTINCT {col}) AS __vs'])} FROM {source} {where} {group_by}"
        ).to_arrow_table()
        sketches = [datasketches.hll_sketch(HLL_LG_K) for _ in keys]
        lists = res["__vs"].combine_chunks()
        offsets = lists.offsets.to_numpy()
        flat = lists.flatten().to_numpy(zero_copy_only=False)
        dim_cols = [res[d].to_pylist() for d in g.dimensions]
        for row in range(res.num_rows):
            i = index.get(tuple(c[row] for c in dim_cols))
            if i is None:
                continue  # outside the retention
            update = sketches[i].update
            # DataSketches has no vectorised update: one C++ call per distinct value.
            for v in flat[offsets[row] : offsets[row + 1]].tolist():
                if v is not None:
                    update(v)
        base = base.append_column(m.state, pa.array([s.serialize_compact() for s in sketches], pa.binary()))
    return base
