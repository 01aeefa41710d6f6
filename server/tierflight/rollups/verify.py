"""Verify a rollup against the raw tiers: recompute a sample of its groups, compare.

A sample is made of whole groups: a group is in it when a hash of its key (salted, so
successive rounds look at different groups) falls under the sampled share, and the same
predicate selects the rollup's rows of that group and the raw rows that make it. Both are
read under the read side of the swap lock: an ingest commits its hot rows and their rollup
states together under the write side, so the two reads see the same rows (a race cannot
produce a false mismatch). Only the reading happens under the lock; the recompute runs
after it, over the sources listed then (immutable files and hot batches).

How each measure is compared (the rollup's states of a group are merged first, as any
statement over it would):

* count, count(col), min, max: exactly.
* sum of a declared decimal column: exactly, as DECIMAL(38, digits) on both sides.
* sum of a DOUBLE column: the rollup adds the same values in another order (per batch, per
  thread, then merged), so the two sums may differ in their last bits. Any summation order of
  n values is within (n-1)·u·Σ|x| of the exact sum (u = 2**-53), so two of them are within
  twice that; a difference beyond ``2·n·u·Σ|x|`` cannot come from the order and is a mismatch.
* hll(col): the registers exactly (both sides unioned, exact-mode coupons folded into
  registers), which is stricter than comparing estimates.
* quantiles(col): see rollups/verify_quantiles.py (count, min and max exactly; answers within
  the sketch's rank error of the raw values).
"""

from __future__ import annotations

import datetime as dt
import struct
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import datasketches
import duckdb
import numpy as np
import pyarrow as pa

from tierflight.core.sql import quote_ident, table_view_sql
from tierflight.rollups.build import _add_hll, retention_cutoff, state_expr
from tierflight.rollups.definition import Measure, StorageGroup, dimension_expr
from tierflight.tiers.store import TableStore

SAMPLE_BUCKETS = 1_000_000
UNIT_ROUNDOFF = 2.0**-53
# Mismatches kept as evidence per rollup (the count is always exact).
EVIDENCE = 5


@dataclass(frozen=True)
class Mismatch:
    key: dict[str, Any]
    measure: str  # a measure label, or "group" (present on one side only)
    rollup: Any
    raw: Any

    def describe(self) -> str:
        key = ", ".join(f"{k}={v}" for k, v in self.key.items()) or "(all rows)"
        return f"{key}: {self.measure} rollup={self.rollup!r} raw={self.raw!r}"


@dataclass
class VerifyResult:
    rollup: str
    groups: int = 0
    mismatches: int = 0
    largest_error: float = 0.0  # relative (1.0 for a value of another kind, a missing group)
    seconds: float = 0.0
    skipped: str | None = None  # why nothing was compared (not a mismatch)
    evidence: list[Mismatch] = field(default_factory=list)


def sample_sql(exprs: Sequence[str], fraction: float, salt: int) -> str | None:
    """The predicate keeping a ``fraction`` of groups by a hash of their key (None: all)."""
    if fraction >= 1 or not exprs:
        return None
    keep = max(1, round(fraction * SAMPLE_BUCKETS))
    return f"hash({int(salt)}, {', '.join(exprs)}) % {SAMPLE_BUCKETS} < {keep}"


def _since_literal(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value.isoformat(sep=' ')}'"


def _where(group: StorageGroup, exprs: dict[str, str], fraction: float, salt: int, since: dt.datetime | None) -> str:
    """Sample, ``since`` and retention, over the group's dimension values (``exprs``)."""
    preds = []
    sampled = sample_sql([exprs[d] for d in group.dimensions], fraction, salt)
    if sampled:
        preds.append(sampled)
    if since is not None and group.grain:
        from tierflight.core.grains import truncate

        preds.append(f"{exprs[group.grain]} >= {_since_literal(truncate(since, group.grain))}")
    return f"WHERE {' AND '.join(preds)}" if preds else ""


def _cutoff_filter(group: StorageGroup, now: dt.datetime, column: str) -> str:
    cutoff = retention_cutoff(group, now)
    return f" AND {column} >= {_since_literal(cutoff)}" if cutoff is not None and group.grain else ""


