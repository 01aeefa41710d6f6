"""Rewrites from a statement shape's template (router/templates.py): a router that has seen
other statements of a shape routes a new text exactly as a router that never saw any does,
and takes the rewrite from the template instead of rewriting the statement again."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator

import pytest

import tierflight.router.planner as planner_module
from router_harness import ROOT, Options, _stable_markers, all_cases, build_router
from tierflight.engine.sandbox import check_statement
from tierflight.loadtest.vary import Pool
from tierflight.loadtest.workload import parse_workload
from tierflight.router.planner import Router
from tierflight.router.route import Route

SHAPE = (
    "SELECT type, COUNT(*) AS events, SUM(bid_price) AS spend FROM events "
    "WHERE country = {country} AND day BETWEEN DATE '{start}' AND DATE '{end}' GROUP BY type ORDER BY type LIMIT {top}"
)


def decision(route: Route) -> tuple[str, str]:
    """Everything a route says: its SQL (the raw planner's random source names numbered)
    and its parts and rejections with their reasons."""
    return _stable_markers(route.sql), route.to_json()


DEFAULT = Options()


def fresh(sql: str, options: Options = DEFAULT) -> tuple[str, str]:
    return decision(build_router(options).plan(check_statement(sql)))


def replan(router: Router, sql: str) -> tuple[str, str]:
    """A plan of ``sql`` as of a new text: the plan and rewrite caches (by text) forgotten,
    what the router knows of shapes kept."""
    router._cache.clear()
    router._rewrites.clear()
    return decision(router.plan(check_statement(sql)))


def test_a_new_text_of_a_known_shape_is_rewritten_from_its_template(monkeypatch: pytest.MonkeyPatch) -> None:
    router = build_router()
    first = SHAPE.format(country="'DE'", start="2024-03-02", end="2024-03-20", top=77)
    second = SHAPE.format(country="'US'", start="2024-05-01", end="2024-05-31", top=5)
    assert replan(router, first) == fresh(first)
    assert replan(router, second) == fresh(second)  # the shape's second statement builds it

    # A third text: no rewrite of the statement at all, and the route of a fresh router.
    third = SHAPE.format(country="'it''s'", start="2024-11-11", end="2024-11-30", top=1000000000)
    expected = fresh(third)

    def no_rewrite(*args: object, **kwargs: object) -> None:
        raise AssertionError("rewritten in full")

    monkeypatch.setattr(planner_module, "rewrite_select", no_rewrite)
    monkeypatch.setattr(planner_module, "rewrite_parts", no_rewrite, raising=False)
    sql, explained = replan(router, third)
    assert (sql, explained) == expected
    assert "country = 'it''s'" in sql and "CAST('2024-11-11' AS DATE)" in sql and sql.endswith("LIMIT 1000000000")
    assert json.loads(explained)["rollup"] == "day_country_type"


def test_bucket_bounds_are_those_of_each_statement() -> None:
    """On an hour rollup a day filter is not on the bucket column: the bounds on the bucket
    column come from each statement's own day, never from the template's."""
    router = build_router()
    days = ["2024-03-02", "2024-07-31", "2024-12-31", "2024-02-29"]
    for day in days:
        sql = f"SELECT hour, country, SUM(bid_price) AS revenue FROM events WHERE day = DATE '{day}' GROUP BY ALL ORDER BY hour"
        got = replan(router, sql)
        assert got == fresh(sql)
        assert f"hour >= CAST('{day} 00:00:00' AS TIMESTAMP)" in got[0]


def test_constants_of_another_class_make_another_shape() -> None:
    """A string that reads as a date is another class than one that does not (it may bound
    the time range): such statements never share a template."""
    router = build_router()
    for value in ["'DE'", "'FR'", "'2024-01-01'", "'GB'", "'2024-02-01'", "'2024-03-01 10:00:00'", "'JP'"]:
        sql = SHAPE.format(country=value, start="2024-03-01", end="2024-03-31", top=10)
        assert replan(router, sql) == fresh(sql)


def test_comments_beside_constants_do_not_reach_the_rewrite() -> None:
    router = build_router()
    for i, country in enumerate(["'DE'", "/* a */ 'US' /* b */", "'FR' -- c\n", "'GB'"]):
        sql = SHAPE.format(country=country, start="2024-03-01", end=f"2024-03-{10 + i}", top=10 + i)
        assert replan(router, sql) == fresh(sql)


def test_every_fixture_case_routes_the_same_from_a_router_that_knows_its_shapes() -> None:
    """All fixture cases planned thrice through one router per set of options (so that each
    case is planned from templates other cases of its shape left, where the template path
    applies), each compared with a fresh router's route."""
    cases = all_cases()
    routers: dict[Options, Router] = {}
    expected = {(c.file, c.name): fresh(c.sql, c.options) for c in cases}
    for _ in range(3):
        for c in cases:
            router = routers.setdefault(c.options, build_router(c.options))
            assert replan(router, c.sql) == expected[(c.file, c.name)], (c.file, c.name)


POOLS = {
    "country": Pool("country", ("US", "GB", "DE", "JP", "FR", "it's")),
    "advertiser": Pool("advertiser", tuple(range(1, 60))),
}


def _varied(per_statement: int) -> Iterator[str]:
    rng = random.Random(7)
    for path in (ROOT / "bench" / "workloads" / "dashboard-varying.sql", ROOT / "bench" / "workloads" / "star-schema.sql"):
        for st in parse_workload(path.read_text()):
            if st.template is None:
                continue
            template = st.template.with_pools(POOLS)
            for _ in range(per_statement):
                yield template.literal(template.draw(rng))


def test_varied_dashboard_statements_route_as_from_a_fresh_router() -> None:
    router = build_router()
    texts = list(_varied(6))
    assert len(texts) >= 60
    for sql in itertools.chain(texts, texts[::-1]):
        assert replan(router, sql) == fresh(sql), sql


def test_a_filtered_rollup_drops_the_conjunct_spelled_as_its_filter_in_every_statement() -> None:
    router = build_router()
    for kind, day, top in [("impression", 2, 10), ("impression", 3, 11), ("click", 4, 12), ("impression", 5, 13), ("click", 6, 14)]:
        sql = (
            f"SELECT minute, SUM(bid_price) AS spend FROM events WHERE type = '{kind}' AND day = DATE '2024-12-{day:02d}' "
            f"GROUP BY minute ORDER BY minute LIMIT {top}"
        )
        got = replan(router, sql)
        assert got == fresh(sql)
        assert (json.loads(got[1])["rollup"] == "minute_impressions") == (kind == "impression")


def test_time_bounds_the_rewrite_reads_are_part_of_what_a_template_is_for() -> None:
    """A bound on the time column is aligned to one rollup's grain or not: statements of one
    shape with other bounds are rewritten (or rejected) for their own bounds."""
    router = build_router()
    bounds = [("2024-09-01", "2024-10-01"), ("2024-09-01", "2024-10-01"), ("2024-09-01 10:00:00", "2024-09-02"), ("2024-09-01", "2024-10-01")]
    for i, (lo, hi) in enumerate(bounds * 2):
        sql = (
            f"SELECT date_trunc('hour', ts) AS h, type, count(*) AS events FROM events "
            f"WHERE country = '{'DE' if i % 2 else 'FR'}' AND ts >= TIMESTAMP '{lo}' AND ts < TIMESTAMP '{hi}' GROUP BY 1, 2 ORDER BY 1, 2"
        )
        assert replan(router, sql) == fresh(sql), sql


def test_having_thresholds_of_either_number_class() -> None:
    router = build_router()
    for threshold in ["5 / 1000.0", "7 / 1000.0", "5.5 / 1000.0", "12 / 10", "7 / 1000.0", "0.25 / 3"]:
        sql = (
            "SELECT day, SUM(bid_price) AS revenue FROM events WHERE type = 'impression' AND day BETWEEN DATE '2024-03-01' "
            f"AND DATE '2024-03-09' GROUP BY day HAVING SUM(bid_price) >= {threshold} ORDER BY day"
        )
        got = replan(router, sql)
        assert got == fresh(sql)
        assert threshold in got[0]


def test_a_statement_too_large_for_a_shape_key_is_rewritten_in_full() -> None:
    from tierflight.router.templates import MAX_TOKENS, statement_shape

    router = build_router()
    for n in (3000, 3001, 3002):
        sql = f"SELECT type, COUNT(*) AS events FROM events WHERE advertiser_id IN ({', '.join(str(i) for i in range(n))}) GROUP BY type"
        assert statement_shape(check_statement(sql).tree) is None  # more than MAX_TOKENS
        assert replan(router, sql) == fresh(sql)
    assert all(len(key[0].tokens) <= MAX_TOKENS + 8 for key in router._by_shape._items)


def test_comments_inside_aggregates_route_as_from_a_fresh_router() -> None:
    """MIN of a dimension is copied as written (faithful_copy) into the rewrite; comments and
    notes of the statement's nodes are part of its shape's key, so whatever of them a
    rewrite may copy comes from the statement itself."""
    router = build_router()
    for i, comment in enumerate(["", "/* one */", "/* two */", "", "/* two */", "/* one */"]):
        sql = (
            f"SELECT type, MIN(country {comment}) AS first_country, COUNT(*) AS events FROM events "
            f"WHERE day BETWEEN DATE '2024-03-01' AND DATE '2024-03-{10 + i}' GROUP BY type ORDER BY type"
        )
        got = replan(router, sql)
        assert got == fresh(sql)


def test_bound_value_sets_share_the_template_of_their_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prepared statement's value sets (router/binding.py: casts of the values, LIMIT and
    HAVING thresholds included) route as from a fresh router, and past its second value set a
    statement's rewrite comes from its template, as its literal texts' does."""
    from tierflight.router.binding import bind

    rng = random.Random(11)
    path = ROOT / "bench" / "workloads" / "dashboard-varying.sql"
    full = {"n": 0}
    rewrite = planner_module.Router._full

    def counted(self: Router, *args: object, **kwargs: object) -> object:
        full["n"] += 1
        return rewrite(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(planner_module.Router, "_full", counted)
    templated = 0
    for st in parse_workload(path.read_text()):
        if st.template is None:
            continue
        template = st.template.with_pools(POOLS)
        prepared = check_statement(template.placeholders)
        router = build_router()
        for i in range(6):
            bound = bind(prepared, list(template.draw(rng)))
            before = full["n"]
            got = decision(_plan_again(router, bound))
            from_template = full["n"] == before
            assert got == decision(build_router().plan(bound)), (st.name, bound.sql)
            templated += i >= 2 and from_template
    assert templated >= 6 * 3  # most statements: every value set past the second, no rewrite


def _plan_again(router: Router, statement: object) -> Route:
    router._cache.clear()
    router._rewrites.clear()
    return router.plan(statement)  # type: ignore[arg-type]
