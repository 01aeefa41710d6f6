"""Every statement of the shared workloads that a configured rollup can answer exactly is
answered by one (the route is asserted, not just the result)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from differential import parse_workload

WORKLOADS = Path(__file__).resolve().parent.parent.parent / "shared" / "workloads"
# Statements no configured rollup can answer exactly, and why.
RAW = {
    "top_publishers_jp_window": "publisher x country x day is not a configured rollup (it would not fit the memory budget)",
    "raw_drilldown_one_auction": "reads raw rows of one auction",
    # Minute buckets are kept for the last 90 days (the rollups' memory target); the day it
    # asks for lies before that.
    "spend_per_minute_one_day": "2024-06-01 is older than minute_impressions' 90-day retention",
}


def _statements() -> list[tuple[str, str]]:
    if not WORKLOADS.is_dir():
        return []
    return [s for f in sorted(WORKLOADS.glob("*.sql")) for s in parse_workload(f.read_text())]


STATEMENTS = _statements()


@pytest.mark.skipif(not STATEMENTS, reason=f"{WORKLOADS} is not here")
@pytest.mark.parametrize(("name", "sql"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_workload_statement_route(name: str, sql: str, server: Any) -> None:
    from tierflight.engine.sandbox import check_statement

    route = server.app.router.plan(check_statement(sql))
    if name in RAW:
        assert route.rollup is None
    else:
        assert route.rollup is not None, f"{name} missed every rollup: {route.rejected}"
        assert [p.tier for p in route.parts] == ["hot"]
