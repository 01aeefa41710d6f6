"""Prometheus metrics of one tierflight instance.

Each :class:`~tierflight.app.App` owns a :class:`Metrics` with its own ``CollectorRegistry``
rather than prometheus_client's global default one, so that several servers in one process
(the test suite, benchmarks) neither collide on registration nor mix their numbers.

Two kinds of metric live here:

* event metrics, updated as things happen: the executor reports every finished statement
  through :meth:`Metrics.statement` (the ``StatementObserver`` it calls from ``_log``), and
  ingest reports through :meth:`Metrics.record_ingest` and :meth:`Metrics.set_wal_bytes`;
* state metrics (in-flight statements, partitions per tier, rollup freshness, hot memory),
  read when Prometheus scrapes from the :class:`ServingState` the App hands to
  :meth:`Metrics.watch`, so they cannot drift from the truth.

Every name carries the ``tierflight_`` prefix (Prometheus naming practice); the list with
meanings is in docs/deployment.md.
"""

from __future__ import annotations

import datetime as dt
import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tierflight.core.log import get_logger
from tierflight.engine.execution import NOT_RUN, QueryStatus
from tierflight.rollups.registry import RollupState
from tierflight.tiers.base import TierKind
from tierflight.tiers.store import TableStore

log = get_logger("tierflight.metrics")

# The *_created series (one timestamp per label set) double the exposition for nothing a
# dashboard uses; prometheus_client only offers a process-wide switch.
disable_created_metrics()  # type: ignore[no-untyped-call]

NAMESPACE = "tierflight"

# From a rollup lookup (sub-millisecond) to a cold scan near the default statement timeout.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# From a young collection (tens of microseconds) to a full one over a large heap.
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# Statements that never ran for a client (a FlightInfo whose ticket was never fetched) are
# counted, but kept out of the latency histogram: their "duration" is how long they sat parked.
NOT_RUN_STATUSES = NOT_RUN
# Routes that read no configured table: excluded from the rollup hit ratio's denominator.
NO_TABLE_TIERS = frozenset({"system", "none"})
TIERS = tuple(TierKind)

# Bytes one hot-tail row takes in DuckDB, per column type. A VARCHAR is a 16-byte string_t
# (inlined up to 12 bytes); longer strings add heap bytes this estimate does not see.
_COLUMN_BYTES = {
    "TIMESTAMP": 8, "BIGINT": 8, "DOUBLE": 8, "INTEGER": 4, "DATE": 4, "FLOAT": 4,
    "SMALLINT": 2, "BOOLEAN": 1, "VARCHAR": 16,
}  # fmt: skip
_LOADED_ROLLUP = frozenset({"active", "stale"})


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class ServingState:
    """What the state gauges read at scrape time."""

    in_flight: Callable[[], int]  # statements planning, running or streaming
    stores: Mapping[str, TableStore]
    rollups: Mapping[str, RollupState]
    current_time: Callable[[], dt.datetime]  # [tiers] now
    joined_rows: Callable[[], int] = lambda: 0  # rows held in joined rollups (engine/joined.py)


