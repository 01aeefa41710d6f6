"""Autonomous mode: a shape no configured rollup serves is built as an auto rollup, answers
exactly like the raw tiers (and DuckDB over the flat copy), keeps up with ingest, survives a
restart, and is dropped on TTL or for a better proposal; a failed build changes nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from conftest import RunningServer, make_config, start_in_process
from tierflight.advisor import auto as auto_mode
from tierflight.core.config import Config

# Publisher clicks over most of the data set (2024-09-01 .. 2024-11-29): no configured rollup
# has publisher_id with a time grain, so it reads the raw tiers until one is built.
STATEMENT = (
    "SELECT publisher_id, count(*) AS n, sum(bid_price) AS s FROM events "
    "WHERE type = 'click' AND day BETWEEN DATE '2024-09-15' AND DATE '2024-12-31' GROUP BY publisher_id ORDER BY publisher_id"
)
# The same rows with a predicate no rollup can answer: always the raw tiers.
RAW_TWIN = STATEMENT.replace("GROUP BY", "AND length(auction_id) > 0 GROUP BY")


def auto_config(data_dir: Path, **overrides: Any) -> Config:
    base = {"rollups.auto_delay": "0s", "rollups.auto_min_statements": 2, "rollups.auto": True}
    base.update(overrides)
    return make_config(data_dir, **base)


@pytest.fixture()
def own_data(data_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns(".tierflight.lock", "advisor"))
    return copy


@pytest.fixture()
def running(own_data: Path) -> Iterator[RunningServer]:
    srv = start_in_process(auto_config(own_data))
    yield srv
    stop(srv)


def stop(srv: RunningServer) -> None:
    srv.server.shutdown()
    srv.app.close()


def query(srv: RunningServer, sql: str) -> tuple[pa.Table, str | None]:
    """The answer and the rollup that gave it (None: raw tiers)."""
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
        cur.execute(f"EXPLAIN ROUTE {sql}")
        sources = [r["source"] for r in cur.fetch_arrow_table().to_pylist() if r["tier"] != "rejected"]
    rollups = [s.removeprefix("rollup:") for s in sources if s.startswith("rollup:")]
    return table, (rollups[0] if rollups else None)


def learn(srv: RunningServer, times: int = 2) -> pa.Table:
    for _ in range(times):
        answer, rollup = query(srv, STATEMENT)
        assert rollup is None
    srv.app.advisor.log.drain()
    return answer


def rollups_rows(srv: RunningServer) -> dict[str, dict[str, Any]]:
    table, _ = query(srv, "SELECT * FROM system.rollups")
    return {r["name"]: r for r in table.to_pylist()}


def test_adoption_answers_like_the_raw_tiers_and_survives_restart(running: RunningServer, own_data: Path, flat: Any) -> None:
    before = learn(running)
    changed = running.app.auto.run_once()
    assert len(changed) == 1 and changed[0].startswith("+auto_"), changed
    name = changed[0][1:]
    after, rollup = query(running, STATEMENT)
    assert rollup == name
    assert after.equals(before)
    oracle = flat.sql(STATEMENT).to_arrow_table()
    assert after.column("n").to_pylist() == oracle.column("n").to_pylist()
    assert after.column("s").to_pylist() == pytest.approx(oracle.column("s").to_pylist())
    row = rollups_rows(running)[name]
    assert row["origin"] == "auto" and row["status"] == "active" and row["hits"] >= 1 and row["last_hit"] is not None
    assert {r["origin"] for n, r in rollups_rows(running).items() if n != name} == {"config"}
    advice, _ = query(running, f"SELECT status FROM system.rollup_advice WHERE name = '{name}'")
    assert advice.column("status").to_pylist() == ["built"]
    assert running.app.auto.used_bytes() <= running.app.config.rollups.memory_budget

    # Kept fresh on ingest like any rollup: a batch of clicks lands in it and in the raw tiers alike.
    import adbc_driver_flightsql.dbapi as fsql

    rows = pa.table(
        {
            "ts": pa.array([dt.datetime(2024, 10, 3, 12, i) for i in range(5)], pa.timestamp("us")),
            "type": ["click"] * 5,
            "auction_id": [f"auto-{i}" for i in range(5)],
            "advertiser_id": pa.array([1] * 5, pa.int32()),
            "publisher_id": pa.array([7] * 5, pa.int32()),
            "bid_price": [0.5] * 5,
            "user_id": pa.array([1] * 5, pa.int64()),
            "total_price": [1.25] * 5,
            "country": ["DE"] * 5,
        }
    )
    with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest("events", rows, mode="append")
    fresh, rollup = query(running, STATEMENT)
    raw, raw_rollup = query(running, RAW_TWIN)
    assert rollup == name and raw_rollup is None
    assert fresh.column("n").to_pylist() == raw.column("n").to_pylist()
    assert fresh.column("s").to_pylist() == pytest.approx(raw.column("s").to_pylist())
    assert fresh.column("n").to_pylist() != before.column("n").to_pylist()

    # A restart keeps it: its definition is in the data dir, its rows in a snapshot (+ the WAL).
    stop(running)
    again = start_in_process(auto_config(own_data))
    try:
        restarted, rollup = query(again, STATEMENT)
        assert rollup == name and restarted.equals(fresh)
        assert rollups_rows(again)[name]["origin"] == "auto"
    finally:
        stop(again)


def test_dropped_when_it_earns_no_hits_for_auto_ttl(running: RunningServer) -> None:
    before = learn(running)
    name = running.app.auto.run_once()[0][1:]
    assert query(running, STATEMENT)[1] == name
    snapshots = running.app.rollups.snapshots
    meta = snapshots.read_meta(name)
    assert meta is not None
    ttl = running.app.config.rollups.auto_ttl.total_seconds()
    assert running.app.auto.run_once(now=time.time() + ttl / 2) == []  # hit just now: kept
    changed = running.app.auto.run_once(now=time.time() + ttl + 60)
    assert f"-{name}" in changed
    answer, rollup = query(running, STATEMENT)
    assert rollup is None and answer.equals(before)
    assert name not in rollups_rows(running)
    kept = json.loads((running.app.config.data_dir / "advisor" / "auto.json").read_text())
    assert kept == []
    # Its snapshot goes too (manifest and data file).
    assert snapshots.read_meta(name) is None
    assert not (Path(snapshots.where) / meta.file).exists()


def with_budget(srv: RunningServer, budget: int) -> None:
    """Give a running server's autonomous mode another memory budget."""
    app = srv.app
    config = dataclasses.replace(app.config, rollups=dataclasses.replace(app.config.rollups, memory_budget=budget))
    app.auto.config = app.advisor.config = config
    app.auto.settings = config.rollups


