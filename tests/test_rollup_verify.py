"""Rollup verification: sampled groups recomputed from the raw tiers and compared."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from conftest import CONFIG, RunningServer, make_config, serve_env, tierflight_cmd
from tierflight.core.errors import ConfigError
from tierflight.rollups.definition import Measure, StorageGroup
from tierflight.rollups.sketches import sketch_of
from tierflight.rollups.verify import VerifyResult, compare, registers, sample_sql

# -- pure pieces (fast lane) -----------------------------------------------------------------


def test_a_sample_is_whole_groups_whatever_side_computes_the_key() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE raw AS SELECT TIMESTAMP '2024-01-01' + INTERVAL (i * 7) MINUTE AS ts, i % 5 AS k FROM range(20000) t(i)")
    con.execute("CREATE TABLE rollup AS SELECT CAST(ts AS DATE) AS day, k, count(*) AS n FROM raw GROUP BY ALL")
    pred = sample_sql(["day", "k"], 0.3, salt=11)
    assert pred is not None
    kept = con.sql(f"SELECT day, k, n FROM rollup WHERE {pred} ORDER BY ALL").fetchall()
    raw_pred = sample_sql(["CAST(ts AS DATE)", "k"], 0.3, salt=11)
    recomputed = con.sql(f"SELECT CAST(ts AS DATE) AS day, k, count(*) FROM raw WHERE {raw_pred} GROUP BY ALL ORDER BY ALL").fetchall()
    total = con.sql("SELECT count(*) FROM rollup").fetchall()[0][0]
    assert kept == recomputed  # the same groups, each with all of its rows
    assert 0.15 * total < len(kept) < 0.45 * total
    other = con.sql(f"SELECT count(*) FROM rollup WHERE {sample_sql(['day', 'k'], 0.3, salt=12)}").fetchall()[0][0]
    assert other and con.sql(
        f"SELECT count(*) FROM rollup WHERE {pred} AND {sample_sql(['day', 'k'], 0.3, salt=12)}"
    ).fetchall()[0][0] < len(kept)  # another salt, other groups
    assert sample_sql(["day"], 1.0, 1) is None and sample_sql([], 0.1, 1) is None


@pytest.mark.parametrize("n", [0, 1, 3, 300, 5000, 50_000])
def test_registers_of_a_sketch_equal_those_of_the_union_of_its_parts(n: int) -> None:
    import datasketches

    hll4 = datasketches.tgt_hll_type.HLL_4
    values = [v * 7919 for v in range(n)]
    whole = sketch_of(values, 10, hll4)
    parts = [sketch_of(values[i::3], 10, hll4) for i in range(3)]
    assert registers(parts, 10) == registers([whole], 10)
    assert registers([*parts, None], 10) == registers([whole], 10)
    if n:
        assert registers([sketch_of(values[: n // 2], 10, hll4)], 10) != registers([whole], 10)


def _group(measures: tuple[Measure, ...], digits: tuple[tuple[str, int], ...] = ()) -> StorageGroup:
    return StorageGroup("g", "t", ("k",), measures, None, None, ("g",), digits=digits)


def _compare(group: StorageGroup, merged: dict[str, list[Any]], raw: dict[str, list[Any]]) -> VerifyResult:
    result = VerifyResult("g")
    con = duckdb.connect()
    m = con.sql(f"SELECT * FROM (VALUES {_values(merged)}) v({', '.join(merged)})").to_arrow_table()
    r = con.sql(f"SELECT * FROM (VALUES {_values(raw)}) v({', '.join(raw)})").to_arrow_table()
    compare(con, group, m, r, result)
    return result


def _values(cols: dict[str, list[Any]]) -> str:
    rows = zip(*cols.values(), strict=True)
    return ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)


def _literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v!r}::DOUBLE"
    return v if isinstance(v, str) else repr(v)


def test_double_sums_compare_within_the_summation_order_bound() -> None:
    group = _group((Measure("count"), Measure("sum", "x")))
    raw = {"k": [1, 2], "__present": [1, 1], "_count": [1000, 3], "sum__x": [100.0, 3.0], '"__abs__sum__x"': [100.0, 3.0]}
    ulps = {"k": [1, 2], "__present": [1, 1], "_count": [1000, 3], "sum__x": [100.00000000000003, 3.0]}
    ok = _compare(group, ulps, raw)
    assert (ok.groups, ok.mismatches) == (2, 0) and 0 < ok.largest_error < 1e-15
    off = {"k": [1, 2], "__present": [1, 1], "_count": [1000, 3], "sum__x": [100.0, 3.000001]}
    bad = _compare(group, off, raw)
    assert bad.mismatches == 1 and bad.evidence[0].measure == "sum(x)" and bad.evidence[0].key == {"k": 2}


def test_exact_measures_and_missing_groups_are_mismatches() -> None:
    group = _group((Measure("count"), Measure("sum", "p"), Measure("max", "x")), digits=(("p", 2),))
    raw = {"k": [1, 2, 3], "__present": [1, 1, 1], "_count": [5, 6, 7], "sum__p": ["1.10::DECIMAL(38,2)", "2.20::DECIMAL(38,2)", "3.30::DECIMAL(38,2)"], "max__x": [1, 2, 3]}
    same = {"k": [1, 2, 3], "__present": [1, 1, 1], "_count": [5, 6, 7], "sum__p": raw["sum__p"], "max__x": [1, 2, 3]}
    assert _compare(group, same, raw).mismatches == 0
    wrong = {"k": [1, 2, 4], "__present": [1, 1, 1], "_count": [5, 7, 1], "sum__p": ["1.11::DECIMAL(38,2)", "2.20::DECIMAL(38,2)", "1.00::DECIMAL(38,2)"], "max__x": [1, 2, 9]}
    result = _compare(group, wrong, raw)
    # k=1: its decimal sum is one cent off; k=2: its count; k=3 absent from the rollup; k=4 extra.
    assert result.mismatches == 4 and result.largest_error == 1.0
    measures = {(tuple(m.key.values()), m.measure) for m in result.evidence}
    assert {((1,), "sum(p)"), ((2,), "count(*)"), ((3,), "group"), ((4,), "group")} <= measures


def test_verify_settings_parse_and_bad_ones_are_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    assert (cfg.rollups.verify_interval, cfg.rollups.verify_sample) == (dt.timedelta(minutes=10), 0.01)
    cfg = make_config(tmp_path, **{"rollups.verify_interval": "0s", "rollups.verify_sample": 1})
    assert (cfg.rollups.verify_interval, cfg.rollups.verify_sample) == (dt.timedelta(0), 1.0)
    for bad in (0, 1.5, -0.1, "1%", True):
        with pytest.raises(ConfigError, match="verify_sample"):
            make_config(tmp_path, **{"rollups.verify_sample": bad})


def test_since_is_a_date_or_a_duration() -> None:
    from tierflight.rollups.verifier import since_time

    now = dt.datetime(2025, 1, 1)
    assert since_time("7d", now) == dt.datetime(2024, 12, 25)
    assert since_time("2024-12-01", now) == dt.datetime(2024, 12, 1)
    with pytest.raises(ValueError, match="neither"):
        since_time("last tuesday", now)


# -- against the raw tiers (server) ------------------------------------------------------------


@pytest.fixture()
def verified(tmp_path: Path) -> Iterator[RunningServer]:
    """A server over cold and warm rows, with ingested hot rows on top; rollups of DOUBLE sums
    (no decimals declared) and allow_stale on, so that only the verification keeps a
    corrupted rollup from being read."""
    from conftest import load_demo, start_in_process

    overrides = {"tables.events.decimals": {}, "rollups.allow_stale": True, "rollups.verify_interval": "0s"}
    load_demo(make_config(tmp_path, **overrides), 20_000, dt.date(2024, 9, 20), 30, 5)
    running = start_in_process(make_config(tmp_path, **overrides))
    try:
        yield running
    finally:
        running.server.shutdown()
        running.app.close()


def _ingest(running: RunningServer, batches: int, seed: int = 0) -> None:
    import adbc_driver_flightsql.dbapi as fsql

    from test_ingest import _rows

    with fsql.connect(running.uri, autocommit=True) as c, c.cursor() as cur:
        for i in range(batches):
            cur.adbc_ingest("events", _rows(300, dt.datetime(2024, 10, 18, 3) + dt.timedelta(hours=i), seed=seed + i), mode="append")


def _query(running: RunningServer, sql: str) -> pa.Table:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(running.uri, autocommit=True) as c, c.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def _corrupt(app: Any, rollup: str) -> None:
    """The test-only hook: one state of one loaded group is changed behind the rollup's back
    (as a bug in a merge, or a snapshot written wrong, would)."""
    state = app.rollups.states[rollup]
    app.database.execute_internal(f"UPDATE {state.qualified} SET _count = _count + 1 WHERE rowid = (SELECT min(rowid) FROM {state.qualified})")
    app.router.invalidate()  # answers cached before are not what is being tested


def test_every_rollup_verifies_exactly_with_hot_rows_merged(verified: RunningServer) -> None:
    app = verified.app
    _ingest(verified, 3)
    assert app.stores["events"].hot.rows == 900  # the round covers the hot tail too
    verifier = app.rollup_verifier()
    results = verifier.round(1.0)
    assert len(results) == len(app.rollups.states)
    for r in results:
        assert r.skipped is None and r.mismatches == 0 and r.groups > 0, r
        # DOUBLE sums in another order: equal here, or off by rounding far inside the bound.
        assert r.largest_error < 1e-12, r
    rows = _query(verified, "SELECT name, status, verified_at, mismatches FROM system.rollups").to_pylist()
    assert rows and all(r["status"] == "active" and r["verified_at"] is not None and r["mismatches"] == 0 for r in rows)


def test_a_corrupted_rollup_turns_stale_answers_stay_exact_and_a_build_restores_it(verified: RunningServer) -> None:
    app = verified.app
    sql = "SELECT day, type, count(*) AS n FROM events GROUP BY ALL ORDER BY ALL"
    # A filter on a column no rollup has: the raw tiers answer.
    raw = "SELECT CAST(ts AS DATE) AS day, type, count(*) AS n FROM events WHERE auction_id IS NOT NULL GROUP BY ALL ORDER BY ALL"
    assert not _query(verified, f"EXPLAIN ROUTE {raw}").to_pylist()[0]["source"].startswith("rollup:")
    truth = _query(verified, raw)
    assert _query(verified, sql) == truth
    assert _query(verified, f"EXPLAIN ROUTE {sql}").to_pylist()[0]["source"] == "rollup:day_type"
    _corrupt(app, "day_type")
    assert _query(verified, sql) != truth  # the corruption is visible through the rollup
    before = app.metrics.rollup_mismatches.labels("day_type")._value.get()
    results = {r.rollup: r for r in app.rollup_verifier().round(1.0)}
    assert results["day_type"].mismatches == 1
    assert results["day_type"].evidence[0].measure == "count(*)"
    assert all(r.mismatches == 0 for name, r in results.items() if name != "day_type")
    state = app.rollups.states["day_type"]
    assert (state.status, state.mismatches) == ("stale", 1)
    assert app.metrics.rollup_mismatches.labels("day_type")._value.get() == before + 1
    row = _query(verified, "SELECT status, mismatches FROM system.rollups WHERE name = 'day_type'").to_pylist()
    assert row == [{"status": "stale", "mismatches": 1}]
    # allow_stale is on, yet a rollup that failed verification is not read: the raw tiers are.
    route = _query(verified, f"EXPLAIN ROUTE {sql}").to_pylist()
    assert not any(r["source"] == "rollup:day_type" for r in route), route
    assert _query(verified, sql) == truth
    # A compaction in place does not revive it; a build does.
    app.rollups.compact_grown("events")
    assert app.rollups.states["day_type"].status == "stale"
    app.rollups.build(["day_type"])
    app.router.invalidate()
    assert (state.status, state.mismatches) == ("active", 0)
    assert _query(verified, f"EXPLAIN ROUTE {sql}").to_pylist()[0]["source"] == "rollup:day_type"
    assert _query(verified, sql) == truth
    assert app.rollup_verifier().verify_one(state, 1.0).mismatches == 0


def test_verifying_while_ingesting_finds_no_false_mismatch(verified: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from tierflight.rollups import verify

    app = verified.app
    read = verify.read_rollup

    def slow_read(*args: Any) -> pa.Table:
        # Widen the gap between reading the rollup and listing the tiers, where an ingest
        # committing would make the two disagree if they were not read under one view.
        rows = read(*args)
        time.sleep(0.05)
        return rows

    monkeypatch.setattr(verify, "read_rollup", slow_read)
    done = threading.Event()
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            for i in range(12):
                _ingest(verified, 1, seed=100 + i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=ingest)
    thread.start()
    verifier = app.rollup_verifier()
    rounds = checked = 0
    while not done.is_set() or rounds < 2:
        for name in ("day_type", "hour_country_type", "day_country_users"):
            r = verifier.verify_one(app.rollups.states[name], 1.0)
            assert r.mismatches == 0, r.evidence
            checked += r.groups if r.skipped is None else 0
        rounds += 1
    thread.join(timeout=60)
    assert not errors and checked > 0
    assert all(s.status == "active" for s in app.rollups.states.values())


# -- the command ------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_rollups_verify_command_exits_non_zero_on_a_corrupted_snapshot(tmp_path: Path) -> None:
    from conftest import load_demo
    from tierflight.app import App

    load_demo(make_config(tmp_path), 20_000, dt.date(2024, 9, 20), 30, 5)
    cfg = make_config(tmp_path)
    app = App(cfg)  # builds and snapshots the rollups
    try:
        # A snapshot written wrong but well formed (checksum and source match): one group's
        # sum of bid_price off by a cent.
        registry = app.rollups
        state = registry.states["day_type"]
        meta = state.meta
        table = registry.snapshots.read(meta)
        column = table["sum__bid_price"].to_pylist()
        column[0] = (column[0] or 0) + 0.01
        table = table.set_column(table.schema.get_field_index("sum__bid_price"), "sum__bid_price", pa.array(column, table["sum__bid_price"].type))
        registry.snapshots.write("day_type", table, state.group.definition_hash(), registry._source(registry.stores["events"]), meta.watermark_dt, meta.wal_through)
    finally:
        app.close()
    base = [*tierflight_cmd(), "--config", str(CONFIG), "--data-dir", str(tmp_path), "rollups", "verify"]
    env = serve_env()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, env=env)

    bad = run("day_type", "country_type")
    assert bad.returncode == 1, bad.stderr[-2000:]
    lines = {line.split()[0]: line for line in bad.stdout.splitlines()}
    assert "MISMATCH" in lines["day_type"] and lines["country_type"].endswith("ok")
    assert "sum(bid_price)" in bad.stderr and "Traceback" not in bad.stderr
    good = run("country_type", "--sample", "0.5", "--since", "2024-10-01")
    assert good.returncode == 0, good.stderr[-2000:]
    unknown = run("no_such_rollup")
    assert unknown.returncode == 2 and "no rollup named no_such_rollup" in unknown.stderr
    zero = run("--sample", "0")
    assert zero.returncode == 2 and "--sample" in zero.stderr


def test_the_background_verifier_finds_a_corruption_on_its_own(verified: RunningServer) -> None:
    import time

    app = verified.app
    _corrupt(app, "hour_type")
    app.rollup_verifier().start(dt.timedelta(seconds=0.2), 1.0, nice=5)
    deadline = time.monotonic() + 20
    while app.rollups.states["hour_type"].status != "stale" and time.monotonic() < deadline:
        time.sleep(0.1)
    state = app.rollups.states["hour_type"]
    assert (state.status, state.mismatches) == ("stale", 1)
    assert app.rollups.states["day_type"].verified_at is not None
    assert app.rollups.states["day_type"].status == "active"


def test_a_failed_read_is_never_a_mismatch(verified: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from tierflight.rollups import verify

    def vanished(*args: Any) -> pa.Table:
        raise OSError("No such file: a data file compacted away between listing and reading")

    monkeypatch.setattr(verify, "read_rollup", vanished)
    app = verified.app
    assert app.rollup_verifier().round(0.5) == []
    assert all(s.status == "active" and s.mismatches == 0 and s.verified_at is None for s in app.rollups.states.values())


def test_a_mismatch_that_does_not_repeat_is_not_counted(verified: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that picks up another's files a moment before the snapshot covering them sees a
    passing disagreement: the server confirms a mismatch on the same sample before marking."""
    from tierflight.rollups import verify
    from tierflight.rollups.verify import Mismatch, add_evidence

    real = verify.compare
    calls = [0]

    def first_time_off(cursor: Any, group: Any, merged: Any, raw: Any, result: VerifyResult) -> None:
        real(cursor, group, merged, raw, result)
        calls[0] += 1
        if calls[0] == 1:
            add_evidence(result, [Mismatch({}, "count(*)", 1, 2)])

    monkeypatch.setattr(verify, "compare", first_time_off)
    app = verified.app
    state = app.rollups.states["day_type"]
    result = app.rollup_verifier().verify_one(state, 1.0, confirm_after=0.01)
    assert calls[0] == 2 and result.mismatches == 0
    assert (state.status, state.mismatches) == ("active", 0) and state.verified_at is not None
    monkeypatch.setattr(verify, "compare", real)
    _corrupt(app, "day_type")
    assert app.rollup_verifier().verify_one(state, 1.0, confirm_after=0.01).mismatches == 1
    assert state.status == "stale"
