"""`tierflight serve` as a separate process: the ready line, a query, a clean SIGTERM exit."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import adbc_driver_flightsql.dbapi as fsql
import pytest

from conftest import ROOT, serve_argv, serve_env
from tierflight.launch import launch

pytestmark = pytest.mark.subprocess


def test_serve_ready_line_query_and_sigterm(data_dir: Path) -> None:
    server = launch(serve_argv(data_dir), env=serve_env({"PATH": "/usr/bin:/bin"}), cwd=ROOT, stderr=subprocess.PIPE)
    proc = server.proc
    try:
        assert server.before == [], "the ready line must be the first thing on stdout"
        assert re.fullmatch(r"tierflight ready at grpc://127\.0\.0\.1:(\d+)\n", server.ready_line), server.ready_line
        port = server.port
        assert port > 0
        with fsql.connect(f"grpc://127.0.0.1:{port}", autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n, count(DISTINCT type) AS types FROM events")
            n, types = cur.fetchone()
        assert n > 0
        assert types == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("tierflight serve did not exit within 30 s of SIGTERM")
    assert proc.returncode == 0, err[-3000:]
    assert out == "", "the ready line must be the only thing on stdout"
    assert "Traceback" not in err
