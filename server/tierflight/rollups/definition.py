"""Rollup definitions from the configuration, and their mergeable measure states.

A rollup groups a table by dimensions (columns, or time grains of its time column) and
keeps measures as mergeable states, so it can be re-aggregated to any coarser grain and
merged across partitions: count, count(col), sum, min, max, and HyperLogLog sketches.
Rollups with the same table, dimensions and filter share one stored copy (their measures
are united), which is what :func:`storage_groups` computes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasketches

from tierflight.core.config import TableConfig
from tierflight.core.errors import ConfigError
from tierflight.core.sql import quote_ident

TIME_GRAINS = ("minute", "hour", "day", "week", "month")
# Finer grains answer coarser ones: day from minute, week from day (weeks do not nest in months).
DERIVABLE: Mapping[str, tuple[str, ...]] = {
    "minute": ("minute", "hour", "day", "week", "month"),
    "hour": ("hour", "day", "week", "month"),
    "day": ("day", "week", "month"),
    "week": ("week",),
    "month": ("month",),
}
KINDS = ("count", "count_col", "sum", "min", "max", "hll")
_MEASURE = re.compile(
    r"^\s*(count|sum|min|max|hll)\s*(?:\(\s*([A-Za-z_][A-Za-z0-9_]*|\*|1)?\s*(?:,\s*(\S+?)\s*)?\))?\s*$", re.I
)
# Registers of a sketch: 2**lg_k. The default gives a relative standard error of ~1.6%;
# ``hll(col, 10)`` (~3.3%) matches DuckDB's own approx_count_distinct at a quarter the bytes.
HLL_LG_K = 12
HLL_LG_K_RANGE = (4, 21)  # what DataSketches accepts
# Stored sketches keep 4-bit registers: half the bytes of HLL_8 for the same estimates,
# and unions of either run at the same speed (measured over 372 sketches).
HLL_TYPE = datasketches.tgt_hll_type.HLL_4


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
    return time_expr(dim, time_column) if dim in TIME_GRAINS else quote_ident(dim)


def storage_order(dimensions: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    """The order a rollup's rows are stored in: the configured ``order`` first, then its time
    grain (zone maps skip by time), then the other dimensions (runs compress tightly).

    The default suits slicing by time; a rollup can ask for another order when its rows
    compress much better in it (e.g. one series per advertiser, days in a row), which is
    what its memory costs: DuckDB compresses each column in runs of the stored order."""
    rest = sorted((d for d in dimensions if d not in order), key=lambda d: d not in TIME_GRAINS)
    return [*order, *rest]


def exact_sum_sql(column_sql: str, digits: int, width: int = 18) -> str:
    """The sum of decimals with ``digits`` places as the DOUBLE nearest to its exact value:
    DuckDB sums DECIMAL(width, digits) values in 128-bit integers, without the rounding
    error a DOUBLE sum accumulates. The stored state is then a short decimal, which DuckDB
    compresses to an integer (ALP) where a DOUBLE sum's noise would not compress at all."""
    return f"CAST(sum(CAST({column_sql} AS DECIMAL({width}, {digits}))) AS DOUBLE)"


@dataclass(frozen=True, order=True)
class Measure:
    kind: str
    column: str | None = None
    lg_k: int | None = None  # hll only: None is HLL_LG_K

    @property
    def sketch_lg_k(self) -> int:
        return self.lg_k or HLL_LG_K

    @property
    def state(self) -> str:
        """Column name of the state in the stored rollup."""
        if self.kind == "count":
            return "_count"
        kind = "count" if self.kind == "count_col" else self.kind
        return f"{kind}__{self.column}"

    def label(self) -> str:
        if self.kind == "count":
            return "count(*)"
        kind = "count" if self.kind == "count_col" else self.kind
        if self.lg_k is not None and self.lg_k != HLL_LG_K:
            return f"{kind}({self.column}, {self.lg_k})"
        return f"{kind}({self.column})"