def read_rollup(
    cursor: duckdb.DuckDBPyConnection, qualified: str, group: StorageGroup, fraction: float, salt: int, since: dt.datetime | None
) -> pa.Table:
    """The rollup's stored rows of the sampled groups (several per group until compacted)."""
    exprs = {d: quote_ident(d) for d in group.dimensions}
    return cursor.sql(f"SELECT * FROM {qualified} {_where(group, exprs, fraction, salt, since)}").to_arrow_table()


def _merged_rollup_sql(group: StorageGroup, now: dt.datetime) -> str:
    dims = [quote_ident(d) for d in group.dimensions]
    aggs = []
    for m in group.measures:
        col = quote_ident(m.state)
        digits = group.sum_digits(m.column) if m.kind == "sum" else None
        if m.kind in ("count", "count_col"):
            aggs.append(f"CAST(sum({col}) AS BIGINT) AS {col}")
        elif digits is not None:
            aggs.append(f"sum(CAST({col} AS DECIMAL(38, {digits}))) AS {col}")
        elif m.kind in ("sum", "min", "max"):
            aggs.append(f"{m.kind}({col}) AS {col}")
        else:
            aggs.append(f"list({col}) AS {col}")
    where = "WHERE TRUE" + (_cutoff_filter(group, now, quote_ident(group.grain)) if group.grain else "")
    group_by = f"GROUP BY {', '.join(dims)}" if dims else ""
    return f"SELECT {', '.join([*dims, '1 AS __present', *aggs])} FROM __tf_verify_rollup {where} {group_by}"


def _raw_sql(group: StorageGroup, source: str, ts: str, fraction: float, salt: int, since: dt.datetime | None, now: dt.datetime) -> str:
    """The group's non-sketch states over the raw rows, as the build computes them (decimal
    sums kept as DECIMAL), plus Σ|x| of each DOUBLE sum for its tolerance."""

    def alias(d: str) -> str:  # the source view may have derived columns called day/hour/...
        return quote_ident(f"__dim__{d}")

    inner = "".join(f"{dimension_expr(d, ts)} AS {alias(d)}, " for d in group.dimensions)
    rows = f"(SELECT * FROM {source} {'WHERE ' + group.filter if group.filter else ''})"
    exprs = {d: alias(d) for d in group.dimensions}
    where = _where(group, exprs, fraction, salt, since)
    if group.grain:
        cut = _cutoff_filter(group, now, alias(group.grain))
        where = where + cut if where else ("WHERE TRUE" + cut if cut else "")
    states = []
    for m in group.measures:
        if m.sketch:
            continue
        digits = group.sum_digits(m.column) if m.kind == "sum" else None
        col = quote_ident(m.column or "")
        if digits is not None:
            states.append(f"sum(CAST({col} AS DECIMAL(38, {digits}))) AS {quote_ident(m.state)}")
            continue
        states.append(f"{state_expr(m)} AS {quote_ident(m.state)}")
        if m.kind == "sum":
            states.append(f"sum(abs(CAST({col} AS DOUBLE))) AS {quote_ident('__abs__' + m.state)}")
    dims = [f"{alias(d)} AS {quote_ident(d)}" for d in group.dimensions]
    group_by = f"GROUP BY {', '.join(alias(d) for d in group.dimensions)}" if group.dimensions else ""
    return (
        f"SELECT {', '.join([*dims, '1 AS __present', *states])} "
        f"FROM (SELECT {inner}* FROM {rows}) {where} {group_by}"
    )


