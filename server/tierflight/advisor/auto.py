"""Autonomous mode: the advisor's top proposals built as rollups, and dropped when they stop
earning their memory.

A proposal is built once it was seen ``[rollups] auto_min_statements`` times, its first
statement is ``auto_delay`` old, and its estimated bytes fit ``memory_budget`` beside the
loaded rollups. The build is the one-pass build every rollup has, on a one-thread DuckDB of
its own at ingest's nice level; it holds the table's flush and ingest locks (statements go
on; ingest waits for the build), so the new rollup holds exactly the rows of the table and
every later batch is merged into it like into any other. Only a finished build that fits
the budget is published (under the swap lock, then the router's plans are invalidated):
a failed build leaves every route as it was. Definitions are kept in
``<data dir>/advisor/auto.json`` and restored before the registry loads its snapshots, so
auto rollups survive restarts. Configured rollups are never dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import duckdb

from tierflight.advisor.propose import AdviceStatus, Proposal, rollup_def
from tierflight.advisor.querylog import Observation, log_dir
from tierflight.advisor.service import Advisor
from tierflight.core.config import Config
from tierflight.core.errors import ConfigError
from tierflight.core.log import get_logger
from tierflight.core.rwlock import RWLock
from tierflight.rollups.build import build_groups, source_state
from tierflight.rollups.definition import storage_groups
from tierflight.rollups.registry import Origin, RollupRegistry, RollupState
from tierflight.tiers.store import TableStore

log = get_logger("tierflight.advisor.auto")

AUTO_FILE = "auto.json"
RETRY_AFTER_S = 600.0  # a proposal whose build failed or did not fit is not retried sooner


class TableLocks(Protocol):
    """What autonomous mode needs of a table's ingest (ingest.service.TableIngest)."""

    lock: threading.Lock
    flush_lock: threading.Lock

    @property
    def wal(self) -> Any: ...


