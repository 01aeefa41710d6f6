"""Joins through rollups (router/joins.py) through a server: each answer against DuckDB over
flat copies of the same rows (fact and dimension tables), and the route EXPLAIN ROUTE gives:
the fact side from a rollup and the dimension tables joined after, or the raw tiers with the
reason for a join that could change the answer."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import duckdb
import pyarrow as pa
import pytest

from conftest import RunningServer, load_demo, make_config, start_in_process
from differential import assert_same
from tierflight.core.sql import table_view_sql

# (statement, the rollup answering its fact side)
ANSWERED = [
    (
        "SELECT a.vertical, count(*) AS n, sum(e.bid_price) AS spend FROM events e JOIN advertisers a "
        "ON e.advertiser_id = a.advertiser_id GROUP BY a.vertical",
        "advertiser_type",
    ),
    ("SELECT vertical, type, count(*) AS n, sum(bid_price) FROM events JOIN advertisers USING (advertiser_id) GROUP BY ALL", "advertiser_type"),
    (
        "SELECT p.category, count(*) AS n, sum(e.total_price) AS t, count(e.total_price) AS c, avg(e.bid_price) AS a "
        "FROM events e LEFT JOIN publishers p ON p.publisher_id = e.publisher_id GROUP BY 1 ORDER BY 1",
        "publisher_type",
    ),
    (
        "SELECT a.vertical, sum(e.bid_price) AS spend FROM events e, advertisers a WHERE e.advertiser_id = a.advertiser_id "
        "AND e.type = 'click' AND a.vertical <> 'Retail' GROUP BY a.vertical",
        "advertiser_type",
    ),
    (
        "SELECT a.vertical, e.week, count(*) AS n, sum(e.bid_price) AS spend FROM events e JOIN advertisers a "
        "USING (advertiser_id) WHERE e.day >= DATE '2024-10-14' AND e.day < DATE '2024-11-25' GROUP BY 1, 2 ORDER BY 1, 2",
        "day_advertiser_type",
    ),
    (
        "SELECT a.vertical, e.day, count(*) AS n FROM events e JOIN advertisers a USING (advertiser_id) "
        "WHERE e.day BETWEEN DATE '2024-11-01' AND DATE '2024-11-07' AND e.type = 'impression' GROUP BY ALL",
        "day_advertiser_type",
    ),
    (
        "SELECT a.vertical, date_trunc('month', e.ts) AS m, sum(e.bid_price) AS spend FROM events e "
        "JOIN advertisers a USING (advertiser_id) GROUP BY ALL ORDER BY ALL",
        "month_advertiser_type",
    ),
    (
        "SELECT a.vertical, count(DISTINCT e.advertiser_id) AS advertisers, min(a.name) AS first, max(a.name) AS last, "
        "count(DISTINCT a.name) AS names, count(a.name) AS named, min(e.type) AS lo, max(e.type) AS hi "
        "FROM events e LEFT JOIN advertisers a USING (advertiser_id) GROUP BY 1",
        "advertiser_type",
    ),
    (
        "SELECT a.vertical, sum(e.bid_price) AS spend FROM events e JOIN advertisers a USING (advertiser_id) "
        "GROUP BY a.vertical HAVING count(*) > 10 ORDER BY sum(e.bid_price) DESC LIMIT 3",
        "advertiser_type",
    ),
    (
        "SELECT count(*), sum(e.bid_price), count(e.bid_price) FROM events e JOIN advertisers a USING (advertiser_id) "
        "WHERE a.vertical = (SELECT min(vertical) FROM advertisers)",
        None,  # a subquery: raw
    ),
    (
        "SELECT count(*) AS n, sum(e.bid_price) AS s FROM events e JOIN advertisers a USING (advertiser_id) "
        "WHERE a.vertical = 'no such vertical'",
        "advertiser_type",
    ),
    (
        "SELECT a.vertical, p.category, count(*) AS n FROM events e JOIN advertisers a USING (advertiser_id) "
        "LEFT JOIN publishers p USING (publisher_id) GROUP BY ALL",
        None,  # no rollup keeps both keys
    ),
]

ANSWERED.append(
    (
        "SELECT date_trunc('week', e.ts) AS wk, a.vertical, count(*) AS n FROM events e JOIN advertisers a USING (advertiser_id) "
        "WHERE e.day >= DATE '2024-10-14' AND e.day < DATE '2024-11-25' GROUP BY wk, a.vertical ORDER BY wk, a.vertical",
        "day_advertiser_type",
    )
)

# Spellings the flat form (router/flatten.py) must keep: quoted mixed-case aliases, grouping by
# a select-list alias of a dimension expression, a count of dimension rows.
ANSWERED += [
    (
        'SELECT "Adv".vertical, count(*) AS n, sum("Ev".bid_price) AS s FROM events "Ev" JOIN advertisers "Adv" '
        'ON "Ev".advertiser_id = "Adv".advertiser_id WHERE "Ev".type = \'click\' GROUP BY 1 ORDER BY 1',
        "advertiser_type",
    ),
    (
        "SELECT upper(a.vertical) AS v, e.type, count(a.name) AS named, sum(e.bid_price) AS s FROM events e "
        "LEFT JOIN advertisers a USING (advertiser_id) GROUP BY v, e.type ORDER BY v, e.type",
        "advertiser_type",
    ),
]

# A split: whole days from the rollup, the unaligned edges from the raw tiers.
SPLIT = (
    "SELECT a.vertical, count(*) AS n, sum(e.bid_price) AS spend FROM events e JOIN advertisers a USING (advertiser_id) "
    "WHERE e.ts >= TIMESTAMP '2024-11-01 10:30:00' AND e.ts < TIMESTAMP '2024-11-20 06:00:00' GROUP BY 1"
)

# (statement, a piece of the reason EXPLAIN ROUTE gives): raw, and as exact as ever.
REFUSED = [
    ("SELECT a.vertical, count(*) AS n FROM events e RIGHT JOIN advertisers a USING (advertiser_id) GROUP BY 1", "RIGHT joins"),
    ("SELECT a.vertical, count(*) AS n FROM events e FULL JOIN advertisers a USING (advertiser_id) GROUP BY 1", "FULL joins"),
    ("SELECT p.name, count(*) AS n FROM publishers p LEFT JOIN events e USING (publisher_id) GROUP BY 1", "fact table must come first"),
    (
        "SELECT a.vertical, count(*) AS n FROM events e LEFT JOIN advertisers a ON e.advertiser_id = a.advertiser_id "
        "AND a.vertical = 'Retail' GROUP BY 1",
        "must be joined on <fact column> = a.advertiser_id alone",
    ),
    (
        "SELECT a.vertical, count(*) AS n FROM events e JOIN advertisers a ON e.publisher_id = a.advertiser_id "
        "AND e.advertiser_id = a.advertiser_id GROUP BY 1",
        "alone",
    ),
    ("SELECT a.vertical, count(*) AS n FROM events e JOIN advertisers a ON e.publisher_id + 0 = a.advertiser_id GROUP BY 1", "alone"),
    (
        "SELECT a.vertical, count(*) AS n FROM events e JOIN advertisers a USING (advertiser_id) "
        "WHERE e.country = a.vertical OR e.type = 'click' GROUP BY 1",
        "mixes fact and dimension columns",
    ),
    ("SELECT e.type, sum(a.advertiser_id) AS s FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY 1", "weights a dimension column"),
    ("SELECT a.vertical, sum(DISTINCT e.bid_price) AS s FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY 1", "not an aggregate of one"),
    ("SELECT a.vertical, count(DISTINCT e.user_id) AS u FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY 1", "no rollup answers the fact side"),
    ("SELECT count(*) AS n FROM events e JOIN events f ON e.auction_id = f.auction_id WHERE e.day = DATE '2024-11-01'", "another fact table"),
]


def _oracle(con: duckdb.DuckDBPyConnection, dimensions: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    cur = con.cursor()  # the dimension tables registered on this cursor only
    for name, rows in dimensions.items():
        cur.register(name, rows)
    return cur


def _dimensions(server: RunningServer) -> dict[str, pa.Table]:
    return {name: store.current.data for name, store in server.app.dimensions.items()}


def _route(cur: Any, sql: str) -> list[tuple[str, str, Any, str]]:
    cur.execute("EXPLAIN ROUTE " + sql)
    return [tuple(r) for r in cur.fetchall()]


def _check(cur: Any, oracle: duckdb.DuckDBPyConnection, sql: str, rollup: str | None, allow_empty: bool = False) -> list[tuple[str, str, Any, str]]:
    cur.execute(sql)
    actual = cur.fetch_arrow_table()
    expected = oracle.sql(sql).to_arrow_table()
    assert allow_empty or expected.num_rows > 0, sql
    assert actual.schema.names == expected.schema.names, sql
    assert actual.schema.types == expected.schema.types, sql
    assert_same(actual, expected, sql)
    route = _route(cur, sql)
    rollups = [source for tier, source, _, _ in route if source.startswith("rollup:")]
    if rollup is None:
        assert rollups == [], route
    else:
        assert rollups == [f"rollup:{rollup}"], route
        assert any(tier == "dimension" for tier, *_ in route), route
    return route


@pytest.mark.parametrize(("sql", "rollup"), ANSWERED)
def test_joins_answered_from_rollups_match_duckdb(conn: Any, flat: Any, server: RunningServer, sql: str, rollup: str | None) -> None:
    with conn.cursor() as cur:
        _check(cur, _oracle(flat.con, _dimensions(server)), sql, rollup, allow_empty="no such" in sql)


def test_a_split_range_reads_whole_days_from_the_rollup_and_the_edges_raw(conn: Any, flat: Any, server: RunningServer) -> None:
    with conn.cursor() as cur:
        route = _check(cur, _oracle(flat.con, _dimensions(server)), SPLIT, "day_advertiser_type")
    assert {tier for tier, *_ in route} >= {"dimension", "hot", "warm"}, route
    assert any("edges" in source for _, source, _, _ in route), route


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_joins_that_could_change_the_answer_stay_raw_and_exact(conn: Any, flat: Any, server: RunningServer, sql: str, reason: str) -> None:
    with conn.cursor() as cur:
        route = _check(cur, _oracle(flat.con, _dimensions(server)), sql, None, allow_empty=True)
    assert any(tier == "rejected" and source == "*" and reason in why for tier, source, _, why in route), route


def test_approx_count_distinct_stays_raw_where_no_rollup_keeps_sketches_by_the_key(conn: Any) -> None:
    sql = "SELECT a.vertical, approx_count_distinct(e.user_id) FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY 1"
    with conn.cursor() as cur:
        route = _route(cur, sql)
    assert not any(source.startswith("rollup:") for _, source, _, _ in route)
    assert any("no rollup answers the fact side" in why for *_, why in route), route


# -- after a dimension replace and a fact ingest (a data set of its own) ------------------------


@contextlib.contextmanager
def _serving(cfg: Any, rows: int, start: dt.date, days: int, seed: int) -> Iterator[RunningServer]:
    """A server in this process on ``rows`` demo rows of its own, stopped on exit."""
    load_demo(cfg, rows, start, days, seed)
    running = start_in_process(cfg)
    try:
        yield running
    finally:
        running.server.shutdown()
        running.app.close()


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    cfg = make_config(tmp_path)
    with _serving(cfg, 3_000, dt.date(2024, 12, 20), 3, 11) as running:
        yield running, tmp_path


def _flat_events(server: RunningServer, data_dir: Path, ingested: list[pa.Table]) -> duckdb.DuckDBPyConnection:
    table = server.app.config.table("events")
    files = sorted(str(p) for p in data_dir.rglob("*.parquet") if "trash" not in p.parts)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE stored AS SELECT * FROM read_parquet({files!r})")
    for i, batch in enumerate(ingested):
        con.register(f"batch_{i}", batch)
        con.execute(f"INSERT INTO stored BY NAME SELECT * FROM batch_{i}")
    con.execute(f"CREATE TABLE events AS {table_view_sql(table, ['SELECT * FROM stored'])}")
    return con


def _events_batch(advertiser_ids: list[int], publisher_id: int) -> pa.Table:
    n = len(advertiser_ids)
    return pa.table(
        {
            "ts": pa.array([dt.datetime(2024, 12, 22, 12, i) for i in range(n)], pa.timestamp("us")),
            "type": ["click"] * n,
            "auction_id": [f"joined-{i}" for i in range(n)],
            "advertiser_id": pa.array(advertiser_ids, pa.int32()),
            "publisher_id": pa.array([publisher_id] * n, pa.int32()),
            "bid_price": [1.25] * n,
            "user_id": pa.array(range(n), pa.int64()),
            "total_price": [2.5] * n,
            "country": ["NZ"] * n,
        }
    )


@pytest.mark.needs_server
def test_joins_after_a_dimension_replace_and_a_fact_ingest(fresh: tuple[RunningServer, Path]) -> None:
    server, data_dir = fresh
    sqls = [
        ("SELECT a.vertical, type, count(*) AS n, sum(bid_price) AS s FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY ALL", "advertiser_type"),
        ("SELECT p.category, count(*) AS n, avg(e.total_price) AS t FROM events e LEFT JOIN publishers p USING (publisher_id) GROUP BY 1", "publisher_type"),
    ]
    with fsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        flat = _flat_events(server, data_dir, [])
        for sql, rollup in sqls:
            _check(cur, _oracle(flat, _dimensions(server)), sql, rollup)
        # Replace: half of the advertisers move to a new vertical, one is left out (a LEFT
        # JOIN keeps its facts with a NULL vertical, an inner join drops them).
        ids = sorted(r.as_py() for r in server.app.dimensions["advertisers"].current.data["advertiser_id"])
        kept = ids[1:]
        replaced = pa.table(
            {
                "advertiser_id": pa.array(kept, pa.int32()),
                "name": [f"adv {i}" for i in kept],
                "vertical": ["Moved" if i % 2 else "Stayed" for i in kept],
            }
        )
        assert cur.adbc_ingest("advertisers", replaced, mode="replace") == len(kept)
        left = (
            "SELECT a.vertical, count(*) AS n, sum(e.bid_price) AS s, count(a.name) AS named, count(DISTINCT a.name) AS names "
            "FROM events e LEFT JOIN advertisers a USING (advertiser_id) GROUP BY 1"
        )
        for sql, rollup in [*sqls, (left, "advertiser_type")]:
            _check(cur, _oracle(flat, _dimensions(server)), sql, rollup)
        # Fact ingest: new rows (one advertiser no dimension row names) are in the answer.
        batch = _events_batch([ids[0], ids[1], ids[2], ids[1]], 1)
        assert cur.adbc_ingest("events", batch, mode="append") == batch.num_rows
        flat = _flat_events(server, data_dir, [batch])
        for sql, rollup in [*sqls, (left, "advertiser_type")]:
            _check(cur, _oracle(flat, _dimensions(server)), sql, rollup)


# -- sketches and fact-side min / max (a rollup of its own keeps them by advertiser) -----------

_SKETCH_ROLLUP = """
[[tables.events.rollups]]
name = "advertiser_users"
dimensions = ["advertiser_id", "country"]
measures = ["count", "hll(user_id, 12)", "min(bid_price)", "max(bid_price)"]
"""


@pytest.fixture()
def sketched(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    from conftest import CONFIG, TEST_NOW
    from tierflight.core.config import load_config

    path = tmp_path / "tierflight.toml"
    path.write_text(Path(CONFIG).read_text() + _SKETCH_ROLLUP)
    data = tmp_path / "data"
    cfg = load_config(path, data_dir=data, environ={}, overrides={"tiers.now": TEST_NOW, "metrics.port": 0})
    with _serving(cfg, 4_000, dt.date(2024, 12, 20), 3, 5) as running:
        yield running, data


@pytest.mark.needs_server
def test_sketch_merges_and_fact_min_max_through_a_join(sketched: tuple[RunningServer, Path]) -> None:
    server, data_dir = sketched
    exact = [
        "SELECT a.vertical, min(e.bid_price) AS lo, max(e.bid_price) AS hi, count(*) AS n FROM events e "
        "JOIN advertisers a USING (advertiser_id) GROUP BY 1",
        "SELECT a.vertical, e.country, max(e.bid_price) AS hi FROM events e LEFT JOIN advertisers a USING (advertiser_id) "
        "WHERE e.country <> 'US' GROUP BY ALL",
    ]
    estimate_sql = (
        "SELECT a.vertical, approx_count_distinct(e.user_id) AS users FROM events e JOIN advertisers a USING (advertiser_id) "
        "GROUP BY 1 ORDER BY 1"
    )
    with fsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        oracle = _oracle(_flat_events(server, data_dir, []), _dimensions(server))
        for sql in exact:
            _check(cur, oracle, sql, "advertiser_users")
        # The merged sketches estimate each vertical's distinct users (within the sketch's error).
        cur.execute(estimate_sql)
        estimated = dict(cur.fetchall())
        route = _route(cur, estimate_sql)
        assert [s for _, s, _, _ in route if s.startswith("rollup:")] == ["rollup:advertiser_users"], route
        truth = dict(oracle.sql("SELECT a.vertical, count(DISTINCT e.user_id) FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY 1").fetchall())
        assert estimated.keys() == truth.keys() and truth
        for vertical, n in truth.items():
            assert abs(estimated[vertical] - n) <= max(3, 0.05 * n), (vertical, estimated[vertical], n)
        # Exactly the estimate of the same states merged by the single-table rewrite.
        vertical = min(truth)
        rows = server.app.dimensions["advertisers"].current.data.to_pylist()
        ids = ", ".join(str(r["advertiser_id"]) for r in rows if r["vertical"] == vertical)
        single = f"SELECT approx_count_distinct(user_id) FROM events WHERE advertiser_id IN ({ids})"
        cur.execute(single)
        assert cur.fetchall() == [(estimated[vertical],)]
        assert [s for _, s, _, _ in _route(cur, single) if s.startswith("rollup:")] == ["rollup:advertiser_users"]


# -- joined rollups (router/joined.py, engine/joined.py): the same answers from the joined rows --


@contextlib.contextmanager
def _small_server(tmp_path: Path, **overrides: Any) -> Iterator[RunningServer]:
    """A server on two days of demo rows, the result cache off (every call runs)."""
    cfg = make_config(tmp_path, **{"server.result_cache_bytes": 0, **overrides})
    with _serving(cfg, 2_000, dt.date(2024, 12, 20), 2, 11) as running:
        yield running


@pytest.fixture()
def uncached(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    # The result cache off: every call runs (a cached answer would never reach the join).
    from conftest import TEST_DAYS, TEST_START

    cfg = make_config(tmp_path, **{"server.result_cache_bytes": 0})
    with _serving(cfg, 20_000, TEST_START, TEST_DAYS, 11) as running:
        yield running, tmp_path


@pytest.mark.needs_server
def test_joined_rollups_answer_repeated_joins_as_the_join_does(uncached: tuple[RunningServer, Path]) -> None:
    server, data_dir = uncached
    joined = server.app.executor.joined
    answered = [(sql, rollup) for sql, rollup in ANSWERED if rollup is not None]
    with fsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        oracle = _oracle(_flat_events(server, data_dir, []), _dimensions(server))
        first = answered[0][0]
        assert [(t, r) for t, s, r, why in _route(cur, first) if s.startswith("joined rollup:") and "not held yet" in why] == [("hot", None)]
        # The first run joins; the second builds the joined rollup; the third reads it.
        for _ in range(3):
            for sql, rollup in answered:
                _check(cur, oracle, sql, rollup, allow_empty="no such" in sql)
        held = [r for _, s, r, why in _route(cur, first) if s == "joined rollup: tf_rollup.main.advertiser_type" and "in place of the join" in why]
        assert len(held) == 1 and held[0] > 0
        built = joined.built
        assert built >= len(answered) // 2, built
        assert 0 < joined.rows <= server.app.config.router.joined_rollup_rows
        assert server.app.metrics.registry.get_sample_value("tierflight_joined_rollup_rows") == joined.rows
        # Another filter value of a join already held reads the same table: nothing is built.
        other = ANSWERED[5][0].replace("'impression'", "'click'")
        _check(cur, oracle, other, "day_advertiser_type")
        assert joined.built == built
        # A dimension replace and a fact ingest move the data version: the held tables go,
        # and the joins are answered (and joined again) over the new rows.
        ids = sorted(r.as_py() for r in server.app.dimensions["advertisers"].current.data["advertiser_id"])
        replaced = pa.table(
            {
                "advertiser_id": pa.array(ids[1:], pa.int32()),
                "name": [f"adv {i}" for i in ids[1:]],
                "vertical": ["Moved" if i % 2 else "Stayed" for i in ids[1:]],
            }
        )
        assert cur.adbc_ingest("advertisers", replaced, mode="replace") == len(ids) - 1
        batch = _events_batch([ids[0], ids[1], ids[2]], 1)
        assert cur.adbc_ingest("events", batch, mode="append") == batch.num_rows
        oracle = _oracle(_flat_events(server, data_dir, [batch]), _dimensions(server))
        # EXPLAIN ROUTE speaks of this data version: the table of the one before is no answer.
        assert [r for _, s, r, why in _route(cur, first) if s.startswith("joined rollup:") and "not held yet" in why] == [None]
        for _ in range(3):
            for sql, rollup in answered:
                _check(cur, oracle, sql, rollup, allow_empty="no such" in sql)
        assert joined.built > built
        tables = server.app.executor.database.query_internal("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'tf_joined'")
        assert tables[0][0] == len(joined._held) > 0


@pytest.mark.needs_server
def test_joined_rollups_off_and_out_of_reach(tmp_path: Path) -> None:
    with _small_server(tmp_path, **{"router.joined_rollup_rows": 0}) as running:
        sql = ANSWERED[0][0]
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            for _ in range(3):
                cur.execute(sql)
                cur.fetchall()
            assert running.app.executor.joined.built == 0
            # The joined rollups' database is the server's own: no client statement names it.
            with pytest.raises(Exception, match="tf_joined"):
                cur.execute("SELECT * FROM tf_joined.main.j1")
                cur.fetchall()


@pytest.mark.needs_server
def test_a_joined_rollup_dropped_before_its_statement_runs_leaves_the_join_to_answer(tmp_path: Path) -> None:
    # Another statement can drop a held table (a newer data version was built, or the row
    # budget) between this statement choosing it and DuckDB binding it: the join answers.
    with _small_server(tmp_path) as running:
        joined = running.app.executor.joined
        chosen = joined.sql
        dropped: list[str] = []

        def choose_then_drop(route: Any, cursor: duckdb.DuckDBPyConnection) -> str:
            sql = chosen(route, cursor)
            if "tf_joined" in sql:
                dropped.append(sql)
                joined.clear()
            return sql

        sql = ANSWERED[0][0]
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            expected = cur.fetch_arrow_table()
            joined.sql = choose_then_drop  # type: ignore[method-assign]
            for _ in range(3):
                cur.execute(sql)
                assert_same(cur.fetch_arrow_table(), expected, sql)
            assert dropped and joined.built >= 2


@pytest.mark.needs_server
def test_a_joined_rollup_over_the_row_budget_never_holds_more_than_one_row_past_it(tmp_path: Path) -> None:
    with _small_server(tmp_path, **{"router.joined_rollup_rows": 3}) as running:
        joined = running.app.executor.joined
        database = running.app.executor.database
        drop = joined._drop
        held: list[int] = []

        def count_then_drop(qualified: str) -> None:
            held.append(database.query_internal(f"SELECT count(*) FROM {qualified}")[0][0])
            drop(qualified)

        joined._drop = count_then_drop  # type: ignore[method-assign]
        sql = ANSWERED[0][0]  # a dozen verticals: more joined rows than the budget
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            answers = []
            for _ in range(3):
                cur.execute(sql)
                answers.append(cur.fetch_arrow_table())
            for answer in answers[1:]:
                assert_same(answer, answers[0], sql)
        assert held == [4] and joined.built == 0 and joined.rows == 0


@pytest.mark.needs_server
def test_a_joined_rollup_build_stopped_midway_is_not_tried_again(tmp_path: Path) -> None:
    # A build stopped by the statement's deadline or the memory ceiling would stop every later
    # run of the join the same way: the join answers from then on.
    with _small_server(tmp_path) as running:
        database = running.app.executor.database
        execute = database.execute_internal
        builds: list[str] = []

        def stopped(sql: str, cursor: duckdb.DuckDBPyConnection | None = None) -> None:
            if sql.startswith("CREATE TABLE tf_joined."):
                builds.append(sql)
                raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")
            execute(sql, cursor=cursor)

        database.execute_internal = stopped  # type: ignore[method-assign]
        sql = ANSWERED[0][0]
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            expected = cur.fetch_arrow_table()
            with pytest.raises(Exception):  # noqa: B017 - the statement's own stop, whichever
                cur.execute(sql)
                cur.fetch_arrow_table()
            for _ in range(2):
                cur.execute(sql)
                assert_same(cur.fetch_arrow_table(), expected, sql)
        assert len(builds) == 1 and running.app.executor.joined.built == 0


@pytest.mark.needs_server
def test_joined_rollups_under_concurrent_joins_replaces_and_ingests(tmp_path: Path) -> None:
    # Four clients run three joins over and over while the dimension table is replaced and
    # facts are ingested: tables are built, dropped for newer versions and read at once. No
    # statement fails, and once the writes stop every answer is DuckDB's over the final rows.
    import threading

    sqls = [sql for sql, rollup in ANSWERED[:4] if rollup is not None]
    with _small_server(tmp_path) as running:
        errors: list[BaseException] = []
        stop = threading.Event()

        def client() -> None:
            try:
                with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
                    while not stop.is_set():
                        for sql in sqls:
                            cur.execute(sql)
                            cur.fetch_arrow_table()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        ingested: list[pa.Table] = []
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            ids = sorted(r.as_py() for r in running.app.dimensions["advertisers"].current.data["advertiser_id"])
            for round_ in range(4):
                replaced = pa.table(
                    {
                        "advertiser_id": pa.array(ids, pa.int32()),
                        "name": [f"adv {i}" for i in ids],
                        "vertical": [f"v{(i + round_) % 3}" for i in ids],
                    }
                )
                cur.adbc_ingest("advertisers", replaced, mode="replace")
                batch = _events_batch(ids[round_ : round_ + 3], 1)
                cur.adbc_ingest("events", batch, mode="append")
                ingested.append(batch)
            stop.set()
            for t in threads:
                t.join(60)
            assert not errors, errors[:3]
            oracle = _oracle(_flat_events(running, tmp_path, ingested), _dimensions(running))
            for _ in range(2):
                for sql in sqls:
                    _check(cur, oracle, sql, "advertiser_type" if "advertiser" in sql else "publisher_type")
        assert running.app.executor.joined.built > 0
