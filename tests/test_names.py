"""Table names resolve as DuckDB resolves them, to the same current rows, everywhere.

Every spelling DuckDB accepts for a configured table (any case, quoted or not, ``main.``,
the ``tierflight`` catalog) answers like ``events`` does, also right after an ingest (no
spelling reaches a listing frozen at start-up), routes to the same rollup, and is accepted
as an ingest target; CTEs shadow the table as in DuckDB.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from conftest import RunningServer, load_demo, make_config, start_in_process
from differential import assert_same
from flightsql_helpers import adbc_status
from tierflight.core.errors import NotFound
from tierflight.core.names import Kind, Names, Resolved

SPELLINGS = [
    "events",
    "EVENTS",
    '"Events"',
    '"EVENTS"',
    "main.events",
    '"MAIN"."EVENTS"',
    "Main.Events",
    "tierflight.main.events",
    "TIERFLIGHT.MAIN.EVENTS",
    '"tierflight"."main"."events"',
    "tierflight.events",
]


def _table(sql: str) -> exp.Table:
    tree = sqlglot.parse_one(sql, read="duckdb")
    (table,) = tree.find_all(exp.Table)
    return table


NAMES = Names(["events"], lambda: ["queries", "rollups"])


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_duckdb_spelling_resolves_to_the_table(spelling: str) -> None:
    assert NAMES.resolve(_table(f"SELECT * FROM {spelling}")) == Resolved(Kind.TABLE, "events")


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT * FROM "events2"',
        "SELECT * FROM other",
        "SELECT * FROM memory.main.events",  # the catalog is tierflight: DuckDB has no memory
        "SELECT * FROM main.other.events",
        "SELECT * FROM information_schema.events",
        "WITH events AS (SELECT 1) SELECT * FROM events",
        'WITH "EVENTS" AS (SELECT 1) SELECT * FROM events',
        "WITH events AS (SELECT 1) SELECT * FROM (SELECT * FROM events) s",
        "WITH RECURSIVE events AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM events WHERE n < 3) SELECT 1",
        "WITH a AS (SELECT 1), events AS (SELECT 2), b AS (SELECT * FROM events) SELECT 1",
    ],
)
def test_other_names_and_ctes_in_scope_are_not_the_table(sql: str) -> None:
    assert NAMES.resolve(_table(sql)) is None


@pytest.mark.parametrize(
    "sql",
    [
        # A non-recursive CTE's own body, and CTEs before it, see the table (DuckDB binds so).
        "WITH events AS (SELECT * FROM events) SELECT 1",
        "WITH x AS (SELECT * FROM events), events AS (SELECT 1) SELECT 1",
        "WITH events AS (SELECT 1) SELECT * FROM main.events",
        "SELECT * FROM (WITH events AS (SELECT 1) SELECT 2) s, events",
    ],
)
def test_a_cte_shadows_only_where_duckdb_lets_it(sql: str) -> None:
    tree = sqlglot.parse_one(sql, read="duckdb")
    resolved = [NAMES.resolve(t) for t in tree.find_all(exp.Table)]
    assert Resolved(Kind.TABLE, "events") in resolved


def test_system_and_internal_names() -> None:
    assert NAMES.resolve(_table("SELECT * FROM SYSTEM.Queries")) == Resolved(Kind.SYSTEM, "queries")
    assert NAMES.resolve(_table("SELECT * FROM tierflight.system.queries")) == Resolved(Kind.SYSTEM, "queries")
    for sql in ("SELECT * FROM system.nope", "SELECT * FROM tf_system.queries", "SELECT * FROM tf_rollup.main.day_type", "SELECT * FROM tf_dimension.main.advertisers_v1_1"):
        with pytest.raises(NotFound):
            NAMES.resolve(_table(sql))
    assert NAMES.lookup("EVENTS", "MAIN", "TierFlight") == Resolved(Kind.TABLE, "events")


def test_a_table_configured_in_mixed_case_resolves_in_any_case() -> None:
    names = Names(["Events"])
    for spelling in ("events", '"EVENTS"', "main.Events", "tierflight.main.EVENTS"):
        assert names.resolve(_table(f"SELECT * FROM {spelling}")) == Resolved(Kind.TABLE, "Events")


# -- against the server ------------------------------------------------------------------------

QUERIES = [
    "SELECT count(*), sum(bid_price) FROM {t}",
    "SELECT type, count(*) FROM {t} GROUP BY type ORDER BY type",
    "SELECT day, count(*) AS n FROM {t} WHERE day >= DATE '2024-11-01' GROUP BY day ORDER BY day",
    "SELECT count(*) FROM (SELECT * FROM {t} WHERE type = 'click') s",
    "WITH c AS (SELECT country FROM {t}) SELECT country, count(*) FROM c GROUP BY 1 ORDER BY 1",
    "SELECT (SELECT count(*) FROM events) - (SELECT count(*) FROM {t}) AS d",
    "SELECT count(*) FROM {t} a JOIN events b USING (auction_id, type) WHERE a.day = DATE '2024-11-05'",
    "SELECT count(*) FROM {t} WHERE auction_id IN (SELECT auction_id FROM {t} WHERE type = 'purchase')",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_spellings_answer_like_the_oracle(conn: Any, flat: Any, spelling: str) -> None:
    with conn.cursor() as cur:
        for q in QUERIES:
            sql = q.format(t=spelling)
            cur.execute(sql)
            assert_same(cur.fetch_arrow_table(), flat.sql(q.format(t="events")).to_arrow_table(), sql)


def _explain(cur: Any, sql: str) -> list[tuple[Any, ...]]:
    cur.execute("EXPLAIN ROUTE " + sql)
    return [tuple(r) for r in cur.fetchall()]


@pytest.mark.parametrize("spelling", SPELLINGS[1:])
def test_spellings_route_like_the_plain_name(conn: Any, spelling: str) -> None:
    with conn.cursor() as cur:
        for q in (QUERIES[1], QUERIES[2], "SELECT country, count(*) FROM {t} GROUP BY ALL"):
            plain = _explain(cur, q.format(t="events"))
            assert plain[0][1].startswith("rollup:"), plain
            assert _explain(cur, q.format(t=spelling)) == plain, spelling
        # Raw answers are pruned to the same partitions.
        raw = "SELECT auction_id FROM {t} WHERE day = DATE '2024-11-05' AND type = 'click' LIMIT 3"
        plain = _explain(cur, raw.format(t="events"))
        assert plain[0][0] == "warm" and "1 partitions" in plain[0][1], plain
        assert _explain(cur, raw.format(t=spelling)) == plain, spelling


@pytest.mark.parametrize(
    "sql",
    [
        "WITH events AS (SELECT 1 AS x) SELECT * FROM events",
        'WITH "EVENTS" AS (SELECT 2 AS x) SELECT * FROM Events',
        "WITH events AS (SELECT count(*) AS n FROM events) SELECT n FROM events",
        "WITH events AS (SELECT 1 AS x) SELECT count(*) FROM main.events",
        "SELECT (WITH events AS (SELECT 5 AS n) SELECT n FROM events) AS a, (SELECT count(*) FROM events) AS b",
        "WITH x AS (SELECT type FROM EVENTS) SELECT type, count(*) FROM x GROUP BY 1 ORDER BY 1",
        "SELECT main.events.type, count(*) FROM main.events GROUP BY 1 ORDER BY 1",
        "SELECT count(*) FROM events e JOIN \"EVENTS\" f USING (auction_id, type) WHERE e.day = DATE '2024-11-05'",
    ],
)
def test_ctes_shadow_the_table_as_in_duckdb(conn: Any, flat: Any, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)
        assert_same(cur.fetch_arrow_table(), flat.sql(sql).to_arrow_table(), sql)


def _error(conn: Any, sql: str) -> adbc_driver_manager.Error:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute(sql)
        cur.fetchall()
    return err.value


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT count(*) FROM "events2"',
        "SELECT count(*) FROM memory.main.events",
        "SELECT count(*) FROM other.main.events",
        "SELECT * FROM tf_rollup.main.day_type",
        "SELECT * FROM tf_system.queries",
        "SELECT * FROM system.nope",
    ],
)
def test_other_names_are_not_found(conn: Any, sql: str) -> None:
    err = _error(conn, sql)
    assert adbc_status(err) == "NOT_FOUND", str(err)


def test_the_catalog_is_tierflight(conn: Any, server: RunningServer) -> None:
    assert server.app.catalog_name == "tierflight"
    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        assert cur.fetchall() == [("tierflight",)]
        # No object in the server's DuckDB stands for a configured table (nothing can be
        # stale); the catalog clients query (engine.catalog) lists it, as a table.
        internal = server.app.database.query_internal
        assert internal("SELECT count(*) FROM duckdb_views() WHERE lower(view_name) = 'events'") == [(0,)]
        assert internal("SELECT count(*) FROM duckdb_tables() WHERE lower(table_name) = 'events'") == [(0,)]
        cur.execute("SELECT count(*) FROM duckdb_views() WHERE lower(view_name) = 'events'")
        assert cur.fetchall() == [(0,)]
        cur.execute("SELECT count(*) FROM duckdb_tables() WHERE lower(table_name) = 'events'")
        assert cur.fetchall() == [(1,)]
        cur.execute("SHOW TABLES")  # the fact table and the demo's dimension tables
        assert cur.fetchall() == [("advertisers",), ("events",), ("publishers",)]
    assert [r["catalog_name"] for r in conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()] == ["tierflight"]


def test_system_tables_in_any_spelling_are_current(conn: Any) -> None:
    with conn.cursor() as cur:
        for spelling in ("system.queries", "SYSTEM.Queries", "tierflight.system.queries", '"TIERFLIGHT"."SYSTEM"."QUERIES"'):
            marker = f"marker {spelling}"
            cur.execute(f"SELECT '{marker}' AS m")
            cur.fetchall()
            cur.execute(f"SELECT count(*) FROM {spelling} WHERE sql LIKE '%{marker}%'")
            assert cur.fetchall()[0][0] >= 1, spelling


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT system.rollups.name FROM system.rollups ORDER BY 1",
        "SELECT tierflight.system.rollups.name FROM tierflight.system.rollups ORDER BY 1",
        "SELECT rollups.name FROM system.rollups ORDER BY 1",
        "SELECT r.name FROM system.rollups AS r ORDER BY 1",
    ],
)
def test_columns_qualified_by_schema_and_table_bind(conn: Any, server: RunningServer, sql: str) -> None:
    """SQLAlchemy writes ``schema.table.column`` for a Table with a schema."""
    with conn.cursor() as cur:
        cur.execute(sql)
        got = [r[0] for r in cur.fetchall()]
    assert got == sorted(server.app.rollups.system_table().column("name").to_pylist())


def test_fact_columns_qualified_by_schema_and_table_bind(conn: Any, flat: Any) -> None:
    sql = "SELECT main.events.type, count(*) FROM main.events GROUP BY main.events.type ORDER BY 1"
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetchall() == flat.execute("SELECT type, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()


# -- DESCRIBE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["events", '"EVENTS"', "main.events", "tierflight.main.Events"])
def test_describe_lists_the_columns_with_duckdb_types(conn: Any, flat: Any, server: RunningServer, spelling: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"DESCRIBE {spelling}")
        got = cur.fetch_arrow_table()
    assert got.column_names == ["column_name", "column_type", "null", "key", "default", "extra"]
    table = server.app.config.tables["events"]
    not_null = {c.name for c in table.columns if not c.nullable}
    assert not_null == {"ts", "type", "auction_id"}
    expected = [(name, kind, "NO" if name in not_null else "YES") for name, kind, *_ in flat.sql("DESCRIBE events").fetchall()]
    assert [(r["column_name"], r["column_type"], r["null"]) for r in got.to_pylist()] == expected
    assert [r[0] for r in expected][-4:] == ["day", "week", "hour", "minute"]


def test_describe_a_query_and_summarize(conn: Any, flat: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("DESCRIBE SELECT ts, day, count(*) AS n FROM EVENTS GROUP BY ALL")
        got = [(r[0], r[1]) for r in cur.fetchall()]
        assert got == [(r[0], r[1]) for r in flat.sql("DESCRIBE SELECT ts, day, count(*) AS n FROM events GROUP BY ALL").fetchall()]
        cur.execute('SUMMARIZE "Events"')
        summary = {r[0]: r for r in cur.fetchall()}
    assert summary["ts"][10] == flat.sql("SELECT count(*) FROM events").fetchall()[0][0]


@pytest.mark.parametrize(
    "sql",
    [
        "DESCRIBE nosuch",
        "SELECT nosuch FROM events",
        "SELECT nosuch(ts) FROM events",
        "SELECT ts + 1 FROM events WHERE day = DATE '2024-11-05'",
        "SELECT CAST(country AS INTEGER) FROM events",
        "SELECT x.ts FROM events",
        "SELECT count(*) FROM events WHERE country = 1",
        "DESCRIBE SELECT nosuch FROM events",
        "SELECT * FROM events JOIN nosuch USING (ts)",
        # DuckDB echoes the statement around these: the planned one names the data files.
        "SELECT * FROM events WHERE ts = 'x'",
        "SELECT * FROM Events WHERE day = DATE '2024-11-05' AND ts = 'x'",
        "DESCRIBE events AS x",
    ],
)
def test_errors_do_not_show_server_paths(conn: Any, server: RunningServer, sql: str) -> None:
    err = _error(conn, sql)
    text = str(err)
    assert adbc_status(err) in ("NOT_FOUND", "INVALID_ARGUMENT"), text
    assert str(server.app.config.data_dir) not in text and ".parquet" not in text and "__tf_" not in text, text


# -- after ingest (a server of its own) -----------------------------------------------------------


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[RunningServer]:
    cfg = make_config(tmp_path)
    load_demo(cfg, 5_000, dt.date(2024, 12, 20), 10, 5)
    running = start_in_process(make_config(tmp_path))
    yield running
    running.server.shutdown()
    running.app.close()


def _batch(n: int, start: dt.datetime) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([start + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
            "type": ["click"] * n,
            "auction_id": [f"names-{start:%H%M}-{i}" for i in range(n)],
            "advertiser_id": pa.array([7] * n, pa.int32()),
            "publisher_id": pa.array([3] * n, pa.int32()),
            "bid_price": pa.array([None] * n, pa.float64()),
            "user_id": pa.array([42] * n, pa.int64()),
            "total_price": pa.array([None] * n, pa.float64()),
            "country": ["JP"] * n,
        }
    )


def test_every_spelling_sees_ingested_rows(fresh: RunningServer) -> None:
    counts = ", ".join(f"(SELECT count(*) FROM {s})" for s in SPELLINGS)
    routed = ", ".join(f"(SELECT count(*) FROM {s} WHERE type = 'click')" for s in SPELLINGS)
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE type = 'click') FROM events")
        ((before, clicks),) = cur.fetchall()
        assert cur.adbc_ingest("events", _batch(10, dt.datetime(2024, 12, 31, 8)), mode="append") == 10
        # The target resolves like a statement's name does.
        assert cur.adbc_ingest("EVENTS", _batch(5, dt.datetime(2024, 12, 31, 9)), mode="append") == 5
        assert cur.adbc_ingest('Events', _batch(2, dt.datetime(2024, 12, 31, 10)), mode="append", db_schema_name="MAIN") == 2
        cur.execute(f"SELECT {counts}")
        assert cur.fetchall() == [tuple([before + 17] * len(SPELLINGS))]
        cur.execute(f"SELECT {routed}")
        assert cur.fetchall() == [tuple([clicks + 17] * len(SPELLINGS))]
        for s in SPELLINGS:  # routed alone (a rollup answers), then merged with the ingest
            cur.execute(f"SELECT type, count(*) FROM {s} GROUP BY type ORDER BY type")
            assert dict(cur.fetchall())["click"] == clicks + 17, s
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.adbc_ingest("nosuch", _batch(1, dt.datetime(2024, 12, 31, 11)), mode="append")
        assert "NOT_FOUND" in str(err.value) and "'nosuch' is not configured" in str(err.value)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT (SELECT count(*) FROM events WHERE type = 'click')",
        "SELECT (SELECT count(*) FROM events) + 1, (SELECT max(day) FROM events)",
        "SELECT type, (SELECT count(*) FROM events e2 WHERE e2.type = e1.type) FROM events e1 GROUP BY type ORDER BY type",
    ],
)
def test_unaliased_expressions_are_named_as_the_client_wrote_them(conn: Any, flat: Any, server: RunningServer, sql: str) -> None:
    """DuckDB names an unaliased expression after its SQL text: the client's, never the SQL the
    server ran (which names data files and internal relations)."""
    with conn.cursor() as cur:
        cur.execute(sql)
        got = cur.fetch_arrow_table()
    expected = flat.execute(sql)
    assert got.column_names == [d[0] for d in expected.description]
    assert got.to_pylist() == [dict(zip(got.column_names, row, strict=True)) for row in expected.fetchall()]
    assert str(server.app.config.data_dir) not in " ".join(got.column_names)


def test_an_unbindable_statement_gets_positional_names_not_server_text(conn: Any, server: RunningServer) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM system.rollups) + (SELECT count(*) FROM events)")
        names = cur.fetch_arrow_table().column_names
    assert not any(marker in " ".join(names) for marker in ("__tf_", "read_parquet", "tf_rollup", str(server.app.config.data_dir)))
