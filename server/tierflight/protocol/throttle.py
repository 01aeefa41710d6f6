"""Login throttling: password guesses cost the guesser time, not the server CPU.

Every Basic login that the server has not already seen succeed (see ``AuthMiddlewareFactory``:
credentials verified once are recognised by a keyed digest, without the password hash) is an
*attempt* against two keys: its user name, and one key shared by all names. Each key counts
its attempts, decaying with a half-life; once the count passes the key's free allowance, every
further attempt opens a window, doubling from 1 s up to a cap, in which the key's attempts are
refused before the password hash runs (so a refused guess costs microseconds, not ~0.3 s of
PBKDF2). A successful login gives its attempt back.

Why these keys: pyarrow's server middleware is not told the caller's address, and the Basic
credentials of ADBC, JDBC and ``authenticate_basic_token`` arrive on the Handshake, whose
handler is not told it either, so a per-peer key is not available before the hash. The
shared key is what bounds the CPU that guesses over many user names (or names that do not
exist) can burn; it has a larger allowance and a shorter cap than a user's.

Memory is bounded: at most ``max_keys`` user names are tracked, the least recently tried
forgotten first (forgetting only ever lets a name try sooner, and filling the table with new
names costs the shared key's backoff).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

SHARED_KEY = "\x00all"  # no user name holds a control character
HALF_LIFE_S = 600.0
BASE_DELAY_S = 1.0


@dataclass
class _Entry:
    score: float = 0.0
    at: float = 0.0  # when the score was last brought up to date
    blocked_until: float = 0.0


@dataclass(frozen=True)
class Limits:
    free: int  # attempts before the backoff starts
    cap_s: float  # the longest window


class LoginThrottle:
    def __init__(
        self,
        per_user: Limits,
        shared: Limits,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_user = per_user
        self._shared = shared
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._users: OrderedDict[str, _Entry] = OrderedDict()
        self._all = _Entry()

    def __len__(self) -> int:
        return len(self._users)

    def admit(self, user: str) -> float:
        """0 when an attempt for ``user`` may run (it is counted), else the seconds to wait."""
        now = self._clock()
        with self._lock:
            entry = self._users.get(user)
            wait = max(self._all.blocked_until, entry.blocked_until if entry else 0.0) - now
            if wait > 0:
                return wait
            if entry is None:
                entry = self._users[user] = _Entry(at=now)
                while len(self._users) > self._max_keys:
                    self._users.popitem(last=False)
            else:
                self._users.move_to_end(user)
            _count(entry, now, self._per_user)
            _count(self._all, now, self._shared)
            return 0.0

    def succeeded(self, user: str) -> None:
        """The attempt was the right password: it is given back."""
        now = self._clock()
        with self._lock:
            for entry, limits in ((self._users.get(user), self._per_user), (self._all, self._shared)):
                if entry is not None:
                    _decay(entry, now)
                    entry.score = max(0.0, entry.score - 1)
                    if entry.score <= limits.free:
                        entry.blocked_until = 0.0


def _decay(entry: _Entry, now: float) -> None:
    entry.score *= 0.5 ** (max(0.0, now - entry.at) / HALF_LIFE_S)
    entry.at = now


def _count(entry: _Entry, now: float, limits: Limits) -> None:
    _decay(entry, now)
    entry.score += 1
    over = entry.score - limits.free
    if over > 0:
        entry.blocked_until = now + min(limits.cap_s, BASE_DELAY_S * 2 ** min(over - 1, 32))


def retry_message(wait_s: float) -> str:
    return f"too many failed logins, retry in {max(1, math.ceil(wait_s))} s"
