"""flightsql-dbapi (SQLAlchemy dialect and DB-API) against a subprocess server.

flightsql-dbapi pins SQLAlchemy < 2 and ships its own Flight SQL protobuf module, so it lives in
its own venv (Makefile: .venv-dbapi); `make test` points TIERFLIGHT_DBAPI_PYTHON at it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import pytest

from conftest import SubprocessServer

CLIENT = Path(__file__).parent / "clients" / "flightsql_dbapi_client.py"

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def dbapi_result(subprocess_server: SubprocessServer) -> tuple[str, dict[str, Any]]:
    python = os.environ.get("TIERFLIGHT_DBAPI_PYTHON")
    if not python:
        pytest.skip("TIERFLIGHT_DBAPI_PYTHON is not set (run `make test`, which creates .venv-dbapi)")
    host, port = subprocess_server.uri.removeprefix("grpc://").rsplit(":", 1)
    tag = uuid.uuid4().hex
    proc = subprocess.run([python, str(CLIENT), host, port, tag], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tag, json.loads(proc.stdout)


def test_inspector(dbapi_result: tuple[str, dict[str, Any]]) -> None:
    _, out = dbapi_result
    assert out["schemas"] == ["main", "system"]
    assert "events" in out["tables"]
    assert out["system_tables"] == ["partitions", "queries", "rollup_advice", "rollups", "snapshots"]
    assert out["has_events"] is True
    assert [c[:2] for c in out["columns"]] == [
        ["ts", "TIMESTAMP"],
        ["type", "TEXT"],
        ["auction_id", "TEXT"],
        ["advertiser_id", "INTEGER"],
        ["publisher_id", "INTEGER"],
        ["bid_price", "FLOAT"],
        ["user_id", "BIGINT"],
        ["total_price", "FLOAT"],
        ["country", "TEXT"],
        ["day", "DATE"],
        ["week", "DATE"],
        ["hour", "TIMESTAMP"],
        ["minute", "TIMESTAMP"],
    ]


def test_queries_match_oracle(dbapi_result: tuple[str, dict[str, Any]], flat: Any) -> None:
    _, out = dbapi_result
    expected = flat.execute(
        "SELECT type, count(*) FROM events WHERE bid_price > 0.5 GROUP BY type ORDER BY type"
    )
    assert out["core_select"] == [list(r) for r in expected.fetchall()]
    by_type = flat.execute("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type").fetchall()
    assert out["read_sql"] == [{"type": t, "n": n} for t, n in by_type]
    assert out["read_sql_dtypes"]["n"] == "int64"


def test_parameters(dbapi_result: tuple[str, dict[str, Any]], flat: Any) -> None:
    tag, out = dbapi_result
    clicks = flat.execute(
        "SELECT count(*) FROM events WHERE type = 'click' AND advertiser_id > 50000"
    ).fetchall()[0][0]
    assert clicks > 0
    assert out["sqlalchemy_params"] == [[clicks]]
    impressions = flat.execute(
        "SELECT count(*) FROM events WHERE type = 'impression' AND bid_price > 0.25"
    ).fetchall()[0][0]
    assert out["dbapi_params"] == [[f"{tag}-params", impressions]]
    assert out["description"] == ["tag", "n"]
    purchases = flat.execute("SELECT count(*) FROM events WHERE type = 'purchase'").fetchall()[0][0]
    assert out["plain"] == [[f"{tag}-plain", purchases]]


def test_date_parameters_with_the_prepared_statements_flag(dbapi_result: tuple[str, dict[str, Any]], flat: Any) -> None:
    """With feature-sqlalchemy-prepared-statements=on, a date value is refused by the client
    itself (it maps int/float/str/bytes/bool only); its ISO text gives the right rows."""
    _, out = dbapi_result
    assert out["date_param_error"] is not None and 'unable to map "date"' in out["date_param_error"]
    expected = flat.execute("SELECT count(*) FROM events WHERE day >= ?", [out["day"]]).fetchall()
    assert out["iso_date_param"] == [[expected[0][0]]] and expected[0][0] > 0


def test_literal_binds_render_null(
    dbapi_result: tuple[str, dict[str, Any]], subprocess_server: SubprocessServer
) -> None:
    """The trap README documents: without the flag, text() values reach the server as NULL."""
    tag, out = dbapi_result
    assert out["literal_binds"] == [[f"literal-{tag}", 0]]
    with fsql.connect(subprocess_server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT sql FROM system.queries WHERE sql LIKE ?", (f"SELECT 'literal-{tag}%",))
        (sql,) = cur.fetchone()
    assert sql.endswith("type = NULL")


def test_error_reaches_client(dbapi_result: tuple[str, dict[str, Any]]) -> None:
    _, out = dbapi_result
    assert out["error"] is not None
    assert "no_such_table" in out["error"]
    assert "Traceback" not in out["error"]


def test_each_statement_ran_once(
    dbapi_result: tuple[str, dict[str, Any]], subprocess_server: SubprocessServer
) -> None:
    """flightsql-dbapi's paths (GetFlightInfo + DoGet; prepare + DoPut + GetFlightInfo + DoGet) run once."""
    tag, _ = dbapi_result
    with fsql.connect(subprocess_server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT sql, status FROM system.queries WHERE sql LIKE ? ORDER BY sql",
            (f"SELECT '{tag}-%",),
        )
        rows = cur.fetchall()
    assert [status for _, status in rows] == ["ok", "ok"], rows
    assert [sql.split("'")[1] for sql, _ in rows] == [f"{tag}-params", f"{tag}-plain"]
