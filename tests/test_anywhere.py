"""Works from anywhere: the packaged default configuration (any working directory, no
--config), and a data dir moved or copied elsewhere serves, ingests and maintains itself
there, never touching the place it came from."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import duckdb
import pyarrow as pa
import pytest

from conftest import CONFIG, ROOT, start_in_process, tierflight_cmd
from storage_helpers import (
    AGED,
    COLD_DAYS,
    GEN_NOW,
    LATER,
    PER_DAY,
    DayStats,
    assert_days_demoted,
    build,
    config,
    oracle,
    run_cli,
    store_for,
    tier_stats,
)

PACKAGED = ROOT / "server" / "tierflight" / "default.toml"


def test_packaged_config_is_the_documented_example() -> None:
    """conf/tierflight.toml documents the configuration the package ships: one copy of it
    (a symlink breaks on checkouts without them, and in sdists), kept equal here."""
    assert PACKAGED.read_bytes() == CONFIG.read_bytes(), (
        "conf/tierflight.toml and server/tierflight/default.toml differ: edit one, copy it over the other"
    )


def test_packaged_config_loads_without_a_file(tmp_path: Path) -> None:
    from tierflight.core.config import load_config

    packaged = load_config(None, environ={}, packaged=True)
    example = load_config(CONFIG, environ={})
    assert packaged.path is None
    assert dataclass_fields(packaged) == dataclass_fields(example)
    assert "events" in packaged.tables
    assert load_config(None, environ={}).tables == {}  # no file and not the packaged one: nothing


def dataclass_fields(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(cfg).items() if k != "path"}


# -- the command from any folder ------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLIGHT_")}
    env.update({"TIERFLIGHT_TIERS__NOW": GEN_NOW.date().isoformat(), "TIERFLIGHT_METRICS__PORT": "0"})
    return env


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*tierflight_cmd(), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture()
def served_elsewhere(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """`tierflight generate` then `tierflight serve` in a folder that is not the repository,
    without --config: the packaged configuration, its storage root ("data") in that folder."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    done = _cli(cwd, "generate", "--rows", "3000", "--start", "2024-09-25", "--days", "20")
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(
        [*tierflight_cmd(), "serve", "--port", "0", "--no-demo"],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    timer = threading.Timer(60, proc.kill)  # a server that never gets ready ends the read loop
    timer.start()
    try:
        assert proc.stdout is not None
        uri = next((m.group(1) for line in proc.stdout if (m := re.search(r"ready at (grpc://\S+)", line))), None)
        assert uri is not None, "tierflight serve did not report ready"
        yield cwd, uri
    finally:
        timer.cancel()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.subprocess
def test_generate_serve_and_query_from_any_folder(served_elsewhere: tuple[Path, str]) -> None:
    cwd, uri = served_elsewhere
    assert (cwd / "data" / "catalog" / "iceberg.db").exists()
    assert (cwd / "data" / "events" / "warm").is_dir()
    done = _cli(cwd, "query", "--uri", uri, "--format", "csv", "SELECT count(*) AS n FROM events")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "3000"


# -- a data dir moved or copied --------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, modification time), to show nothing changed there."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _cold_files(data_dir: Path, now: dt.datetime = GEN_NOW) -> list[str]:
    store = store_for(data_dir, now)
    return store.cold.files()


def test_a_moved_data_dir_serves_and_demotes_from_its_new_place(tmp_path: Path) -> None:
    from tierflight.tiers.maintenance import demote

    a, b = tmp_path / "a", tmp_path / "moved" / "b"
    build(a)
    expected = oracle(a)
    b.parent.mkdir()
    a.rename(b)

    assert tier_stats(b) == expected
    files = _cold_files(b)
    assert files and all(f.startswith(f"{b}/") for f in files), "cold files are read where the data dir is now"
    store = store_for(b, LATER)
    stats = demote(store, settle=0)
    assert stats.days == len(AGED)
    assert_days_demoted(store, expected)
    assert tier_stats(b, LATER) == expected
    assert not a.exists(), "nothing is written where the data dir used to be"


def _batch(n: int, start: dt.datetime, seed: int) -> pa.Table:
    types = ["serve", "impression", "click", "purchase"]
    return pa.table(
        {
            "ts": pa.array([start + dt.timedelta(seconds=11 * i) for i in range(n)], pa.timestamp("us")),
            "type": [types[(i + seed) % 4] for i in range(n)],
            "auction_id": [f"moved-{seed}-{i}" for i in range(n)],
            "advertiser_id": pa.array([i % 20 for i in range(n)], pa.int32()),
            "publisher_id": pa.array([i % 9 for i in range(n)], pa.int32()),
            "bid_price": [1.25 if (i + seed) % 4 == 1 else None for i in range(n)],
            "user_id": pa.array([5000 + i % 77 for i in range(n)], pa.int64()),
            "total_price": [3.0 if (i + seed) % 4 == 3 else None for i in range(n)],
            "country": [["US", "FR"][i % 2] for i in range(n)],
        }
    )


def _plus(expected: DayStats, *batches: pa.Table) -> DayStats:
    con = duckdb.connect()
    try:
        out = dict(expected)
        for i, batch in enumerate(batches):
            con.register(f"b{i}", batch)
            for d, n, users, bids in con.sql(PER_DAY.format(src=f"b{i}")).fetchall():
                old = out.get(d, (0, 0, 0))
                out[d] = (old[0] + int(n), old[1] + int(users), old[2] + int(bids))
        return out
    finally:
        con.close()


def _served_stats(uri: str) -> DayStats:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(PER_DAY.format(src="events"))
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in cur.fetchall()}


