"""The function allowlist: every DuckDB function is classified, the dangerous ones are refused
through the server (whatever syntax reaches them), and what dashboards call still runs."""

from __future__ import annotations

from typing import Any

import adbc_driver_manager
import pytest

from flightsql_helpers import adbc_status, assert_clean_message
from tierflight.engine import allowlist

_EXPRESSION_KINDS = {"scalar", "aggregate", "window", "macro"}
_TABLE_KINDS = {"table", "table_macro"}


def _known_denied(name: str) -> bool:
    return name in allowlist.DENIED or name.startswith(allowlist.DENIED_PREFIXES)


def test_every_duckdb_function_is_classified(server: Any) -> None:
    """A DuckDB upgrade that adds functions fails here until each is allowed or denied."""
    rows = server.app.database.query_internal(
        "SELECT DISTINCT lower(function_name), function_type FROM duckdb_functions()"
    )
    unclassified = sorted(
        f"{name} ({kind})"
        for name, kind in rows
        if not (
            kind == "pragma"  # PRAGMA statements are refused
            or _known_denied(name)
            or (kind in _EXPRESSION_KINDS and name in allowlist.ALLOWED_EXPRESSION_NAMES)
            or (kind in _TABLE_KINDS and (name in allowlist.ALLOWED_TABLE_NAMES or name in allowlist.DENIED_TABLE_ONLY))
        )
    )
    assert not unclassified, (
        "DuckDB functions neither allowed nor denied: classify each in server/tierflight/engine/allowlist.py "
        f"(allow only functions that touch no files, settings, catalog internals or SQL text): {unclassified}"
    )
    # The allowlist names only functions that exist (a typo would hide a missing one).
    existing = {name for name, _ in rows} | allowlist.PARSER_SPECIAL
    assert not (allowlist.ALLOWED_EXPRESSION_NAMES | allowlist.ALLOWED_TABLE_NAMES) - existing
    assert not allowlist.ALLOWED_EXPRESSION_NAMES & allowlist.DENIED
    assert not allowlist.ALLOWED_TABLE_NAMES & (allowlist.DENIED | allowlist.DENIED_TABLE_ONLY)


def test_every_builtin_view_is_classified(server: Any) -> None:
    rows = server.app.database.query_internal(
        "SELECT schema_name || '.' || view_name FROM duckdb_views() WHERE internal"
    )
    views = {r[0] for r in rows}
    assert views == allowlist.ALLOWED_VIEWS | allowlist.DENIED_VIEWS, (
        "built-in DuckDB views changed: classify them in server/tierflight/engine/allowlist.py "
        f"(new: {sorted(views - allowlist.ALLOWED_VIEWS - allowlist.DENIED_VIEWS)}, "
        f"gone: {sorted(allowlist.ALLOWED_VIEWS | allowlist.DENIED_VIEWS - views)})"
    )
    assert not allowlist.ALLOWED_VIEWS & allowlist.DENIED_VIEWS


def _refused(conn: Any, sql: str) -> str:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute(sql)
        cur.fetchall()
    text = str(err.value)
    assert_clean_message(text)
    assert adbc_status(err.value) in {"PERMISSION_DENIED", "INVALID_ARGUMENT"}, text
    assert "allowlist" not in text
    return text


