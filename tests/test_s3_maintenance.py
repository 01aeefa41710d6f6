"""Tier maintenance on object storage: the demotion and compaction of test_maintenance.py,
with the warm tier under an S3 prefix and Iceberg behind a REST catalog with its files on S3
(SeaweedFS on loopback).

Each test loads its own data under a prefix and an Iceberg namespace of its own. The oracle
is DuckDB over the generated rows; tierflight's per-day answers must equal it after every
step, after a fault injected between two steps, and after the re-run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from conftest import load_demo
from s3_helpers import BUCKET, Weed
from storage_helpers import (
    AGED,
    DAYS,
    LATER,
    NEW_BOUNDARY,
    OLD_BOUNDARY,
    PER_DAY,
    ROWS,
    SEED,
    START,
    YOUNG,
    Crash,
    DayStats,
    assert_days_demoted,
    config,
    crash_at,
    maintenance_under_queries,
    store_for,
    tier_stats,
    tiers_of,
    trashed,
)

pytestmark = pytest.mark.s3

SPLIT = YOUNG[2:5]  # warm days that stay warm, rewritten as 3 small files each


@pytest.fixture(scope="module")
def expected() -> DayStats:
    from tierflight.demo.generate import generate_days

    con = duckdb.connect()
    con.register("generated", pa.concat_tables(t for _, t in generate_days(ROWS, START, DAYS, SEED)))
    rows = con.sql(PER_DAY.format(src="generated")).fetchall()
    con.close()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


@pytest.fixture
def on_s3(tmp_path: Path, weed: Weed) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A local data dir (tier boundary, locks) whose tiers live on S3, loaded with the rows."""
    tag = uuid.uuid4().hex[:10]
    overrides = {
        **weed.overrides(),
        "storage.warm_uri": f"s3://{BUCKET}/maintenance-{tag}",
        "iceberg.namespace": f"maintenance_{tag}",
        "storage.poll_interval": "0s",
        "tiers.maintenance_interval": 0,
    }
    data = tmp_path / "data"
    load_demo(config(data, **overrides), ROWS, START, DAYS, SEED)
    yield data, overrides
    assert not list(data.rglob("*.parquet")), "no data file may be written locally"


def _assert_demoted(data: Path, overrides: dict[str, Any], expected: DayStats) -> None:
    store = store_for(data, LATER, **overrides)
    assert_days_demoted(store, expected)
    files = store.cold.table().inspect.files().column("file_path").to_pylist()
    assert files and all(f.startswith("s3://") for f in files), "Iceberg's files are on S3"
    assert tier_stats(data, LATER, **overrides) == expected


def test_demote_on_s3(on_s3: tuple[Path, dict[str, Any]], expected: DayStats) -> None:
    from tierflight.tiers.maintenance import demote, empty_trash

    data, overrides = on_s3
    store = store_for(data, LATER, **overrides)
    assert [tiers_of(store)[d] for d in AGED] == ["warm"] * len(AGED)
    assert tier_stats(data, LATER, **overrides) == expected

    stats = demote(store, settle=0)

    assert (stats.days, stats.files, stats.rows) == (10, 10, sum(expected[d][0] for d in AGED))
    _assert_demoted(data, overrides, expected)
    assert demote(store, settle=0).days == 0
    # The trash keeps the days for the grace period, then goes; the answers stay.
    assert empty_trash(store) == 0
    assert empty_trash(store, grace_seconds=0) == len(AGED)
    assert trashed(store) == []
    assert tier_stats(data, LATER, **overrides) == expected


@pytest.mark.parametrize("step", ["demote:copied", "demote:committed", "demote:boundary"])
def test_demote_on_s3_crash_at_each_step_then_rerun(
    step: str, on_s3: tuple[Path, dict[str, Any]], expected: DayStats
) -> None:
    from tierflight.tiers.maintenance import demote

    data, overrides = on_s3
    with pytest.raises(Crash):
        demote(store_for(data, LATER, **overrides), fault=crash_at(step), settle=0)
    assert tier_stats(data, LATER, **overrides) == expected
    after = store_for(data, LATER, **overrides)
    where = tiers_of(after)
    moved = step == "demote:boundary"
    assert after.cold_until() == (NEW_BOUNDARY if moved else OLD_BOUNDARY)
    assert all(where[d] == ("cold" if moved else "warm") for d in AGED)
    assert set(AGED) <= {d for d, _ in after.warm.days()}, "nothing is trashed before the boundary moves"
    demote(store_for(data, LATER, **overrides), settle=0)
    _assert_demoted(data, overrides, expected)
    # No copy is left unregistered: the re-run copied over the crashed run's objects.
    from tierflight.tiers.objects import Objects

    store = store_for(data, LATER, **overrides)
    registered = set(store.cold.table().inspect.files().column("file_path").to_pylist())
    location = str(store.cold.table().location())
    objects = store.cold_objects.entries(Objects.path(location), recursive=True)
    assert {store.cold_objects.uri(o.path) for o in objects if o.path.endswith(".parquet")} == registered


