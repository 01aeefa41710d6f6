"""Hostile sizes and shapes: deep nesting, huge statements, odd tickets and type URLs are refused
with INVALID_ARGUMENT naming the problem (never INTERNAL), and big parses queue one at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import adbc_driver_manager
import pytest

from flightsql_helpers import (
    RawGrpc,
    action_bytes,
    adbc_status,
    any_bytes,
    assert_clean_message,
    descriptor_bytes,
    ticket_bytes,
)
from tierflight.core.errors import InvalidArgument, Overloaded, StatementRefused
from tierflight.engine import sandbox
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol import wire
from tierflight.protocol.wire import pack

SQL_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


@pytest.fixture(scope="module")
def raw(server: Any) -> Iterator[RawGrpc]:
    client = RawGrpc(server.uri)
    yield client
    client.close()


def _error(conn: Any, sql: str) -> tuple[str, str]:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute(sql)
        cur.fetchall()
    assert_clean_message(str(err.value))
    return adbc_status(err.value), str(err.value)


def _rows(conn: Any, sql: str) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


# -- nesting ----------------------------------------------------------------------------------


def _parens(n: int) -> str:
    return "SELECT " + "(" * n + "1" + ")" * n + " AS x"


def _subqueries(n: int) -> str:
    return "SELECT * FROM " + "(SELECT * FROM " * n + "events" + ") t" * n + " LIMIT 1"


def _calls(n: int) -> str:
    return "SELECT " + "abs(" * n + "bid_price" + ")" * n + " AS x FROM events LIMIT 1"


@pytest.mark.parametrize(
    "sql",
    [
        _parens(42),
        _subqueries(38),
        _calls(40),
        "SELECT count(*) FROM events WHERE " + "NOT " * 400 + "bid_price > 1",
        "SELECT " + "CASE WHEN bid_price > 1 THEN " * 300 + "1" + " END" * 300 + " FROM events",
        "SELECT " + "[" * 60 + "1" + "]" * 60,
    ],
    ids=["parens-42", "subqueries-38", "calls-40", "not-400", "case-300", "lists-60"],
)
def test_deep_nesting_is_invalid_argument(conn: Any, sql: str) -> None:
    code, text = _error(conn, sql)
    assert code == "INVALID_ARGUMENT", text
    assert "nests too deeply" in text, text


def test_nesting_up_to_the_limit_runs(conn: Any) -> None:
    n = sandbox.MAX_NESTING
    assert _rows(conn, _parens(n)) == [(1,)]
    assert len(_rows(conn, _subqueries(n - 1))) == 1
    assert len(_rows(conn, _calls(n - 1))) == 1


def test_brackets_in_strings_and_comments_do_not_count(conn: Any) -> None:
    deep = "(" * 100
    assert _rows(conn, f"SELECT '{deep}' AS s -- {deep}\n") == [(deep,)]


# -- statement size ------------------------------------------------------------------------------


def test_oversized_statement_names_the_limit(conn: Any, server: Any) -> None:
    limit = server.app.config.server.max_statement_bytes
    values = ",".join(str(i) for i in range(limit // 5))
    sql = f"SELECT count(*) FROM events WHERE user_id IN ({values})"
    assert len(sql) > limit
    code, text = _error(conn, sql)
    assert code == "INVALID_ARGUMENT", text
    assert "max_statement_bytes" in text and str(limit) in text, text


def test_large_statements_take_turns_and_small_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    big = "SELECT 1 AS x WHERE 1 IN (" + ",".join(["1"] * 9000) + ")"
    assert len(big) > 16 << 10
    monkeypatch.setattr(sandbox, "_LARGE_PARSE_WAIT_SECONDS", 0.2)
    with sandbox.large_statement_turn(big):  # a large statement is being parsed and planned
        # A short statement does not wait for it...
        done = threading.Event()

        def small() -> None:
            with sandbox.large_statement_turn("SELECT 41 + 1 AS queued_test"):
                sandbox.check_statement("SELECT 41 + 1 AS queued_test")
            done.set()

        threading.Thread(target=small).start()
        assert done.wait(5)
        # ...a large one waits for its turn, and gives up with a retryable status,
        with pytest.raises(Overloaded), sandbox.large_statement_turn(big + " "):
            pass
        # but one over the size limit is refused at once, without waiting.
        with pytest.raises(InvalidArgument, match="max_statement_bytes"), sandbox.large_statement_turn(
            big, max_bytes=len(big) - 1
        ):
            pass
    with sandbox.large_statement_turn(big):
        assert sandbox.check_statement(big).kind == "query"


def test_statement_limit_is_configurable() -> None:
    with pytest.raises(InvalidArgument, match="max_statement_bytes"):
        sandbox.check_statement("SELECT 1 AS a_longer_statement", max_bytes=10)
    assert sandbox.check_statement("SELECT 1 AS unlimited", max_bytes=0).kind == "query"


# -- tickets and type URLs -----------------------------------------------------------------------


def _ticket(handle: bytes) -> bytes:
    return ticket_bytes(pack(pb.TicketStatementQuery(statement_handle=handle)))


@pytest.mark.parametrize(
    "handle",
    [
        b"[" * 100_000,
        b'{"q": "", "s": "SELECT 1", "p": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"q": 1, "s": "SELECT 1"}',
        b'{"q": "", "s": ["SELECT 1"]}',
        b'{"q": "", "s": "SELECT 1", "p": {"a": 1}}',
        b'{"q": "", "s": "SELECT 1", "p": ["x"]}',
        b"\x01",
        b"\x01\x05abc",
        b"\x01\x00SELECT '\xff\xfe'",
    ],
    ids=[
        "deep-array",
        "deep-params",
        "query-id-number",
        "sql-list",
        "params-object",
        "params-rows-not-lists",
        "plain-no-length",
        "plain-short-id",
        "plain-not-utf8",
    ],
)
def test_malformed_ticket_is_invalid_argument(raw: RawGrpc, handle: bytes) -> None:
    code, message = raw.status("DoGet", _ticket(handle))
    assert code == "INVALID_ARGUMENT", message
    assert "malformed ticket" in message


@pytest.mark.parametrize(
    ("query_id", "sql", "params"),
    [
        ("", "SELECT 1", None),
        ("ab" * 16, "SELECT '\u00e9\x00{' AS \"q\"", None),
        ("x" * 300, "SELECT 2", None),  # too long for the plain layout: JSON
        ("q1", "SELECT ? + ?", [(1, "two")]),
        ("q2", "SELECT ?", []),
    ],
)
def test_ticket_handles_round_trip(query_id: str, sql: str, params: list[tuple[Any, ...]] | None) -> None:
    msg = pb.TicketStatementQuery()
    msg.ParseFromString(wire.unpack(wire.encode_ticket(query_id, sql, params))[1].SerializeToString())
    got = wire.decode_ticket(msg.statement_handle)
    assert got == (query_id, sql, params or None)


def test_ticket_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_TICKET_BYTES", 64)
    with pytest.raises(InvalidArgument, match="malformed ticket"):
        wire.decode_ticket(b'{"q": "", "s": "SELECT 1 AS ' + b"x" * 64 + b'"}')


ODD_TYPE_URLS = [
    "type.googleapis.com/acme.Nope",
    SQL_PREFIX + "__class__",
    SQL_PREFIX + "__loader__",
    SQL_PREFIX + "_sym_db",
    SQL_PREFIX + "DESCRIPTOR",
    SQL_PREFIX + "SqlInfo",
    SQL_PREFIX + "CommandNope",
    SQL_PREFIX,
    "x" * 5000,
]


@pytest.mark.parametrize("type_url", ODD_TYPE_URLS, ids=range(len(ODD_TYPE_URLS)))
@pytest.mark.parametrize("method", ["GetFlightInfo", "GetSchema", "DoGet", "DoAction"])
def test_unknown_type_url_is_invalid_argument(raw: RawGrpc, type_url: str, method: str) -> None:
    body = any_bytes(type_url)
    request = {
        "GetFlightInfo": lambda: descriptor_bytes(cmd=body),
        "GetSchema": lambda: descriptor_bytes(cmd=body),
        "DoGet": lambda: ticket_bytes(body),
        "DoAction": lambda: action_bytes("CreatePreparedStatement", body),
    }[method]()
    code, message = raw.status(method, request)
    assert code == "INVALID_ARGUMENT", message
    assert "unknown command type" in message
    assert len(message) < 1000  # a huge type URL is not echoed back whole


@pytest.mark.parametrize("name", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_every_flight_sql_message_anywhere_is_never_internal(raw: RawGrpc, name: str) -> None:
    body = any_bytes(SQL_PREFIX + name)
    for method, request in [
        ("GetFlightInfo", descriptor_bytes(cmd=body)),
        ("GetSchema", descriptor_bytes(cmd=body)),
        ("DoGet", ticket_bytes(body)),
        ("DoAction", action_bytes("CreatePreparedStatement", body)),
        ("DoAction", action_bytes("ClosePreparedStatement", body)),
        ("DoAction", action_bytes("CancelQuery", body)),
    ]:
        code, message = raw.status(method, request)
        assert code not in {"INTERNAL", "UNKNOWN"}, (method, message)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT length(system.main.repeat('x', 300000000))",
        "SELECT len(system.main.range(5))",
    ],
)
def test_guarded_builtins_called_by_qualified_name_are_refused_by_the_check(sql: str) -> None:
    # Refused when the text is checked (once per text), and again for the same shape with
    # other values: the check's cache and its parse templates keep no way around it.
    for text in (sql, sql.replace("3", "4").replace("5", "6")):
        with pytest.raises(StatementRefused, match="qualified name"):
            sandbox.check_statement(text)
