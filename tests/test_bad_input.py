"""Bad input gets the contract's status code and a message naming the problem; the server lives on."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_helpers import (
    RawGrpc,
    action_bytes,
    adbc_status,
    any_bytes,
    assert_clean_message,
    descriptor_bytes,
    flight_data_bytes,
    flight_status,
    ticket_bytes,
)
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.wire import pack

SQL_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


@pytest.fixture(scope="module")
def conn(server: Any) -> Iterator[Any]:
    """One ADBC connection for the module (conftest's is per test); errors must not spoil it."""
    with fsql.connect(server.uri, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def raw(server: Any) -> Iterator[RawGrpc]:
    client = RawGrpc(server.uri)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def still_serving(server: Any) -> Iterator[None]:
    """After every test here the server must still answer a query."""
    yield
    with flight.connect(server.uri) as client:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query="SELECT 1 AS ok")))
        )
        assert client.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"ok": 1}]


def adbc_error(conn: Any, sql: str) -> adbc_driver_manager.Error:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute(sql)
        cur.fetchall()
    assert_clean_message(str(err.value))
    return err.value


# -- SQL the server cannot run ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "line", "column"),
    [
        ("SELEC 1", 1, None),
        ("SELECT count(* FROM events", 1, None),
        ("SELECT type,\n       count(*)\nFROM events\nWHERE type = 'click' AND AND day > 3", 4, None),
        ("SELECT 'unterminated FROM events", 1, 8),
        ("SELEC", 1, 1),
        ("  \n  bogus statement here", 2, None),
    ],
    ids=["typo", "paren", "multiline", "quote", "bare-word", "garbage"],
)
def test_malformed_sql(conn: Any, sql: str, line: int, column: int | None) -> None:
    err = adbc_error(conn, sql)
    assert adbc_status(err) == "INVALID_ARGUMENT"
    text = str(err)
    assert "invalid SQL" in text or "syntax error" in text.lower()
    assert f"line {line}" in text
    assert (f"column {column}" if column else "column ") in text


def test_empty_statement(conn: Any) -> None:
    err = adbc_error(conn, "   ")
    assert adbc_status(err) == "INVALID_ARGUMENT"
    assert "empty statement" in str(err)


def test_unknown_table(conn: Any) -> None:
    err = adbc_error(conn, "SELECT * FROM no_such_table")
    assert adbc_status(err) == "NOT_FOUND"
    assert "no_such_table" in str(err)


def test_unknown_system_table(conn: Any) -> None:
    err = adbc_error(conn, "SELECT * FROM system.no_such_thing")
    assert adbc_status(err) in {"NOT_FOUND", "INVALID_ARGUMENT"}
    assert "no_such_thing" in str(err)


def test_unknown_column(conn: Any) -> None:
    err = adbc_error(conn, "SELECT no_such_column FROM events")
    assert adbc_status(err) == "INVALID_ARGUMENT"
    assert "no_such_column" in str(err)


def test_type_error(conn: Any) -> None:
    err = adbc_error(conn, "SELECT count(*) FROM events WHERE ts > 'not a timestamp'")
    assert adbc_status(err) == "INVALID_ARGUMENT"
    assert "not a timestamp" in str(err)


def test_runtime_error_is_not_internal(conn: Any) -> None:
    err = adbc_error(conn, "SELECT CAST(type AS INTEGER) FROM events")
    assert adbc_status(err) == "INVALID_ARGUMENT"


