"""Operations: /metrics, /healthz, /readyz, secret-free logs and graceful shutdown."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    CONFIG,
    ROOT,
    RunningServer,
    make_config,
    serve_argv,
    serve_env,
    start_in_process,
)
from flightsql_helpers import adbc_status, wait_for
from tierflight.core.config import load_config
from tierflight.core.errors import ConfigError
from tierflight.launch import launch
from tierflight.protocol.auth import hash_password

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(base: str) -> Samples:
    status, text = http_get(f"{base}/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run(uri: str, sql: str, params: tuple[Any, ...] | None = None, **db_kwargs: str) -> list[tuple[Any, ...]]:
    with fsql.connect(uri, db_kwargs=db_kwargs or None, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, parameters=params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows


# ---------------------------------------------------------------------------
# in-process: metrics and probes
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ops(data_dir: Path) -> Iterator[tuple[RunningServer, str]]:
    # Its own App: its metrics registry counts only this module's statements.
    running = start_in_process(make_config(data_dir))
    port = running.app.start_http()
    assert port
    yield running, f"http://127.0.0.1:{port}"
    running.server.shutdown()
    running.app.close()


def test_metrics_count_statements_by_tier_status_and_rollup(ops: tuple[RunningServer, str]) -> None:
    server, base = ops
    before = scrape(base)
    first = len(server.app.executor.recent)
    run(server.uri, "SELECT country, count(*) FROM events GROUP BY country")  # a rollup answers this
    run(server.uri, "SELECT count(DISTINCT auction_id) FROM events")  # no rollup can
    run(server.uri, "SELECT count(*) FROM events WHERE country = ?", ("DE",))
    with pytest.raises(adbc_driver_manager.Error):
        run(server.uri, "SELECT * FROM no_such_table")
    after = scrape(base)
    records = list(server.app.executor.recent)[first:]
    assert len(records) == 4

    # Every finished statement moved exactly its (tier, status) counter and histogram.
    expected: dict[tuple[str, str], int] = {}
    for r in records:
        expected[(r.tier, r.status)] = expected.get((r.tier, r.status), 0) + 1
    for (tier, status), n in expected.items():
        delta = value(after, "tierflight_statements_total", tier=tier, status=status) - value(
            before, "tierflight_statements_total", tier=tier, status=status
        )
        assert delta == n, (tier, status)
        got = value(after, "tierflight_statement_duration_seconds_count", tier=tier) - value(
            before, "tierflight_statement_duration_seconds_count", tier=tier
        )
        assert got >= n
    assert {r.status for r in records} == {"ok", "not_found"}

    # The GROUP BY country is answered from a rollup (and, bound, the parameterized one may
    # be too); count(DISTINCT auction_id) never is.
    routed = [r for r in records if r.rollup and r.status == "ok"]
    assert routed and all(r.tier == "hot" for r in routed)
    assert any(not r.rollup and r.status == "ok" and r.tier not in ("system", "none") for r in records)
    hits = Counter(name for r in routed for name in (r.rollup or "").split(","))
    for name, n in hits.items():
        delta = value(after, "tierflight_rollup_hits_total", rollup=name) - value(
            before, "tierflight_rollup_hits_total", rollup=name
        )
        assert delta == n, name
    delta = value(after, "tierflight_rollup_statements_total") - value(
        before, "tierflight_rollup_statements_total"
    )
    assert delta == len(routed)
    assert 0 < value(after, "tierflight_rollup_hit_ratio") < 1

    # Scrape-time gauges.
    assert value(after, "tierflight_in_flight_statements") == 0
    assert value(after, "tierflight_partitions", tier="warm") > 0
    assert value(after, "tierflight_partitions", tier="cold") > 0
    assert value(after, "tierflight_hot_memory_bytes") >= sum(
        s.bytes for s in server.app.rollups.states.values() if s.status == "active"
    )
    assert value(after, "tierflight_joined_rollup_rows") == server.app.executor.joined.rows
    # The data ends 2024-11-29 and [tiers] now is pinned to 2025-01-01: about a month stale.
    freshness = value(after, "tierflight_rollup_freshness_seconds", rollup=next(iter(hits)))
    assert 20 * 86400 < freshness < 40 * 86400


def test_ingest_hooks_and_histogram_buckets(ops: tuple[RunningServer, str]) -> None:
    server, base = ops
    # The duration histogram is labelled (tier, rollup, status): a series exists from the
    # first statement on, whichever test ran first.
    assert run(server.uri, "SELECT 1") == [(1,)]
    before = scrape(base)
    server.app.metrics.record_ingest(1234)
    server.app.metrics.set_wal_bytes(4096)
    after = scrape(base)
    assert (
        value(after, "tierflight_ingest_rows_total") - value(before, "tierflight_ingest_rows_total") == 1234
    )
    assert value(after, "tierflight_wal_bytes") == 4096
    buckets = {
        dict(labels)["le"] for (n, labels) in after if n == "tierflight_statement_duration_seconds_bucket"
    }
    assert {"0.0005", "30.0", "+Inf"} <= buckets


def test_garbage_collections_are_timed_by_generation(ops: tuple[RunningServer, str]) -> None:
    import gc

    _, base = ops
    before = scrape(base)
    gc.collect()  # a full collection: generation 2
    gc.collect(0)
    after = scrape(base)
    for generation in ("0", "2"):
        name = "tierflight_gc_pause_seconds_count"
        assert value(after, name, generation=generation) >= value(before, name, generation=generation) + 1
    assert value(after, "tierflight_gc_pause_seconds_sum", generation="2") > value(
        before, "tierflight_gc_pause_seconds_sum", generation="2"
    )


def test_a_closed_metrics_stops_timing_collections() -> None:
    import gc

    from tierflight.observability.metrics import Metrics

    metrics = Metrics([])
    hooked = len(gc.callbacks)
    gc.collect()
    assert metrics.gc_pauses.labels("2")._sum.get() > 0
    metrics.close()
    assert len(gc.callbacks) == hooked - 1
    metrics.close()  # twice is harmless
    assert len(gc.callbacks) == hooked - 1


def test_healthz_and_unknown_path(ops: tuple[RunningServer, str]) -> None:
    _, base = ops
    assert http_get(f"{base}/healthz") == (200, "ok\n")
    assert http_get(f"{base}/nope")[0] == 404


def test_readyz_ready(ops: tuple[RunningServer, str]) -> None:
    server, base = ops
    status, body = http_get(f"{base}/readyz")
    assert status == 200, body
    report = json.loads(body)
    assert report["status"] == "ready" and report["reasons"] == []
    assert report["checks"]["catalog"] == {"events": "ok"}
    assert set(report["checks"]["rollups"]) == {"active"}
    # The Flight healthcheck action answers the same report.
    client = flight.FlightClient(server.uri)
    (result,) = list(client.do_action(flight.Action("healthcheck", b"")))
    assert json.loads(result.body.to_pybytes())["status"] == "ready"
    client.close()


class _BrokenCatalog:
    def table_exists(self, identifier: str) -> bool:
        raise ConnectionError("connection refused (simulated)")


def test_readyz_503_when_catalog_unreachable(
    ops: tuple[RunningServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, base = ops
    monkeypatch.setattr(server.app.stores["events"].cold, "_catalog", _BrokenCatalog())
    status, body = http_get(f"{base}/readyz")
    assert status == 503
    report = json.loads(body)
    assert report["status"] == "not_ready"
    assert any("Iceberg catalog unreachable" in r and "connection refused" in r for r in report["reasons"])
    assert server.app.health()["status"] == "not_ready"
    # Liveness does not depend on the catalog.
    assert http_get(f"{base}/healthz")[0] == 200


def test_readyz_503_while_draining(ops: tuple[RunningServer, str], monkeypatch: pytest.MonkeyPatch) -> None:
    server, base = ops
    monkeypatch.setattr(server.app, "draining", True)
    status, body = http_get(f"{base}/readyz")
    assert status == 503 and "shutting down" in body


@pytest.mark.parametrize(("raw", "port"), [("off", -1), (-1, -1), (False, -1), (0, 0), ("9999", 9999)])
def test_metrics_port_setting(tmp_path: Path, raw: Any, port: int) -> None:
    cfg = load_config(CONFIG, data_dir=tmp_path, environ={}, overrides={"metrics.port": raw})
    assert cfg.metrics.port == port
    assert cfg.metrics.enabled == (port >= 0)


def test_metrics_port_and_grace_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        load_config(CONFIG, data_dir=tmp_path, environ={}, overrides={"metrics.port": "nine"})
    cfg = load_config(CONFIG, data_dir=tmp_path, environ={"TIERFLIGHT_SERVER__SHUTDOWN_GRACE": "3s"})
    assert cfg.server.shutdown_grace.total_seconds() == 3


# ---------------------------------------------------------------------------
# subprocess: logs and graceful shutdown
# ---------------------------------------------------------------------------


class Proc:
    def __init__(self, proc: subprocess.Popen[str], uri: str, log_path: Path) -> None:
        self.proc = proc
        self.uri = uri
        self.log_path = log_path

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def event(self, name: str) -> dict[str, Any]:
        for e in self.events():
            if e.get("event") == name:
                return e
        raise AssertionError(f"no {name!r} event in the log")

    def metrics_base(self) -> str:
        return f"http://127.0.0.1:{self.event('metrics_listening')['port']}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start(data_dir: Path, tmp_path: Path, env: dict[str, str]) -> Proc:
    log_path = tmp_path / "server.log"
    # A server that never gets ready must not hang the suite: launch gives up after 60 s.
    server = launch(serve_argv(data_dir), env=serve_env(**env), cwd=ROOT, log_path=log_path, timeout=60)
    return Proc(server.proc, server.uri, log_path)


def sigterm_and_wait(p: Proc, timeout: float) -> float:
    started = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    try:
        p.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        p.stop()
        pytest.fail(f"tierflight serve did not exit within {timeout} s of SIGTERM")
    return time.monotonic() - started


PASSWORD = "pw-SECRET-1f3a"
WRONG_PASSWORD = "wrong-SECRET-77c2"
PARAM = "param-SECRET-9b0e"


@pytest.mark.subprocess
def test_logs_hold_no_secrets_and_idle_sigterm_exits_0(data_dir: Path, tmp_path: Path) -> None:
    users = f"alice:{hash_password(PASSWORD, 1000)}:read"
    p = start(data_dir, tmp_path, {"TIERFLIGHT_USERS": users})
    try:
        rows = run(
            p.uri,
            "SELECT count(*) FROM events WHERE country = ?",
            (PARAM,),
            username="alice",
            password=PASSWORD,
        )
        assert rows == [(0,)]
        with pytest.raises(adbc_driver_manager.Error):  # refused, with the parameter in the error
            run(p.uri, "SELECT CAST(? AS INTEGER)", (PARAM,), username="alice", password=PASSWORD)
        with pytest.raises(adbc_driver_manager.Error) as err:
            run(p.uri, "SELECT 1", username="alice", password=WRONG_PASSWORD)
        assert adbc_status(err.value) == "UNAUTHENTICATED"
        status, text = http_get(f"{p.metrics_base()}/metrics")
        assert status == 200 and "tierflight_statements_total" in text
        assert sigterm_and_wait(p, 10) < 10
    finally:
        p.stop()
    assert p.proc.returncode == 0

    log = p.log_path.read_text()
    for secret in (PASSWORD, WRONG_PASSWORD, PARAM):
        assert secret not in log
    statements = [e for e in p.events() if e.get("event") == "statement"]
    assert statements and all(re.fullmatch(r"[0-9a-f]{16}", e["statement_hash"]) for e in statements)
    assert all("sql" not in e and "params" not in e for e in statements)
    assert {e["user"] for e in statements} == {"alice"}
    starting = p.event("starting")
    assert starting["data_dir"] == str(data_dir) and starting["tables"] == ["events"]
    assert starting["config"] == str(CONFIG)
    # The failed login is logged (by name), so operators can see it.
    assert any("alice" in str(e.get("event")) and "failed" in str(e.get("event")) for e in p.events())
    for name in ("ready", "shutdown", "shutdown_drained", "stopped"):
        p.event(name)


@pytest.mark.subprocess
def test_sigterm_cancels_a_long_statement_after_the_grace(data_dir: Path, tmp_path: Path) -> None:
    grace = 2.0
    p = start(data_dir, tmp_path, {"TIERFLIGHT_SERVER__SHUTDOWN_GRACE": f"{grace:g}s"})
    errors: list[BaseException] = []

    def long_query() -> None:
        try:
            # Minutes of work for DuckDB (count(*) of a bare range() is answered from its size).
            run(p.uri, "SELECT count(*) FROM range(100000000000) WHERE range % 7 = 3")
        except BaseException as exc:
            errors.append(exc)

    client = threading.Thread(target=long_query, daemon=True)
    try:
        base = p.metrics_base()
        client.start()
        assert wait_for(lambda: value(scrape(base), "tierflight_in_flight_statements") == 1, timeout=10)
        p.proc.send_signal(signal.SIGTERM)
        # Draining: load balancers are told at once, while the statement still runs.
        assert wait_for(lambda: http_get(f"{base}/readyz")[0] == 503, timeout=grace / 2)
        started = time.monotonic()
        p.proc.wait(grace + 8)
        elapsed = time.monotonic() - started
    except subprocess.TimeoutExpired:
        pytest.fail("tierflight serve did not exit after the grace period")
    finally:
        p.stop()
    client.join(10)
    assert p.proc.returncode == 0
    assert grace * 0.5 < elapsed < grace + 8
    assert len(errors) == 1 and isinstance(errors[0], adbc_driver_manager.Error)
    assert adbc_status(errors[0]) in ("CANCELLED", "CANCELED")  # the Go driver spells it CANCELED
    p.event("shutdown_cancelling")
    assert p.event("shutdown")["in_flight"] == 1