def test_budget_is_never_exceeded_and_refusals_are_explained(running: RunningServer) -> None:
    learn(running)
    budget = running.app.auto.used_bytes() + (16 << 10)  # the configured rollups and 16 KB
    with_budget(running, budget)
    assert running.app.auto.run_once() == []
    assert running.app.auto.used_bytes() <= budget
    advice, _ = query(running, "SELECT status, note FROM system.rollup_advice WHERE list_contains(dimensions, 'publisher_id')")
    statuses = advice.to_pylist()
    assert statuses and all(r["status"] == "over_budget" and "memory_budget" in r["note"] for r in statuses), statuses
    assert query(running, STATEMENT)[1] is None


def test_a_failed_build_leaves_the_route_unchanged(running: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    before = learn(running)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(auto_mode, "build_groups", broken)
    assert running.app.auto.run_once() == []
    answer, rollup = query(running, STATEMENT)
    assert rollup is None and answer.equals(before)
    advice, _ = query(running, "SELECT status, note FROM system.rollup_advice WHERE status = 'refused'")
    assert [r["note"] for r in advice.to_pylist()] == ["build failed: disk on fire"]
    assert not any(r["origin"] == "auto" for r in rollups_rows(running).values())


def test_a_better_proposal_takes_the_bytes_of_one_that_earns_less(running: RunningServer) -> None:
    learn(running)
    first = running.app.auto.run_once()[0][1:]
    state = running.app.rollups.states[first]
    # A second workload that would save far more, and a budget with room for one of the two.
    other = "SELECT advertiser_id, country, count(*) AS n FROM events WHERE advertiser_id > 0 GROUP BY ALL"
    for _ in range(3):
        assert query(running, other)[1] is None
    app = running.app
    app.advisor.log.drain()
    for obs in list(app.advisor.log.records):
        if "advertiser_id" in obs.shape.dimensions:
            app.advisor.log.records.append(type(obs)(obs.shape, obs.tier, None, obs.rows, 1e6, obs.at))
    app.advisor.forget()
    better = next(p for p in app.advisor.proposals() if "advertiser_id" in p.dimensions)
    # Room for the better one only once the first is dropped.
    with_budget(running, app.auto.used_bytes() - state.bytes + (better.bytes or 0))
    changed = app.auto.run_once()
    assert f"-{first}" in changed and any(c.startswith("+auto_") and c != f"+{first}" for c in changed), changed
    assert state.saved_ms < better.benefit_ms
    assert app.auto.used_bytes() <= app.auto.settings.memory_budget
    assert query(running, other)[1] == better.name
    assert query(running, STATEMENT)[1] is None


# -- rule covering: a time filter every row passes (router/covering.py) -----------------

# The data set's extent is 2024-09-01 .. 2024-11-29: this filter covers exactly that.
COVERING = (
    "SELECT publisher_id, count(*) AS n FROM events WHERE type = 'click' "
    "AND day BETWEEN DATE '2024-09-01' AND DATE '2024-11-29' GROUP BY publisher_id ORDER BY publisher_id"
)


def test_covering_filter_until_data_outside_the_extent_arrives(own_data: Path, flat: Any) -> None:
    import adbc_driver_flightsql.dbapi as fsql

    srv = start_in_process(make_config(own_data, **{"rollups.auto": False}))
    try:
        answer, rollup = query(srv, COVERING)
        assert rollup == "publisher_type"
        assert answer.equals(flat.sql(COVERING).to_arrow_table().cast(answer.schema))
        with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"EXPLAIN ROUTE {COVERING}")
            reasons = [r["reason"] for r in cur.fetch_arrow_table().to_pylist() if r["tier"] == "hot"]
        assert len(reasons) == 1 and "covers the table's whole extent" in reasons[0]
        # A click on 2024-12-10: outside the extent and outside the filter. The filter no
        # longer covers every row, so the rollup (which holds the new row) may not answer.
        late = pa.table(
            {
                "ts": pa.array([dt.datetime(2024, 12, 10, 8, 0)], pa.timestamp("us")),
                "type": ["click"],
                "auction_id": ["outside-1"],
                "advertiser_id": pa.array([1], pa.int32()),
                "publisher_id": pa.array([answer.column("publisher_id")[0].as_py()], pa.int32()),
                "bid_price": [0.5],
                "user_id": pa.array([1], pa.int64()),
                "total_price": [1.25],
                "country": ["DE"],
            }
        )
        with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_ingest("events", late, mode="append")
        after, rollup = query(srv, COVERING)
        assert rollup is None
        assert after.equals(answer)
        # A filter that covers the new extent too is answered from the rollup again, new row included.
        wider = COVERING.replace("DATE '2024-11-29'", "DATE '2024-12-31'")
        widened, rollup = query(srv, wider)
        assert rollup == "publisher_type"
        assert sum(widened.column("n").to_pylist()) == sum(answer.column("n").to_pylist()) + 1
    finally:
        stop(srv)