@pytest.mark.needs_server  # builds its own data set and serves it
def test_a_copied_data_dir_never_writes_into_the_original(tmp_path: Path) -> None:
    """The copy's catalog names every file under the original dir: a copy that rebased only
    when the original is gone would write its flushes and demotions into it."""
    from tierflight.tiers.maintenance import demote

    a, b = tmp_path / "a", tmp_path / "b"
    build(a)
    expected = oracle(a)
    shutil.copytree(a, b)
    original = _tree(a)

    running = start_in_process(config(b))
    try:
        store = running.app.stores["events"]
        cold = {p.start.date(): p.rows for p in store.partitions() if p.tier == "cold"}
        assert sorted(cold) == COLD_DAYS and cold == {d: expected[d][0] for d in COLD_DAYS}
        assert _served_stats(running.uri) == expected
        late = _batch(300, dt.datetime.combine(COLD_DAYS[1], dt.time(3)), 1)  # a day in Iceberg
        recent = _batch(400, dt.datetime(2024, 10, 20, 5), 2)
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            assert cur.adbc_ingest("events", late, mode="append") == 300
            assert cur.adbc_ingest("events", recent, mode="append") == 400
        first_snapshot = store.cold.snapshot_id()
        running.app.flush_all()
        assert store.hot.rows == 0
        assert store.cold.snapshot_id() != first_snapshot, "the late rows were committed to Iceberg"
        cold_rows = sum(expected[d][0] for d in COLD_DAYS)
        expected = _plus(expected, late, recent)
        assert _served_stats(running.uri) == expected
        # Time travel reads the snapshot from before the copy through the stored names too.
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM events AT (VERSION => {first_snapshot})")
            assert cur.fetchall() == [(cold_rows,)]
    finally:
        running.server.shutdown()
        running.app.close()

    store = store_for(b, LATER)
    assert demote(store, settle=0).days == len(AGED)
    assert_days_demoted(store, expected)
    assert tier_stats(b, LATER) == expected
    built = run_cli(b, "rollups", "build")
    assert built.returncode == 0, built.stderr
    assert "built" in built.stderr
    files = _cold_files(b, LATER)
    assert all(f.startswith(f"{b}/") for f in files) and any("demoted-" in f for f in files)
    assert _tree(a) == original, "the copy wrote into the data dir it was copied from"
    # The original still serves what it held before the copy went its own way.
    assert tier_stats(a) == oracle(a)


def test_a_data_dir_from_before_root_json_finds_its_root_in_the_catalog(tmp_path: Path) -> None:
    """Data dirs made before the stored root was recorded: it is read from the catalog."""
    from tierflight.tiers.relocate import ROOT_FILE, stored_root

    a, b = tmp_path / "a", tmp_path / "b"
    build(a)
    expected = oracle(a)
    (a / "catalog" / ROOT_FILE).unlink()
    shutil.copytree(a, b)
    assert stored_root(b, "tierflight") == str(a)
    assert tier_stats(b) == expected


def test_rebase_maps_only_names_under_the_roots() -> None:
    from tierflight.tiers.relocate import Rebase, relative_name, resolve_name

    r = Rebase("/old/dir", "/new/place")
    assert r.physical("file:///old/dir/iceberg/x.json") == "file:///new/place/iceberg/x.json"
    assert r.physical("/old/dir/iceberg/d/f.parquet") == "/new/place/iceberg/d/f.parquet"
    assert r.physical("/old/dirt/f") == "/old/dirt/f"  # a sibling that shares the prefix
    assert r.physical("s3://bucket/old/dir/f") == "s3://bucket/old/dir/f"
    assert r.logical("/new/place/iceberg/f") == "/old/dir/iceberg/f"
    assert r.logical("/elsewhere/f") == "/elsewhere/f"
    root = Path("/data/dir")
    assert relative_name(root, "/data/dir/events/warm/day=2024-01-01/p.parquet") == "events/warm/day=2024-01-01/p.parquet"
    assert relative_name(root, "s3://b/events/p.parquet") == "s3://b/events/p.parquet"
    assert relative_name(root, "/other/p.parquet") == "/other/p.parquet"
    assert resolve_name(Path("/moved"), "events/warm/p.parquet") == "/moved/events/warm/p.parquet"
    assert resolve_name(Path("/moved"), "/other/p.parquet") == "/other/p.parquet"


def test_a_flush_cut_short_finishes_after_the_data_dir_moved(tmp_path: Path) -> None:
    """The flush journal names its files relative to the data dir: a flush that wrote its
    files and died before publishing them is published from the new place after a move
    (with absolute names it found none, and left the files behind as garbage)."""
    a, b = tmp_path / "a", tmp_path / "b"
    build(a)
    expected = oracle(a)
    late = _batch(200, dt.datetime.combine(COLD_DAYS[2], dt.time(4)), 3)  # into Iceberg
    recent = _batch(250, dt.datetime(2024, 10, 21, 6), 4)
    running = start_in_process(config(a))
    try:
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_ingest("events", late, mode="append")
            cur.adbc_ingest("events", recent, mode="append")
        service = running.app.ingest_service

        def crash(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("killed before publishing")

        service._publish = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="killed"):
            service.flush("events")
    finally:
        running.server.shutdown()
        running.app.close()  # no flush on the way out: as after kill -9
    journal = (a / "events" / "flush.json").read_text()
    assert str(a) not in journal and '"cold": ["iceberg/' in journal

    a.rename(b)
    again = start_in_process(config(b))
    try:
        assert again.app.stores["events"].hot.rows == 0, "the journal's files were published, not replayed"
        assert _served_stats(again.uri) == _plus(expected, late, recent)
    finally:
        again.server.shutdown()
        again.app.close()
    assert not (b / "events" / "flush.json").exists()
    assert not list(b.rglob("*.flushing")), "no staged file left behind"
    assert tier_stats(b) == _plus(expected, late, recent)
