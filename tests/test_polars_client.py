"""Polars over ADBC: read_database on a connection, and read_database_uri.

``pl.read_database_uri(query, uri, engine="adbc")`` picks the ADBC driver from the URI scheme, so
the URI must start with ``flightsql://``, and the Go driver treats that scheme as TLS. The URI
test therefore runs against a TLS server, with the client in a subprocess whose SSL_CERT_FILE
trusts the test certificate (Go reads it when the driver loads).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from conftest import RunningServer, make_config, self_signed_cert, start_in_process

QUERY = (
    "SELECT type, count(*) AS n, round(avg(bid_price), 6) AS avg_bid FROM events GROUP BY type ORDER BY type"
)


def _oracle(flat: Any) -> list[dict[str, Any]]:
    return [{"type": t, "n": n, "avg_bid": a} for t, n, a in flat.execute(QUERY).fetchall()]


def test_read_database_on_adbc_connection(conn: Any, flat: Any) -> None:
    frame = pl.read_database(QUERY, connection=conn)
    assert frame.schema == {"type": pl.String, "n": pl.Int64, "avg_bid": pl.Float64}
    assert frame.to_dicts() == _oracle(flat)


def test_read_database_with_parameters(conn: Any, flat: Any) -> None:
    sql = "SELECT day, count(*) AS n FROM events WHERE type = ? GROUP BY day ORDER BY day"
    frame = pl.read_database(sql, connection=conn, execute_options={"parameters": ("click",)})
    expected = flat.execute(sql, ["click"]).fetchall()
    assert frame.schema == {"day": pl.Date, "n": pl.Int64}
    assert frame.rows() == expected


def test_read_database_events_types(conn: Any) -> None:
    frame = pl.read_database("SELECT ts, type, day, hour FROM events LIMIT 10", connection=conn)
    assert frame.schema == {
        "ts": pl.Datetime("us"),
        "type": pl.String,
        "day": pl.Date,
        "hour": pl.Datetime("us"),
    }


@pytest.fixture(scope="module")
def tls_server(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    config = make_config(data_dir, **{"server.tls_cert": str(cert), "server.tls_key": str(key)})
    running = start_in_process(config)
    yield running, cert
    running.server.shutdown()
    running.app.close()


CLIENT = """
import json, sys
import polars as pl
frame = pl.read_database_uri(sys.argv[2], sys.argv[1], engine="adbc")
print(json.dumps({"schema": {k: str(v) for k, v in frame.schema.items()}, "rows": frame.to_dicts()}))
"""


@pytest.mark.subprocess
def test_read_database_uri(tls_server: tuple[RunningServer, Path], flat: Any) -> None:
    running, cert = tls_server
    uri = f"flightsql://localhost:{running.server.port}"
    env = {**os.environ, "SSL_CERT_FILE": str(cert)}
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, uri, QUERY], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["schema"] == {"type": "String", "n": "Int64", "avg_bid": "Float64"}
    assert out["rows"] == _oracle(flat)