def parse_measure(text: str, table: TableConfig, where: str) -> Measure:
    m = _MEASURE.match(text)
    if not m:
        raise ConfigError(
            f"{where}: measure {text!r} is not one of count, count(col), sum(col), min(col), max(col), hll(col)"
        )
    kind, col, arg = m.group(1).lower(), m.group(2), m.group(3)
    if arg is not None and kind != "hll":
        raise ConfigError(f"{where}: measure {text!r}: only hll(col, lg_k) takes a second argument")
    if kind == "count" and col in (None, "*", "1"):
        return Measure("count")
    if col is None or col in ("*", "1"):
        raise ConfigError(f"{where}: measure {text!r} needs a column, e.g. {kind}(bid_price)")
    if col not in table.column_names:
        raise ConfigError(f"{where}: measure {text!r} names unknown column {col!r} of table {table.name}")
    if arg is None:
        return Measure("count_col" if kind == "count" else kind, col)
    lo, hi = HLL_LG_K_RANGE
    if not arg.isdigit() or not lo <= int(arg) <= hi:
        raise ConfigError(
            f"{where}: measure {text!r}: lg_k must be a whole number from {lo} to {hi} "
            f"(2**lg_k registers; e.g. hll({col}, 10))"
        )
    return Measure(kind, col, None if int(arg) == HLL_LG_K else int(arg))


@dataclass(frozen=True)
class RollupDef:
    name: str
    table: str
    dimensions: tuple[str, ...]  # columns or time grains, in declaration order
    measures: tuple[Measure, ...]
    filter: str | None = None
    retention: dt.timedelta | None = None
    order: tuple[str, ...] = ()  # stored order of rows, leading dimensions (see storage_order)
    # Digits after the point of the decimal columns it sums ([tables.<t>] decimals).
    digits: tuple[tuple[str, int], ...] = ()

    @property
    def grain(self) -> str | None:
        grains = [d for d in self.dimensions if d in TIME_GRAINS]
        return grains[0] if grains else None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(d for d in self.dimensions if d not in TIME_GRAINS)

    @property
    def storage_key(self) -> tuple[str, tuple[str, ...], str | None, dt.timedelta | None]:
        return (self.table, tuple(sorted(self.dimensions)), self.filter, self.retention)

    def definition_hash(self) -> str:
        data = {
            "table": self.table,
            "dimensions": list(self.dimensions),
            "measures": [m.label() for m in sorted(self.measures)],
            "filter": self.filter,
            "retention": self.retention.total_seconds() if self.retention else None,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def parse_rollups(table: TableConfig) -> list[RollupDef]:
    out: list[RollupDef] = []
    seen: set[str] = set()
    for i, entry in enumerate(table.rollups):
        where = f"tables.{table.name}.rollups[{i}]"
        name = entry.name
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"{where}: name {name!r} must be an identifier (letters, digits, _)")
        if name in seen:
            raise ConfigError(f"{where}: rollup name {name!r} is used twice")
        seen.add(name)
        dims = tuple(entry.dimensions)
        for d in dims:
            if d not in TIME_GRAINS and d not in table.column_names:
                raise ConfigError(
                    f"{where}: dimension {d!r} is neither a column of {table.name} nor a time grain ({', '.join(TIME_GRAINS)})"
                )
        if sum(d in TIME_GRAINS for d in dims) > 1:
            raise ConfigError(f"{where}: at most one time grain per rollup (coarser grains are derived)")
        measures = [parse_measure(m, table, where) for m in entry.measures]
        if not any(m.kind == "count" for m in measures):
            measures.insert(0, Measure("count"))  # needed for AVG and to know a group exists
        summed = {m.column for m in measures if m.kind == "sum"}
        out.append(
            RollupDef(
                name=name,
                table=table.name,
                dimensions=dims,
                measures=tuple(dict.fromkeys(measures)),
                filter=entry.filter,
                retention=entry.retention,
                order=_order(entry.order, dims, where),
                digits=tuple(sorted((c, d) for c, d in table.decimals.items() if c in summed)),
            )
        )
    return out


