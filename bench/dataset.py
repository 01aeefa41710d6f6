"""The data set the data benchmarks share, and helpers to query it outside tierflight.

One year of demo events, generated exactly as ``../shared/workloads/*.sql`` expect::

    TIERFLIGHT_TIERS__NOW=2025-01-01 tierflight generate --rows N --start 2024-01-01 --days 366

With the 90-day warm window, 2024-01-01 .. 2024-10-02 (276 days, about 3/4 of the rows) land
in the cold Iceberg table and 2024-10-03 .. 2024-12-31 (90 days) in warm Parquet. The data dir
is cached under ``bench/.data/<rows>`` (gitignored) once complete, so the benchmarks after
``data_gen`` reuse it; ``rollups build`` writes its snapshots into it too.

Not a benchmark module (see ``bench.registry._NOT_BENCHMARKS``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_DIR,
    BENCH_SERVER_ENV,
    CONFIG,
    ROOT,
    gc_paused,
    link_or_copy,
    log,
    tierflight_cmd,
    utc_now,
)

NOW = dt.date(2025, 1, 1)
START = dt.date(2024, 1, 1)
DAYS = 366
SEED = 42
DATA_ENV = {"TIERFLIGHT_TIERS__NOW": NOW.isoformat()}
# A server whose raw tiers answer every statement, every time: no rollup, no reused answer
# (what the scan and routing comparisons measure).
NO_REUSE_ENV = {"TIERFLIGHT_SERVER__RESULT_CACHE_BYTES": "0"}
RAW_ENV = {**DATA_ENV, "TIERFLIGHT_ROUTER__ENABLED": "false", **NO_REUSE_ENV}
CACHE_ROOT = BENCH_DIR / ".data"
WORKLOADS = ROOT.parent / "shared" / "workloads"
STAMP = ".complete"
TABLE = "events"


def rel(path: Path) -> str:
    """``path`` relative to the repository (for commands and reports), else as is."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def generate_argv(data_dir: Path, rows: int) -> list[str]:
    return [
        *tierflight_cmd(),
        "--config",
        str(CONFIG),
        "--data-dir",
        str(data_dir),
        "generate",
        "--rows",
        str(rows),
        "--start",
        START.isoformat(),
        "--days",
        str(DAYS),
        "--seed",
        str(SEED),
    ]


