"""Signed tickets of `serve --workers` (protocol.tickets): what the workers' DoGet ports accept."""

from __future__ import annotations

import pytest
from tierflight.core.errors import InvalidArgument, Unauthenticated
from tierflight.protocol.tickets import (
    KEY_ENV,
    TicketKey,
    identity,
    is_signed,
    key_from_env,
    new_key,
    worker_of,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_signed_ticket_carries_worker_identity_and_inner_ticket() -> None:
    key = TicketKey(new_key(), 60)
    data = key.sign(3, identity("alice", ["read", "ingest"]), b"inner \x00 bytes")
    assert is_signed(data) and worker_of(data) == 3
    signed = key.verify(data)
    assert (signed.worker, signed.user, signed.permissions, signed.inner) == (
        3, "alice", frozenset({"read", "ingest"}), b"inner \x00 bytes",
    )  # fmt: skip
    assert key.verify(key.sign(0, identity("bot", []), b"x")).permissions == frozenset()


def test_every_byte_is_signed() -> None:
    key = TicketKey(new_key(), 60)
    data = key.sign(1, identity("alice", ["read"]), b"SELECT 1")
    for i in range(len(data)):
        altered = bytearray(data)
        altered[i] ^= 0x01
        with pytest.raises((Unauthenticated, InvalidArgument)):
            key.verify(bytes(altered))
    with pytest.raises(Unauthenticated, match="signature does not match"):
        TicketKey(new_key(), 60).verify(data)  # another serve's key


def test_expiry() -> None:
    clock = Clock()
    key = TicketKey(new_key(), 3, clock=clock)
    data = key.sign(0, identity("alice", ["read"]), b"t")
    clock.now += 3.0
    assert key.verify(data).inner == b"t"  # valid up to its expiry
    clock.now += 0.01
    with pytest.raises(Unauthenticated, match=r"ticket expired 0\.0 s ago .*valid for 3 s"):
        key.verify(data)


@pytest.mark.parametrize("data", [b"", b"tfs\x01", b"hello", b"tfs\x01" + b"\x00" * 20])
def test_malformed(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="malformed ticket"):
        TicketKey(new_key(), 60).verify(data)
    with pytest.raises(InvalidArgument):
        worker_of(data)


def test_the_key_leaves_the_environment() -> None:
    key = new_key()
    env = {KEY_ENV: key.hex(), "OTHER": "1"}
    assert key_from_env(env) == key
    assert env == {"OTHER": "1"}
    assert key_from_env(env) is None
    with pytest.raises(ValueError):
        TicketKey(b"short", 60)
