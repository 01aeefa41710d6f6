"""The shared `tierflight serve` launcher, on stand-in processes (a real server: test_serve_subprocess)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from tierflight.launch import READY_RE, launch

pytestmark = pytest.mark.subprocess


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.parametrize(
    ("line", "uri", "host", "port"),
    [
        ("tierflight ready at grpc://127.0.0.1:31337\n", "grpc://127.0.0.1:31337", "127.0.0.1", 31337),
        ("tierflight ready at grpc+tls://0.0.0.0:5 (2 workers)\n", "grpc+tls://0.0.0.0:5", "0.0.0.0", 5),
        ("tierflight ready at grpc://[::1]:4000\n", "grpc://[::1]:4000", "[::1]", 4000),
    ],
)
def test_the_ready_line_as_serve_and_serve_workers_print_it(line: str, uri: str, host: str, port: int) -> None:
    m = READY_RE.search(line)
    assert m is not None and (m["uri"], m["host"], int(m["port"])) == (uri, host, port)


def test_ready_then_stop() -> None:
    code = "import sys, time; print('starting'); print('tierflight ready at grpc://0.0.0.0:4321', flush=True); time.sleep(60)"
    server = launch(_python(code), timeout=30)
    try:
        assert (server.uri, server.host, server.port) == ("grpc://0.0.0.0:4321", "0.0.0.0", 4321)
        assert server.local_uri == "grpc://127.0.0.1:4321"
        assert server.before == ["starting\n"]
        assert server.proc.poll() is None
    finally:
        code_at_exit = server.stop(timeout=5)
    assert code_at_exit is not None and code_at_exit != 0  # terminated


def test_a_process_that_exits_first_is_reported_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exit code 3.*no config here"):
        launch(_python("print('no config here', flush=True); raise SystemExit(3)"), timeout=30)
    assert time.monotonic() - started < 10


def test_a_silent_process_is_killed_after_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    code = "import sys, time; print('still loading', file=sys.stderr, flush=True); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"within 1 s(.|\n)*still loading"):
        launch(_python(code), log_path=log, timeout=1)
    assert time.monotonic() - started < 10


def test_the_rest_of_stdout_is_the_callers_unless_drained() -> None:
    code = "print('tierflight ready at grpc://127.0.0.1:1', flush=True); print('after')"
    server = launch(_python(code), timeout=30)
    out, _ = server.proc.communicate(timeout=10)
    assert out == "after\n"
    # Far more than a pipe holds: without the drain the process would block writing it.
    chatty = "print('tierflight ready at grpc://127.0.0.1:1', flush=True); print('x' * (4 << 20))"
    drained = launch(_python(chatty), timeout=30, drain=True)
    assert drained.proc.wait(10) == 0


def test_stop_kills_a_process_that_ignores_sigterm() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('tierflight ready at grpc://127.0.0.1:2', flush=True); time.sleep(60)"
    )
    server = launch(_python(code), timeout=30)
    assert server.stop(timeout=1) == -signal.SIGKILL
