"""The durable query log the advisor learns from: statement shapes and their routes.

Finished statements are handed over cheaply (a bounded queue; full: dropped, never waited
for) and turned into shapes on a thread of their own, so the statement path pays for a queue
put only. Each shape is appended as one JSON line to ``<data dir>/advisor/queries.jsonl``;
past ``[rollups] query_log_bytes`` the file becomes ``queries.1.jsonl`` (the older one is
dropped), so the log holds at most twice that. No literal value is written (see shape.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from sqlglot import exp

from tierflight.advisor.shape import (
    Shape,
    Unservable,
    extract_timeless,
    filter_digest,
    table_info,
    with_lookback,
)
from tierflight.core.config import Config
from tierflight.core.log import get_logger
from tierflight.core.lru import LRU, Sightings
from tierflight.core.names import Names
from tierflight.core.statement import DIALECT
from tierflight.router.trees import conjuncts, normalise_predicate

log = get_logger("tierflight.advisor")

QUEUE_SIZE = 4096
MEMORY_RECORDS = 50_000  # observations kept in memory for advice (the newest)
FILTER_TEXTS = 1024  # digest -> filter text, in memory only (never written)
POLL_S = 0.05  # how often the log's thread takes the statements offered since
FLUSH_INTERVAL_S = 1.0  # lines reach the file within this (a crash loses at most this much)


# Slots: tens of thousands are kept (MEMORY_RECORDS), each one object for the collector, not two.
@dataclass(frozen=True, slots=True)
class Observation:
    """One finished statement: its shape, where it was answered and what it cost."""

    shape: Shape
    tier: str
    rollup: str | None
    rows: int
    ms: float
    at: float  # unix seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": self.shape.to_json(),
            "tier": self.tier,
            "rollup": self.rollup,
            "rows": self.rows,
            "ms": round(self.ms, 3),
            "at": round(self.at, 3),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        rollup = data.get("rollup")
        return cls(
            Shape.from_json(data["shape"]),
            str(data["tier"]),
            None if rollup is None else str(rollup),
            int(data["rows"]),
            float(data["ms"]),
            float(data["at"]),
        )


@functools.lru_cache(maxsize=1024)
def _shape_json(shape: Shape) -> str:
    """A shape's JSON without its closing brace and look-back (the part that changes)."""
    data = shape.to_json()
    del data["lookback_s"]
    return json.dumps(data, separators=(",", ":"))[:-1]


def _line(obs: Observation) -> str:
    """``obs`` as one JSON line (what ``json.dumps(obs.to_json())`` writes, built from a cached
    shape: the log's thread writes one per statement)."""
    shape = replace(obs.shape, lookback_s=None)
    lookback = json.dumps(obs.shape.lookback_s)
    return (
        f'{{"shape":{_shape_json(shape)},"lookback_s":{lookback}}},"tier":{json.dumps(obs.tier)},'
        f'"rollup":{json.dumps(obs.rollup)},"rows":{obs.rows},"ms":{round(obs.ms, 3)!r},"at":{round(obs.at, 3)!r}}}\n'
    )


def log_dir(config: Config) -> Path:
    return config.data_dir / "advisor"


def read_log(directory: Path) -> Iterator[Observation]:
    """Observations in the log files, oldest first; damaged lines (a crash mid-write) skipped."""
    for name in ("queries.1.jsonl", "queries.jsonl"):
        path = directory / name
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                yield Observation.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue


