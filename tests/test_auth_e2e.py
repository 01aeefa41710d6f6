"""Authentication end to end: ADBC and pyarrow.flight against a server with users and tokens."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import (
    ROOT,
    RunningServer,
    make_config,
    serve_argv,
    serve_env,
    start_in_process,
)
from flightsql_helpers import adbc_status, assert_clean_message, cmd_descriptor, flight_status, read_all
from tierflight.launch import launch
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.auth import hash_password

# Few iterations: the hash format is what matters here, not its cost.
ITERATIONS = 1_000
STATIC_TOKEN = "static-token-" + "x" * 24


@pytest.fixture(scope="module")
def auth_server(data_dir: Path) -> Iterator[RunningServer]:
    config = make_config(
        data_dir,
        auth={
            "users": {
                "alice": {"password_hash": hash_password("alice-pw", ITERATIONS), "permissions": ["read"]},
                "loader": {
                    "password_hash": hash_password("loader-pw", ITERATIONS),
                    "permissions": ["ingest"],
                },
                "bot": {"permissions": ["read"]},
            },
            "tokens": {STATIC_TOKEN: "bot"},
        },
    )
    running = start_in_process(config)
    yield running
    running.server.shutdown()
    running.app.close()


def query(uri: str, sql: str, **db_kwargs: str) -> list[tuple[Any, ...]]:
    with fsql.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows


def test_basic_auth_with_adbc(auth_server: RunningServer) -> None:
    tag = uuid.uuid4().hex
    rows = query(
        auth_server.uri, f"SELECT '{tag}' AS tag, count(*) FROM events", username="alice", password="alice-pw"
    )
    assert rows[0][0] == tag and rows[0][1] > 0
    users = {r.user for r in list(auth_server.app.executor.recent) if tag in r.sql}
    assert users == {"alice"}


def test_wrong_password(auth_server: RunningServer) -> None:
    with pytest.raises(adbc_driver_manager.Error) as err:
        query(auth_server.uri, "SELECT 1", username="alice", password="wrong")
    assert adbc_status(err.value) == "UNAUTHENTICATED"
    assert "wrong" not in str(err.value)
    assert_clean_message(str(err.value))


def test_unknown_user(auth_server: RunningServer) -> None:
    with pytest.raises(adbc_driver_manager.Error) as err:
        query(auth_server.uri, "SELECT 1", username="mallory", password="alice-pw")
    assert adbc_status(err.value) == "UNAUTHENTICATED"


def test_no_credentials(auth_server: RunningServer) -> None:
    with pytest.raises(adbc_driver_manager.Error) as err:
        query(auth_server.uri, "SELECT 1")
    assert adbc_status(err.value) == "UNAUTHENTICATED"
    assert_clean_message(str(err.value))


def test_static_token(auth_server: RunningServer) -> None:
    header = {"adbc.flight.sql.authorization_header": f"Bearer {STATIC_TOKEN}"}
    assert query(auth_server.uri, "SELECT 42", **header) == [(42,)]


def test_bad_token(auth_server: RunningServer) -> None:
    header = {"adbc.flight.sql.authorization_header": "Bearer not-a-valid-token-at-all"}
    with pytest.raises(adbc_driver_manager.Error) as err:
        query(auth_server.uri, "SELECT 42", **header)
    assert adbc_status(err.value) == "UNAUTHENTICATED"


def test_missing_permission(auth_server: RunningServer) -> None:
    with pytest.raises(adbc_driver_manager.Error) as err:
        query(auth_server.uri, "SELECT 1", username="loader", password="loader-pw")
    assert adbc_status(err.value) == "PERMISSION_DENIED"
    assert "read" in str(err.value)


def test_pyarrow_basic_then_bearer(auth_server: RunningServer) -> None:
    with flight.connect(auth_server.uri) as client:
        name, value = client.authenticate_basic_token("alice", "alice-pw")
        assert value.startswith(b"Bearer ")
        options = flight.FlightCallOptions(headers=[(name, value)])
        descriptor = cmd_descriptor(pb.CommandStatementQuery(query="SELECT 7 AS seven"))
        info = client.get_flight_info(descriptor, options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        assert table.to_pylist() == [{"seven": 7}]
        # Without the header every Flight SQL call is refused, metadata included.
        for call in (
            lambda: client.get_flight_info(descriptor),
            lambda: read_all(client, client.get_flight_info(cmd_descriptor(pb.CommandGetTables()))),
            lambda: client.do_get(info.endpoints[0].ticket).read_all(),
            lambda: list(client.do_action(flight.Action("CreatePreparedStatement", b""))),
        ):
            with pytest.raises(pa.ArrowException) as err:
                call()
            assert flight_status(err.value) == "UNAUTHENTICATED"


# -- binding beyond loopback ---------------------------------------------------------------------------


def _serve(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        serve_argv(data_dir, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=serve_env({"PATH": "/usr/bin:/bin"}),
        cwd=ROOT,
    )


@pytest.mark.subprocess
def test_refuses_public_bind_without_auth(data_dir: Path) -> None:
    proc = _serve(data_dir, "--host", "0.0.0.0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "tierflight ready" not in out
    assert "refusing to serve on 0.0.0.0 without authentication" in err
    assert "--insecure" in err
    assert "Traceback" not in err


@pytest.mark.subprocess
def test_public_bind_with_insecure(data_dir: Path) -> None:
    server = launch(
        serve_argv(data_dir, "--host", "0.0.0.0", "--insecure"),
        env=serve_env({"PATH": "/usr/bin:/bin"}),
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    proc = server.proc
    try:
        assert server.ready_line.startswith("tierflight ready at grpc://0.0.0.0:"), server.ready_line
        assert server.local_uri == f"grpc://127.0.0.1:{server.port}"
        assert query(server.local_uri, "SELECT 1") == [(1,)]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-3000:]


def test_credentials_sent_to_a_server_without_auth_are_refused_clearly(server: RunningServer) -> None:
    """With no users configured there is nothing to authenticate against: a client that sends a
    user name and password is told so (and the server keeps serving those who do not)."""
    with pytest.raises(adbc_driver_manager.Error) as err:
        query(server.uri, "SELECT 1", username="alice", password="alice-pw")
    assert adbc_status(err.value) == "UNIMPLEMENTED"
    assert "authentication mechanism" in str(err.value)
    client = flight.connect(server.uri)
    with pytest.raises(NotImplementedError, match="authentication mechanism"):  # pyarrow's UNIMPLEMENTED
        client.authenticate_basic_token("alice", "alice-pw")
    assert query(server.uri, "SELECT 1") == [(1,)]
