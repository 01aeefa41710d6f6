"""Small data dirs of their own for the storage tests: generate, oracle, tier answers, faults.

Generated with ``tiers.now`` = GEN_NOW (warm window 90d: days before 2024-10-03 are cold);
advancing the clock to LATER (+10 days) ages the ten warm days 2024-10-03..2024-10-12.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from conftest import CONFIG, ROOT, load_demo, make_config
from tierflight.launch import tierflight_cmd

GEN_NOW = dt.datetime(2025, 1, 1)
LATER = GEN_NOW + dt.timedelta(days=10)
START = dt.date(2024, 9, 23)
DAYS = 30  # 2024-09-23 .. 2024-10-22
ROWS = 12_000
SEED = 11
OLD_BOUNDARY = dt.date(2024, 10, 3)
NEW_BOUNDARY = dt.date(2024, 10, 13)
AGED = [OLD_BOUNDARY + dt.timedelta(days=i) for i in range(10)]
COLD_DAYS = [START + dt.timedelta(days=i) for i in range((OLD_BOUNDARY - START).days)]
YOUNG = [NEW_BOUNDARY + dt.timedelta(days=i) for i in range(DAYS - (NEW_BOUNDARY - START).days)]

# Per day: (rows, sum(user_id), rows with a bid): integers, so comparisons are exact.
DayStats = dict[dt.date, tuple[int, int, int]]
PER_DAY = "SELECT CAST(ts AS DATE) AS d, count(*), sum(user_id), count(bid_price) FROM {src} GROUP BY d"


def config(data_dir: Path, now: dt.datetime = GEN_NOW, **overrides: Any) -> Any:
    return make_config(data_dir, **{"tiers.now": now, **overrides})


def build(data_dir: Path, rows: int = ROWS) -> Path:
    """Generate the demo rows into a fresh data dir (cold, warm) and return it."""

    cfg = config(data_dir)
    load_demo(cfg, rows, START, DAYS, SEED)
    return data_dir


def data_files(data_dir: Path) -> list[str]:
    return sorted(str(p) for p in data_dir.rglob("*.parquet") if "trash" not in p.parts)


def oracle(data_dir: Path) -> DayStats:
    """Per-day stats over every data file in the dir, read flat (take it before maintenance)."""
    con = duckdb.connect()
    try:
        rows = con.sql(PER_DAY.format(src=f"read_parquet({data_files(data_dir)!r})")).fetchall()
    finally:
        con.close()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def tier_stats(data_dir: Path, now: dt.datetime = GEN_NOW, **overrides: Any) -> DayStats:
    """Per-day stats as tierflight's tiers answer them, from fresh objects (as a new process)."""
    from tierflight.core.sql import table_view_sql

    from tierflight.engine.database import Database
    from tierflight.tiers.store import TableStore

    cfg = config(data_dir, now, **overrides)
    db = Database(cfg)
    try:
        store = TableStore(cfg, cfg.table("events"))
        sources = store.sources()
        body = table_view_sql(store.table, [s.sql for s in sources])
        cur = db.cursor()
        for name, relation in (r for s in sources for r in s.registrations):
            cur.register(name, relation)  # S3 files reach DuckDB as registered datasets
        rows = cur.sql(PER_DAY.format(src=f"({body})")).fetchall()
    finally:
        db.close()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def store_for(data_dir: Path, now: dt.datetime = GEN_NOW, **overrides: Any) -> Any:
    """A TableStore over ``data_dir`` (as a new process opens it)."""
    from tierflight.tiers.store import TableStore

    cfg = config(data_dir, now, **overrides)
    return TableStore(cfg, cfg.table("events"))


def tiers_of(store: Any) -> dict[dt.date, str]:
    store.refresh()
    return {p.start.date(): p.tier for p in store.partitions() if p.tier != "hot"}


def trashed(store: Any) -> list[str]:
    """Names of what sits in the warm tier's trash (``<stamp>-<id>-<name>``), local or S3."""
    return [e.base_name.split("-", 2)[2] for e in store.warm.objects.entries(store.warm.trash_path)]


def assert_days_demoted(store: Any, expected: DayStats) -> None:
    """Aged days in cold (each once: a second commit would double its rows), the others
    where they were, the boundary moved, and the aged days out of the warm tier, in its trash."""
    where = tiers_of(store)
    assert {d for d in AGED if where.get(d) != "cold"} == set()
    assert all(where[d] == "cold" for d in COLD_DAYS)
    assert all(where[d] == "warm" for d in YOUNG)
    assert store.cold_until() == NEW_BOUNDARY
    cold_rows = {p.start.date(): p.rows for p in store.cold.partitions()}
    assert {d: cold_rows[d] for d in AGED} == {d: expected[d][0] for d in AGED}
    assert not {d for d, _ in store.warm.days()} & set(AGED), "aged days are gone from the warm tier"
    assert {f"day={d.isoformat()}" for d in AGED} <= set(trashed(store))


def warm_dir(data_dir: Path, day: dt.date) -> Path:
    return data_dir / "events" / "warm" / f"day={day.isoformat()}"


def warm_file(data_dir: Path, day: dt.date) -> Path:
    files = sorted(warm_dir(data_dir, day).glob("*.parquet"))
    assert len(files) == 1, files
    return files[0]


def split_day(data_dir: Path, day: dt.date, pieces: int = 3) -> list[Path]:
    """Rewrite a warm day as ``pieces`` small files (work for compaction)."""
    from tierflight.tiers.parquet import write_file, write_options

    src = warm_file(data_dir, day)
    table = pq.read_table(src)
    step = -(-table.num_rows // pieces)
    out = []
    for i in range(pieces):
        dst = src.with_name(f"part-split{i}.parquet")
        piece = table.slice(i * step, step)
        write_file(piece, dst, write_options(config(data_dir).table("events"), piece.num_rows))
        out.append(dst)
    src.unlink()
    return out


def run_cli(data_dir: Path, *args: str, now: dt.datetime = LATER, fault: str | None = None, **env: str) -> Any:
    """``tierflight --config ... --data-dir DIR ARGS`` in a subprocess (the crash tests kill it)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLIGHT_")}
    full.update({"TIERFLIGHT_TIERS__NOW": now.date().isoformat(), "TIERFLIGHT_METRICS__PORT": "0", **env})
    if fault:
        full["TIERFLIGHT_FAULT"] = fault
    return subprocess.run(
        [*tierflight_cmd(), "--config", str(CONFIG), "--data-dir", str(data_dir), *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Crash(Exception):
    """An injected fault: the in-process stand-in for the process dying at a step."""


def crash_at(step: str) -> Any:
    def hook(current: str) -> None:
        if current == step:
            raise Crash(step)

    return hook


def maintenance_under_queries(running: Any, statements: dict[str, str]) -> list[tuple[str, Any]]:
    """Two clients run ``statements`` (name -> SQL) in a loop while the server runs one
    maintenance round; then the server stops. Each answer as (name, row), failures as
    ("error", message)."""
    import threading
    import time

    import adbc_driver_flightsql.dbapi as fsql

    results: list[tuple[str, Any]] = []
    stop = threading.Event()

    def query() -> None:
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            while not stop.is_set():
                try:
                    for name, sql in statements.items():
                        cur.execute(sql)
                        results.append((name, tuple(cur.fetchone() or ())))
                except Exception as exc:
                    results.append(("error", str(exc).splitlines()[0]))

    threads = [threading.Thread(target=query) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        running.app.run_maintenance()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        running.server.shutdown()
        running.app.close()
    return results