class QueryLog:
    def __init__(self, config: Config, directory: Path | None = None, *, background: bool = True) -> None:
        self.config = config
        self.directory = directory or log_dir(config)
        self.max_bytes = config.rollups.query_log_bytes
        self.infos = {name: table_info(t) for name, t in config.tables.items()}
        self.names = Names(config.tables)
        self.records: deque[Observation] = deque(read_log(self.directory), maxlen=MEMORY_RECORDS)
        self.filter_texts: dict[str, str] = {}
        self._lock = threading.Lock()
        # Statements waiting to be recorded. A deque the log's thread empties every
        # POLL_S, not a queue.Queue: waking a thread per statement cost the statement path a
        # lock, a notify and a context switch.
        self._pending: deque[tuple[exp.Expr, str, str | None, int, float, float]] = deque()
        self._busy = False  # the log's thread is recording what it took from _pending
        self._stop = threading.Event()
        self.dropped = 0
        self._listeners: list[Callable[[Observation], None]] = []
        # Shapes of recent statement trees (the sandbox hands out one tree per repeated
        # statement text): a dashboard's repeated statements are walked once. The tree is
        # kept with its shape, so its id is not reused while the entry lives; only trees
        # seen twice are (a one-off tree would be kept for nothing).
        self._shapes: LRU[int, tuple[exp.Expr, Shape | None, dt.datetime | None]] = LRU(1024)
        self._seen_trees = Sightings()
        self._file: TextIO | None = None
        self._flushed = 0.0
        self._size = 0
        self._thread: threading.Thread | None = None
        if background and self.max_bytes > 0:
            self._thread = threading.Thread(target=self._run, name="tierflight-query-log", daemon=True)
            self._thread.start()

    def on_observation(self, listener: Callable[[Observation], None]) -> None:
        self._listeners.append(listener)

    # -- the statement path: a queue put, nothing else -----------------------------------

    def offer(self, tree: exp.Expr, tier: str, rollup: str | None, rows: int, ms: float) -> None:
        if self._thread is None:
            return  # off, or a follower (the primary keeps the log)
        if len(self._pending) >= QUEUE_SIZE:  # the log's thread is behind: advice only, drop
            self.dropped += 1
            return
        self._pending.append((tree, tier, rollup, rows, ms, time.time()))

    # -- the log's own thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._take()
        self._take()

    def _take(self) -> None:
        self._busy, taken = True, False
        while self._pending:
            item = self._pending.popleft()
            taken = True
            try:
                self.record(*item)
            except Exception as exc:  # noqa: BLE001 - the log is advice only; never kill the thread
                log.warning("query_log_failed", error=repr(exc))
        self._busy = False
        if not taken and time.monotonic() - self._flushed >= FLUSH_INTERVAL_S:
            self._flush()

    def record(
        self, tree: exp.Expr, tier: str, rollup: str | None, rows: int, ms: float, at: float
    ) -> Observation | None:
        """Extract, keep and append one statement's shape (None: no rollup could answer it)."""
        known = self._shapes.get(id(tree))
        if known is None or known[0] is not tree:
            try:
                timeless, start = extract_timeless(tree, self.infos, self.names)
            except Unservable:
                timeless, start = None, None
            known = (tree, timeless, start)
            # Sighted by the tree's structure, not its id: a freed one-off tree's address
            # is soon another one-off tree's, which its id would take for a second sighting.
            if self._seen_trees.again(tree):
                self._shapes.put(id(tree), known)
        _, timeless, start = known
        if timeless is None:
            return None
        shape = with_lookback(timeless, start, self.config.tiers.current_time())
        if shape.eq_filters:
            self._remember_filter(tree, shape.eq_filters[0])
        obs = Observation(shape, tier, rollup, rows, ms, at)
        with self._lock:
            self.records.append(obs)
            self._append(obs)
        for listener in self._listeners:
            listener(obs)
        return obs

    def _remember_filter(self, tree: exp.Expr, digest: str) -> None:
        if digest in self.filter_texts or len(self.filter_texts) >= FILTER_TEXTS:
            return
        for pred in conjuncts(tree.args.get("where")):
            if isinstance(normalise_predicate(pred), exp.EQ) and filter_digest(pred) == digest:
                self.filter_texts[digest] = normalise_predicate(pred).sql(dialect=DIALECT)
                return

    def _append(self, obs: Observation) -> None:
        if self.max_bytes <= 0:
            return
        path = self.directory / "queries.jsonl"
        line = _line(obs)
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open; closed on rotation and close
            self._size = path.stat().st_size
        if self._size + len(line) > self.max_bytes:
            self._file.close()
            os.replace(path, self.directory / "queries.1.jsonl")
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - as above
            self._size = 0
        self._file.write(line)
        self._size += len(line)  # JSON is ASCII: characters are bytes (a text file's tell() is slow)
        if time.monotonic() - self._flushed >= FLUSH_INTERVAL_S:
            # A write per statement cost the statement path more than the rest of the log; a
            # crash loses at most this interval's advice.
            self._flush_locked()

    def _flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._file is not None:
            self._file.flush()
        self._flushed = time.monotonic()

    def observations(self) -> list[Observation]:
        with self._lock:
            return list(self.records)

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every offered statement is recorded and written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._pending or self._busy) and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