def _split(store: Any) -> None:
    """Rewrite each SPLIT day's file as three small ones (work for compaction)."""
    objects = store.warm.objects
    days = dict(store.warm.days())
    for day in SPLIT:
        [src] = [f.path for f in store.warm.live(days[day])]
        table = objects.read_parquet(src, store.schema.names)
        step = -(-table.num_rows // 3)
        for i in range(3):
            piece = table.slice(i * step, step)
            objects.write_parquet(piece, f"{days[day]}/part-split{i}.parquet", store.write_options(piece.num_rows))
        objects.delete(src)


def _assert_compacted(data: Path, overrides: dict[str, Any], expected: DayStats) -> None:
    store = store_for(data, **overrides)
    days = dict(store.warm.days())
    for day in SPLIT:
        names = [p.rpartition("/")[2] for p in store.warm.objects.files(days[day])]
        assert len(names) == 1 and names[0].startswith("part-") and "split" not in names[0], names
    assert {p.start.date(): p.files for p in store.warm.partitions() if p.start.date() in SPLIT} == dict.fromkeys(SPLIT, 1)
    assert sorted(n for n in trashed(store) if "split" in n) == sorted(f"part-split{i}.parquet" for i in range(3) for _ in SPLIT)
    assert tier_stats(data, **overrides) == expected


def test_compaction_on_s3(on_s3: tuple[Path, dict[str, Any]], expected: DayStats) -> None:
    from tierflight.tiers.maintenance import compact_warm

    data, overrides = on_s3
    _split(store_for(data, **overrides))
    store = store_for(data, **overrides)
    assert {p.start.date(): p.files for p in store.warm.partitions() if p.start.date() in SPLIT} == dict.fromkeys(SPLIT, 3)
    assert tier_stats(data, **overrides) == expected

    stats = compact_warm(store, store.config.tiers.compact_small_file_bytes, settle=0)

    assert (stats.partitions, stats.files_before, stats.files_after) == (3, 9, 3)
    _assert_compacted(data, overrides, expected)
    assert compact_warm(store_for(data, **overrides), 1, settle=0).partitions == 0


@pytest.mark.parametrize("step", ["compact:written", "compact:journal", "compact:renamed"])
def test_compaction_on_s3_crash_at_each_step_then_rerun(
    step: str, on_s3: tuple[Path, dict[str, Any]], expected: DayStats
) -> None:
    """After the rename, the merged object and the small ones are all in the prefix: the
    journal hides the small ones from every listing until the re-run trashes them."""
    from tierflight.tiers.maintenance import compact_warm

    data, overrides = on_s3
    _split(store_for(data, **overrides))
    with pytest.raises(Crash):
        compact_warm(store_for(data, **overrides), fault=crash_at(step), settle=0)
    store = store_for(data, **overrides)
    if step == "compact:renamed":
        assert len(store.warm.objects.files(dict(store.warm.days())[SPLIT[0]])) == 5  # 3 + merged + journal
    assert tier_stats(data, **overrides) == expected
    compact_warm(store, settle=0)
    _assert_compacted(data, overrides, expected)
    leftovers = [f for _, day in store.warm.days() for f in store.warm.objects.files(day)]
    assert not [f for f in leftovers if f.rpartition("/")[2].startswith((".", "_"))], "no staged file or journal left"


def test_statements_during_server_maintenance_on_s3_see_each_row_once(
    on_s3: tuple[Path, dict[str, Any]], expected: DayStats
) -> None:
    """The server's own maintenance round (demote, compact, empty the trash) on S3 storage
    while two clients query: every answer is the same, and the round did its work."""
    from conftest import start_in_process

    data, overrides = on_s3
    _split(store_for(data, **overrides))
    total = (sum(v[0] for v in expected.values()), sum(v[1] for v in expected.values()))
    raw_only = {"router.enabled": False, "tables.events.rollups": []}
    running = start_in_process(config(data, LATER, **{**overrides, **raw_only}))
    results = maintenance_under_queries(running, {"all": "SELECT count(*), sum(user_id) FROM events"})
    assert not [r for kind, r in results if kind == "error"], results[:3]
    assert len(results) > 10 and {r for _, r in results} == {total}
    _assert_demoted(data, overrides, expected)
    store = store_for(data, **overrides)
    assert {p.start.date(): p.files for p in store.warm.partitions() if p.start.date() in SPLIT} == dict.fromkeys(SPLIT, 1)
