"""The router's pure pieces one at a time (the fixture lane, test_router_fixtures, checks them
together): each rule's rejection and the order the rules run in, the split/slice arithmetic
of time ranges, and the typed route fields EXPLAIN ROUTE and the logs print."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlglot
from sqlglot import exp

from tierflight.rollups.definition import Measure, StorageGroup
from tierflight.rollups.registry import RollupState
from tierflight.router.facts import TableInfo, Target
from tierflight.router.route import PartTier, Rejection, Route, RoutePart, Rule
from tierflight.router.rules import STATE_RULES, STATEMENT_RULES, Candidate, Reject, first_rejection
from tierflight.router.split import slice_bounds, split_source, whole_buckets
from tierflight.tiers.base import TimeRange

NOW = dt.datetime(2024, 7, 1)
INFO = TableInfo(
    "events",
    "ts",
    {"day": "CAST(ts AS DATE)", "hour": "date_trunc('hour', ts)"},
    {"day": "day", "hour": "hour"},
    frozenset({"ts", "type", "country", "bid_price", "user_id"}),
)
MEASURES = (Measure("count"), Measure("sum", "bid_price"), Measure("count_col", "bid_price"))


def group(
    dimensions: tuple[str, ...] = ("day", "type"),
    flt: str | None = None,
    retention: dt.timedelta | None = None,
    measures: tuple[Measure, ...] = MEASURES,
) -> StorageGroup:
    return StorageGroup("g", "events", dimensions, measures, flt, retention, ("g",))


def candidate(sql: str, g: StorageGroup | None = None, status: str = "active", fresh: bool = True) -> Candidate:
    tree = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(tree, exp.Select)
    table = tree.args["from_"].this
    state = RollupState(group=g or group(), members=(), status=status)
    return Candidate(Target(sql, tree, table, INFO), state, NOW, fresh=fresh)


def verdict(c: Candidate) -> tuple[str, str] | None:
    r = first_rejection((*STATE_RULES, *STATEMENT_RULES), c)
    return None if r is None else (r.rule, r.reason)


# -- rules -----------------------------------------------------------------------------------

GOOD = "SELECT day, type, sum(bid_price) FROM events WHERE ts >= '2024-06-01' GROUP BY 1, 2"


def test_a_statement_the_rollup_holds_passes_every_rule() -> None:
    assert verdict(candidate(GOOD)) is None


@pytest.mark.parametrize(
    ("sql", "g", "status", "fresh", "expected"),
    [
        (GOOD, None, "building", True, ("status", "rollup is building")),
        (GOOD, None, "active", False, ("freshness", "the hot tail has rows the rollup does not hold yet")),
        (GOOD, group(retention=dt.timedelta(days=10)), "active", True,
         ("retention", "the rollup keeps data from 2024-06-21 00:00:00 only")),
        ("SELECT hour, sum(bid_price) FROM events GROUP BY 1", None, "active", True,
         ("grain", "needs hour buckets, rollup has day")),
        ("SELECT type, count(*) FROM events WHERE day >= DATE '2024-06-01' GROUP BY 1", group(("type",)), "active", True,
         ("grain", "needs day buckets, rollup has no time dimension")),
        ("SELECT day, max(bid_price) FROM events GROUP BY 1", None, "active", True,
         ("measure", "max(bid_price) is not stored")),
        ("SELECT day, country, count(*) FROM events GROUP BY 1, 2", None, "active", True,
         ("dimension", "column country is not a dimension of the rollup")),
        (GOOD, group(flt="country = 'DE'"), "active", True,
         ("filter", "the statement does not imply the rollup's filter (country = 'DE')")),
    ],
    ids=["status", "freshness", "retention", "grain", "range-grain", "measure", "dimension", "filter"],
)
def test_each_rule_rejects_what_it_is_about(
    sql: str, g: StorageGroup | None, status: str, fresh: bool, expected: tuple[str, str]
) -> None:
    assert verdict(candidate(sql, g, status, fresh)) == expected


def test_the_first_rule_in_order_decides() -> None:
    """A candidate that breaks several rules is reported under the first of the tuple: the
    state rules, then grain, measure, dimension, filter."""
    sql = "SELECT hour, country, max(bid_price) FROM events GROUP BY 1, 2"
    assert [r.__name__ for r in (*STATE_RULES, *STATEMENT_RULES)] == [
        "status", "freshness", "retention", "grain", "measure", "dimension", "filter_implied"
    ]
    assert verdict(candidate(sql, status="stale")) == ("status", "rollup is stale")
    assert verdict(candidate(sql)) == ("grain", "needs hour buckets, rollup has day")
    assert verdict(candidate("SELECT country, max(bid_price) FROM events GROUP BY 1")) == ("measure", "max(bid_price) is not stored")


def test_a_stale_rollup_answers_only_when_allowed() -> None:
    c = candidate(GOOD, status="stale")
    assert first_rejection(STATE_RULES, c) is not None
    allowed = Candidate(c.target, c.state, c.now, allow_stale=True)
    assert first_rejection(STATE_RULES, allowed) is None


def test_rules_are_pure_the_statement_tree_is_unchanged() -> None:
    c = candidate("SELECT hour, country, max(bid_price) FROM events WHERE day >= DATE '2024-06-01' GROUP BY 1, 2")
    before = c.target.tree.sql(dialect="duckdb")
    verdict(c)
    assert c.target.tree.sql(dialect="duckdb") == before


# -- split and slice arithmetic ----------------------------------------------------------------


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("grain", "start", "end", "expected"),
    [
        ("day", "2024-06-01 10:30", "2024-06-05 00:00", ("2024-06-01", "2024-06-05")),
        ("day", "2024-06-01", "2024-06-05 00:00:01", ("2024-06-01", "2024-06-06")),  # a DATE bound is a whole day
        ("hour", "2024-06-01 10:30", "2024-06-01 12:15", ("2024-06-01 10:00", "2024-06-01 12:15")),
        ("month", "2024-06-15", "2024-08-02 06:00", ("2024-06-01", "2024-08-03")),
        ("week", "2024-06-05", None, ("2024-06-03", None)),  # 2024-06-03 is a Monday
        ("minute", None, "2024-06-01 10:30:30", (None, "2024-06-01 10:30:30")),
    ],
)
def test_slice_bounds_cover_every_bucket_the_range_touches(
    grain: str, start: str | None, end: str | None, expected: tuple[str | None, str | None]
) -> None:
    rng = TimeRange(t(start) if start else None, t(end) if end else None)
    assert slice_bounds(grain, rng) == tuple(t(e) if e else None for e in expected)


@pytest.mark.parametrize(
    ("grain", "start", "end", "keep_from", "expected"),
    [
        ("day", "2024-06-01 00:30", "2024-06-05 00:00", None, ("2024-06-02", "2024-06-05")),
        # the start is aligned, yet the bucket holding it is an edge: the raw side applies it
        ("day", "2024-06-01 00:00", "2024-06-05 12:00", None, ("2024-06-02", "2024-06-05")),
        ("hour", "2024-06-01 10:15", "2024-06-01 14:45", None, ("2024-06-01 11:00", "2024-06-01 14:00")),
        ("day", "2024-05-01 00:30", "2024-06-05 00:00", "2024-06-03", ("2024-06-03", "2024-06-05")),  # retention
    ],
)
def test_whole_buckets_lie_strictly_inside_the_range(
    grain: str, start: str, end: str, keep_from: str | None, expected: tuple[str, str]
) -> None:
    rng = TimeRange(t(start), t(end))
    assert whole_buckets(grain, rng, t(keep_from) if keep_from else None) == (t(expected[0]), t(expected[1]))


@pytest.mark.parametrize(
    ("grain", "start", "end", "keep_from", "reason"),
    [
        (None, "2024-06-01", "2024-06-05", None, "needs a bounded time range"),
        ("day", None, "2024-06-05", None, "needs a bounded time range"),
        ("day", "2024-06-01", None, None, "needs a bounded time range"),
        ("day", "2024-06-01 10:00", "2024-06-02 10:00", None, "no whole bucket of the rollup lies inside the range"),
        ("day", "2024-06-01 10:00", "2024-06-09", "2024-06-09", "no whole bucket of the rollup lies inside the range"),
    ],
)
def test_a_range_without_whole_buckets_is_not_split(
    grain: str | None, start: str | None, end: str | None, keep_from: str | None, reason: str
) -> None:
    rng = TimeRange(t(start) if start else None, t(end) if end else None)
    with pytest.raises(Reject) as err:
        whole_buckets(grain, rng, t(keep_from) if keep_from else None)
    assert (err.value.rule, err.value.reason) == (Rule.ALIGNMENT, reason)


def test_split_source_is_a_union_of_the_whole_buckets_and_the_raw_edges() -> None:
    g = group(flt="country = 'DE'", measures=(*MEASURES, Measure("hll", "user_id")))
    exact = [sqlglot.parse_one("ts >= CAST('2024-06-01 00:30:00' AS TIMESTAMP)", read="duckdb")]
    source = split_source(g, "ts", (t("2024-06-02"), t("2024-06-05")), exact, "SELECT * FROM cold_events", "e")
    expected = """(
      SELECT "day", "type", "_count", "sum__bid_price", "count__bid_price", "hll__user_id"
      FROM tf_rollup.main."g" WHERE "day" >= CAST('2024-06-02' AS DATE) AND "day" < CAST('2024-06-05' AS DATE)
      UNION ALL
      SELECT CAST("ts" AS DATE) AS "day", "type" AS "type", COUNT(*) AS "_count",
             SUM("bid_price") AS "sum__bid_price", COUNT("bid_price") AS "count__bid_price",
             CAST(NULL AS BLOB) AS "hll__user_id"
      FROM (SELECT * FROM cold_events)
      WHERE ("ts" < CAST('2024-06-02 00:00:00' AS TIMESTAMP) OR "ts" >= CAST('2024-06-05 00:00:00' AS TIMESTAMP))
        AND ts >= CAST('2024-06-01 00:30:00' AS TIMESTAMP) AND (country = 'DE')
      GROUP BY 1, 2
    ) AS e"""
    wrapped = f"SELECT * FROM {expected}"
    assert exp.select("*").from_(source).sql(dialect="duckdb") == sqlglot.parse_one(wrapped, read="duckdb").sql(dialect="duckdb")
    assert exact[0].parent is None  # the statement's conjuncts are copied, not moved


# -- typed route fields --------------------------------------------------------------------------


def test_the_rollup_is_a_field_of_the_part_not_parsed_from_its_source() -> None:
    rollup = RoutePart(PartTier.HOT, "rollup:day_type", 10, "exact rewrite onto mergeable states", rollup="day_type")
    hot = RoutePart(PartTier.HOT, "rollup:looks_like_one", 5, "a raw part whose text starts the same")
    edges = RoutePart(PartTier.WARM, "events: edges", 3, "raw edges")
    route = Route(sql="SELECT 1", parts=(rollup, hot, edges), rejected=(Rejection("x", Rule.ALIGNMENT, "why", in_split=True),))
    assert route.rollup == "day_type"
    assert route.tier == "hot+warm"
    assert Route(sql="SELECT 1", parts=(hot,)).rollup is None
    system = RoutePart(PartTier.SYSTEM, "system.queries", 0, "system table", system_table="queries")
    assert Route(sql="SELECT 1", parts=(system,)).system_tables == {"queries"}


def test_printed_route_values_are_the_plain_strings() -> None:
    part = RoutePart(PartTier.HOT, "rollup:day_type", 10, "exact", rollup="day_type")
    route = Route(sql="SELECT 1", parts=(part,), rejected=(Rejection("d", Rule.ALIGNMENT, "r", in_split=True), Rejection("h", Rule.COST, "c")))
    assert json.loads(route.to_json()) == {
        "tier": "hot",
        "rollup": "day_type",
        "parts": [{"tier": "hot", "source": "rollup:day_type", "estimated_rows": 10, "reason": "exact"}],
        "rejected": [
            {"candidate": "d", "rule": "split:alignment", "reason": "r"},
            {"candidate": "h", "rule": "cost", "reason": "c"},
        ],
    }
    table = route.explain_table().to_pylist()
    assert [(r["tier"], r["source"], r["estimated_rows"]) for r in table] == [("hot", "rollup:day_type", 10), ("rejected", "d", None), ("rejected", "h", None)]
    assert [r["reason"] for r in table] == ["exact", "split:alignment: r", "cost: c"]


# -- bucket bounds of a rewrite ------------------------------------------------------------------


def _rewritten_where(sql: str, g: StorageGroup | None = None) -> str:
    from tierflight.router.rewrite import rewrite_select

    where = rewrite_select(candidate(sql, g)).args.get("where")
    return "" if where is None else where.this.sql(dialect="duckdb")


D = "CAST('{}' AS DATE)"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        # The kept conjunct on the bucket column selects exactly the range's buckets: no copy.
        ("day BETWEEN DATE '2024-03-01' AND DATE '2024-03-20'", f"day BETWEEN {D.format('2024-03-01')} AND {D.format('2024-03-20')}"),
        ("day = DATE '2024-03-01'", f"day = {D.format('2024-03-01')}"),
        ("day >= DATE '2024-03-01'", f"day >= {D.format('2024-03-01')}"),
        ("CAST(ts AS DATE) = DATE '2024-03-01'", f"day = {D.format('2024-03-01')}"),
        (
            "day > DATE '2024-02-29' AND day <= DATE '2024-03-20'",
            f"day > {D.format('2024-02-29')} AND day <= {D.format('2024-03-20')}",
        ),
        # The raw time column: the bucket bounds are what lets DuckDB's zone maps skip.
        (
            "ts >= TIMESTAMP '2024-03-01 00:00:00' AND ts < TIMESTAMP '2024-03-21 00:00:00'",
            "CAST(day AS TIMESTAMP) >= CAST('2024-03-01 00:00:00' AS TIMESTAMP) AND CAST(day AS TIMESTAMP) < "
            f"CAST('2024-03-21 00:00:00' AS TIMESTAMP) AND day >= {D.format('2024-03-01')} AND day < {D.format('2024-03-21')}",
        ),
        # An untyped constant (DuckDB casts the text; Python might read it otherwise): kept.
        ("day >= '2024-03-01'", f"day >= '2024-03-01' AND day >= {D.format('2024-03-01')}"),
        # Only one side said by the conjunct: the other bound stays.
        (
            "day >= DATE '2024-03-01' AND ts < TIMESTAMP '2024-03-21 00:00:00'",
            f"day >= {D.format('2024-03-01')} AND CAST(day AS TIMESTAMP) < CAST('2024-03-21 00:00:00' AS TIMESTAMP) "
            f"AND day < {D.format('2024-03-21')}",
        ),
    ],
)
def test_bucket_bounds_a_kept_conjunct_already_implies_are_not_repeated(where: str, expected: str) -> None:
    assert _rewritten_where(f"SELECT type, count(*) FROM events WHERE {where} GROUP BY type") == expected


def test_a_range_on_a_finer_bucket_than_the_rollups_keeps_the_bucket_bounds() -> None:
    # ``day`` over an hour rollup is an expression over the bucket, not the bucket column.
    hourly = group(dimensions=("hour", "type"))
    got = _rewritten_where("SELECT type, count(*) FROM events WHERE day BETWEEN DATE '2024-03-01' AND DATE '2024-03-02' GROUP BY type", hourly)
    assert got.endswith(
        "AND hour >= CAST('2024-03-01 00:00:00' AS TIMESTAMP) AND hour < CAST('2024-03-03 00:00:00' AS TIMESTAMP)"
    ), got