def shell_command(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """A command line as a user would type it from the repository root."""
    words = [rel(Path(a)) if a.startswith(str(ROOT)) else a for a in argv]
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    return f"{prefix} {shlex.join(words)}".strip()


def generate_command(data_dir: Path, rows: int) -> str:
    return shell_command(generate_argv(data_dir, rows), DATA_ENV)


def cache_dir(rows: int) -> Path:
    return CACHE_ROOT / str(rows)


def is_complete(data_dir: Path) -> bool:
    return (data_dir / STAMP).exists()


@dataclass(frozen=True)
class GenerateRun:
    """One ``tierflight generate`` process, timed from outside."""

    command: str
    wall_seconds: float  # process start to exit (imports, generation, Iceberg commit)
    reported_seconds: float  # the generator's own figure ("wrote ... in X s")
    files: int
    bytes: int


_WROTE_RE = re.compile(r"wrote ([\d,]+) rows in (\d+) files \(([\d.]+) MB\) in ([\d.]+) s")


def run_cli(argv: list[str]) -> tuple[float, str]:
    """Run a ``tierflight`` command on the benchmark data set; (wall seconds, stderr)."""
    started = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, **BENCH_SERVER_ENV, **DATA_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"`{shell_command(argv)}` failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc.stderr


def run_generate(data_dir: Path, rows: int) -> GenerateRun:
    """``tierflight generate`` into the empty ``data_dir`` (removed first if it exists)."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    wall, stderr = run_cli(generate_argv(data_dir, rows))
    match = _WROTE_RE.search(stderr)
    reported = float(match.group(4)) if match else float("nan")
    files = int(match.group(2)) if match else 0
    written = sum(p.stat().st_size for p in data_files(data_dir))
    return GenerateRun(generate_command(data_dir, rows), wall, reported, files, written)


def mark_complete(data_dir: Path) -> None:
    (data_dir / STAMP).write_text(utc_now())


def _pristine(rows: int) -> Path:
    return CACHE_ROOT / f"{rows}.pristine"


def _restore(rows: int) -> None:
    """Put back the copy :func:`mutable_dataset` took (also after a crash in the middle)."""
    backup = _pristine(rows)
    if not is_complete(backup):
        shutil.rmtree(backup, ignore_errors=True)
        return
    shutil.rmtree(cache_dir(rows), ignore_errors=True)
    backup.rename(cache_dir(rows))


@contextlib.contextmanager
def mutable_dataset(rows: int) -> Iterator[Path]:
    """The cached data dir, for a benchmark that writes into it (ingest); restored afterwards.

    The pristine state is copied aside (data files hard-linked, so the copy is cheap), and
    moved back in place when the block ends; the benchmark keeps its usual path and its
    rollup snapshots. (A data dir copied elsewhere would serve too: see tiers.relocate.)
    """
    path = ensure_dataset(rows)
    backup = _pristine(rows)
    shutil.rmtree(backup, ignore_errors=True)
    shutil.copytree(path, backup, copy_function=link_or_copy)
    try:
        yield path
    finally:
        _restore(rows)


def ensure_dataset(rows: int) -> Path:
    """The cached data dir for ``rows`` events, generated first if missing."""
    path = cache_dir(rows)
    if _pristine(rows).exists():
        _restore(rows)
    if is_complete(path):
        return path
    log(f"generating {rows:,} events into {rel(path)}: {generate_command(path, rows)}")
    run_generate(path, rows)
    mark_complete(path)
    return path


# -- files ------------------------------------------------------------------------------------


def warm_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / TABLE / "warm").glob("day=*/*.parquet"))


def cold_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "iceberg").rglob("*.parquet"))


def data_files(data_dir: Path) -> list[Path]:
    return warm_files(data_dir) + cold_files(data_dir)


def day_files(data_dir: Path, first: dt.date, last: dt.date) -> list[Path]:
    """The Parquet files (warm or cold) of the days ``first`` .. ``last``."""
    out: list[Path] = []
    day = first
    while day <= last:
        out += sorted((data_dir / TABLE / "warm" / f"day={day.isoformat()}").glob("*.parquet"))
        out += sorted((data_dir / "iceberg").glob(f"*/{TABLE}/data/*_day={day.isoformat()}/*.parquet"))
        day += dt.timedelta(days=1)
    return out


def cold_boundary() -> dt.date:
    """The first warm day of the data set (days before it are cold)."""
    raw = tomllib.loads(CONFIG.read_text())
    window = str(raw.get("tiers", {}).get("warm_window", "90d"))
    if not window.endswith("d"):
        raise ValueError(f"tiers.warm_window {window!r}: the benchmarks expect days")
    return NOW - dt.timedelta(days=int(window[:-1]))


def derived_columns(table: str = TABLE) -> dict[str, str]:
    raw = tomllib.loads(CONFIG.read_text())
    return dict(raw["tables"][table].get("derived", {}))


def relation_sql(files: Sequence[Path], table: str = TABLE) -> str:
    """``SELECT *, <derived columns> FROM read_parquet([...])``: the table as tierflight shows it."""
    listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    derived = ", ".join(f"{expr} AS {name}" for name, expr in derived_columns(table).items())
    return f"SELECT *, {derived} FROM read_parquet([{listing}], hive_partitioning = false)"


def duckdb_connection(files: Sequence[Path], table: str = TABLE, threads: int | None = None) -> Any:
    """An in-process DuckDB with a view ``table`` over ``files`` plus the derived columns."""
    import duckdb

    con = duckdb.connect()
    if threads is None:
        threads = int(tomllib.loads(CONFIG.read_text()).get("duckdb", {}).get("threads", 0)) or None
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute(f"CREATE VIEW {table} AS {relation_sql(files, table)}")
    return con


def dimension_tables(data_dir: Path) -> dict[str, Any]:
    """Each configured dimension table's rows as the server serves them (Arrow tables, by name).

    Read through the server's own reader (a read-only :class:`DimensionStore`: the version
    ``<data dir>/<table>/dimension/current.json`` names), so DuckDB sees what tierflight joins.
    """
    from tierflight.core.config import load_config
    from tierflight.tiers.dimension import DimensionStore

    config = load_config(CONFIG, data_dir=data_dir, environ={**os.environ, **DATA_ENV})
    return {
        name: DimensionStore(data_dir, table, writer=False).current.data
        for name, table in config.dimensions.items()
    }


def add_dimension_tables(con: Any, data_dir: Path) -> dict[str, int]:
    """Create each dimension table of ``data_dir`` in the DuckDB connection; rows by table."""
    out: dict[str, int] = {}
    for name, data in dimension_tables(data_dir).items():
        con.register("__bench_dimension", data)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM __bench_dimension')
        con.unregister("__bench_dimension")
        out[name] = int(data.num_rows)
    return out


# -- rollups ------------------------------------------------------------------------------------


def rollup_manifests(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "rollups").glob("*.json") if not p.name.endswith(".tmp"))


def rollups_build_argv(data_dir: Path) -> list[str]:
    return [*tierflight_cmd(), "--config", str(CONFIG), "--data-dir", str(data_dir), "rollups", "build"]


def run_rollups_build(data_dir: Path) -> tuple[float, str]:
    """``tierflight rollups build``; returns (wall seconds, stderr)."""
    return run_cli(rollups_build_argv(data_dir))


def ensure_rollups(data_dir: Path) -> None:
    """Build the rollups once, so a server start on the cached data does not."""
    if len(rollup_manifests(data_dir)) == 0:
        log(f"building rollups in {rel(data_dir)}")
        run_rollups_build(data_dir)


# -- workloads and clients ----------------------------------------------------------------------


_NAME_RE = re.compile(r"^\s*--\s*name:\s*(\S+)\s*$")


def read_workload(path: Path) -> list[tuple[str, str]]:
    """``(name, sql)`` for each statement of a workload file (``-- name:`` line, then SQL up to ``;``).

    The shared workloads contain no ``;`` inside literals, so a line scanner suffices.
    """
    out: list[tuple[str, str]] = []
    name: str | None = None
    body: list[str] = []

    def finish() -> None:
        sql = "\n".join(body).strip().rstrip(";").strip()
        if name is not None and sql:
            out.append((name, sql))

    for line in path.read_text().splitlines():
        match = _NAME_RE.match(line)
        if match:
            finish()
            name, body = match.group(1), []
            continue
        if line.lstrip().startswith("--"):
            continue
        body.append(line)
        if line.rstrip().endswith(";"):
            finish()
            name, body = None, []
    finish()
    return out


def connect(uri: str) -> Any:
    import adbc_driver_flightsql.dbapi as fsql

    return fsql.connect(uri, autocommit=True)


def fetch(cursor: Any, sql: str) -> Any:
    cursor.execute(sql)
    return cursor.fetch_arrow_table()


def explain_route(cursor: Any, sql: str) -> list[dict[str, Any]]:
    return list(fetch(cursor, f"EXPLAIN ROUTE {sql}").to_pylist())


def route_label(rows: list[dict[str, Any]]) -> str:
    """The chosen parts of an EXPLAIN ROUTE answer, e.g. ``hot rollup:day_type`` or ``cold 276 files``."""
    parts = []
    for r in rows:
        if r.get("tier") == "rejected":
            continue
        source = str(r.get("source", ""))
        if source.startswith("joined rollup:"):
            continue  # whether a join's joined rollup is held: reported apart (bench/star_schema.py)
        if source.startswith("rollup:"):
            parts.append(source)
        else:
            match = re.search(r"(\d+) partitions", source)
            parts.append(f"{r.get('tier')} ({match.group(1)} partitions)" if match else f"{r.get('tier')}")
    return " + ".join(parts) or "?"


def route_rollup(rows: list[dict[str, Any]]) -> str | None:
    """The rollup an EXPLAIN ROUTE answer reads (the first one), or None."""
    return next(
        (str(r["source"])[len("rollup:") :] for r in rows if str(r.get("source", "")).startswith("rollup:")),
        None,
    )


def timed_runs(
    fn: Callable[[], object],
    *,
    min_runs: int,
    max_runs: int,
    budget_s: float,
    warmup: int = 1,
) -> list[float]:
    """Milliseconds per call: at least ``min_runs``, at most ``max_runs``, stopping after ``budget_s``."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    clock = time.perf_counter_ns
    deadline = time.monotonic() + budget_s
    with gc_paused():
        while len(samples) < max_runs and (len(samples) < min_runs or time.monotonic() < deadline):
            t0 = clock()
            fn()
            samples.append((clock() - t0) / 1e6)
    return samples


