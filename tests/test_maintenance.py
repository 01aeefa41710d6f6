"""Tier maintenance: demotion of aged warm days into Iceberg and compaction of small files.

Every test owns a small data dir. The oracle is DuckDB over every data file, read flat before
any maintenance; tierflight's per-day answers must equal it exactly after every step, after
every crash (the process killed, or a fault injected, between two steps) and after the re-run.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import start_in_process
from storage_helpers import (
    AGED,
    GEN_NOW,
    LATER,
    NEW_BOUNDARY,
    OLD_BOUNDARY,
    ROWS,
    YOUNG,
    Crash,
    assert_days_demoted,
    build,
    config,
    crash_at,
    maintenance_under_queries,
    oracle,
    run_cli,
    split_day,
    store_for,
    tier_stats,
    tiers_of,
    warm_dir,
)

# Each test builds a data set (and tiers, rollups or a server) of its own.
pytestmark = pytest.mark.needs_server

SPLIT = YOUNG[2:5]  # warm days that stay warm, rewritten as 3 small files each
# Tier behaviour on its own: no rollups to build, every statement reads the raw tiers.
RAW_ONLY = {"router.enabled": False, "tables.events.rollups": []}


def assert_demoted(data_dir: Path, expected: dict[dt.date, Any]) -> None:
    """The job is done: aged days in cold (once), warm dirs in the trash, answers unchanged."""
    assert_days_demoted(store_for(data_dir, LATER), expected)
    assert not any(warm_dir(data_dir, d).exists() for d in AGED)
    assert tier_stats(data_dir, LATER) == expected


def test_demote_moves_aged_days_and_answers_stay_the_same(tmp_path: Path) -> None:
    from tierflight.tiers.maintenance import demote

    data = build(tmp_path / "data")
    expected = oracle(data)
    assert len(expected) == 30 and sum(v[0] for v in expected.values()) == ROWS
    store = store_for(data, LATER)
    before = tiers_of(store)
    assert [before[d] for d in AGED] == ["warm"] * len(AGED)
    assert tier_stats(data, LATER) == expected

    stats = demote(store, settle=0)

    assert (stats.days, stats.files, stats.rows) == (10, 10, sum(expected[d][0] for d in AGED))
    assert tiers_of(store) == {**before, **{d: "cold" for d in AGED}}
    assert_demoted(data, expected)
    # Nothing left to do: a second run changes nothing.
    assert demote(store, settle=0).days == 0
    assert tier_stats(data, LATER) == expected


def test_demote_without_aged_days_is_a_no_op(tmp_path: Path) -> None:
    from tierflight.tiers.maintenance import demote

    data = build(tmp_path / "data")
    store = store_for(data)  # the clock of the load: nothing aged past the window
    assert demote(store, settle=0).days == 0
    assert store.cold_until() == OLD_BOUNDARY
    assert not (data / "events" / "trash").exists()


@pytest.mark.parametrize("step", ["demote:copied", "demote:committed", "demote:boundary"])
def test_demote_crash_at_each_step_then_rerun(tmp_path: Path, step: str) -> None:
    """An injected fault at each step: no row lost or doubled, then a re-run finishes the job."""
    from tierflight.tiers.maintenance import demote

    data = build(tmp_path / "data")
    expected = oracle(data)
    with pytest.raises(Crash):
        demote(store_for(data, LATER), fault=crash_at(step), settle=0)
    assert tier_stats(data, LATER) == expected
    after_crash = store_for(data, LATER)
    where = tiers_of(after_crash)
    if step == "demote:boundary":
        assert after_crash.cold_until() == NEW_BOUNDARY
        assert all(where[d] == "cold" for d in AGED)
        assert all(warm_dir(data, d).exists() for d in AGED)  # hidden, not yet trashed
    else:
        assert after_crash.cold_until() == OLD_BOUNDARY
        assert all(where[d] == "warm" for d in AGED)
    demote(store_for(data, LATER), settle=0)
    assert_demoted(data, expected)
    # Every data file in Iceberg's directory is one the table holds: the re-run copied over
    # the crashed run's copies instead of leaving them unregistered.
    registered = set(store_for(data, LATER).cold.table().inspect.files().column("file_path").to_pylist())
    on_disk = {str(p) for p in (data / "iceberg").rglob("*.parquet")}
    assert {p.removeprefix("file://") for p in registered} == on_disk


def test_demote_killed_cli_then_rerun(tmp_path: Path) -> None:
    """``tierflight tiers demote`` killed after its Iceberg commit, before the boundary moved
    (each step is also crashed in-process above); the re-run finishes without a second commit."""
    data = build(tmp_path / "data")
    expected = oracle(data)
    proc = run_cli(data, "tiers", "demote", fault="demote:committed")
    assert proc.returncode == 99, proc.stderr
    assert tier_stats(data, LATER) == expected
    assert store_for(data, LATER).cold_until() == OLD_BOUNDARY
    proc = run_cli(data, "tiers", "demote")
    assert proc.returncode == 0, proc.stderr
    assert "demoted 10 days" in proc.stderr
    assert_demoted(data, expected)


def _split(data: Path) -> None:
    for day in SPLIT:
        split_day(data, day)


def assert_compacted(data: Path, expected: dict[dt.date, Any]) -> None:
    for day in SPLIT:
        d = warm_dir(data, day)
        assert [p.name for p in d.glob("*.parquet")] and len(list(d.glob("*.parquet"))) == 1, day
        assert not list(d.glob(".*")) and not (d / "_compaction.json").exists()
    store = store_for(data)
    assert {p.partition: p.files for p in store.warm.partitions() if p.start.date() in SPLIT} == {
        f"day={d.isoformat()}": 1 for d in SPLIT
    }
    assert tier_stats(data) == expected


def test_compaction_rewrites_small_files(tmp_path: Path) -> None:
    from tierflight.tiers.maintenance import compact_warm

    data = build(tmp_path / "data")
    expected = oracle(data)
    _split(data)
    assert oracle(data) == expected
    store = store_for(data)
    assert {p.start.date(): p.files for p in store.warm.partitions() if p.start.date() in SPLIT} == dict.fromkeys(
        SPLIT, 3
    )
    stats = compact_warm(store, store.config.tiers.compact_small_file_bytes, settle=0)
    assert (stats.partitions, stats.files_before, stats.files_after) == (3, 9, 3)
    assert_compacted(data, expected)
    old = [p for p in (data / "events" / "trash").iterdir() if "part-split" in p.name]
    assert len(old) == 9
    # Files already at least the target size are left alone.
    assert compact_warm(store_for(data), 1, settle=0).partitions == 0


@pytest.mark.parametrize("step", ["compact:written", "compact:journal", "compact:renamed"])
def test_compaction_crash_at_each_step_then_rerun(tmp_path: Path, step: str) -> None:
    from tierflight.tiers.maintenance import compact_warm

    data = build(tmp_path / "data")
    expected = oracle(data)
    _split(data)
    with pytest.raises(Crash):
        compact_warm(store_for(data), fault=crash_at(step), settle=0)
    assert tier_stats(data) == expected
    compact_warm(store_for(data), settle=0)
    assert_compacted(data, expected)


def test_compaction_killed_cli_then_rerun(tmp_path: Path) -> None:
    """``tierflight tiers compact`` killed after the merged file was renamed in, before the
    small files went to the trash: the journal hides them until the re-run trashes them."""
    data = build(tmp_path / "data")
    expected = oracle(data)
    _split(data)
    proc = run_cli(data, "tiers", "compact", fault="compact:renamed", now=GEN_NOW)
    assert proc.returncode == 99, proc.stderr
    assert len(list(warm_dir(data, SPLIT[0]).glob("*.parquet"))) == 4  # 3 small + the merged one
    assert tier_stats(data) == expected
    proc = run_cli(data, "tiers", "compact", now=GEN_NOW)
    assert proc.returncode == 0, proc.stderr
    assert "compacted" in proc.stderr  # the killed run's partition is finished by recovery
    assert_compacted(data, expected)


def _per_day_sql(conn: Any) -> dict[dt.date, tuple[int, int, int]]:
    with conn.cursor() as cur:
        cur.execute("SELECT day, count(*), sum(user_id), count(bid_price) FROM events GROUP BY day")
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in cur.fetchall()}


def test_background_maintenance_demotes_on_schedule(tmp_path: Path) -> None:
    import adbc_driver_flightsql.dbapi as fsql

    data = build(tmp_path / "data")
    expected = oracle(data)
    _split(data)
    cfg = config(data, LATER, **{"tiers.maintenance_interval": "1s", **RAW_ONLY})
    running = start_in_process(cfg)
    try:
        with fsql.connect(running.uri, autocommit=True) as conn:
            assert _per_day_sql(conn) == expected
            running.app.start_maintenance()
            deadline = time.monotonic() + 30
            rows: list[tuple[Any, ...]] = []
            while time.monotonic() < deadline:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT partition, tier, files FROM system.partitions WHERE table_name = 'events' ORDER BY 1"
                    )
                    rows = cur.fetchall()
                tier = {r[0]: r[1] for r in rows}
                files = {r[0]: r[2] for r in rows}
                if all(tier.get(f"day={d}") == "cold" for d in AGED) and all(
                    files[f"day={d}"] == 1 for d in SPLIT
                ):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"maintenance did not demote and compact within 30 s: {rows}")
            assert all(tier[f"day={d}"] == "warm" for d in YOUNG)
            assert _per_day_sql(conn) == expected
    finally:
        running.server.shutdown()
        running.app.close()
    assert not any(warm_dir(data, d).exists() for d in AGED)


def test_queries_during_demote_see_each_row_once(tmp_path: Path) -> None:
    """Statements running while maintenance demotes and compacts: same answer every time."""

    data = build(tmp_path / "data")
    expected = oracle(data)
    _split(data)
    total = (sum(v[0] for v in expected.values()), sum(v[1] for v in expected.values()))
    around = sorted(d for d in expected if AGED[0] - dt.timedelta(days=3) <= d <= NEW_BOUNDARY + dt.timedelta(days=3))
    window = (sum(expected[d][0] for d in around), sum(expected[d][1] for d in around))
    cfg = config(data, LATER, **{"tiers.maintenance_interval": "0s", **RAW_ONLY})
    running = start_in_process(cfg)
    results = maintenance_under_queries(
        running,
        {
            "all": "SELECT count(*), sum(user_id) FROM events",
            "window": f"SELECT count(*), sum(user_id) FROM events WHERE day BETWEEN DATE '{around[0]}' AND DATE '{around[-1]}'",
        },
    )
    errors = [r for kind, r in results if kind == "error"]
    assert not errors, errors[:3]
    assert len(results) > 20
    assert {r for kind, r in results if kind == "all"} == {total}
    assert {r for kind, r in results if kind == "window"} == {window}
    assert_demoted(data, expected)


def test_a_trashed_day_goes_at_once_with_no_grace_whatever_the_fraction_of_the_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tierflight.tiers import maintenance

    data = build(tmp_path / "data")
    store = store_for(data, GEN_NOW)
    day = warm_dir(data, YOUNG[0])
    clock = iter([1_000.6, 1_000.7])  # trashed late in a second, emptied a moment later
    # The maintenance module's clock only (other threads keep the real one).
    fake = SimpleNamespace(time=lambda: next(clock), sleep=time.sleep, monotonic=time.monotonic)
    monkeypatch.setattr(maintenance, "time", fake)
    maintenance.trash(store, str(day))
    assert not day.exists()
    assert maintenance.empty_trash(store, grace_seconds=0) == 1
