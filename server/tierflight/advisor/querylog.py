"""The durable query log the advisor learns from: statement shapes and their routes.

Finished statements are handed over cheaply (a bounded queue; full: dropped, never waited
for) and turned into shapes on a thread of their own, so the statement path pays for a queue
put only. Each shape is appended as one JSON line to ``<data dir>/advisor/queries.jsonl``;
past ``[rollups] query_log_bytes`` the file becomes ``queries.1.jsonl`` (the older one is
dropped), so the log holds at most twice that. No literal value is written (see shape.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlglot import exp

from tierflight.advisor.shape import Shape, Unservable, extract, filter_digest, table_info
from tierflight.core.config import Config
from tierflight.core.log import get_logger
from tierflight.core.lru import LRU
from tierflight.core.names import Names
from tierflight.router.trees import conjuncts, normalise_predicate

log = get_logger("tierflight.advisor")

QUEUE_SIZE = 4096
MEMORY_RECORDS = 50_000  # observations kept in memory for advice (the newest)
FILTER_TEXTS = 1024  # digest -> filter text, in memory only (never written)


@dataclass(frozen=True)
class Observation:
    """One finished statement: its shape, where it was answered and what it cost."""

    shape: Shape
    tier: str
    rollup: str | None
    rows: int
    ms: float
    at: float  # unix seconds

    def to_json(self) -> dict[str, Any]:
        return {"shape": self.shape.to_json(), "tier": self.tier, "rollup": self.rollup, "rows": self.rows, "ms": round(self.ms, 3), "at": round(self.at, 3)}

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
        self._queue: queue.Queue[tuple[exp.Expr, str, str | None, int, float, float] | None] = queue.Queue(QUEUE_SIZE)
        self.dropped = 0
        self._listeners: list[Callable[[Observation], None]] = []
        # Shapes of recent statement trees (the sandbox hands out one tree per statement
        # text): a dashboard's repeated statements are walked once. The tree is kept with
        # its shape, so its id is not reused while the entry lives.
        self._shapes: LRU[int, tuple[exp.Expr, Shape | None]] = LRU(1024)
        self._file: TextIO | None = None
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
        try:
            self._queue.put_nowait((tree, tier, rollup, rows, ms, time.time()))
        except queue.Full:
            self.dropped += 1

    # -- the log's own thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self.record(*item)
            except Exception as exc:  # noqa: BLE001 - the log is advice only; never kill the thread
                log.warning("query_log_failed", error=repr(exc))
            finally:
                self._queue.task_done()

    def record(self, tree: exp.Expr, tier: str, rollup: str | None, rows: int, ms: float, at: float) -> Observation | None:
        """Extract, keep and append one statement's shape (None: no rollup could answer it)."""
        known = self._shapes.get(id(tree))
        if known is not None and known[0] is tree and (known[1] is None or known[1].lookback_s is None):
            shape = known[1]
        else:
            try:
                shape = extract(tree, self.infos, self.names, self.config.tiers.current_time())
            except Unservable:
                shape = None
            self._shapes.put(id(tree), (tree, shape))
        if shape is None:
            return None
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
                self.filter_texts[digest] = normalise_predicate(pred).sql(dialect="duckdb")
                return

    def _append(self, obs: Observation) -> None:
        if self.max_bytes <= 0:
            return
        path = self.directory / "queries.jsonl"
        line = json.dumps(obs.to_json(), separators=(",", ":")) + "\n"
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open; closed on rotation and close
        if self._file.tell() + len(line) > self.max_bytes:
            self._file.close()
            os.replace(path, self.directory / "queries.1.jsonl")
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - as above
        self._file.write(line)
        if self._queue.empty():
            self._file.flush()  # written when the burst ends (a crash loses at most a burst's advice)

    def observations(self) -> list[Observation]:
        with self._lock:
            return list(self.records)

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every offered statement is recorded and written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