REFUSED = {
    "copy": "COPY events TO '/tmp/tierflight-out.csv'",
    "copy-from": "COPY events FROM '/etc/passwd'",
    "attach": "ATTACH '/tmp/tierflight-x.duckdb' AS x",
    "detach": "DETACH x",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET threads = 1",
    "set-external": "SET enable_external_access = true",
    "reset": "RESET threads",
    "pragma": "PRAGMA version",
    "create": "CREATE TABLE t AS SELECT 1 AS x",
    "create-view": "CREATE OR REPLACE VIEW events AS SELECT 1 AS x",
    "insert": "INSERT INTO events SELECT * FROM events LIMIT 1",
    "update": "UPDATE events SET type = 'x'",
    "delete": "DELETE FROM events",
    "drop": "DROP VIEW events",
    "export": "EXPORT DATABASE '/tmp/tierflight-export'",
    "import": "IMPORT DATABASE '/tmp/tierflight-export'",
    "call": "CALL pragma_version()",
    "checkpoint": "CHECKPOINT",
    "use": "USE system",
    "begin": "BEGIN TRANSACTION",
    "two-statements": "SELECT 1; SELECT 2",
    "select-then-drop": "SELECT 1; DROP VIEW events",
    "with-insert": "WITH x AS (SELECT 1) INSERT INTO events SELECT * FROM events",
    "secret": "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_statements(conn: Any, name: str) -> None:
    err = adbc_error(conn, REFUSED[name])
    assert adbc_status(err) in {"PERMISSION_DENIED", "INVALID_ARGUMENT"}, err
    text = str(err)
    assert "not allowed" in text or "invalid SQL" in text or "one statement" in text, text


@pytest.mark.parametrize(
    "sql",
    [
        "COPY events TO '/tmp/x.csv'",
        "ATTACH 'x.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "PRAGMA version",
        "CREATE TABLE t (i INT)",
        "INSERT INTO events SELECT * FROM events",
        "EXPORT DATABASE '/tmp/x'",
    ],
)
def test_refused_statements_are_permission_denied(conn: Any, sql: str) -> None:
    err = adbc_error(conn, sql)
    assert adbc_status(err) == "PERMISSION_DENIED"
    assert "not allowed" in str(err)
    assert "read-only" in str(err)


ESCAPES = {
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_auto-upper": "SELECT * FROM READ_CSV_AUTO('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_blob": "SELECT * FROM read_blob('/etc/hostname')",
    "read_parquet": "SELECT * FROM read_parquet('/root/x.parquet')",
    "read_json": "SELECT * FROM read_json('/etc/x.json')",
    "parquet_scan": "SELECT * FROM parquet_scan('/root/x')",
    "glob": "SELECT * FROM glob('/*')",
    "from-path": "SELECT * FROM '/etc/passwd'",
    "from-quoted-path": 'SELECT * FROM "/etc/passwd"',
    "from-url": "SELECT * FROM 'https://example.com/x.parquet'",
    "from-csv-name": "SELECT * FROM 'passwords.csv'",
    "getenv": "SELECT getenv('HOME')",
    "query": "SELECT * FROM query('SELECT 1')",
    "query_table": "SELECT * FROM query_table('events')",
    "subquery-read": "SELECT (SELECT count(*) FROM read_csv('/etc/passwd')) AS n",
    "cte-read": "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
    "describe-read": "DESCRIBE SELECT * FROM read_csv('/etc/passwd')",
    "explain-read": "EXPLAIN SELECT * FROM read_csv('/etc/passwd')",
    "union-read": "SELECT 'x' AS a UNION ALL SELECT * FROM read_text('/etc/passwd')",
    "data-dir-parquet": "SELECT count(*) FROM read_parquet('{parquet}')",
    "data-dir-from": "SELECT count(*) FROM '{parquet}'",
    "data-dir-glob": "SELECT * FROM glob('{data_dir}/**')",
    "secrets": "SELECT * FROM duckdb_secrets()",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_sandbox_escapes(conn: Any, data_dir: Path, name: str) -> None:
    parquet = next((data_dir / "events").rglob("*.parquet"))
    sql = ESCAPES[name].format(parquet=parquet, data_dir=data_dir)
    err = adbc_error(conn, sql)
    assert adbc_status(err) in {"PERMISSION_DENIED", "INVALID_ARGUMENT"}, err
    text = str(err)
    assert "not allowed" in text, text
    assert "root:" not in text  # nothing of /etc/passwd leaks into the message


def test_duckdb_fence_blocks_files_and_settings(server: Any) -> None:
    """The second fence: a cursor on the server's own DuckDB cannot read files or unlock it."""
    cursor = server.app.database.cursor()
    try:
        with pytest.raises(duckdb.Error, match=r"(?i)permission|disabled|not allowed"):
            cursor.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        with pytest.raises(duckdb.Error, match=r"(?i)lock|cannot"):
            cursor.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error):
            cursor.execute("SET allowed_directories = ['/']")
        with pytest.raises(duckdb.Error):
            cursor.execute("INSTALL httpfs")
        with pytest.raises(duckdb.Error):
            cursor.execute("ATTACH '/tmp/tierflight-fence.duckdb' AS x")
        assert cursor.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
    finally:
        cursor.close()


# -- errors reported through plain pyarrow.flight --------------------------------------------------------


def test_flight_statement_errors(server: Any) -> None:
    cases = {
        "SELEC 1": "INVALID_ARGUMENT",
        "SELECT * FROM no_such_table": "NOT_FOUND",
        "SELECT no_such_column FROM events": "INVALID_ARGUMENT",
        "COPY events TO '/tmp/x.csv'": "PERMISSION_DENIED",
        "SELECT * FROM read_csv('/etc/passwd')": "PERMISSION_DENIED",
    }
    with flight.connect(server.uri) as client:
        for sql, code in cases.items():
            descriptor = flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query=sql)))
            with pytest.raises(pa.ArrowException) as err:
                client.get_flight_info(descriptor)
            assert flight_status(err.value) == code, sql
            assert_clean_message(str(err.value))