def interleaved_runs(
    fns: dict[str, Callable[[], object]],
    *,
    min_runs: int,
    max_runs: int,
    budget_s: float,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Like :func:`timed_runs` for several systems, alternating calls so noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    clock = time.perf_counter_ns
    deadline = time.monotonic() + budget_s
    done = 0
    with gc_paused():
        while done < max_runs and (done < min_runs or time.monotonic() < deadline):
            for name, fn in fns.items():
                t0 = clock()
                fn()
                samples[name].append((clock() - t0) / 1e6)
            done += 1
    return samples


def on_off_duckdb_runs(
    fns: dict[str, Callable[[], object]],
    *,
    routed: bool,
    min_runs: int,
    max_runs: int,
    budget_s: float,
    alone_runs: int,
) -> tuple[dict[str, list[float]], list[float]]:
    """One statement through the routing-on, routing-off and DuckDB callables of ``fns``:
    side by side (alternating), then the ``"on"`` one alone (a rollup-routed statement gets
    less time: its calls are short)."""
    side = interleaved_runs(fns, min_runs=min_runs, max_runs=max_runs, budget_s=budget_s, warmup=1)
    alone = timed_runs(fns["on"], min_runs=20, max_runs=alone_runs, budget_s=3.0 if routed else 5.0, warmup=5)
    return side, alone


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default)."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def data_description(rows: int) -> str:
    boundary = cold_boundary()
    return (
        f"{rows:,} demo events over {DAYS} days ({START} .. {NOW - dt.timedelta(days=1)}, seed {SEED}), "
        f"now pinned to {NOW}: {START} .. {boundary - dt.timedelta(days=1)} cold (Iceberg), "
        f"{boundary} .. {NOW - dt.timedelta(days=1)} warm (Parquet); `{generate_command(cache_dir(rows), rows)}`"
    )


def same_rows(a: Any, b: Any, rel_tol: float = 1e-9) -> bool:
    """Whether two Arrow tables hold the same rows in any order (floats within ``rel_tol``)."""
    import math

    def rows(t: Any) -> list[tuple[Any, ...]]:
        out = [tuple(r.values()) for r in t.to_pylist()]
        return sorted(out, key=lambda r: tuple(repr(v) for v in r if not isinstance(v, float)))

    ra, rb = rows(a), rows(b)
    if len(ra) != len(rb):
        return False
    for x, y in zip(ra, rb, strict=True):
        if len(x) != len(y):
            return False
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and isinstance(v, float):
                if not math.isclose(u, v, rel_tol=rel_tol, abs_tol=1e-9):
                    return False
            elif u != v:
                return False
    return True
