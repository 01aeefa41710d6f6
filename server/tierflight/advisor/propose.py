"""The advisor: from observed statement shapes to the smallest rollups that answer them.

Pure functions over observations, existing rollup definitions and an estimator (rows a
rollup would hold). Statements that a rollup already answered teach nothing; the others are
grouped by shape key (table, dimensions, shared equality filter), each group becomes the
smallest rollup answering all of it exactly, and proposals are merged while one rollup is
no larger than the two it replaces. Ranked by benefit: the observed time of the statements
it would have answered (each observation counts, so frequency is in it).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from tierflight.advisor.querylog import Observation
from tierflight.advisor.shape import Shape
from tierflight.core.config import RollupConfig, TableConfig
from tierflight.core.grains import GRAINS
from tierflight.rollups.definition import RollupDef, parse_rollups

DAY = 86_400.0
# Statements that all read at most this far back get a rollup with a retention.
RECENT = dt.timedelta(days=90)
HLL_ROW_BYTES = 600  # an HLL_4 sketch of lg_k 10 at most (small groups keep lists: fewer)
# What one more rollup costs besides its rows (a table, its snapshot, a router candidate): so
# many small filtered rollups merge into one with the filter column as a dimension.
ROLLUP_OVERHEAD_BYTES = 64 << 10
MAX_GROUPS = 40  # shape groups proposed (and estimated) per advice, the most beneficial first


class AdviceStatus(enum.StrEnum):
    PROPOSED = "proposed"
    OVER_BUDGET = "over_budget"  # refused: it does not fit [rollups] memory_budget
    BUILT = "built"  # a rollup with this definition exists
    REFUSED = "refused"  # autonomous mode did not build it (the note says why; retried later)


@dataclass(frozen=True)
class Proposal:
    table: str
    grain: str | None
    columns: tuple[str, ...]
    measures: tuple[str, ...]
    filter: str | None = None
    retention_days: int | None = None
    statements: int = 0  # observations it would have answered
    benefit_ms: float = 0.0  # their observed time together
    groups: int = 1  # shape groups it serves (more than one: merged)
    first_seen: float = 0.0  # unix seconds of its first observation
    rows: int | None = None  # estimated from the data
    bytes: int | None = None
    status: AdviceStatus = AdviceStatus.PROPOSED
    note: str | None = None  # why it is not built (budget, a failed build)

    @property
    def dimensions(self) -> tuple[str, ...]:
        return (*((self.grain,) if self.grain else ()), *self.columns)

    @property
    def name(self) -> str:
        parts = ["auto", *(self.dimensions or ("total",))]
        if self.filter:
            parts.append("f" + hashlib.sha256(self.filter.encode()).hexdigest()[:6])
        if self.retention_days:
            parts.append(f"{self.retention_days}d")
        name = "_".join(parts)
        if len(name) > 60:
            name = name[:48] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
        return name

    def rollup_config(self) -> RollupConfig:
        return RollupConfig(
            name=self.name,
            dimensions=self.dimensions,
            measures=self.measures,
            filter=self.filter,
            retention=dt.timedelta(days=self.retention_days) if self.retention_days else None,
        )

    def config_text(self) -> str:
        """The TOML to adopt it as a configured rollup."""
        lines = [
            f"[[tables.{self.table}.rollups]]",
            f'name = "{self.name}"',
            "dimensions = [" + ", ".join(f'"{d}"' for d in self.dimensions) + "]",
            "measures = [" + ", ".join(f'"{m}"' for m in self.measures) + "]",
        ]
        if self.filter:
            lines.append("filter = " + _toml_string(self.filter))
        if self.retention_days:
            lines.append(f'retention = "{self.retention_days}d"')
        return "\n".join(lines)


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


Estimator = Callable[[Proposal], int]  # rows the proposal's rollup would hold


def row_bytes(p: Proposal) -> int:
    """Bytes per stored row: 8 per dimension and per plain state, a sketch per HLL."""
    plain = sum(1 for m in p.measures if not m.startswith("hll("))
    sketches = len(p.measures) - plain
    return 8 * (len(p.dimensions) + plain) + HLL_ROW_BYTES * sketches


def _finer(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if GRAINS.index(a) < GRAINS.index(b) else b


def _measures(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(items), key=lambda m: (m != "count", m)))


def _group(shapes: Sequence[Shape], filter_texts: Mapping[str, str]) -> Proposal:
    """The smallest rollup answering every shape of one group exactly."""
    first = shapes[0]
    grain: str | None = None
    for s in shapes:
        grain = _finer(grain, s.grain)
    measures = _measures(m for s in shapes for m in s.measures)
    columns = set(first.dimensions)
    flt = filter_texts.get(first.eq_filters[0]) if first.eq_filters else None
    if flt is not None:
        # The filter column is no dimension when every statement uses it only in that filter.
        filter_columns = {c for c, kind in first.filters if kind.value == "eq"}
        used = {c for s in shapes for c in s.columns}
        other_filters = {c for s in shapes for c, kind in s.filters if kind.value != "eq"}
        droppable = {
            c for c in filter_columns if c not in used and c not in other_filters and c.lower() in flt.lower()
        }
        if len(droppable) == 1:
            columns -= droppable
        else:
            flt = None
    retention = None
    lookbacks = [s.lookback_s for s in shapes]
    if grain is not None and all(lb is not None for lb in lookbacks):
        longest = max(lb for lb in lookbacks if lb is not None)
        if longest <= RECENT.total_seconds():
            retention = math.ceil(longest / DAY) + 1  # whole days, and a day's slack for the clock
    return Proposal(first.table, grain, tuple(sorted(columns)), measures, flt, retention)


def _merge(a: Proposal, b: Proposal) -> Proposal | None:
    """One rollup answering what ``a`` and ``b`` answer (None: they cannot share one)."""
    if a.table != b.table:
        return None
    # Only rollups whose dimensions nest (or that differ by their filters) are merged: a
    # union of unrelated dimensions is their product, never smaller than the two.
    if not (set(a.columns) <= set(b.columns) or set(b.columns) <= set(a.columns)):
        return None
    columns = set(a.columns) | set(b.columns)
    flt = a.filter if a.filter == b.filter else None
    if a.filter != b.filter:
        # Different filters: their columns become dimensions of an unfiltered rollup; a
        # filter is text here, so only filters on one plain column are merged.
        for p in (a, b):
            if p.filter is not None:
                column = p.filter.split("=")[0].strip().strip('"')
                if not column.isidentifier():
                    return None
                columns.add(column)
    retention = max(a.retention_days, b.retention_days) if a.retention_days and b.retention_days else None
    grain = _finer(a.grain, b.grain)
    return Proposal(
        a.table,
        grain,
        tuple(sorted(columns)),
        _measures((*a.measures, *b.measures)),
        flt,
        retention if grain else None,
        a.statements + b.statements,
        a.benefit_ms + b.benefit_ms,
        a.groups + b.groups,
        min(a.first_seen, b.first_seen),
    )


def _estimated(p: Proposal, estimate: Estimator) -> Proposal:
    rows = estimate(p)
    return replace(p, rows=rows, bytes=rows * row_bytes(p) + ROLLUP_OVERHEAD_BYTES)


def advise(
    observations: Iterable[Observation],
    existing: Sequence[RollupDef],
    estimate: Estimator,
    filter_texts: Mapping[str, str] | None = None,
    budget: int | None = None,
    min_statements: int = 1,
) -> list[Proposal]:
    """Ranked proposals (largest benefit first), each with its estimated rows and bytes."""
    groups: dict[tuple[object, ...], list[Observation]] = {}
    for obs in observations:
        if obs.rollup:
            continue  # answered by a rollup already
        groups.setdefault(obs.shape.key(), []).append(obs)
    estimate = _memoised(estimate)
    proposals = []
    for members in groups.values():
        if len(members) < min_statements:
            continue
        p = _group([o.shape for o in members], filter_texts or {})
        proposals.append(
            _estimated(
                replace(
                    p,
                    statements=len(members),
                    benefit_ms=sum(o.ms for o in members),
                    first_seen=min(o.at for o in members),
                ),
                estimate,
            )
        )
    # The shapes that would save most: estimates read the data, so their number is bounded.
    proposals = sorted(proposals, key=lambda p: -p.benefit_ms)[:MAX_GROUPS]
    proposals = _merge_all(proposals, estimate)
    built = {_definition(r) for r in existing}
    out = []
    used = 0
    for p in sorted(proposals, key=lambda p: (-p.benefit_ms, p.bytes or 0, p.name)):
        status = AdviceStatus.PROPOSED
        if _definition_of(p) in built:
            status = AdviceStatus.BUILT
        elif budget is not None and used + (p.bytes or 0) > budget:
            status = AdviceStatus.OVER_BUDGET
            p = replace(
                p, note=f"estimated {p.bytes} bytes; {max(budget - used, 0)} of [rollups] memory_budget left"
            )
        else:
            used += p.bytes or 0
        out.append(replace(p, status=status))
    return out


def _memoised(estimate: Estimator) -> Estimator:
    """Rows depend on the definition only: each is estimated once per advice."""
    known: dict[tuple[object, ...], int] = {}

    def rows(p: Proposal) -> int:
        key = (p.table, p.grain, p.columns, p.filter, p.retention_days)
        if key not in known:
            known[key] = estimate(p)
        return known[key]

    return rows


def _merge_all(proposals: list[Proposal], estimate: Estimator) -> list[Proposal]:
    """Greedy: the pair whose merge saves the most rows first, while any merge saves rows."""
    while True:
        best: tuple[int, int, int, Proposal] | None = None
        for i, a in enumerate(proposals):
            for j in range(i + 1, len(proposals)):
                b = proposals[j]
                merged = _merge(a, b)
                if merged is None:
                    continue
                merged = _estimated(merged, estimate)
                saved = (a.bytes or 0) + (b.bytes or 0) - (merged.bytes or 0)
                if saved >= 0 and (best is None or saved > best[0]):
                    best = (saved, i, j, merged)
        if best is None:
            return proposals
        _, i, j, merged = best
        proposals = [p for k, p in enumerate(proposals) if k not in (i, j)] + [merged]


def _definition(r: RollupDef) -> tuple[object, ...]:
    days = r.retention.days if r.retention else None
    return (
        r.table,
        tuple(sorted(r.dimensions)),
        tuple(sorted(m.label() for m in r.measures)),
        r.filter,
        days,
    )


def _definition_of(p: Proposal) -> tuple[object, ...]:
    return (
        p.table,
        tuple(sorted(p.dimensions)),
        tuple(sorted(_label(m) for m in p.measures)),
        p.filter,
        p.retention_days,
    )


def _label(measure: str) -> str:
    return "count(*)" if measure == "count" else measure


def rollup_def(p: Proposal, table: TableConfig) -> RollupDef:
    """The proposal as a rollup definition (checked like a configured one)."""
    defs = parse_rollups(replace(table, rollups=(p.rollup_config(),)))
    return defs[0]