def test_get_schema_errors_keep_their_meaning(raw: RawGrpc) -> None:
    def schema(sql: str) -> tuple[str, str]:
        return raw.status("GetSchema", descriptor_bytes(cmd=pack(pb.CommandStatementQuery(query=sql))))

    assert schema("SELEC 1")[0] == "INVALID_ARGUMENT"
    assert schema("SELEC")[0] == "INVALID_ARGUMENT"
    assert schema("SELECT * FROM no_such_table")[0] == "NOT_FOUND"
    # pyarrow's GetSchema cannot send PERMISSION_DENIED; a refusal is INVALID_ARGUMENT saying why.
    code, message = schema("COPY events TO '/tmp/x.csv'")
    assert code == "INVALID_ARGUMENT"
    assert "not allowed" in message


# -- garbage on the wire -----------------------------------------------------------------------------


def _sql_any(name: str, value: bytes = b"") -> bytes:
    return any_bytes(SQL_PREFIX + name, value)


GARBAGE: list[tuple[str, str, bytes | list[bytes], set[str]]] = [
    # (id, method, request, acceptable codes)
    ("ticket-undecodable", "DoGet", ticket_bytes(b"\xff\xff\xff\xff"), {"INVALID_ARGUMENT"}),
    ("ticket-empty", "DoGet", ticket_bytes(b""), {"UNIMPLEMENTED", "INVALID_ARGUMENT"}),
    (
        "ticket-unknown-any",
        "DoGet",
        ticket_bytes(any_bytes("type.googleapis.com/acme.Nope")),
        {"INVALID_ARGUMENT"},
    ),
    ("ticket-unknown-sql", "DoGet", ticket_bytes(_sql_any("CommandNope")), {"INVALID_ARGUMENT"}),
    (
        "ticket-wrong-command",
        "DoGet",
        ticket_bytes(pack(pb.CommandStatementQuery(query="SELECT 1"))),
        {"UNIMPLEMENTED", "INVALID_ARGUMENT"},
    ),
    (
        "ticket-bad-handle",
        "DoGet",
        ticket_bytes(pack(pb.TicketStatementQuery(statement_handle=b"{not json"))),
        {"INVALID_ARGUMENT"},
    ),
    (
        "ticket-json-array",
        "DoGet",
        ticket_bytes(pack(pb.TicketStatementQuery(statement_handle=b"[1, 2]"))),
        {"INVALID_ARGUMENT"},
    ),
    (
        "ticket-json-string",
        "DoGet",
        ticket_bytes(pack(pb.TicketStatementQuery(statement_handle=b'"q"'))),
        {"INVALID_ARGUMENT"},
    ),
    (
        "ticket-bad-params",
        "DoGet",
        ticket_bytes(
            pack(pb.TicketStatementQuery(statement_handle=b'{"q": "x", "s": "SELECT ?", "p": [1]}'))
        ),
        {"INVALID_ARGUMENT"},
    ),
    (
        "ticket-param-count",
        "DoGet",
        ticket_bytes(
            pack(pb.TicketStatementQuery(statement_handle=b'{"q": "x", "s": "SELECT ?", "p": [[1, 2]]}'))
        ),
        {"INVALID_ARGUMENT"},
    ),
    (
        "ticket-forged-escape",
        "DoGet",
        ticket_bytes(
            pack(
                pb.TicketStatementQuery(
                    statement_handle=b'{"q": "x", "s": "SELECT * FROM read_csv(\'/etc/passwd\')"}'
                )
            )
        ),
        {"INVALID_ARGUMENT"},
    ),
    (
        "ticket-forged-write",
        "DoGet",
        ticket_bytes(pack(pb.TicketStatementQuery(statement_handle=b'{"q": "x", "s": "DROP VIEW events"}'))),
        {"INVALID_ARGUMENT"},
    ),
    ("descriptor-path", "GetFlightInfo", descriptor_bytes(path=["events"]), {"UNIMPLEMENTED"}),
    (
        "descriptor-unknown-type",
        "GetFlightInfo",
        descriptor_bytes(cmd=b"", kind=0),
        {"INVALID_ARGUMENT", "UNIMPLEMENTED"},
    ),
    ("descriptor-undecodable", "GetFlightInfo", descriptor_bytes(cmd=b"\xff\xff\xff"), {"INVALID_ARGUMENT"}),
    (
        "descriptor-unknown-any",
        "GetFlightInfo",
        descriptor_bytes(cmd=any_bytes("type.googleapis.com/google.protobuf.Empty")),
        {"INVALID_ARGUMENT"},
    ),
    (
        "descriptor-unknown-sql",
        "GetFlightInfo",
        descriptor_bytes(cmd=_sql_any("CommandGetEverything")),
        {"INVALID_ARGUMENT"},
    ),
    ("descriptor-enum-name", "GetFlightInfo", descriptor_bytes(cmd=_sql_any("SqlInfo")), {"INVALID_ARGUMENT"}),
    (
        "descriptor-malformed-value",
        "GetFlightInfo",
        descriptor_bytes(cmd=_sql_any("CommandStatementQuery", b"\xff\xff")),
        {"INVALID_ARGUMENT"},
    ),
    (
        "descriptor-ticket-as-command",
        "GetFlightInfo",
        descriptor_bytes(cmd=pack(pb.TicketStatementQuery(statement_handle=b"x"))),
        {"UNIMPLEMENTED", "INVALID_ARGUMENT"},
    ),
    (
        "descriptor-unknown-handle",
        "GetFlightInfo",
        descriptor_bytes(cmd=pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=b"nope"))),
        {"NOT_FOUND"},
    ),
    ("schema-path", "GetSchema", descriptor_bytes(path=["events"]), {"UNIMPLEMENTED"}),
    ("schema-undecodable", "GetSchema", descriptor_bytes(cmd=b"\xff\xff"), {"INVALID_ARGUMENT"}),
    (
        "schema-unknown-handle",
        "GetSchema",
        descriptor_bytes(cmd=pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=b"nope"))),
        {"NOT_FOUND"},
    ),
    ("put-path", "DoPut", [flight_data_bytes(descriptor_bytes(path=["events"]))], {"UNIMPLEMENTED"}),
    (
        "put-undecodable",
        "DoPut",
        [flight_data_bytes(descriptor_bytes(cmd=b"\xff\xff"))],
        {"INVALID_ARGUMENT"},
    ),
    (
        "put-update",
        "DoPut",
        [
            flight_data_bytes(
                descriptor_bytes(cmd=pack(pb.CommandStatementUpdate(query="DELETE FROM events")))
            )
        ],
        {"UNIMPLEMENTED"},
    ),
    (
        "put-unknown-handle",
        "DoPut",
        [
            flight_data_bytes(
                descriptor_bytes(
                    cmd=pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=b"nope"))
                )
            )
        ],
        {"NOT_FOUND"},
    ),
    (
        "exchange",
        "DoExchange",
        [flight_data_bytes(descriptor_bytes(cmd=pack(pb.CommandGetCatalogs())))],
        {"UNIMPLEMENTED"},
    ),
    ("list-flights", "ListFlights", b"", {"UNIMPLEMENTED"}),
    (
        "poll-flight-info",
        "PollFlightInfo",
        descriptor_bytes(cmd=pack(pb.CommandGetCatalogs())),
        {"UNIMPLEMENTED"},
    ),
    ("action-unknown", "DoAction", action_bytes("DropEverything"), {"UNIMPLEMENTED"}),
    (
        "action-create-undecodable",
        "DoAction",
        action_bytes("CreatePreparedStatement", b"\xff\xff"),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-create-wrong-type",
        "DoAction",
        action_bytes("CreatePreparedStatement", pack(pb.CommandGetCatalogs())),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-create-bad-sql",
        "DoAction",
        action_bytes(
            "CreatePreparedStatement", pack(pb.ActionCreatePreparedStatementRequest(query="SELEC 1"))
        ),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-create-transaction",
        "DoAction",
        action_bytes(
            "CreatePreparedStatement",
            pack(pb.ActionCreatePreparedStatementRequest(query="SELECT 1", transaction_id=b"t")),
        ),
        {"UNIMPLEMENTED"},
    ),
    (
        "action-close-undecodable",
        "DoAction",
        action_bytes("ClosePreparedStatement", b"\xff\xff"),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-close-wrong-type",
        "DoAction",
        action_bytes("ClosePreparedStatement", pack(pb.CommandGetCatalogs())),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-cancel-undecodable",
        "DoAction",
        action_bytes("CancelFlightInfo", b"\x0a\x03abc"),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-cancel-query-wrong-type",
        "DoAction",
        action_bytes("CancelQuery", pack(pb.CommandGetCatalogs())),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-cancel-query-bad-info",
        "DoAction",
        action_bytes("CancelQuery", pack(pb.ActionCancelQueryRequest(info=b"garbage"))),
        {"INVALID_ARGUMENT"},
    ),
    (
        "action-begin-transaction",
        "DoAction",
        action_bytes("BeginTransaction", pack(pb.ActionBeginTransactionRequest())),
        {"UNIMPLEMENTED"},
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "codes"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE]
)
def test_garbage_requests(raw: RawGrpc, method: str, request_: bytes | list[bytes], codes: set[str]) -> None:
    code, details = raw.status(method, request_)
    assert code in codes, (code, details)
    assert_clean_message(details)


