"""Rounds of rollup verification: the `rollups verify` command's, and the server's own.

The server verifies a ``[rollups] verify_sample`` share of every loaded rollup's groups
each ``verify_interval``, one rollup at a time, on a thread of ingest's priority
(``[ingest] nice``) with a one-thread DuckDB of its own, so statements keep the shared
pool. A rollup whose groups differ from the raw tiers turns stale (the router answers
from the raw tiers); the evidence is logged, the mismatch counted; a build clears it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
from collections.abc import Callable, Iterator, Sequence

import duckdb

from tierflight.core.log import get_logger
from tierflight.core.rwlock import RWLock
from tierflight.rollups.registry import RollupRegistry, RollupState
from tierflight.rollups.verify import VerifyResult, verify

log = get_logger("tierflight.rollups")

# Statuses whose rows are loaded and can be compared.
LOADED = ("active", "stale")


def since_time(text: str, now: dt.datetime) -> dt.datetime:
    """``--since``: a date or timestamp, or a duration before ``now`` (7d, 12h)."""
    from tierflight.core.config import parse_duration
    from tierflight.core.errors import ConfigError

    try:
        return now - parse_duration(text, "--since")
    except ConfigError:
        pass
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is neither a date/timestamp (2024-12-31) nor a duration (7d, 12h)") from None
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Verifier:
    def __init__(
        self,
        registry: RollupRegistry,
        swap_lock: RWLock,
        on_mismatch: Callable[[RollupState, VerifyResult], None] | None = None,
        cursor: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        self.registry = registry
        self.swap_lock = swap_lock
        self.on_mismatch = on_mismatch
        # Recomputes on a DuckDB of its own with one thread (the calling, low-priority one),
        # unless given a cursor (the CLI: the whole machine is the command's).
        self._db = duckdb.connect(config={"threads": 1}) if cursor is None else None
        self._cursor = cursor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _view(self, state: RollupState, statuses: Sequence[str]) -> Callable[[], contextlib.AbstractContextManager[bool]]:
        registry, store = self.registry, self.registry.stores[state.group.table]

        @contextlib.contextmanager
        def view() -> Iterator[bool]:
            # Ingest commits hot rows and their states together under the write side: under
            # the read side, the rollup and the tiers hold the same rows.
            with self.swap_lock.read():
                yield state.status in statuses and registry.fresh_for(state.group.table, store.hot.rows)

        return view

    def _token(self, state: RollupState) -> Callable[[], object]:
        store = self.registry.stores[state.group.table]

        def token() -> object:
            meta = state.meta
            return (store.generation, meta.file if meta else None, state.rows, store.hot.rows)

        return token

    def verify_one(
        self,
        state: RollupState,
        fraction: float,
        salt: int | None = None,
        since: dt.datetime | None = None,
        statuses: Sequence[str] = LOADED,
        confirm_after: float | None = None,
    ) -> VerifyResult:
        """Verify one rollup; a mismatch is recorded (and turns it stale).

        ``confirm_after``: seconds after which the same sample is verified again before a
        mismatch counts (a node that reads files and snapshots another node publishes may
        hold new files a moment before the snapshot that covers them)."""
        salt = random.getrandbits(31) if salt is None else salt
        result = self._verify(state, fraction, salt, since, statuses)
        if result.mismatches and confirm_after is not None and not self._stop.wait(confirm_after):
            again = self._verify(state, fraction, salt, since, statuses)
            if not again.mismatches:
                log.warning("rollup_verify_unconfirmed", rollup=state.group.name, first=[m.describe() for m in result.evidence])
            result = again
        if result.skipped is None:
            self._record(state, result)
        return result

    def _verify(
        self, state: RollupState, fraction: float, salt: int, since: dt.datetime | None, statuses: Sequence[str]
    ) -> VerifyResult:
        cursor = self._db.cursor() if self._db is not None else self._cursor
        assert cursor is not None
        try:
            return verify(
                self.registry.stores[state.group.table],
                state.group,
                state.qualified,
                self.registry.database.cursor,
                cursor,
                self._view(state, statuses),
                self.registry.config.tiers.current_time(),
                fraction=fraction,
                salt=salt,
                since=since,
                token=self._token(state),
            )
        finally:
            if self._db is not None:
                cursor.close()

    def _record(self, state: RollupState, result: VerifyResult) -> None:
        turned = self.registry.record_verification(state, result.mismatches, utc_now())
        if not result.mismatches:
            return
        log.error(
            "rollup_verify_mismatch",
            rollup=state.group.name,
            groups=result.groups,
            mismatches=result.mismatches,
            largest_error=result.largest_error,
            evidence=[m.describe() for m in result.evidence],
            turned_stale=turned,
        )
        if self.on_mismatch is not None:
            self.on_mismatch(state, result)

    def round(self, fraction: float, confirm_after: float | None = None) -> list[VerifyResult]:
        """One background round: every active rollup, one after the other."""
        out = []
        for state in list(self.registry.states.values()):
            if self._stop.is_set():
                break
            if state.status != "active":
                continue
            try:
                out.append(self.verify_one(state, fraction, statuses=("active",), confirm_after=confirm_after))
            except Exception as exc:  # noqa: BLE001 - a failed read (a file compacted away) is retried next round, never a mismatch
                log.warning("rollup_verify_failed", rollup=state.group.name, error=repr(exc))
        return out

    def start(self, interval: dt.timedelta, fraction: float, nice: int, confirm_after: float | None = None) -> None:
        seconds = interval.total_seconds()
        if seconds <= 0 or self._thread is not None:
            return

        def loop() -> None:
            from tierflight.core.threads import lower_thread_priority

            lower_thread_priority(nice)
            while not self._stop.wait(seconds):
                results = self.round(fraction, confirm_after)
                if results:
                    log.info(
                        "rollups_verified",
                        rollups=len(results),
                        groups=sum(r.groups for r in results),
                        mismatches=sum(r.mismatches for r in results),
                        seconds=round(sum(r.seconds for r in results), 3),
                    )

        self._thread = threading.Thread(target=loop, name="tierflight-rollup-verify", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._db is not None:
            self._db.close()
