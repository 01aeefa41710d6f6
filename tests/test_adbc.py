"""The ADBC Flight SQL driver (Go) through its DB-API: queries, parameters, metadata, oracle."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterator
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from flightsql_helpers import adbc_status, assert_clean_message

EVENTS_COLUMNS = [
    ("ts", pa.timestamp("us")),
    ("type", pa.string()),
    ("auction_id", pa.string()),
    ("advertiser_id", pa.int32()),
    ("publisher_id", pa.int32()),
    ("bid_price", pa.float64()),
    ("user_id", pa.int64()),
    ("total_price", pa.float64()),
    ("country", pa.string()),
    ("day", pa.date32()),
    ("week", pa.date32()),
    ("hour", pa.timestamp("us")),
    ("minute", pa.timestamp("us")),
]
SYSTEM_TABLES = {"partitions", "queries", "rollups"}


@pytest.fixture(scope="module")
def conn(server: Any) -> Iterator[Any]:
    """One ADBC connection for the module (conftest's is per test); errors must not spoil it."""
    with fsql.connect(server.uri, autocommit=True) as c:
        yield c


@pytest.fixture()
def cur(conn: Any) -> Iterator[Any]:
    with conn.cursor() as c:
        yield c


# -- statements and fetching ------------------------------------------------------------------


def test_fetchall_and_description(cur: Any) -> None:
    cur.execute("SELECT 1 AS one, 'a' AS letter, NULL::INTEGER AS nothing")
    assert [d[0] for d in cur.description] == ["one", "letter", "nothing"]
    assert cur.fetchall() == [(1, "a", None)]


def test_fetch_arrow_table_types(cur: Any) -> None:
    cur.execute("SELECT * FROM events ORDER BY ts, auction_id, type LIMIT 50")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 50
    assert [(f.name, f.type) for f in table.schema] == EVENTS_COLUMNS
    # Strings are plain utf8 (not string_view or large_string); ts has no time zone.
    assert table.schema.field("ts").type.tz is None
    assert table.schema.field("type").type == pa.utf8()


def test_fetchone_fetchmany(cur: Any) -> None:
    cur.execute("SELECT i FROM range(10) t(i) ORDER BY i")
    assert cur.fetchone() == (0,)
    assert cur.fetchmany(3) == [(1,), (2,), (3,)]
    assert [r[0] for r in cur.fetchall()] == list(range(4, 10))


def test_cursor_reuse(cur: Any) -> None:
    for i in range(3):
        cur.execute(f"SELECT {i} AS i")
        assert cur.fetchall() == [(i,)]


# -- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "params", "expected"),
    [
        ("SELECT ? AS a, ? AS b, ? AS c", (7, "seven", 7.5), (7, "seven", 7.5)),
        ("SELECT $1 AS a, $2 AS b, $1 + 1 AS c", (41, "x"), (41, "x", 42)),
        ("SELECT ? AS d", (dt.date(2024, 12, 1),), (dt.date(2024, 12, 1),)),
        (
            "SELECT ? AS t",
            (dt.datetime(2024, 12, 1, 13, 14, 15, 123456),),
            (dt.datetime(2024, 12, 1, 13, 14, 15, 123456),),
        ),
        ("SELECT ? IS NULL AS isnull, coalesce(?, 'fallback') AS v", (None, None), (True, "fallback")),
        ("SELECT ? AS big", (2**62,), (2**62,)),
        ("SELECT ? AS flag", (True,), (True,)),
    ],
    ids=["qmark-mixed", "dollar-numbered", "date", "timestamp", "null", "bigint", "bool"],
)
def test_parameters(cur: Any, sql: str, params: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    cur.execute(sql, params)
    assert cur.fetchall() == [expected]


def test_parameters_filter_events(cur: Any, flat: Any) -> None:
    sql = "SELECT count(*) FROM events WHERE type = ? AND advertiser_id > ? AND ts >= ? AND day < ?"
    ((first, last),) = flat.execute("SELECT min(day), max(day) FROM events").fetchall()
    params = (
        "impression",
        50_000,
        dt.datetime.combine(first, dt.time(12)) + dt.timedelta(days=20),
        last - dt.timedelta(days=5),
    )
    cur.execute(sql, params)
    got = cur.fetchall()
    assert got == flat.execute(sql, list(params)).fetchall()
    assert got[0][0] > 0


def test_parameters_rebind_same_statement(cur: Any, flat: Any) -> None:
    sql = "SELECT count(*) FROM events WHERE type = ?"
    for kind in ("serve", "click", "purchase", "nope"):
        cur.execute(sql, (kind,))
        assert cur.fetchall() == flat.execute(sql, [kind]).fetchall()


def test_parameter_batch_runs_once_per_row(cur: Any) -> None:
    # A multi-row parameter batch executes the statement once per row; results concatenate.
    cur.execute("SELECT ? * 10 AS x", pa.record_batch([pa.array([1, 2, 3], pa.int64())], names=["p"]))
    assert cur.fetchall() == [(10,), (20,), (30,)]


def test_executemany_select_is_refused_cleanly(conn: Any) -> None:
    # executemany is DB-API's path for DML; the driver sends it as an update, which a read-only
    # server refuses with UNIMPLEMENTED (not INTERNAL), and the connection stays usable.
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.executemany("SELECT ? AS x", [(1,), (2,)])
        assert adbc_status(err.value) == "UNIMPLEMENTED"
        assert "read-only" in str(err.value)
        assert_clean_message(str(err.value))
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]