def _comparison_sql(group: StorageGroup, types: dict[str, pa.DataType]) -> tuple[str, list[tuple[Measure, str]]]:
    """Every sampled group on either side, each measure's mismatch flag and relative error."""
    on = " AND ".join(f"r.{quote_ident(d)} IS NOT DISTINCT FROM w.{quote_ident(d)}" for d in group.dimensions) or "TRUE"
    cols = [f"coalesce(r.{quote_ident(d)}, w.{quote_ident(d)}) AS {quote_ident(d)}" for d in group.dimensions]
    cols.append("(r.__present IS NULL OR w.__present IS NULL) AS __missing")
    cols.append("w.__present AS __w_present")
    checks: list[tuple[Measure, str]] = []
    for m in group.measures:
        if m.sketch:
            continue
        s = quote_ident(m.state)
        a, b = f"r.{s}", f"w.{s}"
        flag = quote_ident(f"__bad__{m.state}")
        err = quote_ident(f"__err__{m.state}")
        typ = types[m.state]
        numeric = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
        if m.kind == "sum" and pa.types.is_floating(typ):
            n = "greatest(w._count, 1)"
            tol = f"2 * {n} * {UNIT_ROUNDOFF!r} * w.{quote_ident('__abs__' + m.state)}"
            bad = f"NOT ({a} IS NOT DISTINCT FROM {b} OR (isfinite({a}) AND isfinite({b}) AND abs({a} - {b}) <= {tol}))"
        else:
            bad = f"{a} IS DISTINCT FROM {b}"
        if numeric:
            da, db = f"CAST({a} AS DOUBLE)", f"CAST({b} AS DOUBLE)"
            rel = f"CASE WHEN {a} IS NOT DISTINCT FROM {b} THEN 0.0 ELSE coalesce(abs({da} - {db}) / greatest(abs({db}), 1e-300), 1.0) END"
        else:
            rel = f"CASE WHEN {bad} THEN 1.0 ELSE 0.0 END"
        cols += [f"{a} AS {quote_ident('__r__' + m.state)}", f"{b} AS {quote_ident('__w__' + m.state)}"]
        cols += [f"coalesce({bad}, TRUE) AS {flag}", f"{rel} AS {err}"]
        checks.append((m, m.state))
    for m in group.measures:
        if m.kind == "hll":
            s = quote_ident(m.state)
            cols += [f"r.{s} AS {quote_ident('__r__' + m.state)}", f"w.{s} AS {quote_ident('__w__' + m.state)}"]
    sql = f"SELECT {', '.join(cols)} FROM __tf_verify_merged r FULL OUTER JOIN __tf_verify_raw w ON {on}"
    return sql, checks


def registers(blobs: Sequence[bytes | None], lg_k: int) -> bytes:
    """The HLL registers of the union of ``blobs``: exact-mode coupons folded into registers,
    so a sketch and the union of its parts compare equal whatever mode each ended in."""
    union = datasketches.hll_union(lg_k)
    for b in blobs:
        if b is not None:
            union.update(datasketches.hll_sketch.deserialize(b))
    image = bytes(union.get_result(datasketches.tgt_hll_type.HLL_8).serialize_compact())
    start = image[0] * 4  # preamble ints
    k = 1 << lg_k
    if image[7] & 3 == 2:  # HLL mode: one byte per register (HLL_8)
        return image[start : start + k]
    regs = np.zeros(k, np.uint8)
    count = (len(image) - start) // 4
    for coupon in struct.unpack_from(f"<{count}I", image, start):
        if coupon:  # a coupon is the register's value (high 6 bits) over its slot (low 26)
            slot = (coupon & ((1 << 26) - 1)) & (k - 1)
            regs[slot] = max(int(regs[slot]), coupon >> 26)
    return regs.tobytes()


def _estimate(blobs: Sequence[bytes | None], lg_k: int) -> float:
    union = datasketches.hll_union(lg_k)
    for b in blobs:
        if b is not None:
            union.update(datasketches.hll_sketch.deserialize(b))
    return float(union.get_estimate())


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def compare(
    cursor: duckdb.DuckDBPyConnection,
    group: StorageGroup,
    merged: pa.Table,
    raw: pa.Table,
    result: VerifyResult,
) -> None:
    """Compare the merged rollup groups with the recomputed ones into ``result``."""
    sql, checks = _comparison_sql(group, {f.name: f.type for f in raw.schema})
    cursor.register("__tf_verify_merged", merged)
    cursor.register("__tf_verify_raw", raw)
    try:
        joined = cursor.sql(sql).to_arrow_table()
    finally:
        cursor.unregister("__tf_verify_merged")
        cursor.unregister("__tf_verify_raw")
    result.groups += joined.num_rows
    for _, state in checks:
        errors = joined[f"__err__{state}"].to_numpy(zero_copy_only=False)
        if len(errors):
            result.largest_error = max(result.largest_error, float(np.nanmax(errors)))
    hll = [m for m in group.measures if m.kind == "hll"]
    flags = [joined["__missing"], *(joined[f"__bad__{s}"] for _, s in checks)]
    bad_mask = np.logical_or.reduce([f.to_numpy(zero_copy_only=False).astype(bool) for f in flags])
    dims = list(group.dimensions)
    # Rows are looked at one by one only when they are wrong, or for their sketches.
    rows = joined.to_pylist() if hll else joined.take(np.flatnonzero(bad_mask)).to_pylist()
    for row in rows:
        key = {d: row[d] for d in dims}
        bad: list[Mismatch] = []
        if row["__missing"]:
            where = "raw tiers" if row["__w_present"] is None else "rollup"
            bad.append(Mismatch(key, "group", f"absent from the {where}", None))
            result.largest_error = max(result.largest_error, 1.0)
        else:
            for m, state in checks:
                if row[f"__bad__{state}"]:
                    bad.append(Mismatch(key, m.label(), _plain(row[f"__r__{state}"]), _plain(row[f"__w__{state}"])))
            for m in hll:
                ours, theirs = row[f"__r__{m.state}"] or [], [row[f"__w__{m.state}"]]
                if registers(ours, m.sketch_lg_k) != registers(theirs, m.sketch_lg_k):
                    a, b = _estimate(ours, m.sketch_lg_k), _estimate(theirs, m.sketch_lg_k)
                    result.largest_error = max(result.largest_error, abs(a - b) / max(b, 1.0))
                    bad.append(Mismatch(key, m.label(), round(a, 3), round(b, 3)))
        add_evidence(result, bad)


