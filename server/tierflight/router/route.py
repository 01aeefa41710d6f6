"""The router's decision: a frozen value that EXPLAIN ROUTE prints and the logs carry."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa

from tierflight.tiers.base import TierKind


@dataclass(frozen=True)
class RoutePart:
    """One source that contributes rows to the answer."""

    tier: str  # a TierKind, or system, none
    source: str  # rollup name, or partitions/files
    estimated_rows: int
    reason: str


@dataclass(frozen=True)
class Rejection:
    """A rollup candidate that could not answer, with the rule that rejected it."""

    candidate: str
    rule: str
    reason: str


@dataclass(frozen=True)
class Route:
    sql: str  # what DuckDB executes
    parts: tuple[RoutePart, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Arrow objects (e.g. pyarrow datasets over S3) the SQL reads by name; registered on the
    # statement's cursor, since DuckDB registrations are per connection.
    registrations: tuple[tuple[str, Any], ...] = ()
    # Set by the router for rollup answers: the data version the answer is exact for. The
    # executor may reuse a result for the same SQL and version (dashboards repeat).
    version: tuple[Any, ...] | None = None

    # A route is planned once and served many times (the plan cache hands out the same
    # object), so what every statement's FlightInfo and log need is computed once.
    @cached_property
    def tier(self) -> str:
        tiers = sorted({p.tier for p in self.parts})
        return "+".join(tiers) if tiers else "none"

    @cached_property
    def rollup(self) -> str | None:
        names = [p.source for p in self.parts if p.tier == TierKind.HOT and p.source.startswith("rollup:")]
        return ",".join(n.removeprefix("rollup:") for n in names) or None

    @cached_property
    def system_tables(self) -> frozenset[str]:
        """The system tables the SQL reads (refreshed before it runs), as registered."""
        return frozenset(p.source.removeprefix("system.") for p in self.parts if p.tier == "system")

    def to_json(self) -> str:
        return self._json

    @cached_property
    def _json(self) -> str:
        return json.dumps(
            {
                "tier": self.tier,
                "rollup": self.rollup,
                "parts": [asdict(p) for p in self.parts],
                "rejected": [asdict(r) for r in self.rejected],
            },
            separators=(",", ":"),
        )

    def explain_table(self) -> pa.Table:
        rows: list[tuple[str, str, int | None, str]] = [(p.tier, p.source, p.estimated_rows, p.reason) for p in self.parts]
        rows += [("rejected", r.candidate, None, f"{r.rule}: {r.reason}") for r in self.rejected]
        return pa.table(
            {
                "tier": pa.array([r[0] for r in rows], pa.string()),
                "source": pa.array([r[1] for r in rows], pa.string()),
                "estimated_rows": pa.array([r[2] for r in rows], pa.int64()),
                "reason": pa.array([r[3] for r in rows], pa.string()),
            }
        )
