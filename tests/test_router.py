"""Router decisions (fixture file: SQL → expected route) and answers equal to raw ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import RunningServer
from differential import assert_same, expected_cases

FIXTURE = Path(__file__).parent / "fixtures" / "router" / "decisions.sql"


CASES = expected_cases(FIXTURE)


@pytest.mark.parametrize(("name", "sql", "expect"), CASES, ids=[c[0] for c in CASES])
def test_route_decision(name: str, sql: str, expect: str, server: RunningServer) -> None:
    from tierflight.engine.sandbox import check_statement

    route = server.app.router.plan(check_statement(sql))
    kind, _, what = expect.partition(" ")
    if kind == "rollup":
        assert route.rollup == what, f"{name}: routed to {route.tier}, rejected: {route.rejected}"
        assert len(route.parts) == 1
    elif kind == "split":
        assert route.rollup == what, f"{name}: routed to {route.tier}, rejected: {route.rejected}"
        assert any(p.tier in ("cold", "warm", "hot") and "edges" in p.source for p in route.parts)
    else:
        assert route.rollup is None, f"{name}: unexpectedly answered by {route.rollup}"
        assert any(r.rule == what for r in route.rejected), f"{name}: rejections {route.rejected}"


@pytest.mark.parametrize(("name", "sql", "expect"), CASES, ids=[c[0] for c in CASES])
def test_routed_answer_equals_flat(name: str, sql: str, expect: str, conn: Any, flat: Any) -> None:
    if "approx_count_distinct" in sql:
        pytest.skip("approximate: checked against the exact count within the sketch's error elsewhere")
    with conn.cursor() as cur:
        cur.execute(sql)
        actual = cur.fetch_arrow_table()
    assert_same(actual, flat.sql(sql).to_arrow_table(), sql)


def test_output_names_without_a_bind_are_duckdbs(server: RunningServer) -> None:
    """A rewrite keeps the statement's output names; for statements whose expressions are
    all aliased or plain columns they are read off the tree instead of bound by DuckDB, and
    must be exactly the names DuckDB gives (a plain column is named as the table spells it)."""
    from tierflight.engine.sandbox import check_statement
    from tierflight.router.outputs import output_names

    info = server.app.router._table_infos()["events"]
    extra = [
        "SELECT COUNTRY, Type, sum(bid_price) AS Spend FROM events GROUP BY ALL",
        'SELECT e.day, count(*) AS "N" FROM events e GROUP BY 1',
        "SELECT Hour AS h, advertiser_id FROM events LIMIT 1",
        "SELECT day, SUM(bid_price), COUNT(*), count(), AVG(total_price), Max(total_price) FROM events GROUP BY day",
        'SELECT country, approx_count_distinct(user_id), min(ts), sum("bid_price"), Sum(Bid_Price) FROM events GROUP BY 1',
        "SELECT count(bid_price), sum(bid_price), sum(bid_price) FROM events",
    ]
    # Named by DuckDB in ways the fast path does not copy: these must fall back to the bind.
    bound = [
        "SELECT mean(total_price) FROM events",
        "SELECT count(DISTINCT user_id) FROM events",
        "SELECT max(e.total_price) FROM events e",
        "SELECT sum(bid_price) * 2 FROM events",
        "SELECT count(*) FILTER (WHERE type = 'click') FROM events",
        "SELECT arg_min(advertiser_id, bid_price) FROM events",
    ]
    fast = 0
    for sql in [c[1] for c in CASES] + extra + bound:
        names = output_names(check_statement(sql).tree, info, sql)
        if names is None:
            continue
        fast += 1
        assert names == server.app.column_names(sql), sql
        assert sql not in bound, sql
    assert fast >= len(extra)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT day, count(*) FILTER (WHERE type = 'click') AS c FROM events WHERE day >= DATE '2024-07-01' GROUP BY 1",
        "SELECT CAST(date_trunc('hour', ts) AS TIMESTAMP) AS h, sum(bid_price) FROM events /* note */ GROUP BY ALL ORDER BY h",
        "SELECT country, avg(total_price) FROM events WHERE type IN ('purchase', 'click') GROUP BY country LIMIT 3",
    ],
)
def test_bare_copy_is_the_same_statement_and_shares_no_node(sql: str) -> None:
    """The planner rewrites a bare copy of the cached tree: it must print the same SQL (bar
    comments) and changing it must leave the original alone."""
    import sqlglot
    from sqlglot import exp

    from tierflight.router.trees import bare_copy

    tree = sqlglot.parse_one(sql, read="duckdb")
    before = tree.sql(dialect="duckdb")
    copy = bare_copy(tree)
    assert copy.sql(dialect="duckdb", comments=False) == tree.sql(dialect="duckdb", comments=False)
    originals = {id(n) for n in tree.walk()}
    assert not originals & {id(n) for n in copy.walk()}
    assert all(n.parent is not None for n in copy.walk() if n is not copy)
    for column in list(copy.find_all(exp.Column)):
        column.replace(exp.column("x"))
    assert tree.sql(dialect="duckdb") == before
