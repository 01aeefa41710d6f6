"""The seams the composition root and the executor meet at: statuses, records, an
execution's hooks, periodic background work. No server, no data set (fast lane)."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from tierflight.app import Periodic
from tierflight.core.errors import ResultTooLarge, Status, TierflightError
from tierflight.core.statement import StatementKind
from tierflight.engine.execution import (
    Execution,
    QueryRecord,
    QueryStatus,
    ResultLimits,
    Started,
    queries_table,
)
from tierflight.engine.monitor import Stop
from tierflight.engine.sandbox import check_statement
from tierflight.router.route import Route


def test_every_error_status_is_a_query_status_spelled_as_before() -> None:
    # A statement that fails is logged with its error's Flight status: a Status without a
    # QueryStatus would make the executor's bookkeeping raise instead of logging.
    for status in Status:
        err = TierflightError("x")
        err.status = status
        assert QueryStatus.of(err) == status.value
    assert [QueryStatus.OK, QueryStatus.EXPIRED, QueryStatus.DISCARDED, QueryStatus.OVERLOADED] == [
        "ok",
        "expired",
        "discarded",
        "overloaded",
    ]


def test_statement_kinds_keep_their_strings() -> None:
    assert check_statement("SELECT 1").kind is StatementKind.QUERY
    assert check_statement("EXPLAIN SELECT 1").kind is StatementKind.EXPLAIN
    route = check_statement("EXPLAIN ROUTE SELECT 1")
    assert route.kind is StatementKind.EXPLAIN_ROUTE and route.kind == "explain_route"


def test_one_record_gives_the_system_queries_row() -> None:
    record = QueryRecord.ended("q1", "SELECT 1", "alice", None, QueryStatus.OK, started=time.perf_counter(), rows=1)
    row = queries_table([record]).to_pylist()[0]
    assert row["status"] == "ok" and row["tier"] == "none" and row["rows"] == 1 and row["user"] == "alice"
    assert queries_table([]).schema == queries_table([record]).schema


class _Hooks:
    """An executor stand-in: records what the execution reports."""

    def __init__(self) -> None:
        self.statuses: list[QueryStatus] = []
        self.closings = 0

    def settled(self, ex: Execution, status: QueryStatus) -> None:
        self.statuses.append(status)

    def closed(self, ex: Execution, stop: Stop | None) -> None:
        self.closings += 1

    def unpark(self, query_id: str) -> bool:
        return False

    def stop_error(self, stop: Stop | None) -> TierflightError | None:
        return None


def _answered(hooks: _Hooks, max_rows: int = 0) -> Execution:
    statement = check_statement("SELECT 1")
    start = Started("q1", statement, statement.sql, Route("SELECT 1"), "alice", time.perf_counter(), 0.1)
    return Execution.answered(start, pa.table({"x": [1, 2, 3]}), hooks, ResultLimits(1 << 20, max_rows, 0))


def test_an_answer_in_memory_settles_once_through_its_hooks() -> None:
    hooks = _Hooks()
    ex = _answered(hooks)
    table = ex.table()
    assert table is not None and table.num_rows == 3 and ex.rows == 3
    ex.finish(QueryStatus.CANCELLED)  # a late finish: logged once only
    assert hooks.statuses == [QueryStatus.OK] and hooks.closings == 2


def test_an_answer_over_the_row_limit_settles_with_its_error_status() -> None:
    hooks = _Hooks()
    ex = _answered(hooks, max_rows=2)
    with pytest.raises(ResultTooLarge):
        ex.table()
    assert hooks.statuses == [QueryStatus.RESOURCE_EXHAUSTED]


def test_periodic_runs_first_or_waits_first_and_survives_a_failing_round() -> None:
    runs: list[str] = []
    ran = threading.Event()

    def action() -> None:
        runs.append("run")
        ran.set()
        if len(runs) == 1:
            raise RuntimeError("first round fails")

    first = Periodic("test-first", 0.02, action, "test_failed", first=True)
    first.start()
    assert ran.wait(2.0)
    deadline = time.monotonic() + 2.0
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.stop(wait_s=2.0)
    assert len(runs) >= 2  # the failure did not end the loop

    later: list[int] = []
    waits = Periodic("test-waits", 30.0, lambda: later.append(1), "test_failed", first=False)
    waits.start()
    time.sleep(0.05)
    waits.stop(wait_s=2.0)
    assert later == []  # stopped before its first interval passed

    never = Periodic("test-off", 0.0, lambda: later.append(1), "test_failed", first=True)
    never.start()
    never.stop(wait_s=0.1)
    assert later == []
