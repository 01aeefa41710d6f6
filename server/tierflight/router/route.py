"""The router's decision: a frozen value that EXPLAIN ROUTE prints and the logs carry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

import pyarrow as pa

from tierflight.router.joined import JoinedRollup, derive


class PartTier(StrEnum):
    """Where a part of the answer is read: printed by EXPLAIN ROUTE as its value (a storage
    tier's TierKind has the same values for hot, warm and cold)."""

    HOT = "hot"  # the hot tail, or a rollup (held in memory)
    WARM = "warm"
    COLD = "cold"
    SYSTEM = "system"
    CATALOG = "catalog"  # the shadow catalog (engine.catalog): catalog views and functions
    DIMENSION = "dimension"  # a dimension table's current version (in memory)
    NONE = "none"  # a table with no partition in the range


class Rule(StrEnum):
    """The rule that rejected a rollup candidate (EXPLAIN ROUTE prints its value)."""

    PARAMETERS = "parameters"
    SHAPE = "shape"
    TIME_TRAVEL = "time-travel"
    STATUS = "status"
    FRESHNESS = "freshness"
    RETENTION = "retention"
    GRAIN = "grain"
    DIMENSION = "dimension"
    MEASURE = "measure"
    FILTER = "filter"
    ALIGNMENT = "alignment"
    COST = "cost"


@dataclass(frozen=True)
class RoutePart:
    """One source that contributes rows to the answer."""

    tier: PartTier
    source: str  # what EXPLAIN ROUTE shows: ``rollup:NAME``, or partitions/files
    estimated_rows: int
    reason: str
    rollup: str | None = None  # the rollup read, for parts answered from one
    system_table: str | None = None  # the system table read (refreshed before the SQL runs)

    def as_dict(self) -> dict[str, Any]:
        return {"tier": str(self.tier), "source": self.source, "estimated_rows": self.estimated_rows, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rollup candidate that could not answer, with the rule that rejected it."""

    candidate: str
    cause: Rule
    reason: str
    in_split: bool = False  # rejected while answering part of the range from raw edges

    @property
    def rule(self) -> str:
        """The printed rule: ``split:<rule>`` for a split that failed."""
        return f"split:{self.cause}" if self.in_split else str(self.cause)

    def as_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "rule": self.rule, "reason": self.reason}


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
    # A flat join of one rollup to dimension tables (router/flatten.py): its joined rollup
    # (router/joined.py) may answer it once the same join comes again.
    flat_join: bool = False

    # A route is planned once and served many times (the plan cache hands out the same
    # object), so what every statement's FlightInfo and log need is computed once.
    @cached_property
    def tier(self) -> str:
        tiers = sorted({p.tier for p in self.parts})
        return "+".join(tiers) if tiers else "none"

    @cached_property
    def rollup(self) -> str | None:
        return ",".join(p.rollup for p in self.parts if p.rollup is not None) or None

    @cached_property
    def joined(self) -> JoinedRollup | None:
        """The joined rollup that answers this route's SQL (derived on first use: only a
        statement the engine runs asks)."""
        return derive(self.sql) if self.flat_join else None

    @cached_property
    def system_tables(self) -> frozenset[str]:
        """The system tables the SQL reads (refreshed before it runs), as registered."""
        return frozenset(p.system_table for p in self.parts if p.system_table is not None)

    def to_json(self) -> str:
        return self._json

    @cached_property
    def _json(self) -> str:
        return json.dumps(
            {
                "tier": self.tier,
                "rollup": self.rollup,
                "parts": [p.as_dict() for p in self.parts],
                "rejected": [r.as_dict() for r in self.rejected],
            },
            separators=(",", ":"),
        )

    def explain_table(self) -> pa.Table:
        rows: list[tuple[str, str, int | None, str]] = [(str(p.tier), p.source, p.estimated_rows, p.reason) for p in self.parts]
        rows += [("rejected", r.candidate, None, f"{r.rule}: {r.reason}") for r in self.rejected]
        return pa.table(
            {
                "tier": pa.array([r[0] for r in rows], pa.string()),
                "source": pa.array([r[1] for r in rows], pa.string()),
                "estimated_rows": pa.array([r[2] for r in rows], pa.int64()),
                "reason": pa.array([r[3] for r in rows], pa.string()),
            }
        )
