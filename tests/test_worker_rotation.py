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
    router.poll(lambda w: None if not w.primary else dict(STATE))  # a follower that does not answer
    assert router.eligible() == [0]


def test_a_write_takes_followers_out_before_it_is_forwarded() -> None:
    router = _router()
    router.poll(lambda w: dict(STATE))
    router.exclude_followers()
    assert router.eligible() == [0]
    router.poll(lambda w: dict(STATE))  # until a poll sees the states equal again
    assert router.eligible() == [0, 1]


def test_the_ack_takes_out_a_follower_a_poll_admitted_during_the_write() -> None:
    """A poll while the write runs compares the states from before the primary applied it (a
    dimension replace leaves no hot rows to tell): it admits the follower, which serves the
    old rows. The exclusion before the ack goes back undoes that."""
    router = _router()
    router.exclude_followers()  # the write is forwarded
    router.poll(lambda w: dict(STATE))  # the primary has not applied it yet
    assert router.eligible() == [0, 1]  # a stalled write does not keep the followers out
    router.exclude_followers()  # the primary answered: before the client hears so
    assert router.eligible() == [0]
    # The primary now serves version 2, the follower still 1: no poll admits it.
    router.poll(lambda w: {**STATE, "dimensions": {"advertisers": 2 if w.primary else 1}})
    assert router.eligible() == [0]
    router.poll(lambda w: {**STATE, "dimensions": {"advertisers": 2}})  # the follower loaded it
    assert router.eligible() == [0, 1]


def test_a_poll_that_overlaps_an_exclusion_admits_no_one() -> None:
    """The poll compared states from before the write was applied, and ends after its ack."""
    router = _router()

    def state_while_the_ack_goes_back(w: Worker) -> dict[str, Any]:
        if not w.primary:
            router.exclude_followers()
        return dict(STATE)

    router.poll(state_while_the_ack_goes_back)
    assert router.eligible() == [0]


def test_an_exclusion_moves_the_generation() -> None:
    """What the front learned of statements holds for one generation: a route learned while
    the write ran (before the primary applied it) must not answer after the ack."""
    router = _router()
    g0 = router.generation
    router.exclude_followers()
    assert router.generation > g0


def test_a_new_primary_state_moves_the_generation_once() -> None:
    router = _router()
    router.poll(lambda w: dict(STATE))
    g1 = router.generation
    router.poll(lambda w: dict(STATE))
    assert router.generation == g1  # the same state: what the front learned still holds
    router.poll(lambda w: {**STATE, "files": 4})
    assert router.generation > g1


# -- the front's DoPut: when it excludes the followers ---------------------------------------


class _Context:
    def get_middleware(self, key: str) -> None:
        return None  # no authentication: the anonymous identity


class _PutWriter:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def write_batch(self, batch: Any) -> None:
        self.log.append("batch to the primary")

    def done_writing(self) -> None:
        self.log.append("done")

    def close(self) -> None:
        pass


class _PutReader:
    """The primary's answers: one acknowledgement, then the end of the stream."""

    def __init__(self) -> None:
        self.answers = [b"ack"]

    def read(self) -> bytes | None:
        return self.answers.pop() if self.answers else None


class _Primary:
    def __init__(self, log: list[str], router: Router) -> None:
        self.log, self.router = log, router

    def do_put(self, descriptor: Any, schema: Any, options: Any) -> tuple[_PutWriter, _PutReader]:
        # A poll while the primary has not applied the write yet.
        self.router.poll(lambda w: dict(STATE))
        self.log.append(f"poll during the write: eligible {self.router.eligible()}")
        return _PutWriter(self.log), _PutReader()


class _Chunk:
    def __init__(self, data: Any) -> None:
        self.data = data


class _ClientStream:
    schema = None

    def __iter__(self) -> Any:
        return iter([_Chunk(object())])


class _Answers:
    def __init__(self, log: list[str], router: Router) -> None:
        self.log, self.router = log, router

    def write(self, buf: Any) -> None:
        self.log.append(f"ack to the client: eligible {self.router.eligible()}")


def test_the_front_excludes_the_followers_before_the_write_and_before_its_ack() -> None:
    import pyarrow.flight as flight

    from tierflight.protocol import flightsql_pb2 as pb
    from tierflight.protocol.tickets import TicketKey, new_key
    from tierflight.protocol.wire import pack
    from tierflight.workers.front import FrontServer

    workers = [Worker(0, "unix:///nowhere/0"), Worker(1, "unix:///nowhere/1")]
    front = FrontServer("grpc://127.0.0.1:0", workers, 5.0, TicketKey(new_key(), 60))
    try:
        router = front.router
        router.poll(lambda w: dict(STATE))
        assert router.eligible() == [0, 1]
        log: list[str] = []
        workers[0]._client = _Primary(log, router)  # type: ignore[assignment]
        command = pb.CommandStatementIngest(table="advertisers")
        descriptor = flight.FlightDescriptor.for_command(pack(command))
        front.do_put(_Context(), descriptor, _ClientStream(), _Answers(log, router))
        assert log == [
            "poll during the write: eligible [0, 1]",  # states from before the write: equal
            "batch to the primary",
            "done",
            "ack to the client: eligible [0]",  # undone before the client hears of the write
        ]
        assert router.eligible() == [0]
    finally:
        front.shutdown()
