"""Login throttling (protocol/throttle.py): refused before the password hash, bounded, decaying."""

from __future__ import annotations

import base64
import threading
import time

import pyarrow.flight as flight
import pytest

from tierflight.protocol import auth
from tierflight.protocol.auth import AuthMiddlewareFactory, AuthSettings, hash_password
from tierflight.protocol.throttle import HALF_LIFE_S, Limits, LoginThrottle

PW = "alice-pw"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str) -> dict[str, list[str]]:
    return {"authorization": ["Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()]}


@pytest.fixture
def factory_and_clock(monkeypatch: pytest.MonkeyPatch) -> tuple[AuthMiddlewareFactory, Clock, list[str]]:
    settings = AuthSettings.from_mapping(
        {
            "users": {
                "alice": {"password_hash": hash_password(PW, 1000)},
                "bob": {"password_hash": hash_password("b", 1000)},
            },
            "max_failed_logins": 3,
            "login_backoff_cap_seconds": 8,
        },
        environ={},
    )
    clock = Clock()
    factory = AuthMiddlewareFactory(settings, clock=clock, sleep=lambda s: None)
    hashed: list[str] = []
    real = auth.verify_password

    def counting(password: str, stored: str) -> bool:
        hashed.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    return factory, clock, hashed


def _refusal(factory: AuthMiddlewareFactory, user: str, password: str) -> str:
    with pytest.raises(flight.FlightUnauthenticatedError) as err:
        factory.start_call(None, basic(user, password))
    return str(err.value)


def test_guesses_past_the_allowance_are_refused_before_the_hash(
    factory_and_clock: tuple[AuthMiddlewareFactory, Clock, list[str]],
) -> None:
    factory, clock, hashed = factory_and_clock
    for i in range(4):  # 3 free, the 4th runs and opens a 1 s window
        assert "invalid username or password" in _refusal(factory, "alice", f"guess{i}")
    assert len(hashed) == 4
    for i in range(50):
        assert "too many failed logins, retry in 1 s" in _refusal(factory, "alice", f"more{i}")
    assert len(hashed) == 4  # none of the 50 cost a hash
    # The windows double up to the cap.
    waits = []
    for _ in range(6):
        clock.now += 60
        _refusal(factory, "alice", "again")
        msg = _refusal(factory, "alice", "again")
        waits.append(int(msg.split("retry in ")[1].split(" ")[0]))
    assert waits[-1] == 7 and waits == sorted(waits)  # the cap, less the 1 s held back


def test_unknown_names_are_throttled_alike(
    factory_and_clock: tuple[AuthMiddlewareFactory, Clock, list[str]],
) -> None:
    factory, _, hashed = factory_and_clock
    known = [_refusal(factory, "alice", f"g{i}") for i in range(6)]
    unknown = [_refusal(factory, "mallory", f"g{i}") for i in range(6)]
    assert known == unknown  # no hint of which names exist
    assert len(hashed) == 8


def test_a_password_seen_before_still_works_and_the_throttle_decays(
    factory_and_clock: tuple[AuthMiddlewareFactory, Clock, list[str]],
) -> None:
    factory, clock, _ = factory_and_clock
    factory.start_call(None, basic("alice", PW))  # the real user logged in once
    for i in range(20):
        _refusal(factory, "alice", f"attack{i}")
    assert factory.start_call(None, basic("alice", PW)).user == "alice"  # not locked out
    # Another user from anywhere: the shared key has a larger allowance.
    assert factory.start_call(None, basic("bob", "b")).user == "bob"
    # After the attack: windows close at the cap, and counts decay.
    clock.now += 8.5
    assert "invalid username" in _refusal(factory, "alice", "one more")
    clock.now += 10 * HALF_LIFE_S
    for i in range(3):
        assert "invalid username" in _refusal(factory, "alice", f"typo{i}")


def test_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(Limits(3, 60), Limits(10**9, 10), max_keys=100, clock=clock)
    for i in range(10_000):
        throttle.admit(f"name{i}")
    assert len(throttle) == 100


def test_settings_validation() -> None:
    for bad in (0, -1, True, "5"):
        with pytest.raises(ValueError, match="max_failed_logins must be a positive integer"):
            AuthSettings.from_mapping({"max_failed_logins": bad}, environ={})


def test_refusals_are_held_back_a_bounded_while() -> None:
    settings = AuthSettings.from_mapping(
        {"users": {"alice": {"password_hash": hash_password(PW, 1000)}}, "max_failed_logins": 1}, environ={}
    )
    clock = Clock()
    slept: list[float] = []
    factory = AuthMiddlewareFactory(settings, clock=clock, sleep=slept.append)
    for i in range(2):
        _refusal(factory, "alice", f"g{i}")
    assert slept == []
    clock.now += 1.5
    _refusal(factory, "alice", "g2")  # opens a 2 s window
    clock.now += 0.5
    assert "retry in 1 s" in _refusal(factory, "alice", "g3")  # 1.5 s left, 1 s of it held here
    assert slept == [1.0]


def test_a_pool_logging_in_at_once_runs_one_hash_and_is_not_throttled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = AuthSettings.from_mapping(
        {"users": {"alice": {"password_hash": hash_password(PW, 1000)}}, "max_failed_logins": 1}, environ={}
    )
    factory = AuthMiddlewareFactory(settings, sleep=lambda s: None)
    real, calls = auth.verify_password, []

    def slow(password: str, stored: str) -> bool:
        calls.append(password)
        time.sleep(0.3)  # long enough for every thread to arrive while it runs
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", slow)
    users: list[str] = []
    threads = [
        threading.Thread(target=lambda: users.append(factory.start_call(None, basic("alice", PW)).user))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert users == ["alice"] * 10
    assert calls == [PW]
