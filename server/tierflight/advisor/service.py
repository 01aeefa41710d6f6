"""The advisor in a server: the query log, estimates from the data, ``system.rollup_advice``."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import pyarrow as pa

from tierflight.advisor.estimate import DataEstimator
from tierflight.advisor.propose import Estimator, Proposal, advise
from tierflight.advisor.querylog import Observation, QueryLog
from tierflight.config import Config
from tierflight.rollups.definition import RollupDef, all_rollups
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
                "config": p.config_text(),
            }
            for i, p in enumerate(proposals)
        ],
        schema=ADVICE_SCHEMA,
    )


def compute_advice(
    config: Config, observations: Sequence[Observation], estimate: Estimator, filter_texts: Mapping[str, str], existing: Sequence[RollupDef] | None = None
) -> list[Proposal]:
    defs = list(existing) if existing is not None else all_rollups(config.tables.values())
    return advise(observations, defs, estimate, filter_texts, budget=config.rollups.memory_budget)


class Advisor:
    def __init__(self, config: Config, stores: Mapping[str, TableStore], *, background: bool = True) -> None:
        self.config = config
        self.log = QueryLog(config, background=background)
        self.estimator = DataEstimator(stores, config.tiers.current_time)
        self._cached: tuple[float, list[Proposal]] | None = None
        self._lock = threading.Lock()

    def proposals(self) -> list[Proposal]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < ADVICE_TTL_S:
                return self._cached[1]
            proposals = compute_advice(self.config, self.log.observations(), self.estimator, self.log.filter_texts)
            self._cached = (time.monotonic(), proposals)
            return proposals

    def advice_table(self) -> pa.Table:
        return advice_table(self.proposals())

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

