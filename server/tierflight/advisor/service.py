"""The advisor in a server: the query log, estimates from the data, ``system.rollup_advice``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import pyarrow as pa

from tierflight.advisor.estimate import DataEstimator
from tierflight.advisor.propose import AdviceStatus, Estimator, Proposal, advise
from tierflight.advisor.querylog import Observation, QueryLog
from tierflight.core.config import Config
from tierflight.rollups.definition import RollupDef, all_rollups
from tierflight.rollups.registry import RollupRegistry
from tierflight.tiers.store import TableStore

ADVICE_TTL_S = 5.0  # advice is recomputed at most this often (estimates read a sample)

ADVICE_SCHEMA = pa.schema(
    [
        ("rank", pa.int32()),
        ("name", pa.string()),
        ("table_name", pa.string()),
        ("dimensions", pa.list_(pa.string())),
        ("measures", pa.list_(pa.string())),
        ("filter", pa.string()),
        ("retention_days", pa.int32()),
        ("statements", pa.int64()),
        ("benefit_ms", pa.float64()),
        ("estimated_rows", pa.int64()),
        ("estimated_bytes", pa.int64()),
        ("status", pa.string()),
        ("note", pa.string()),
        ("config", pa.string()),
    ]
)


def advice_table(proposals: Sequence[Proposal]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "rank": i + 1,
                "name": p.name,
                "table_name": p.table,
                "dimensions": list(p.dimensions),
                "measures": list(p.measures),
                "filter": p.filter,
                "retention_days": p.retention_days,
                "statements": p.statements,
                "benefit_ms": round(p.benefit_ms, 3),
                "estimated_rows": p.rows,
                "estimated_bytes": p.bytes,
                "status": p.status.value,
                "note": p.note,
                "config": None if p.filter is not None and p.filter.endswith("= ?") else p.config_text(),
            }
            for i, p in enumerate(proposals)
        ],
        schema=ADVICE_SCHEMA,
    )


def _redacted(p: Proposal) -> Proposal:
    if p.filter is None:
        return p
    column = p.filter.split("=")[0].strip()
    return replace(
        p, filter=f"{column} = ?", note=(f"{p.note}; " if p.note else "") + "the filter's value: admin only"
    )


def compute_advice(
    config: Config,
    observations: Sequence[Observation],
    estimate: Estimator,
    filter_texts: Mapping[str, str],
    existing: Sequence[RollupDef] | None = None,
    used_bytes: int = 0,
    min_statements: int = 1,
) -> list[Proposal]:
    defs = list(existing) if existing is not None else all_rollups(config.tables.values())
    budget = max(0, config.rollups.memory_budget - used_bytes)
    return advise(observations, defs, estimate, filter_texts, budget=budget, min_statements=min_statements)


class Advisor:
    def __init__(
        self,
        config: Config,
        stores: Mapping[str, TableStore],
        registry: RollupRegistry | None = None,
        *,
        background: bool = True,
    ) -> None:
        self.config = config
        self.registry = registry
        self.log = QueryLog(config, background=background)
        spill = config.duckdb.temp_directory or str(config.data_dir / ".duckdb_tmp")
        self.estimator = DataEstimator(stores, config.tiers.current_time, spill)
        self._cached: tuple[float, list[Proposal]] | None = None
        self._lock = threading.Lock()
        # Why autonomous mode did not build a proposal (advisor.auto sets it).
        self.refusals: Callable[[], Mapping[str, str]] = dict
        # Set once the server is up: registering system.rollup_advice reads it at once,
        # and start-up must not wait for estimates over a long log.
        self.started = False

    def proposals(self, fresh: bool = False, now: float | None = None) -> list[Proposal]:
        """The ranked advice over the log, within the budget the loaded rollups leave; a
        statement older than ``[rollups] auto_ttl`` no longer counts (a workload moves on)."""
        with self._lock:
            if not fresh and self._cached is not None and time.monotonic() - self._cached[0] < ADVICE_TTL_S:
                return self._cached[1]
            since = (time.time() if now is None else now) - self.config.rollups.auto_ttl.total_seconds()
            observations = [o for o in self.log.observations() if o.at >= since]
            existing, used = None, 0
            if self.registry is not None:
                states = list(self.registry.states.values())
                existing = [d for s in states for d in s.members]
                used = sum(s.bytes for s in states if s.status in ("active", "stale", "building"))
            proposals = compute_advice(
                self.config, observations, self.estimator, self.log.filter_texts, existing, used
            )
            refused = self.refusals()
            proposals = [
                replace(p, status=AdviceStatus.REFUSED, note=refused[p.name])
                if p.name in refused and p.status is not AdviceStatus.BUILT
                else p
                for p in proposals
            ]
            self._cached = (time.monotonic(), proposals)
            return proposals

    def forget(self) -> None:
        """The rollups changed: the next advice is computed afresh."""
        with self._lock:
            self._cached = None

    def advice_table(self, user: str | None = None) -> pa.Table:
        """``user`` None: a caller who may see every user's statements (``admin``). Others
        see a shared filter's column, not its value (it is another user's literal)."""
        proposals = self.proposals() if self.started else []
        if user is not None:
            proposals = [_redacted(p) for p in proposals]
        return advice_table(proposals)

    def close(self) -> None:
        self.log.close()
        self.estimator.close()


def describe(p: Proposal, rank: int) -> str:
    """One proposal for `tierflight rollups advise`."""
    retention = f", last {p.retention_days} days" if p.retention_days else ""
    head = (
        f"#{rank} {p.name} [{p.status.value}]: {p.statements} statements, {p.benefit_ms / 1000:.2f} s observed"
        f"{retention}; estimated {p.rows or 0:,} rows, {(p.bytes or 0) / 1e6:.2f} MB"
    )
    return head + "\n" + p.config_text() + "\n"
