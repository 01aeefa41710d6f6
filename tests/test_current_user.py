"""current_user and its synonyms answer the Flight user (DuckDB's own answer is "duckdb"),
and an answer that names its user is never reused for another one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import pytest
import sqlglot

from conftest import RunningServer, start_in_process
from storage_helpers import ROWS, build, config
from tierflight.protocol.auth import ANONYMOUS_USER, hash_password

TOKEN = "current-user-token-" + "y" * 24
WHO = "SELECT current_user AS a, user AS b, session_user AS c, current_role AS d, current_user() AS e, user() AS f"
WHO_WITH_DATA = "SELECT current_user AS who, count(*) AS n FROM events"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("current_user") / "data")


def _serve(data: Path, **overrides: Any) -> Iterator[RunningServer]:
    running = start_in_process(config(data, **overrides))
    yield running
    running.server.shutdown()
    running.app.close()


@pytest.fixture(scope="module")
def auth_server(data: Path) -> Iterator[RunningServer]:
    users = {name: {"password_hash": hash_password(f"{name}-pw", 1_000), "permissions": ["read"]} for name in ("alice", "o'brien")}
    yield from _serve(data, auth={"users": {**users, "bot": {"permissions": ["read"]}}, "tokens": {TOKEN: "bot"}})


def _query(uri: str, sql: str, **db_kwargs: str) -> list[tuple[Any, ...]]:
    with fsql.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows


def _as(name: str) -> dict[str, str]:
    if name == "bot":
        return {"adbc.flight.sql.authorization_header": f"Bearer {TOKEN}"}
    return {"username": name, "password": f"{name}-pw"}


def test_each_user_is_their_own_current_user(auth_server: RunningServer) -> None:
    # Twice round: the second asks of each statement were answered from the first if the
    # answers were reused across users.
    for _ in range(2):
        for name in ("alice", "o'brien", "bot"):
            assert _query(auth_server.uri, WHO, **_as(name)) == [(name,) * 6]
            assert _query(auth_server.uri, WHO_WITH_DATA, **_as(name)) == [(name, ROWS)]


def test_a_column_named_user_is_still_the_column(auth_server: RunningServer) -> None:
    sql = "SELECT user, current_role FROM (SELECT 'col' AS user, 'role-col' AS current_role)"
    assert _query(auth_server.uri, sql, **_as("alice")) == [("col", "role-col")]


def test_without_authentication_the_user_is_anonymous(data: Path) -> None:
    for running in _serve(data):
        assert _query(running.uri, WHO) == [(ANONYMOUS_USER,) * 6]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT current_user",
        "SELECT user FROM events",
        "SELECT session_user",
        "SELECT current_role",
        "SELECT user()",
        "SELECT main.current_user(), count(*) FROM events",
        "SELECT count(*) FROM events WHERE current_user = 'alice'",
    ],
)
def test_statements_naming_the_user_are_not_reused(sql: str) -> None:
    from tierflight.router.reusable import not_reusable

    assert "depends on who asks" in (not_reusable(sqlglot.parse_one(sql, read="duckdb"), ["events"]) or "")


def test_columns_that_merely_contain_user_stay_reusable() -> None:
    from tierflight.router.reusable import not_reusable

    for sql in ("SELECT user_id, count(*) FROM events GROUP BY 1", "SELECT e.user FROM events e"):
        assert not_reusable(sqlglot.parse_one(sql, read="duckdb"), ["events"]) is None
