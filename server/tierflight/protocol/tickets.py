"""Signed tickets: every statement ticket tierflight hands out is signed, so a ticket can
be neither forged nor altered, and it names the user it was issued to.

The single-process server signs its own tickets (under a key drawn at random per process)
and serves a statement ticket only when it is signed and the caller is the user it names.
With ``serve --workers`` the front signs them instead, as follows.

Each worker of ``serve --workers`` also listens on a TCP port for DoGet alone, so a client
fetches a result straight from the worker (the FlightInfo's endpoint names that port as
its location) instead of through the front. Nothing authenticates callers on that port:
the ticket is the authorization. The front signs every ticket it hands out with
HMAC-SHA256 under a key the supervisor draws at random for each ``serve`` and passes to
its workers in their environment (never on a command line), and a worker serves only
tickets whose signature matches and whose expiry has not passed.

Layout (all of it signed)::

    magic "tfs\\x01" | worker index (1 byte) | expiry, ms since the epoch (8 bytes) |
    identity length (2 bytes) | identity "user\\nperm,perm" | inner ticket | HMAC (32 bytes)

The inner ticket is what the worker itself would have issued (a statement to run again, a
parked execution's id, a metadata command). Only the standard library is imported here:
the front imports this module, and it imports no engine.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass

from tierflight.core.errors import InvalidArgument, Unauthenticated

MAGIC = b"tfs\x01"
KEY_ENV = "TIERFLIGHT_TICKET_KEY"  # no "__": not a configuration override
_HEAD = struct.Struct(">BQH")  # worker index, expiry (ms), identity length
_MAC_LEN = 32
_MIN_LEN = len(MAGIC) + _HEAD.size + _MAC_LEN


@dataclass(frozen=True)
class SignedTicket:
    worker: int
    user: str
    permissions: frozenset[str]
    inner: bytes
    expires_ms: int


def ttl_for(statement_timeout_s: float) -> float:
    """How long a ticket is valid: as long as a parked execution waits for its DoGet
    (``[server] statement_timeout``; 5 minutes when that is 0)."""
    return statement_timeout_s if statement_timeout_s > 0 else 300.0


def new_key() -> bytes:
    return secrets.token_bytes(32)


def key_from_env(environ: MutableMapping[str, str] | None = None) -> bytes | None:
    """Take the key out of the environment (so nothing this process starts inherits it)."""
    env = os.environ if environ is None else environ
    value = env.pop(KEY_ENV, None)
    return bytes.fromhex(value) if value else None


def identity(user: str, permissions: Iterable[str]) -> bytes:
    # User names hold no whitespace (auth refuses them), permissions no comma.
    return f"{user}\n{','.join(sorted(permissions))}".encode()


@functools.lru_cache(maxsize=1024)
def identity_of(user: str, permissions: frozenset[str]) -> bytes:
    """:func:`identity`, kept for the callers seen last (signed on every FlightInfo)."""
    return identity(user, permissions)


def is_signed(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def worker_of(data: bytes) -> int:
    """The worker a signed ticket names (unverified: for routing only)."""
    if not is_signed(data) or len(data) < _MIN_LEN:
        raise InvalidArgument("malformed ticket: not issued by this server")
    return data[len(MAGIC)]


class TicketKey:
    """Signs (the front) and verifies (the workers) tickets under one key."""

    def __init__(self, key: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the ticket key must have at least 16 bytes")
        self._key = key
        # The key's HMAC state, copied per ticket: a one-shot HMAC looks the digest up in
        # OpenSSL each time, which takes a lock that many threads contend for.
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self.ttl_ms = int(ttl_s * 1000)
        self._clock = clock

    def sign(self, worker: int, ident: bytes, inner: bytes) -> bytes:
        expires = int(self._clock() * 1000) + self.ttl_ms
        body = MAGIC + _HEAD.pack(worker, expires, len(ident)) + ident + inner
        return body + self._digest(body)

    def _digest(self, body: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(body)
        return mac.digest()

    def verify(self, data: bytes) -> SignedTicket:
        """The ticket's contents, or UNAUTHENTICATED (bad signature, expired) /
        INVALID_ARGUMENT (not a signed ticket at all)."""
        if not is_signed(data) or len(data) < _MIN_LEN:
            raise InvalidArgument(
                "malformed ticket: this port serves only tickets issued by the server's front "
                "(request a FlightInfo there)"
            )
        body, mac = data[:-_MAC_LEN], data[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._digest(body)):
            raise Unauthenticated(
                "ticket signature does not match: the ticket was not issued by this server's front, "
                "or was altered (request a FlightInfo again)"
            )
        worker, expires, ident_len = _HEAD.unpack_from(body, len(MAGIC))
        start = len(MAGIC) + _HEAD.size
        now = int(self._clock() * 1000)
        if now > expires:
            raise Unauthenticated(
                f"ticket expired {(now - expires) / 1000:.1f} s ago (tickets are valid for "
                f"{self.ttl_ms / 1000:g} s, server.statement_timeout); request a FlightInfo again"
            )
        try:
            user, perms = body[start : start + ident_len].decode().split("\n", 1)
        except ValueError:  # a signed ticket always holds both; this one cannot be ours
            raise InvalidArgument("malformed ticket: no identity") from None
        return SignedTicket(
            worker, user, frozenset(p for p in perms.split(",") if p), body[start + ident_len :], expires
        )
