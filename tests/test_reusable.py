"""Which answers the server may reuse (fixture file: SQL → reuse, or why not), and that the
executor does reuse exactly those."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import pytest

from conftest import RunningServer
from differential import expected_cases
from tierflight.engine.sandbox import check_statement
from tierflight.router.reusable import not_reusable

FIXTURE = Path(__file__).parent / "fixtures" / "router" / "reusable.sql"


CASES = expected_cases(FIXTURE)
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "sql", "expect"), CASES, ids=IDS)
def test_rule(name: str, sql: str, expect: str) -> None:
    reason = not_reusable(check_statement(sql).tree, {"events"})
    if expect == "reuse":
        assert reason is None, f"{name}: {reason}"
    else:
        word = expect.split(" ", 1)[1]
        assert reason is not None and word in reason, f"{name}: {reason!r} does not name {word!r}"


@pytest.mark.parametrize(("name", "sql", "expect"), CASES, ids=IDS)
def test_the_executor_reuses_exactly_these(name: str, sql: str, expect: str, server: RunningServer) -> None:
    results = server.app.executor.results
    with fsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        answers: list[Any] = []
        for _ in range(2):
            cur.execute(sql)
            answers.append(cur.fetch_arrow_table())
        hits = results.hits
        cur.execute(sql)
        answers.append(cur.fetch_arrow_table())
    reused = results.hits > hits
    assert reused == (expect == "reuse"), f"{name}: reused={reused}"
    if expect == "reuse":
        assert all(a.equals(answers[0]) for a in answers)
    if name == "system_table":  # what reuse would get wrong: the log grew in between
        assert not answers[2].equals(answers[0])