# statement -> what the refusal must name
DANGEROUS = {
    "execute-serialized": (
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM read_blob(''/etc/hostname'')'))",
        "json_execute_serialized_sql",
    ),
    "execute-serialized-scalar": ("SELECT json_execute_serialized_sql('{}')", "json_execute_serialized_sql"),
    "serialize-plan": ("SELECT json_serialize_plan('SELECT 1')", "json_serialize_plan"),
    "current-setting": ("SELECT current_setting('allowed_directories')", "current_setting"),
    "duckdb-settings": ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
    "pg-settings": ("SELECT * FROM pg_settings", "pg_settings"),
    "checkpoint": ("SELECT * FROM checkpoint()", "checkpoint"),
    "force-checkpoint": ("SELECT * FROM force_checkpoint('memory')", "force_checkpoint"),
    "setseed": ("SELECT setseed(0.5)", "setseed"),
    "query": ("SELECT * FROM query('SELECT 42')", "query"),
    "query-table": ("SELECT * FROM query_table('events')", "query_table"),
    "lambda-query": ("SELECT list_transform([1], x -> (SELECT count(*) FROM query('SELECT 1')))", "query"),
    "lambda-getvariable": ("SELECT list_transform(['a'], x -> getvariable(x))", "getvariable"),
    "struct-read": ("SELECT {'a': (SELECT content FROM read_text('/etc/hostname'))}", "read_text"),
    "getvariable": ("SELECT getvariable('x')", "getvariable"),
    "secrets": ("SELECT * FROM duckdb_secrets()", "duckdb_secrets"),
    "which-secret": ("SELECT which_secret('s3://b/k', 's3')", "which_secret"),
    "glob": ("FROM glob('*')", "glob"),
    "read-csv": ("FROM read_csv('/etc/passwd')", "read_csv"),
    "replacement-scan": ("FROM 'events.parquet'", "events.parquet"),
    "summarize-read": ("SUMMARIZE SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    "summarize-file": ("SUMMARIZE 'x.parquet'", "x.parquet"),
    "histogram-macro": ("FROM histogram(events, bid_price)", "histogram"),
    "current-query": ("SELECT current_query()", "current_query"),
    "sleep": ("SELECT pg_sleep(5)", "pg_sleep"),
    "show-variables": ("SHOW VARIABLES", "SHOW"),
    "quoted-upper": ('SELECT "QUERY_TABLE"(\'events\')', "query_table"),
    "qualified": ("SELECT system.main.current_setting('memory_limit')", "current_setting"),
    "in-pivot": ("SELECT * FROM (PIVOT events ON country IN ('US') USING max(getvariable('x')))", "getvariable"),
    "server-function": ("SELECT tf_hll_estimate([])", "tf_hll_estimate"),
}


# Catalog views and functions that would show view definitions (data file paths) or database
# paths on the server's own DuckDB: answered on the shadow catalog, where there are none.
SHADOWED = [
    "SELECT sql FROM duckdb_views()",
    "SELECT sql FROM duckdb_views",
    "SELECT sql FROM main.duckdb_views",
    "SELECT view_definition FROM information_schema.views",
    "SELECT * FROM pg_catalog.pg_views",
    "SELECT * FROM pg_views",
]


@pytest.mark.parametrize("sql", SHADOWED)
def test_catalog_views_show_no_definitions(conn: Any, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetchall() == []


def test_databases_show_no_path(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT database_name, path FROM duckdb_databases()")
        assert cur.fetchall() == [("tierflight", None)]


def test_an_unknown_function_does_not_exist(conn: Any) -> None:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute("SELECT nosuch_fn(1)")
    assert adbc_status(err.value) == "NOT_FOUND" and "nosuch_fn() does not exist" in str(err.value)


@pytest.mark.parametrize("name", sorted(DANGEROUS))
def test_dangerous_functions_are_refused(conn: Any, name: str) -> None:
    sql, named = DANGEROUS[name]
    text = _refused(conn, sql)
    assert named.lower() in text.lower(), text
    assert "not allowed" in text, text


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "PRAGMA database_list",
        "SET threads = 1",
        "CALL force_checkpoint()",
        "CALL pragma_version()",
        "EXPLAIN SELECT * FROM read_blob('/etc/hostname')",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n FROM query('SELECT 1')) SELECT * FROM r",
    ],
)
def test_other_syntax_is_refused(conn: Any, sql: str) -> None:
    _refused(conn, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT approx_count_distinct(user_id), approx_quantile(bid_price, 0.5), quantile_cont(bid_price, 0.9) FROM events",
        "SELECT date_trunc('day', ts) AS d, strftime(ts, '%Y-%m') AS m, count(*) FROM events GROUP BY ALL LIMIT 3",
        "SELECT country, row_number() OVER (ORDER BY count(*) DESC) FROM events GROUP BY country",
        "SELECT regexp_replace(country, 'U', 'u'), list_transform([1, 2], x -> x * 2), [1, 2][1] FROM events LIMIT 2",
        "SELECT current_database(), current_schema(), version(), current_user",
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'events'",
        "SELECT count(*) FROM information_schema.tables",
        "SELECT * FROM range(3)",
        "SELECT * FROM (PIVOT events ON country IN ('US') USING count(*)) LIMIT 1",
        "SELECT histogram(country) FROM events",
    ],
)
def test_dashboard_functions_still_run(conn: Any, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)
        cur.fetchall()
