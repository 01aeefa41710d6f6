"""Users cannot reach each other's statements: tickets, cancels and system.queries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import RunningServer, make_config, start_in_process
from flightsql_helpers import cmd_descriptor, flight_status
from tierflight.protocol import flight_actions_pb2 as fa
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.auth import hash_password
from tierflight.protocol.wire import encode_ticket

ITERATIONS = 1_000
USERS = {
    "alice": ["read"],
    "bob": ["read"],
    "loader": ["ingest"],
    "root": ["read", "admin"],
}


@pytest.fixture(scope="module")
def users_server(data_dir: Path) -> Iterator[RunningServer]:
    config = make_config(
        data_dir,
        auth={
            "users": {
                name: {"password_hash": hash_password(f"{name}-pw", ITERATIONS), "permissions": perms}
                for name, perms in USERS.items()
            }
        },
    )
    running = start_in_process(config)
    yield running
    running.server.shutdown()
    running.app.close()


class Session:
    def __init__(self, uri: str, user: str) -> None:
        self.client = flight.connect(uri)
        header = self.client.authenticate_basic_token(user, f"{user}-pw")
        self.options = flight.FlightCallOptions(headers=[header])

    def info(self, sql: str) -> flight.FlightInfo:
        return self.client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query=sql)), self.options)

    def get(self, ticket: bytes) -> pa.Table:
        return self.client.do_get(flight.Ticket(ticket), self.options).read_all()

    def rows(self, sql: str) -> list[dict[str, object]]:
        table = self.get(self.info(sql).endpoints[0].ticket.ticket)
        return table.to_pylist()

    def cancel(self, info: flight.FlightInfo) -> int:
        body = fa.CancelFlightInfoRequest(info=info.serialize()).SerializeToString()
        (result,) = list(self.client.do_action(flight.Action("CancelFlightInfo", body), self.options))
        answer = fa.CancelFlightInfoResult()
        answer.ParseFromString(result.body.to_pybytes())
        return int(answer.status)


@pytest.fixture(scope="module")
def sessions(users_server: RunningServer) -> Iterator[dict[str, Session]]:
    opened = {name: Session(users_server.uri, name) for name in USERS}
    yield opened
    for s in opened.values():
        s.client.close()


def _status(call: object) -> str:
    with pytest.raises(pa.ArrowException) as err:
        call()  # type: ignore[operator]
    return flight_status(err.value)


def test_a_ticket_is_refused_to_another_user(sessions: dict[str, Session]) -> None:
    alice, bob = sessions["alice"], sessions["bob"]
    secret = uuid.uuid4().hex
    ticket = alice.info(f"SELECT '{secret}' AS s").endpoints[0].ticket.ticket
    assert _status(lambda: bob.get(ticket)) == "PERMISSION_DENIED"
    # The refusal took nothing: the owner still gets the rows.
    assert alice.get(ticket).to_pylist() == [{"s": secret}]


def test_forged_tampered_and_expired_tickets_are_refused(
    sessions: dict[str, Session], users_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = sessions["alice"], sessions["bob"]
    info = alice.info("SELECT 42 AS answer")
    ticket = info.endpoints[0].ticket.ticket
    # The statement ticket as it was before signing, naming alice's parked execution.
    assert _status(lambda: bob.get(encode_ticket("0" * 32, "SELECT 42 AS answer"))) == "INVALID_ARGUMENT"
    for i in (5, len(ticket) // 2, len(ticket) - 1):
        altered = bytearray(ticket)
        altered[i] ^= 0x01
        assert _status(lambda a=bytes(altered): alice.get(a)) in {"UNAUTHENTICATED", "INVALID_ARGUMENT"}  # type: ignore[misc]
    tickets = users_server.server.tickets
    monkeypatch.setattr(tickets, "_clock", lambda: time.time() + tickets.ttl_ms / 1000 + 1)
    assert _status(lambda: alice.get(ticket)) == "UNAUTHENTICATED"


def test_without_auth_statement_tickets_are_signed_too(server: RunningServer) -> None:
    with flight.connect(server.uri) as client:
        forged = encode_ticket("", "SELECT 'forged' AS f")
        with pytest.raises(pa.ArrowException) as err:
            client.do_get(flight.Ticket(forged)).read_all()
        assert flight_status(err.value) == "INVALID_ARGUMENT"
        info = client.get_flight_info(cmd_descriptor(pb.CommandStatementQuery(query="SELECT 'real' AS r")))
        assert client.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"r": "real"}]


def test_only_the_owner_or_an_admin_cancels(
    sessions: dict[str, Session], users_server: RunningServer
) -> None:
    alice, bob, loader, root = (sessions[n] for n in ("alice", "bob", "loader", "root"))
    tag = uuid.uuid4().hex
    info = alice.info(f"SELECT '{tag}' AS t")
    for other in (loader, bob):
        assert _status(lambda o=other: o.cancel(info)) == "PERMISSION_DENIED"  # type: ignore[misc]
    assert alice.get(info.endpoints[0].ticket.ticket).to_pylist() == [{"t": tag}]  # still there
    assert alice.cancel(alice.info(f"SELECT '{tag}' AS again")) == fa.CANCEL_STATUS_CANCELLED
    assert root.cancel(bob.info(f"SELECT '{tag}' AS by_root")) == fa.CANCEL_STATUS_CANCELLED


def test_system_queries_shows_a_user_their_own_statements(sessions: dict[str, Session]) -> None:
    alice, bob, root = sessions["alice"], sessions["bob"], sessions["root"]
    secret_a, secret_b = uuid.uuid4().hex, uuid.uuid4().hex
    alice.rows(f"SELECT '{secret_a}' AS s")
    bob.rows(f"SELECT '{secret_b}' AS s")
    view = 'SELECT "user", sql FROM system.queries'
    seen_by_bob = bob.rows(view)
    assert {r["user"] for r in seen_by_bob} == {"bob"}
    assert any(secret_b in str(r["sql"]) for r in seen_by_bob)
    assert not any(secret_a in str(r["sql"]) for r in seen_by_bob)
    seen_by_alice = alice.rows(f"{view} WHERE sql LIKE '%{secret_b}%' OR sql LIKE '%{secret_a}%'")
    assert {r["user"] for r in seen_by_alice} == {"alice"}
    seen_by_root = root.rows(f"{view} WHERE sql LIKE '%{secret_b}%' OR sql LIKE '%{secret_a}%'")
    assert {"alice", "bob"} <= {r["user"] for r in seen_by_root}
    # The schema (GetSchema, GetTables) needs no rows of anyone's.
    schema = bob.client.get_schema(cmd_descriptor(pb.CommandStatementQuery(query=view)), bob.options).schema
    assert schema.names == ["user", "sql"]
