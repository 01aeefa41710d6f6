"""The per-statement path: answers already in memory, the limits on them, the buffered
statement log, query ids and the local table signature."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pytest

from conftest import RunningServer, make_config, start_in_process
from differential import assert_same
from tierflight.core.log import (
    FLUSH_INTERVAL_S,
    _CurrentStderr,
    configure_logging,
    flush_logs,
    get_logger,
    log_later,
    reset_logging,
)
from tierflight.engine.executor import new_query_id
from tierflight.tiers.shared import LOCAL_POLL_S, LocalTableState

# hour_type answers it: 90 days x 24 hours of rows, more than the limit set below.
BY_HOUR = "SELECT hour, count(*) AS n FROM events GROUP BY hour ORDER BY hour"
LIMIT_ROWS = 1000


@pytest.fixture(scope="module")
def running(data_dir: Path) -> Iterator[RunningServer]:
    server = start_in_process(make_config(data_dir))
    yield server
    server.server.shutdown()
    server.app.close()


def test_a_cached_answer_is_the_streamed_one(running: RunningServer, flat: Any) -> None:
    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        hits = running.app.executor.results.hits
        answers = []
        for _ in range(3):
            cur.execute(BY_HOUR)
            answers.append(cur.fetch_arrow_table())
        assert running.app.executor.results.hits >= hits + 2  # the second and third from the cache
    expected = flat.sql(BY_HOUR).to_arrow_table()
    for answer in answers:
        assert_same(answer, expected, BY_HOUR)
    recent = [r for r in running.app.executor.recent if r.sql == BY_HOUR][-3:]
    assert [r.status for r in recent] == ["ok"] * 3
    assert [r.reused for r in recent] == [False, True, True]
    assert {r.rows for r in recent} == {expected.num_rows}
    assert len({r.bytes for r in recent}) == 1  # the cache keeps the size it was sent with


def test_system_queries_says_which_answers_were_reused(running: RunningServer) -> None:
    sql = "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type"
    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        for _ in range(2):
            cur.execute(sql)
            cur.fetchall()
        cur.execute("SELECT sql, reused, status FROM system.queries WHERE sql = ? ORDER BY finished_at", (sql,))
        assert cur.fetchall()[-2:] == [(sql, False, "ok"), (sql, True, "ok")]


def test_the_row_limit_holds_for_a_cached_answer_too(running: RunningServer) -> None:
    executor = running.app.executor
    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(BY_HOUR)
        assert cur.fetch_arrow_table().num_rows > LIMIT_ROWS  # now in the result cache
        saved = executor.config
        executor.config = dataclasses.replace(
            saved, server=dataclasses.replace(saved.server, max_result_rows=LIMIT_ROWS)
        )
        try:
            hits = executor.results.hits
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute(BY_HOUR)
                cur.fetch_arrow_table()
            assert executor.results.hits > hits
            assert "result exceeds server.max_result_rows = 1000" in str(err.value)
            # A statement with no cached answer is stopped the same way while it streams.
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute(BY_HOUR.replace("count(*)", "count(*) + 0"))
                cur.fetch_arrow_table()
            assert "max_result_rows" in str(err.value)
        finally:
            executor.config = saved
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]


def test_explain_route_is_answered_from_memory(running: RunningServer) -> None:
    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"EXPLAIN ROUTE {BY_HOUR}")
        table = cur.fetch_arrow_table()
    assert table.column("source").to_pylist()[0] == "rollup:hour_type"
    last = running.app.executor.recent[-1]
    assert (last.status, last.rows, last.rollup) == ("ok", table.num_rows, "hour_type")


class _Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture()
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Stream]:
    flush_logs()  # nothing of earlier tests in this stream
    stream = _Stream()
    # The log writes to whatever sys.stderr is at the time; pytest swaps that between phases.
    monkeypatch.setattr(_CurrentStderr, "write", lambda self, text: stream.write(text))
    monkeypatch.setattr(_CurrentStderr, "flush", lambda self: None)
    configure_logging("info", json_format=True)
    yield stream
    reset_logging()


def _events(stream: _Stream) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_statement_lines_are_written_together_soon_after(stderr: _Stream) -> None:
    log = get_logger("tierflight.statement")
    for i in range(50):
        log.info("statement", n=i)
    deadline = time.monotonic() + 10 * FLUSH_INTERVAL_S + 2
    while len(_events(stderr)) < 50 and time.monotonic() < deadline:
        time.sleep(FLUSH_INTERVAL_S / 4)
    assert [e["n"] for e in _events(stderr)] == list(range(50))
    assert stderr.writes < 50  # buffered: not one write per line


def test_an_error_line_is_written_at_once_after_what_came_before(stderr: _Stream) -> None:
    statements = get_logger("tierflight.statement")
    statements.info("statement", n=1)
    statements.error("statement_failed", query_id="q1")
    assert [e["event"] for e in _events(stderr)] == ["statement", "statement_failed"]
    get_logger("tierflight.app").info("other", n=2)  # other loggers are not buffered
    assert _events(stderr)[-1]["event"] == "other"


def test_deferred_lines_are_rendered_when_written_in_order(stderr: _Stream) -> None:
    rendered_on: list[int] = []

    def fields() -> dict[str, Any]:
        rendered_on.append(threading.get_ident())
        return {"n": 1}

    log_later("statement", fields)
    get_logger("tierflight.statement").info("statement", n=2)
    assert rendered_on == []  # nothing computed on the statement's thread
    flush_logs()
    events = _events(stderr)
    assert [e["n"] for e in events] == [1, 2]
    assert events[0]["event"] == "statement" and events[0]["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", events[0]["timestamp"])


def test_a_deferred_line_that_fails_to_render_does_not_stop_the_log(stderr: _Stream) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("gone")

    log_later("statement", broken)
    log_later("statement", lambda: {"n": 2})
    flush_logs()
    assert [(e["event"], e.get("render_error"), e.get("n")) for e in _events(stderr)] == [
        ("statement", "KeyError", None),
        ("statement", None, 2),
    ]


def test_deferred_lines_below_the_level_are_dropped(stderr: _Stream) -> None:
    configure_logging("warning", json_format=True)
    called: list[bool] = []
    log_later("statement", lambda: called.append(True) or {})
    flush_logs()
    assert called == [] and _events(stderr) == []


def test_query_ids_are_unique_and_differ_in_a_forked_child() -> None:
    ids = {new_query_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(re.fullmatch(r"[0-9a-f]{32}", q) for q in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and leaves
        os.write(write, new_query_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    mine = new_query_id()
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child[:20] != mine[:20]  # the child drew a prefix of its own


def test_another_process_change_is_seen_within_the_poll_interval(tmp_path: Path) -> None:
    writer, reader = LocalTableState(tmp_path), LocalTableState(tmp_path)
    writer.write({"cold_until": "2024-10-03"})
    before = reader.signature(fresh=True)
    writer.bump()
    assert writer.signature() != before  # a writer sees its own change at once
    assert reader.signature(fresh=True) != before  # fresh: read now
    seen = reader.signature()
    writer.bump()
    time.sleep(LOCAL_POLL_S * 2)
    assert reader.signature() != seen


def test_the_executor_knows_whether_statements_run(running: RunningServer) -> None:
    executor = running.app.executor
    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 42")
        cur.fetchall()
    assert executor.busy(within=60)
    time.sleep(0.05)
    assert not executor.busy(within=0.01)  # nothing in flight, the last one done before that


class _Executor:
    def __init__(self, busy: bool) -> None:
        self._busy = busy

    def busy(self, within: float) -> bool:
        return self._busy


def _service(rate: int, busy: bool) -> Any:
    from tierflight.ingest.service import IngestService, IngestSettings

    service = IngestService.__new__(IngestService)  # only what the pacing reads
    service.settings = IngestSettings(yield_rows_per_s=rate)
    service.statements = _Executor(busy)
    return service


@pytest.mark.parametrize(("rate", "busy", "held"), [(100_000, True, True), (100_000, False, False), (0, True, False)])
def test_ingest_yields_to_statements_only_while_they_run(rate: int, busy: bool, held: bool) -> None:
    service = _service(rate, busy)
    started = time.perf_counter()
    service._yield_to_statements(20_000, started)  # 20,000 rows at 100,000 rows/s: 0.2 s
    waited = time.perf_counter() - started
    assert (waited >= 0.19) == held and waited < 1.0


@pytest.mark.parametrize("value", [-1, "fast", 1.5, True])
def test_a_bad_yield_rate_is_refused_by_name(value: object) -> None:
    from tierflight.core.config import ingest_config
    from tierflight.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ingest\.yield_rows_per_s"):
        ingest_config({"yield_rows_per_s": value})