@dataclass
class AutoEntry:
    proposal: Proposal
    created_at: float  # unix seconds
    raw_ms: float  # mean observed time of its statements before it existed (for time saved)

    def to_json(self) -> dict[str, Any]:
        p = self.proposal
        return {
            "table": p.table,
            "grain": p.grain,
            "columns": list(p.columns),
            "measures": list(p.measures),
            "filter": p.filter,
            "retention_days": p.retention_days,
            "created_at": self.created_at,
            "raw_ms": self.raw_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AutoEntry:
        p = Proposal(
            table=str(data["table"]),
            grain=data.get("grain"),
            columns=tuple(str(c) for c in data["columns"]),
            measures=tuple(str(m) for m in data["measures"]),
            filter=data.get("filter"),
            retention_days=data.get("retention_days"),
        )
        return cls(p, float(data["created_at"]), float(data.get("raw_ms", 0.0)))


def _path(config: Config) -> Path:
    return log_dir(config) / AUTO_FILE


def read_entries(config: Config) -> dict[str, AutoEntry]:
    try:
        data = json.loads(_path(config).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    out = {}
    for item in data if isinstance(data, list) else []:
        try:
            entry = AutoEntry.from_json(item)
        except (KeyError, TypeError, ValueError):
            continue
        out[entry.proposal.name] = entry
    return out


def _write_entries(config: Config, entries: Mapping[str, AutoEntry]) -> None:
    path = _path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([e.to_json() for e in entries.values()], indent=1))
    os.replace(tmp, path)


def _state(config: Config, p: Proposal) -> RollupState:
    definition = rollup_def(p, config.tables[p.table])
    group = storage_groups([definition])[0]
    return RollupState(group, (definition,), origin=Origin.AUTO)


def restore(config: Config, registry: RollupRegistry) -> None:
    """Add the persisted auto rollups to the registry (before it loads its snapshots)."""
    if not config.rollups.auto:
        return
    for name, entry in read_entries(config).items():
        if name in registry.states or entry.proposal.table not in config.tables:
            continue
        try:
            registry.add_state(_state(config, entry.proposal))
        except ConfigError as exc:  # the table changed under it: forgotten
            log.warning("auto_rollup_not_restored", rollup=name, error=str(exc))


class AutoRollups:
    def __init__(
        self,
        config: Config,
        registry: RollupRegistry,
        stores: Mapping[str, TableStore],
        tables: Mapping[str, TableLocks],
        swap_lock: RWLock,
        invalidate: Callable[[], None],
        advisor: Advisor,
        nice: int = 10,
    ) -> None:
        self.config = config
        self.settings = config.rollups
        self.registry = registry
        self.stores = stores
        self.tables = tables
        self.swap_lock = swap_lock
        self.invalidate = invalidate
        self.advisor = advisor
        self.nice = nice
        self.entries = {n: e for n, e in read_entries(config).items() if n in registry.states}
        self._refused: dict[str, tuple[float, str]] = {}  # proposal -> (when, why)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one round at a time
        advisor.log.on_observation(self._observed)
        advisor.refusals = self.refusals

    # -- what the advice shows -------------------------------------------------------------

    def refusals(self) -> dict[str, str]:
        now = time.time()
        return {name: why for name, (at, why) in self._refused.items() if now - at < RETRY_AFTER_S}

    def _observed(self, obs: Observation) -> None:
        """Time saved: what its statements took before it existed, less what they take now."""
        entry = self.entries.get(obs.rollup or "")
        state = self.registry.states.get(obs.rollup or "")
        if entry is not None and state is not None:
            with state.lock:
                state.saved_ms += max(0.0, entry.raw_ms - obs.ms)

    # -- the rounds ------------------------------------------------------------------------

    def start(self) -> None:
        if not self.settings.auto or self._thread is not None:
            return

        def loop() -> None:
            from tierflight.core.threads import lower_thread_priority

            lower_thread_priority(self.nice)
            while not self._stop.wait(self.settings.auto_interval.total_seconds()):
                try:
                    self.run_once()
                except Exception as exc:  # noqa: BLE001 - the next round retries; never kill the server
                    log.error("auto_rollups_failed", error=repr(exc))

        self._thread = threading.Thread(target=loop, name="tierflight-auto-rollups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def used_bytes(self) -> int:
        return sum(
            s.bytes for s in self.registry.states.values() if s.status in ("active", "stale", "building")
        )

    def run_once(self, now: float | None = None) -> list[str]:
        """Drop what stopped earning, then build the best proposal that is due and fits.
        Returns what changed (``+name`` built, ``-name`` dropped)."""
        if not self.settings.auto:
            return []
        with self._lock:
            now = time.time() if now is None else now
            changed = [f"-{n}" for n in self._drop_expired(now)]
            proposals = self.advisor.proposals(fresh=True, now=now)
            for p in proposals:
                if not self._due(p, now):
                    continue
                changed += [f"-{n}" for n in self._make_room(p)]
                if self._build(p, now):
                    changed.append(f"+{p.name}")
                break  # one build per round: the next round sees the new rollup's effect
            return changed

    def _due(self, p: Proposal, now: float) -> bool:
        if p.status in (AdviceStatus.BUILT, AdviceStatus.REFUSED) or p.name in self.registry.states:
            return False
        if p.status is AdviceStatus.OVER_BUDGET and not self._droppable_for(p):
            return False
        if (
            p.statements < self.settings.auto_min_statements
            or now - p.first_seen < self.settings.auto_delay.total_seconds()
        ):
            return False
        refused = self._refused.get(p.name)
        return refused is None or now - refused[0] >= RETRY_AFTER_S

    def _auto_states(self) -> list[RollupState]:
        return [s for s in self.registry.states.values() if s.origin is Origin.AUTO]

    def _droppable_for(self, p: Proposal) -> list[RollupState]:
        """Auto rollups that earned less than ``p`` would, least first, whose bytes make room
        for it (empty: no room can be made)."""
        room = self.settings.memory_budget - self.used_bytes()
        need = (p.bytes or 0) - room
        chosen: list[RollupState] = []
        for s in sorted(self._auto_states(), key=lambda s: s.saved_ms):
            if need <= 0:
                break
            if s.saved_ms >= p.benefit_ms:
                return []
            chosen.append(s)
            need -= s.bytes
        return chosen if need <= 0 else []

    def _make_room(self, p: Proposal) -> list[str]:
        if p.status is not AdviceStatus.OVER_BUDGET:
            return []
        victims = self._droppable_for(p)
        for s in victims:
            self.drop(s.group.name, f"its {s.bytes} bytes go to {p.name}, which would save more")
            self._refused[s.group.name] = (time.time(), f"dropped: its bytes went to {p.name}")
        return [s.group.name for s in victims]

    def _drop_expired(self, now: float) -> list[str]:
        ttl = self.settings.auto_ttl.total_seconds()
        dropped = []
        for s in self._auto_states():
            entry = self.entries.get(s.group.name)
            last = s.last_hit_s
            since = max(x for x in (last, entry.created_at if entry else None, 0.0) if x is not None)
            if now - since >= ttl:
                self.drop(s.group.name, f"no hit for {self.settings.auto_ttl}")
                self._refused[s.group.name] = (now, f"dropped: no hit for {self.settings.auto_ttl}")
                dropped.append(s.group.name)
        return dropped

    # -- build and drop --------------------------------------------------------------------

    def _build(self, p: Proposal, now: float) -> bool:
        try:
            state = _state(self.config, p)
        except ConfigError as exc:
            self._refuse(p, now, f"not a valid rollup: {exc}")
            return False
        store = self.stores[p.table]
        t = self.tables[p.table]
        room = self.settings.memory_budget - self.used_bytes()
        if (p.bytes or 0) > room:
            self._refuse(p, now, f"estimated {p.bytes} bytes; {max(room, 0)} of [rollups] memory_budget left")
            return False
        started = time.perf_counter()
        # One thread at ingest's priority: the statements keep DuckDB's pool.
        spill = self.config.duckdb.temp_directory or str(self.config.data_dir / ".duckdb_tmp")
        con = duckdb.connect(
            config={"threads": 1, "memory_limit": self.config.duckdb.memory_limit, "temp_directory": spill}
        )
        try:
            with t.flush_lock, t.lock:  # no batch or flush lands between the build and its publication
                try:
                    result = build_groups(
                        store, [state.group], con.cursor(), self.config.tiers.current_time()
                    )
                except Exception as exc:  # noqa: BLE001 - the route stays as it was
                    self._refuse(
                        p, now, f"build failed: {str(exc).splitlines()[0] if str(exc) else repr(exc)}"
                    )
                    log.error("auto_rollup_build_failed", rollup=p.name, error=repr(exc))
                    return False
                table = result.tables[state.group.name]
                if table.nbytes > room:
                    self._refuse(
                        p, now, f"built {table.nbytes} bytes; {room} of [rollups] memory_budget left"
                    )
                    return False
                # The hot tail's rows are in the build: the snapshot holds the WAL through
                # the newest batch, so a restart merges only later ones.
                through = int(t.wal.last_seq)
                source = source_state(store, int(t.wal.flushed_through))
                meta = self.registry.snapshots.write(
                    p.name, table, state.group.definition_hash(), source, result.watermark, through
                )
                self.registry.install_new(state, table, meta, self.swap_lock)
                self.entries[p.name] = AutoEntry(
                    replace(p, status=AdviceStatus.PROPOSED), now, p.benefit_ms / max(p.statements, 1)
                )
                _write_entries(self.config, self.entries)
        finally:
            con.close()
        self.invalidate()
        self.advisor.forget()
        log.info(
            "auto_rollup_built",
            rollup=p.name,
            rows=table.num_rows,
            bytes=table.nbytes,
            estimated_bytes=p.bytes,
            statements=p.statements,
            seconds=round(time.perf_counter() - started, 3),
        )
        return True

    def drop(self, name: str, reason: str) -> None:
        state = self.registry.states.get(name)
        if state is None or state.origin is not Origin.AUTO:
            return  # configured rollups are never dropped
        self.registry.remove_state(name, self.swap_lock)
        self.registry.snapshots.remove(name)  # a dropped rollup's bytes go from disk too
        self.invalidate()
        self.advisor.forget()
        self.entries.pop(name, None)
        _write_entries(self.config, self.entries)
        log.info("auto_rollup_dropped", rollup=name, reason=reason, hits=state.hits, bytes=state.bytes)

    def _refuse(self, p: Proposal, now: float, why: str) -> None:
        self._refused[p.name] = (now, why)
        self.advisor.forget()
        log.info("auto_rollup_refused", rollup=p.name, reason=why)


def close_quietly(auto: AutoRollups | None) -> None:
    if auto is not None:
        with contextlib.suppress(Exception):
            auto.stop()