class Metrics:
    """The registry and the event metrics of one App; also its executor's StatementObserver
    and its ingest's IngestObserver. ``rollups``: the names of the configured rollups."""

    def __init__(self, rollups: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ns = NAMESPACE
        self.statements = Counter(
            "statements",
            "Statements finished, by the tier(s) they read and their status",
            ["tier", "status"],
            namespace=ns,
            registry=r,
        )
        self.duration = Histogram(
            "statement_duration_seconds",
            "Statement duration from planning to the last batch, by tier(s) read",
            ["tier"],
            namespace=ns,
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        self.rollup_hits = Counter(
            "rollup_hits",
            "Successful statements answered from each rollup",
            ["rollup"],
            namespace=ns,
            registry=r,
        )
        self.rollup_statements = Counter(
            "rollup_statements",
            "Successful statements answered at least partly from a rollup",
            namespace=ns,
            registry=r,
        )
        self.hit_ratio = Gauge(
            "rollup_hit_ratio",
            "Since start: rollup_statements_total / successful statements that read a table (not system tables)",
            namespace=ns,
            registry=r,
        )
        self.rollup_mismatches = Counter(
            "rollup_verify_mismatches",
            "Rollup groups that differed from the raw tiers when verified (the rollup turns stale)",
            ["rollup"],
            namespace=ns,
            registry=r,
        )
        self.ingest_rows = Counter("ingest_rows", "Rows acknowledged by ingest", namespace=ns, registry=r)
        self.wal_bytes = Gauge(
            "wal_bytes", "Bytes in the ingest write-ahead log not yet flushed", namespace=ns, registry=r
        )
        self.gc_pauses = Histogram(
            "gc_pause_seconds",
            "Collections of Python's cyclic garbage collector, by generation: each holds the GIL, so "
            "every statement in flight waits it out",
            ["generation"],
            namespace=ns,
            registry=r,
            buckets=GC_BUCKETS,
        )
        self._gc_children = tuple(self.gc_pauses.labels(str(g)) for g in range(3))
        self._gc_started = 0.0
        gc.callbacks.append(self._gc_phase)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str | None, str], tuple[Any, Any, tuple[Any, ...]]] = {}
        self._table_ok = 0
        self._rollup_ok = 0
        # Label values that exist from the start show as 0 instead of missing, so rate() and
        # alerts work before the first hit.
        # Computed when scraped, not set on every statement.
        self.hit_ratio.set_function(self._hit_ratio)
        for name in rollups:
            self.rollup_hits.labels(name)
            self.rollup_mismatches.labels(name)

    def _gc_phase(self, phase: str, info: dict[str, int]) -> None:
        # Called by the collector, on the thread it runs on, with the GIL held: a start and
        # its stop are never interleaved with another collection's.
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif 0 <= info["generation"] < len(self._gc_children):
            self._gc_children[info["generation"]].observe(time.perf_counter() - self._gc_started)

    def close(self) -> None:
        """Stop timing collections (the hook is process-wide; an App closed must not keep it)."""
        if self._gc_phase in gc.callbacks:
            gc.callbacks.remove(self._gc_phase)

    def _hit_ratio(self) -> float:
        with self._lock:
            return self._rollup_ok / self._table_ok if self._table_ok else 0.0

    def watch(self, state: ServingState) -> None:
        """Report the state gauges from ``state`` (once the executor it reads exists)."""
        self.registry.register(_StateCollector(state))

    # -- StatementObserver (called by the Executor for every finished statement) ----------

    def statement(self, tier: str, rollup: str | None, status: QueryStatus, seconds: float) -> None:
        # The labelled children, looked up once per (tier, rollup, status): labels() costs
        # more than the increments themselves, on every statement.
        key = (tier, rollup, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.statements.labels(tier, str(status)),
                self.duration.labels(tier),
                tuple(self.rollup_hits.labels(name) for name in (rollup or "").split(",") if name),
            )
        count, duration, hits = children
        count.inc()
        if status not in NOT_RUN_STATUSES:
            duration.observe(seconds)
        if status is not QueryStatus.OK or tier in NO_TABLE_TIERS:
            return
        with self._lock:
            self._table_ok += 1
            if rollup:
                self._rollup_ok += 1
        if rollup:
            self.rollup_statements.inc()
            # A route that unions several rollups names them comma-separated (Route.rollup).
            for hit in hits:
                hit.inc()

    # -- ingest ---------------------------------------------------------------------------

    def record_ingest(self, rows: int) -> None:
        """Count rows an ingest acknowledged (call once per acknowledged batch)."""
        if rows > 0:
            self.ingest_rows.inc(rows)

    def set_wal_bytes(self, n: int) -> None:
        """The current size of the write-ahead log (after an append, and after a flush)."""
        self.wal_bytes.set(max(0, n))


class _StateCollector(Collector):
    """Gauges read from the serving state at scrape time."""

    def __init__(self, state: ServingState) -> None:
        self._state = state

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering does not run collect().
        return list(self._families())

    @staticmethod
    def _families() -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            f"{NAMESPACE}_in_flight_statements", "Statements running now (planning or streaming)"
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_partitions",
            "Partitions per tier, over all tables (hot: the unflushed tail)",
            labels=["tier"],
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_rollup_freshness_seconds",
            "[tiers] now (the wall clock unless pinned) minus the newest source row a rollup covers",
            labels=["rollup"],
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_hot_memory_bytes", "Loaded rollups plus an estimate of the unflushed hot-tail rows"
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_joined_rollup_rows", "Rows held in joined rollups ([router] joined_rollup_rows caps them)"
        )

    def collect(self) -> Iterator[Metric]:
        in_flight, partitions, freshness, hot_memory, joined = self._families()
        state = self._state
        # A metric that fails to read must not take the others (or the scrape) down with it.
        try:
            in_flight.add_metric([], float(state.in_flight()))
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("metric_failed", metric="in_flight_statements", error=repr(exc))
        yield in_flight

        hot_rows = 0
        hot_bytes = 0
        try:
            per_tier = dict.fromkeys(TIERS, 0)
            for store in state.stores.values():
                width = sum(_COLUMN_BYTES.get(c.type, 8) for c in store.table.columns)
                for p in store.partitions():
                    per_tier[p.tier] = per_tier.get(p.tier, 0) + 1
                    if p.tier is TierKind.HOT:
                        hot_rows += p.rows
                        hot_bytes += p.rows * width
            for tier, n in sorted(per_tier.items()):
                partitions.add_metric([tier], float(n))
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("metric_failed", metric="partitions", error=repr(exc))
        yield partitions

        rollup_bytes = 0
        try:
            now = state.current_time()
            for name, rollup in sorted(state.rollups.items()):
                if rollup.status in _LOADED_ROLLUP:
                    rollup_bytes += rollup.bytes
                # Snapshot watermark, or newer when ingest merged rows in since (same as system.rollups).
                watermark = rollup.current_watermark
                if watermark is not None:
                    freshness.add_metric([name], max(0.0, (now - _naive_utc(watermark)).total_seconds()))
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("metric_failed", metric="rollup_freshness_seconds", error=repr(exc))
        yield freshness

        hot_memory.add_metric([], float(rollup_bytes + hot_bytes))
        yield hot_memory

        try:
            joined.add_metric([], float(state.joined_rows()))
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("metric_failed", metric="joined_rollup_rows", error=repr(exc))
        yield joined