def test_wrong_parameter_count(cur: Any) -> None:
    with pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute("SELECT ? AS a, ? AS b", (1,))
    assert adbc_status(err.value) == "INVALID_ARGUMENT"
    assert "parameter" in str(err.value).lower()


# -- metadata ----------------------------------------------------------------------------------


def _objects(conn: Any, depth: str, **filters: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = conn.adbc_get_objects(depth=depth, **filters).read_all().to_pylist()
    return result


def test_get_objects_catalogs(conn: Any, server: Any) -> None:
    rows = _objects(conn, "catalogs")
    assert [r["catalog_name"] for r in rows] == [server.app.catalog_name]
    assert all(r["catalog_db_schemas"] in (None, []) for r in rows)


def test_get_objects_db_schemas(conn: Any) -> None:
    (catalog,) = _objects(conn, "db_schemas")
    names = sorted(s["db_schema_name"] for s in catalog["catalog_db_schemas"])
    assert names == ["main", "system"]
    assert all(s["db_schema_tables"] in (None, []) for s in catalog["catalog_db_schemas"])


def test_get_objects_tables(conn: Any) -> None:
    (catalog,) = _objects(conn, "tables")
    tables = {
        (s["db_schema_name"], t["table_name"], t["table_type"])
        for s in catalog["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    }
    assert ("main", "events", "TABLE") in tables
    assert {("system", name, "SYSTEM TABLE") for name in SYSTEM_TABLES} <= tables
    assert all(not t["table_columns"] for s in catalog["catalog_db_schemas"] for t in s["db_schema_tables"])


def test_get_objects_columns(conn: Any) -> None:
    (catalog,) = _objects(conn, "all")
    by_table = {
        (s["db_schema_name"], t["table_name"]): t["table_columns"]
        for s in catalog["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    }
    events = by_table[("main", "events")]
    assert [c["column_name"] for c in events] == [name for name, _ in EVENTS_COLUMNS]
    assert [c["ordinal_position"] for c in events] == list(range(1, len(EVENTS_COLUMNS) + 1))
    types = {c["column_name"]: c["xdbc_type_name"] for c in events}
    assert types["ts"] == "TIMESTAMP"
    assert types["type"] == "VARCHAR"
    assert types["day"] == types["week"] == "DATE"
    assert types["hour"] == types["minute"] == "TIMESTAMP"
    assert [c["column_name"] for c in by_table[("system", "queries")]][:2] == ["query_id", "sql"]
    assert {"name", "status", "rows", "watermark"} <= {
        c["column_name"] for c in by_table[("system", "rollups")]
    }
    assert {"tier", "partition", "files"} <= {c["column_name"] for c in by_table[("system", "partitions")]}


def test_get_objects_filters(conn: Any) -> None:
    (catalog,) = _objects(conn, "tables", db_schema_filter="sys%", table_name_filter="q%")
    assert [
        (s["db_schema_name"], [t["table_name"] for t in s["db_schema_tables"]])
        for s in catalog["catalog_db_schemas"]
    ] == [("system", ["queries"])]
    (catalog,) = _objects(conn, "tables", table_types_filter=["TABLE"])
    found = [t["table_name"] for s in catalog["catalog_db_schemas"] for t in s["db_schema_tables"] or []]
    assert found == ["advertisers", "events", "publishers"]
    (catalog,) = _objects(conn, "columns", table_name_filter="events", column_name_filter="%_id")
    (schema,) = [s for s in catalog["catalog_db_schemas"] if s["db_schema_tables"]]
    (table,) = schema["db_schema_tables"]
    assert [c["column_name"] for c in table["table_columns"]] == [
        "auction_id",
        "advertiser_id",
        "publisher_id",
        "user_id",
    ]
    assert _objects(conn, "catalogs", catalog_filter="no_such_catalog") == []


def test_get_table_schema(conn: Any) -> None:
    schema = conn.adbc_get_table_schema("events")
    assert [(f.name, f.type) for f in schema] == EVENTS_COLUMNS
    queries = conn.adbc_get_table_schema("queries", db_schema_filter="system")
    assert queries.names[:2] == ["query_id", "sql"]
    with pytest.raises(adbc_driver_manager.Error):
        conn.adbc_get_table_schema("no_such_table")


def test_get_table_types(conn: Any) -> None:
    assert sorted(conn.adbc_get_table_types()) == ["SYSTEM TABLE", "TABLE"]


def test_get_info(conn: Any) -> None:
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "tierflight"
    from tierflight import __version__

    assert info["vendor_version"] == __version__
    assert info["vendor_arrow_version"] == pa.__version__


# -- results equal the flat DuckDB oracle -------------------------------------------------------------

ORACLE_QUERIES = {
    "group-by": "SELECT type, count(*) AS n, count(DISTINCT auction_id) AS auctions FROM events GROUP BY type ORDER BY type",
    "join": """
        SELECT i.advertiser_id, count(*) AS clicks, round(sum(i.bid_price), 6) AS spend
        FROM events i JOIN events c ON c.auction_id = i.auction_id AND c.type = 'click'
        WHERE i.type = 'impression'
        GROUP BY i.advertiser_id ORDER BY clicks DESC, i.advertiser_id LIMIT 15
    """,
    "window": """
        SELECT day, n, sum(n) OVER (ORDER BY day) AS running,
               rank() OVER (ORDER BY n DESC, day) AS busiest,
               n - lag(n) OVER (ORDER BY day) AS delta
        FROM (SELECT day, count(*) AS n FROM events GROUP BY day) ORDER BY day
    """,
    "window-partition": """
        SELECT type, country, n FROM (
            SELECT type, country, count(*) AS n,
                   row_number() OVER (PARTITION BY type ORDER BY count(*) DESC, country) AS rk
            FROM events GROUP BY type, country)
        WHERE rk <= 3 ORDER BY type, rk
    """,
    "order-limit": "SELECT ts, type, auction_id, bid_price FROM events ORDER BY ts DESC, auction_id, type LIMIT 25 OFFSET 10",
    "nulls": """
        SELECT type, count(bid_price) AS bids, count(total_price) AS purchases,
               count(*) FILTER (WHERE bid_price IS NULL AND total_price IS NULL) AS neither,
               round(avg(bid_price), 6) AS avg_bid, max(total_price) AS max_total
        FROM events GROUP BY type ORDER BY type
    """,
    "nulls-order": "SELECT auction_id, type, total_price FROM events ORDER BY total_price DESC NULLS LAST, auction_id, type LIMIT 12",
    "nulls-first": """
        SELECT auction_id, type, bid_price FROM events WHERE day = (SELECT max(day) FROM events)
        ORDER BY bid_price NULLS FIRST, auction_id, type LIMIT 12
    """,
    "derived": """
        SELECT week, count(DISTINCT day) AS days, count(DISTINCT hour) AS hours, min(minute) AS first_minute
        FROM events GROUP BY week ORDER BY week
    """,
    "unaliased-rollup-shape": "SELECT day, type, count(*) FROM events GROUP BY day, type ORDER BY day, type",
    "unaliased-hour": "SELECT hour, count(*), sum(bid_price) IS NOT NULL FROM events WHERE type = 'impression' GROUP BY hour ORDER BY hour",
    "funnel": """
        WITH a AS (SELECT auction_id, bool_or(type = 'click') AS clicked, bool_or(type = 'purchase') AS bought
                   FROM events GROUP BY auction_id)
        SELECT clicked, bought, count(*) FROM a GROUP BY ALL ORDER BY ALL
    """,
}


def _normalise(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [
        tuple(round(v, 9) if isinstance(v, float) and not math.isnan(v) else v for v in row) for row in rows
    ]


@pytest.mark.parametrize("name", sorted(ORACLE_QUERIES))
def test_results_match_flat_oracle(cur: Any, flat: Any, name: str) -> None:
    sql = ORACLE_QUERIES[name]
    cur.execute(sql)
    got = cur.fetchall()
    names = [d[0] for d in cur.description]
    oracle = flat.execute(sql)
    expected = oracle.fetchall()
    assert got, "the oracle query returned no rows; the comparison would be vacuous"
    assert _normalise(got) == _normalise(expected)
    # Column names are part of the result: a rewrite (e.g. onto a rollup) must keep them.
    assert names == [d[0] for d in oracle.description]


def test_arrow_result_matches_oracle_exactly(cur: Any, flat: Any) -> None:
    sql = "SELECT * FROM events WHERE day = (SELECT min(day) + 45 FROM events) ORDER BY ts, auction_id, type"
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    expected = flat.sql(sql).to_arrow_table()
    assert got.num_rows == expected.num_rows > 0
    assert got.cast(expected.schema).equals(expected)


def test_execute_schema(cur: Any) -> None:
    sql = "SELECT ts, type, day, count(*) OVER () AS n FROM events LIMIT 3"
    schema = cur.adbc_execute_schema(sql)
    cur.execute(sql)
    assert cur.fetch_arrow_table().schema.equals(schema)
    assert schema.field("ts").type == pa.timestamp("us")


def test_prepare_then_execute(cur: Any, server: Any) -> None:
    tag = f"prepared-{uuid.uuid4().hex}"
    sql = f"SELECT '{tag}' AS tag, count(*) AS n FROM events"
    cur.adbc_prepare(sql)
    cur.execute(sql)
    assert cur.fetchall()[0][0] == tag
    # Preparing starts the statement; executing streams that same execution.
    records = [r for r in list(server.app.executor.recent) if r.sql == sql]
    assert [r.status for r in records] == ["ok"]

    params = cur.adbc_prepare("SELECT ? + 1 AS x, ? AS y")
    assert params is not None and len(params) == 2
    cur.execute("SELECT ? + 1 AS x, ? AS y", (41, "z"))
    assert cur.fetchall() == [(42, "z")]
