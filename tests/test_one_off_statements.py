"""Statements that never repeat (a dashboard's new filter values on every call) must not fill
the long-lived caches: what a cache keeps lives until the collector's full collections walk
it, and those hold the GIL for every statement in flight. Caches keyed by statement text admit
a key on its second sighting (core.lru.Sightings); the router's caches keep verdicts without
the tracebacks that held the frames (and candidates, and trees) of the plan that raised them;
facts about a statement's structure are found once per literal shape (core.statement)."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import sys

from sqlglot import exp

from router_harness import build_router
from tierflight.core.lru import Sightings
from tierflight.core.statement import ShapeFacts
from tierflight.engine.sandbox import check_statement
from tierflight.router.rules import Reject

# Day bounds inside a month: a month rollup rejects it on alignment (a Reject raised deep in
# the rewrite) before a day rollup answers it.
SHAPE = (
    "SELECT type, COUNT(*) AS events FROM events WHERE advertiser_id = {adv} "
    "AND day BETWEEN DATE '2024-10-{a:02d}' AND DATE '2024-10-{b:02d}' GROUP BY type ORDER BY events DESC"
)
_texts = itertools.count(1)
FRAME = type(sys._getframe())


def new_texts(n: int) -> list[str]:
    """Texts of one shape never sent before (in this process)."""
    out = []
    for _ in range(n):
        i = next(_texts)
        out.append(SHAPE.format(adv=100_000 + i, a=1 + i % 9, b=11 + i % 17))
    return out


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


def test_sightings_admit_a_key_on_its_second_sighting_and_stay_bounded() -> None:
    seen = Sightings(limit=3)
    assert [seen.again(k) for k in ("a", "a", "a")] == [False, True, True]
    for k in ("b", "c", "d"):
        assert not seen.again(k)
    assert not seen.again("a")  # the oldest was dropped past the limit
    assert seen.again("d")


def test_a_text_is_kept_from_its_second_sighting() -> None:
    (sql,) = new_texts(1)
    first, second, third = (check_statement(sql) for _ in range(3))
    assert first is not second  # the first sighting is not kept
    assert second is third  # from the second on it is
    assert first.tree == second.tree


def test_one_off_texts_leave_no_trees_and_no_frames_behind() -> None:
    router = build_router()

    def plan_all(texts: list[str]) -> None:
        for sql in texts:
            route = router.plan(check_statement(sql))
            assert route.rollup == "day_advertiser_type", route.to_json()
            assert any(r.cause.value == "alignment" for r in route.rejected)

    plan_all(new_texts(20))  # the shape's template and first verdicts
    columns, frames = live(exp.Column), live(FRAME)
    plan_all(new_texts(200))
    # A statement of this shape has 5 columns: the old caches kept ~1,000 more, and a frame
    # chain per rejected candidate.
    assert live(exp.Column) - columns < 100
    assert live(FRAME) - frames < 20
    kept = [o for o in gc.get_objects() if isinstance(o, Reject) and o.__traceback__ is not None]
    assert kept == []


def test_repeated_texts_still_plan_from_the_cache() -> None:
    router = build_router()
    (sql,) = new_texts(1)
    routes = [router.plan(check_statement(sql)) for _ in range(3)]
    assert routes[0] == routes[1] == routes[2]
    assert routes[1] is routes[2]  # kept from the second sighting


def test_facts_of_a_shape_are_found_once_and_never_cross_trees() -> None:
    a, b = new_texts(2)
    for sql in (a, b):
        check_statement(sql)  # the shape's template
    first, second = check_statement(new_texts(1)[0]), check_statement(new_texts(1)[0])
    assert first.shape is not None and first.shape == second.shape
    calls: list[object] = []
    facts: ShapeFacts[int] = ShapeFacts()

    def count(tree: exp.Expr) -> int:
        calls.append(tree)
        return len(list(tree.find_all(exp.Column)))

    assert facts.get(first, lambda: count(first.tree)) == 5
    assert facts.get(second, lambda: count(second.tree)) == 5
    assert calls == [first.tree]
    # Another tree (bound parameters, a dropped filter) is not of that shape any more.
    other = dataclasses.replace(first, tree=first.tree.copy())
    assert other.shape is None
    assert facts.get(other, lambda: count(other.tree)) == 5
    assert len(calls) == 2
    # A context the fact depends on keys it too.
    assert facts.get(first, lambda: -1, "other context") == -1


def test_a_statement_from_a_template_routes_as_its_parse_does() -> None:
    """DuckDB names an unaliased aggregate's column as written (``SUM(bid_price)`` is
    ``sum(bid_price)``): a copy of a shape's parse for another text carries that spelling, so
    its rewrite keeps the name and a subquery that needs the name is still routed."""
    from tierflight.engine.templates import TEMPLATES

    shapes = [
        "WITH d AS (SELECT day, SUM(bid_price) FROM events WHERE type = '{v}' GROUP BY day) "
        'SELECT max("sum(bid_price)") FROM d',
        "SELECT type, Count(*), sum(bid_price) FROM events WHERE country = '{v}' GROUP BY type",
        "SELECT type, count(*) FROM events WHERE country = '{v}' GROUP BY type "
        "UNION ALL SELECT 'all', count(*) FROM events WHERE country = '{v}'",
    ]
    for shape in shapes:
        values = [f"X{next(_texts)}" for _ in range(3)]
        routes = []
        for v in values:
            statement = check_statement(shape.format(v=v))
            routes.append(build_router().plan(statement))
        TEMPLATES.clear()
        fresh = build_router().plan(check_statement(shape.format(v=values[-1])))
        assert statement.shape is not None  # the last came from the template
        assert routes[-1].sql == fresh.sql and routes[-1].rollup == fresh.rollup is not None, routes[-1].to_json()


def test_the_query_log_keeps_no_one_off_tree_whose_address_was_reused() -> None:
    """A one-off statement's tree is freed once recorded, and the next one's tree is often
    allocated at its address: sightings by ``id(tree)`` took it for a tree seen twice and
    kept it (a tenth of one-off trees, filling the shapes cache in time)."""
    from pathlib import Path

    from router_harness import base_config
    from tierflight.advisor.querylog import QueryLog

    log = QueryLog(base_config(), Path("/nonexistent/advisor"), background=False)
    log.max_bytes = 0  # nothing written
    for _ in range(300):
        sql = f"SELECT country, count(*) FROM events WHERE publisher_id = {next(_texts) + 7_000_000} GROUP BY country"
        log.record(check_statement(sql).tree, "warm", None, 10, 1.0, 0.0)
    assert len(log._shapes) == 0
    repeated = check_statement("SELECT country, count(*) FROM events WHERE publisher_id = 6 GROUP BY country").tree
    for _ in range(2):
        log.record(repeated, "warm", None, 10, 1.0, 0.0)
    assert len(log._shapes) == 1  # a tree recorded twice is kept

