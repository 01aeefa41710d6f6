"""The front's rotation (workers.front.Router): which workers may answer, around writes.

No processes: the data states a poll compares are given by a function, so the order of a
poll and a write is the test's to choose.
"""

from __future__ import annotations

from typing import Any

from tierflight.workers.front import Router, Worker

STATE: dict[str, Any] = {"hot_rows": 0, "files": 3, "dimensions": {"advertisers": 1}}


def _router() -> Router:
    return Router([Worker(0, "unix:///nowhere/0"), Worker(1, "unix:///nowhere/1")])


def test_a_poll_admits_followers_whose_state_equals_the_primarys() -> None:
    router = _router()
    assert router.eligible() == [0]
    router.poll(lambda w: dict(STATE))
    assert router.eligible() == [0, 1]


def test_a_poll_admits_no_follower_while_the_primary_has_hot_rows_or_another_state() -> None:
    router = _router()
    router.poll(lambda w: {**STATE, "hot_rows": 5})
    assert router.eligible() == [0]
    router.poll(lambda w: STATE if w.primary else {**STATE, "files": 2})
    assert router.eligible() == [0]


def test_a_write_takes_followers_out_before_it_is_forwarded() -> None:
    router = _router()
    router.poll(lambda w: dict(STATE))
    with router.writing():
        assert router.eligible() == [0]
    assert router.eligible() == [0]  # until a poll sees the states equal again
    router.poll(lambda w: dict(STATE))
    assert router.eligible() == [0, 1]


def test_no_poll_readmits_followers_while_a_write_is_in_flight() -> None:
    """A poll during a write compares the states before the primary applied it (a dimension
    replace leaves no hot rows to tell): the followers would look current and serve the old
    rows after the ack."""
    router = _router()
    with router.writing():
        router.poll(lambda w: dict(STATE))
        assert router.eligible() == [0]
        with router.writing():  # two writes at once: the first to end does not open the door
            pass
        router.poll(lambda w: dict(STATE))
        assert router.eligible() == [0]
    router.poll(lambda w: dict(STATE))
    assert router.eligible() == [0, 1]


def test_a_poll_that_overlaps_the_start_or_end_of_a_write_admits_no_one() -> None:
    router = _router()
    writes = iter([router.writing() for _ in range(2)])

    def state_while_a_write_starts(w: Worker) -> dict[str, Any]:
        if w.primary:
            next(writes).__enter__()
        return dict(STATE)

    router.poll(state_while_a_write_starts)
    assert router.eligible() == [0]


def test_a_failed_write_still_ends() -> None:
    router = _router()
    try:
        with router.writing():
            raise RuntimeError("the primary refused the batch")
    except RuntimeError:
        pass
    router.poll(lambda w: dict(STATE))
    assert router.eligible() == [0, 1]


def test_a_write_moves_the_generation_before_and_after() -> None:
    """What the front learned of statements holds for one generation: a route learned while
    the write ran (before the primary applied it) must not answer after the ack."""
    router = _router()
    g0 = router.generation
    with router.writing():
        during = router.generation
        assert during > g0
    assert router.generation > during