def add_evidence(result: VerifyResult, bad: Sequence[Mismatch]) -> None:
    """Count a group whose measures in ``bad`` differ (nothing if empty), keeping the first few."""
    if bad:
        result.mismatches += 1
        result.evidence.extend(bad[: max(0, EVIDENCE - len(result.evidence))])


def verify(
    store: TableStore,
    group: StorageGroup,
    qualified: str,
    read_cursor: Callable[[], duckdb.DuckDBPyConnection],
    cursor: duckdb.DuckDBPyConnection,
    view: Callable[[], AbstractContextManager[bool]],
    now: dt.datetime,
    fraction: float = 1.0,
    salt: int = 0,
    since: dt.datetime | None = None,
    token: Callable[[], object] = lambda: None,
) -> VerifyResult:
    """Recompute the sampled groups of one loaded rollup and compare.

    ``view``: a context in which the rollup and the tiers hold the same rows (the read side
    of the swap lock); it yields False when they cannot (hot rows not merged yet), and
    the round is skipped. ``read_cursor`` reads the loaded rollup; ``cursor`` recomputes.
    ``token``: what changes when the rollup or the listed files change other than under that
    lock (another process's files or snapshot picked up); a change skips the round."""
    began = time.perf_counter()
    result = VerifyResult(group.name)
    with view() as consistent:
        if not consistent:
            result.skipped = "the hot tail has rows the rollup does not hold yet"
            return result
        store.refresh_if_changed()
        before = token()
        rc = read_cursor()
        try:
            stored = read_rollup(rc, qualified, group, fraction, salt, since)
        finally:
            rc.close()
        sources = store.sources()
        if token() != before:
            result.skipped = "the data changed while it was read"
            return result
    registered = [name for s in sources for name, _ in s.registrations]
    for s in sources:
        for name, obj in s.registrations:
            cursor.register(name, obj)
    try:
        source = f"({table_view_sql(store.table, [s.sql for s in sources])})"
        cursor.register("__tf_verify_rollup", stored)
        try:
            merged = cursor.sql(_merged_rollup_sql(group, now)).to_arrow_table()
        finally:
            cursor.unregister("__tf_verify_rollup")
        ts = store.table.time_column
        raw = cursor.sql(_raw_sql(group, source, ts, fraction, salt, since, now)).to_arrow_table()
        hll = [m for m in group.measures if m.kind == "hll"]
        if hll:  # the sketches of exactly these groups, as the build makes them (joined by key)
            raw = _add_hll(cursor, source, group, hll, raw, ts, now)
        compare(cursor, group, merged, raw, result)
        kll = [m for m in group.measures if m.kind == "quantiles"]
        if kll:
            from tierflight.rollups.verify_quantiles import check_quantiles

            check_quantiles(cursor, source, group, kll, merged, ts, result)
    finally:
        for name in registered:
            cursor.unregister(name)
    result.seconds = time.perf_counter() - began
    return result