def _order(value: Sequence[str], dims: Sequence[str], where: str) -> tuple[str, ...]:
    unknown = [v for v in value if v not in dims]
    if unknown or len(set(value)) != len(value):
        raise ConfigError(
            f"{where}.order = {list(value)!r}: name each of the rollup's dimensions ({', '.join(dims)}) at most once"
        )
    return tuple(value)


@dataclass(frozen=True)
class StorageGroup:
    """The rollups that share one stored copy, and the union of their measures."""

    name: str
    table: str
    dimensions: tuple[str, ...]
    measures: tuple[Measure, ...]
    filter: str | None
    retention: dt.timedelta | None
    members: tuple[str, ...]
    order: tuple[str, ...] = ()
    digits: tuple[tuple[str, int], ...] = ()

    @property
    def grain(self) -> str | None:
        grains = [d for d in self.dimensions if d in TIME_GRAINS]
        return grains[0] if grains else None

    @property
    def stored_order(self) -> list[str]:
        return storage_order(self.dimensions, self.order)

    def sum_digits(self, column: str | None) -> int | None:
        """Digits after the point of a summed decimal column (None: a DOUBLE sum)."""
        return dict(self.digits).get(column or "")

    def definition_hash(self) -> str:
        data: dict[str, Any] = {
            "table": self.table,
            "dimensions": list(self.dimensions),
            "measures": [m.label() for m in self.measures],
            "filter": self.filter,
            "retention": self.retention.total_seconds() if self.retention else None,
            "hll_lg_k": HLL_LG_K,
        }
        # Only when set, so that snapshots of rollups without them stay valid.
        if self.order:
            data["order"] = list(self.order)
        if self.digits:
            data["digits"] = dict(self.digits)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def storage_groups(rollups: Sequence[RollupDef]) -> list[StorageGroup]:
    groups: dict[Any, list[RollupDef]] = {}
    for r in rollups:
        groups.setdefault(r.storage_key, []).append(r)
    out = []
    for members in groups.values():
        first = members[0]
        measures = tuple(sorted({m for r in members for m in r.measures}))
        sketches: dict[str, Measure] = {}
        for m in measures:
            if m.kind == "hll" and sketches.setdefault(m.column or "", m) != m:
                raise ConfigError(
                    f"rollups {', '.join(r.name for r in members)} share one stored copy but ask for "
                    f"{sketches[m.column or ''].label()} and {m.label()}: give them the same lg_k"
                )
        orders = {r.order for r in members if r.order}
        if len(orders) > 1:
            raise ConfigError(
                f"rollups {', '.join(r.name for r in members)} share one stored copy but set different orders"
            )
        out.append(
            StorageGroup(
                name=members[0].name if len(members) == 1 else "__".join(sorted(r.name for r in members)),
                table=first.table,
                dimensions=first.dimensions,
                measures=measures,
                filter=first.filter,
                retention=first.retention,
                members=tuple(r.name for r in members),
                order=orders.pop() if orders else (),
                digits=tuple(sorted({d for r in members for d in r.digits})),
            )
        )
    return out


def all_rollups(tables: Iterable[TableConfig]) -> list[RollupDef]:
    return [r for t in tables for r in parse_rollups(t)]


def retention_start(group: StorageGroup, now: dt.datetime) -> dt.datetime | None:
    """The first bucket a rollup with a retention keeps (aligned up to its grain)."""
    if group.retention is None or group.grain is None:
        return None
    from tierflight.core.grains import next_boundary, truncate

    cutoff = now - group.retention
    return cutoff if truncate(cutoff, group.grain) == cutoff else next_boundary(cutoff, group.grain)
