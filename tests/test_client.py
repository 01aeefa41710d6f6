"""tierflight_client against a live in-process server (and its error parsing, unit by unit)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import tierflight_client
from conftest import RunningServer, load_demo, make_config, self_signed_cert, start_in_process
from tierflight.protocol.auth import hash_password
from tierflight_client import errors as E

ROLLUP_SQL = "SELECT day, sum(bid_price) AS revenue FROM events WHERE type = 'impression' GROUP BY day ORDER BY day"
TOKEN = "client-test-token-" + "y" * 24


@pytest.fixture()
def client(server: RunningServer) -> Iterator[tierflight_client.Connection]:
    with tierflight_client.connect(server.uri, timeout=60) as c:
        yield c


# -- statements ----------------------------------------------------------------------------------


def test_query_returns_arrow_and_route(client: tierflight_client.Connection, flat: Any) -> None:
    table = client.query(ROLLUP_SQL)
    assert isinstance(table, pa.Table)
    expected = flat.execute(ROLLUP_SQL).fetchall()
    assert table.num_rows == len(expected)
    assert [r["revenue"] for r in table.to_pylist()] == pytest.approx([r[1] for r in expected])
    assert client.last_route is not None
    assert client.last_route["tier"] == "hot"
    assert client.last_route["rollup"] == "day_type"


def test_query_with_params(client: tierflight_client.Connection) -> None:
    table = client.query("SELECT CAST(? AS INTEGER) + 1 AS answer, ? AS label", [41, "x"])
    assert table.to_pylist() == [{"answer": 42, "label": "x"}]


def test_empty_result_keeps_schema(client: tierflight_client.Connection) -> None:
    table = client.query("SELECT type, advertiser_id FROM events WHERE advertiser_id < 0")
    assert table.num_rows == 0
    assert table.schema.names == ["type", "advertiser_id"]


def test_query_polars_and_pandas(client: tierflight_client.Connection) -> None:
    import pandas as pd
    import polars as pl

    sql = "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type"
    frame = client.query_polars(sql)
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == ["type", "n"]
    assert frame["type"].to_list() == ["click", "impression", "purchase", "serve"]
    pdf = client.query_pandas(sql)
    assert isinstance(pdf, pd.DataFrame)
    assert list(pdf["type"]) == ["click", "impression", "purchase", "serve"]


def test_query_pandas_without_pandas(client: tierflight_client.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    with pytest.raises(ImportError, match=r"query_pandas needs pandas.*tierflight-client\[pandas\]"):
        client.query_pandas("SELECT 1")


def test_query_polars_without_polars(client: tierflight_client.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    # polars is an extra of tierflight-client, not a dependency.
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(ImportError, match=r"query_polars needs polars.*tierflight-client\[polars\]"):
        client.query_polars("SELECT 1")


def test_explain(client: tierflight_client.Connection) -> None:
    table = client.explain(ROLLUP_SQL)
    assert {"tier", "source", "estimated_rows", "reason"} <= set(table.schema.names)
    first = table.to_pylist()[0]
    assert first["tier"] == "hot"
    assert "day_type" in first["source"]


def test_route(client: tierflight_client.Connection) -> None:
    route = client.route(ROLLUP_SQL)
    assert route["tier"] == "hot" and route["rollup"] == "day_type"
    assert route["parts"] and route["parts"][0]["source"] == "rollup:day_type"
    # A raw drill-down no rollup can answer reads the partitions of the warm tier (October).
    raw = client.route("SELECT ts, auction_id FROM events WHERE day = DATE '2024-10-15' ORDER BY ts LIMIT 3")
    assert raw["tier"] == "warm"
    assert raw["rollup"] is None
    assert client.last_route == raw


def test_tables(client: tierflight_client.Connection) -> None:
    names = client.tables()
    assert "events" in names
    assert {"system.rollups", "system.partitions", "system.queries"} <= set(names)
    # Every listed name is queryable as written.
    for name in names:
        assert client.query(f"SELECT * FROM {name} LIMIT 0").num_rows == 0


def test_dbapi_and_close(server: RunningServer) -> None:
    conn = tierflight_client.connect(server.uri)
    with conn.dbapi.cursor() as cur:
        cur.execute("SELECT 7 AS seven")
        assert cur.fetchall() == [(7,)]
    conn.close()
    conn.close()  # idempotent
    assert "closed" in repr(conn)


@pytest.fixture()
def ingest_server(tmp_path: Path) -> Iterator[RunningServer]:
    # A data dir of its own: the session data must stay what the differential oracles expect.
    import datetime as dt


    cfg = make_config(tmp_path)
    load_demo(cfg, 2_000, dt.date(2024, 12, 20), 10, 5)
    running = start_in_process(make_config(tmp_path))
    yield running
    running.server.shutdown()
    running.app.close()


def test_ingest(ingest_server: RunningServer) -> None:
    import polars as pl

    count = "SELECT count(*) AS n FROM events WHERE day = DATE '2024-12-28'"
    with tierflight_client.connect(ingest_server.uri) as conn:
        before = conn.query(count).column("n")[0].as_py()
        rows = conn.query(
            "SELECT * EXCLUDE (day, week, hour, minute) FROM events WHERE day = DATE '2024-12-28' ORDER BY ts LIMIT 3"
        )
        try:
            acknowledged = conn.ingest("events", rows)
        except E.Unimplemented:
            pytest.xfail("server ingest not implemented")
        assert acknowledged == 3
        assert conn.ingest("events", pl.from_arrow(rows)) == 3
        assert conn.ingest("events", rows.slice(0, 0)) == 0
        assert conn.query(count).column("n")[0].as_py() == before + 6
        assert conn.last_route is not None and conn.last_route["tier"] == "hot"  # the rollup sees them too


# -- errors --------------------------------------------------------------------------------------


def _assert_clean(err: E.TierflightClientError) -> None:
    for noise in ("[FlightSQL]", "Detail:", "Traceback", "; Prepare)", "Python exception"):
        assert noise not in err.message, err.message
    assert str(err).startswith(f"{err.code}: ")
    assert isinstance(err.__cause__, adbc_driver_manager.Error)


def test_invalid_sql(client: tierflight_client.Connection) -> None:
    with pytest.raises(E.InvalidArgument) as err:
        client.query("SELEC 1")
    assert err.value.code == "INVALID_ARGUMENT"
    assert "line 1, column" in err.value.message
    _assert_clean(err.value)


def test_unknown_table(client: tierflight_client.Connection) -> None:
    with pytest.raises(E.NotFound) as err:
        client.query("SELECT * FROM no_such_table")
    assert "no_such_table" in err.value.message
    _assert_clean(err.value)


def test_refused_statement(client: tierflight_client.Connection) -> None:
    with pytest.raises(E.PermissionDenied) as err:
        client.query("DELETE FROM events")
    assert "read-only" in err.value.message
    _assert_clean(err.value)


def test_unreachable_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with tierflight_client.connect(f"grpc://127.0.0.1:{port}", timeout=5) as conn, pytest.raises(E.Unavailable) as err:
            conn.query("SELECT 1")
    assert "connection refused" in err.value.message
    assert isinstance(err.value, E.TierflightClientError)


def test_connect_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        tierflight_client.connect("grpc://127.0.0.1:1", user="a", password="b", token="t")
    with pytest.raises(ValueError, match="go together"):
        tierflight_client.connect("grpc://127.0.0.1:1", user="a")
    with pytest.raises(ValueError, match="positive"):
        tierflight_client.connect("grpc://127.0.0.1:1", timeout=0)
    with pytest.raises(FileNotFoundError):
        tierflight_client.connect("grpc+tls://127.0.0.1:1", tls_root_certs=tmp_path / "missing.pem")


@pytest.fixture(scope="module")
def auth_server(data_dir: Path) -> Iterator[RunningServer]:
    config = make_config(
        data_dir,
        auth={
            "users": {"carol": {"password_hash": hash_password("carol-pw", 1_000), "permissions": ["read"]}},
            "tokens": {TOKEN: "carol"},
        },
    )
    running = start_in_process(config)
    yield running
    running.server.shutdown()
    running.app.close()


def test_auth(auth_server: RunningServer) -> None:
    with tierflight_client.connect(auth_server.uri, user="carol", password="carol-pw") as conn:
        assert conn.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    with tierflight_client.connect(auth_server.uri, token=TOKEN) as conn:
        assert conn.query("SELECT 2 AS two").to_pylist() == [{"two": 2}]
    with (
        pytest.raises(E.Unauthenticated) as err,
        tierflight_client.connect(auth_server.uri, user="carol", password="wrong") as conn,
    ):
        conn.query("SELECT 1")
    assert "wrong" not in str(err.value)
    with pytest.raises(E.Unauthenticated), tierflight_client.connect(auth_server.uri) as conn:
        conn.query("SELECT 1")


# -- error parsing, unit by unit -----------------------------------------------------------------


def test_from_adbc_error_without_trailers() -> None:
    exc = adbc_driver_manager.ProgrammingError(
        "INVALID_ARGUMENT: [FlightSQL] invalid SQL: oops (line 2, column 3). Detail: Python exception: "
        "tierflight.InvalidArgument: invalid SQL: oops (line 2, column 3)\n (InvalidArgument; Prepare)",
        status_code=adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT,
    )
    err = E.from_adbc_error(exc)
    assert type(err) is E.InvalidArgument
    assert err.message == "invalid SQL: oops (line 2, column 3)"


def test_from_adbc_error_connection_and_status_fallback() -> None:
    exc = adbc_driver_manager.OperationalError(
        'IO: [FlightSQL] connection error: desc = "connect: connection refused" (Unavailable; Prepare). Vendor code: 14',
        status_code=adbc_driver_manager.AdbcStatusCode.IO,
    )
    err = E.from_adbc_error(exc)
    assert type(err) is E.Unavailable
    assert err.message == 'connection error: desc = "connect: connection refused"'
    # No gRPC trailer (a driver-side error): the ADBC status decides.
    bare = adbc_driver_manager.ProgrammingError(
        "TIMEOUT: [FlightSQL] took too long", status_code=adbc_driver_manager.AdbcStatusCode.TIMEOUT
    )
    assert type(E.from_adbc_error(bare)) is E.DeadlineExceeded


def test_error_for_code_special_cases() -> None:
    overload = E.error_for_code("Unavailable", "resource exhausted: too many statements in flight")
    assert type(overload) is E.ResourceExhausted and overload.code == "RESOURCE_EXHAUSTED"
    assert type(E.error_for_code("Canceled", "stop")) is E.Cancelled
    internal = E.error_for_code("INTERNAL", "internal error (query id 0123456789abcdef0123456789abcdef)")
    assert type(internal) is E.Internal
    assert internal.query_id == "0123456789abcdef0123456789abcdef"
    assert type(E.error_for_code("SOMETHING_NEW", "x")) is E.Unknown


def test_from_flight_error() -> None:
    err = E.from_flight_error(flight.FlightTimedOutError("statement exceeded the timeout. Detail: Python exception: x"))
    assert type(err) is E.DeadlineExceeded
    assert err.message == "statement exceeded the timeout"
    err = E.from_flight_error(
        flight.FlightUnavailableError("Flight returned unavailable error, with message: failed to connect")
    )
    assert type(err) is E.Unavailable and err.message == "failed to connect"
    assert type(E.from_flight_error(pa.ArrowKeyError("Table with name x does not exist"))) is E.NotFound
    assert type(E.from_flight_error(pa.ArrowInvalid("bad"))) is E.InvalidArgument


# -- the query / explain commands (which use this client) ---------------------------------------


def _cli(*args: str) -> Any:
    """Run the CLI in this process, with the log (the in-process server's too) dropped: it
    would land in the runner's captured stdout, and the CLI's own logging set-up would point
    it at a stream closed once invoke returns."""
    from unittest import mock

    import structlog
    from typer.testing import CliRunner

    from tierflight.cli import app

    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
    try:
        with mock.patch("tierflight.cli.configure_logging"):
            return CliRunner().invoke(app, list(args))
    finally:
        structlog.configure(**saved)


def test_cli_query_table(server: RunningServer) -> None:
    result = _cli("query", "--uri", server.uri, "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["type", "n"]
    assert set(lines[1]) == {"-", " "}
    assert [line.split()[0] for line in lines[2:]] == ["click", "impression", "purchase", "serve"]
    assert "route: hot (rollup " in result.stderr
    assert "4 rows in " in result.stderr


def test_cli_query_formats(server: RunningServer, tmp_path: Path) -> None:
    sql = "SELECT 1 AS a, 'x,y' AS b, DATE '2024-01-02' AS d, NULL AS n, 'nan'::DOUBLE AS f"
    result = _cli("query", "--uri", server.uri, "--format", "json", sql)
    assert result.exit_code == 0, result.output
    assert result.stdout == '{"a": 1, "b": "x,y", "d": "2024-01-02", "n": null, "f": null}\n'
    result = _cli("query", "--uri", server.uri, "--format", "csv", sql)
    assert result.stdout.splitlines()[1].startswith('1,"x,y",2024-01-02,')
    out = tmp_path / "r.arrow"
    result = _cli("query", "--uri", server.uri, "--format", "arrow", "--output", str(out), "SELECT * FROM events LIMIT 7")
    assert result.exit_code == 0 and result.stdout == ""
    assert pa.ipc.open_stream(out.read_bytes()).read_all().num_rows == 7


def test_cli_explain(server: RunningServer) -> None:
    result = _cli("explain", "--uri", server.uri, ROLLUP_SQL)
    assert result.exit_code == 0, result.output
    header, _, first = result.stdout.splitlines()[:3]
    assert header.split()[:4] == ["tier", "source", "estimated_rows", "reason"]
    assert first.split()[:2] == ["hot", "rollup:day_type"]


def test_cli_errors(server: RunningServer) -> None:
    result = _cli("query", "--uri", server.uri, "SELEC 1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: INVALID_ARGUMENT: invalid SQL")
    assert "Traceback" not in result.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"grpc://127.0.0.1:{s.getsockname()[1]}"
        result = _cli("query", "--uri", uri, "SELECT 1")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot reach {uri}: ") and "connection refused" in result.stderr
    result = _cli("query", "--uri", server.uri, "--format", "xml", "SELECT 1")
    assert result.exit_code == 2 and "use one of table, csv, json, arrow" in result.stderr


@pytest.fixture(scope="module")
def tls_server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    running = start_in_process(make_config(data_dir, **{"server.tls_cert": str(cert), "server.tls_key": str(key)}))
    yield f"grpc+tls://localhost:{running.server.port}", cert
    running.server.shutdown()
    running.app.close()


def test_tls(tls_server: tuple[str, Path]) -> None:
    uri, cert = tls_server
    with tierflight_client.connect(uri, tls_root_certs=cert) as conn:
        assert conn.query("SELECT 3 AS three").to_pylist() == [{"three": 3}]
    with tierflight_client.connect(uri, tls_root_certs=cert.read_text()) as conn:  # PEM text works too
        assert conn.route(ROLLUP_SQL)["rollup"] == "day_type"
    with tierflight_client.connect(uri, tls_skip_verify=True) as conn:
        assert conn.query("SELECT 4 AS four").to_pylist() == [{"four": 4}]
    # Without the CA the handshake fails: the certificate is self-signed.
    with tierflight_client.connect(uri) as conn, pytest.raises(E.Unavailable):
        conn.query("SELECT 1")


def test_tls_loadtest(tls_server: tuple[str, Path]) -> None:
    from tierflight.loadtest import LoadTestConfig, parse_workload, run_loadtest

    uri, cert = tls_server
    statements = tuple(parse_workload(f"-- name: rollup\n{ROLLUP_SQL};"))
    config = LoadTestConfig(uri, statements, concurrency=2, processes=1, max_statements=6, tls_root_certs=cert)
    result = run_loadtest(config)
    assert result.figures["summary"]["ok"] == 6, result.figures["errors"]
    assert result.figures["tiers"] == {"hot": 1.0}


def test_cli_tls(tls_server: tuple[str, Path]) -> None:
    uri, cert = tls_server
    result = _cli("query", "--uri", uri, "--tls-root-certs", str(cert), "--format", "csv", "SELECT 5 AS five")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ['"five"', "5"]