def test_random_bytes_everywhere(raw: RawGrpc) -> None:
    rng = random.Random(20250101)
    for _ in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        for method, request_ in (
            ("DoGet", ticket_bytes(blob)),
            ("GetFlightInfo", descriptor_bytes(cmd=blob)),
            ("GetSchema", descriptor_bytes(cmd=blob)),
            ("DoAction", action_bytes("CreatePreparedStatement", blob)),
            ("DoAction", action_bytes("ClosePreparedStatement", blob)),
            ("DoAction", action_bytes("CancelFlightInfo", blob)),
        ):
            code, details = raw.status(method, request_)
            assert code in {"INVALID_ARGUMENT", "UNIMPLEMENTED", "NOT_FOUND", "OK"}, (
                method,
                blob,
                code,
                details,
            )
            assert_clean_message(details)


def test_internal_error_has_query_id_in_log(
    conn: Any, server: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """An unexpected failure is INTERNAL with a query id the server log also has, and no details."""

    class BrokenPlanner:
        def plan(self, statement: Any) -> Any:
            raise RuntimeError("secret internals: /srv/private/path")

    monkeypatch.setattr(server.app.executor, "planner", BrokenPlanner())
    err = adbc_error(conn, "SELECT 'internal-error-probe' AS x")
    monkeypatch.undo()
    assert adbc_status(err) == "INTERNAL"
    text = str(err)
    assert "secret internals" not in text and "/srv/private" not in text
    m = re.search(r"query id ([0-9a-f]{32})", text)
    assert m, text
    logged = capfd.readouterr()
    assert m.group(1) in logged.out + logged.err
