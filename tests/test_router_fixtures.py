"""Router decisions from fixture files, without a server: statement → the rollup chosen and
the SQL it is rewritten to, or the raw tiers and the rule that rejected each rollup tried.

The cases live in tests/fixtures/router/routes/*.sql (format: router_harness). Expected SQL is
compared after normalising both sides through sqlglot, so only formatting is free: a change to
what the router decides or to the SQL it writes shows up here as a failing case, to be
reviewed and then rewritten with ``python tests/router_harness.py FILE``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from differential import expected_cases
from router_harness import (
    FIXTURES,
    ROOT,
    Case,
    Options,
    all_cases,
    build_router,
    normalise,
    outcome,
    read_cases,
    route_of,
)
from tierflight.engine.sandbox import check_statement
from tierflight.loadtest.workload import parse_workload

CASES = all_cases()


def test_the_fixture_files_cover_every_kind_of_route() -> None:
    assert len(CASES) >= 150
    assert all(c.kind is not None for c in CASES), [c.name for c in CASES if c.kind is None]
    kinds = {c.kind for c in CASES}
    assert kinds == {"rollup", "split", "nested", "join", "raw"}
    rules = {rule for c in CASES for _, rule in c.rejected}
    assert {"shape", "grain", "dimension", "measure", "filter", "alignment", "retention", "status", "freshness"} <= rules


def test_every_shared_workload_statement_has_a_case() -> None:
    """workloads.sql copies ../shared/workloads/*.sql (when it is there to compare with)."""
    # ../shared beside the repository (a worktree sits one level deeper).
    found = [p / "shared" / "workloads" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared" / "workloads").is_dir()]
    if not found:
        pytest.skip("the shared workloads are not next to the repository")
    statements = [s.sql for path in sorted(found[0].glob("*.sql")) for s in parse_workload(path.read_text(), path.name)]
    ours = {normalise(c.sql) for c in read_cases(FIXTURES / "workloads.sql")}
    assert statements and {normalise(s) for s in statements} <= ours


def test_the_model_agrees_with_the_server_lane_decisions() -> None:
    """routes/decisions.sql plans the statements of decisions.sql, which test_router checks on
    a server with data: the modelled data state must lead to the same decisions."""
    ours = {c.name: c for c in read_cases(FIXTURES / "decisions.sql")}
    server_lane = expected_cases(FIXTURES.parent / "decisions.sql")
    assert {name for name, _, _ in server_lane} == set(ours)
    for name, sql, expect in server_lane:
        case = ours[name]
        assert normalise(case.sql) == normalise(sql), name
        kind, _, what = expect.partition(" ")
        if kind == "raw":
            assert case.kind == "raw" and what in {rule for _, rule in case.rejected}, name
        else:
            assert (case.kind, case.rollup) == (kind, what), name


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file.removesuffix('.sql')}:{c.name}" for c in CASES])
def test_route(case: Case) -> None:
    kind, rollup, rejected, sql = outcome(route_of(case))
    assert (kind, rollup) == (case.kind, case.rollup), f"{case.name}: {kind} {rollup or ''}, rejected {rejected}"
    assert rejected == case.rejected
    if case.expected_sql is None:
        assert sql is None
    else:
        assert sql is not None and normalise(sql) == normalise(case.expected_sql)


def test_the_tables_extent_is_listed_once_per_data_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule covering reads the table's extent from its partitions: listed once per plan-cache
    version (not per statement), and again once the data moved (an ingest invalidates)."""
    router = build_router(Options())
    store: Any = router._stores()["events"]
    every = store.partitions()
    shown: list[Any] = every
    listed = [0]

    def partitions() -> list[Any]:
        listed[0] += 1
        return shown

    monkeypatch.setattr(store, "partitions", partitions)
    first_half = "SELECT publisher_id, count(*) FROM events WHERE day BETWEEN DATE '2024-01-01' AND DATE '2024-06-30' GROUP BY 1"
    whole = "SELECT publisher_id, count(*) FROM events WHERE day BETWEEN DATE '2024-01-01' AND DATE '2024-12-31' GROUP BY 1"
    assert router.plan(check_statement(whole)).rollup == "publisher_type"
    assert router.plan(check_statement(whole + " LIMIT 5")).rollup == "publisher_type"
    assert router.plan(check_statement(first_half)).rollup is None  # rows after June exist
    assert listed[0] == 1
    # The data now ends in June: after the invalidation the extent is listed again.
    shown = [p for p in every if p.start < dt.datetime(2024, 7, 1)]
    router.invalidate()
    assert router.plan(check_statement(first_half + " LIMIT 5")).rollup == "publisher_type"
    assert listed[0] == 2
