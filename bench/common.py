"""Shared helpers: the benchmark context, servers under test, timing, statistics, machine info."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import math
import os
import platform
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tierflight.launch import launch, serve_argv, tierflight_cmd

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
DATA_ROOT = BENCH_DIR / "data"
CONFIG = ROOT / "conf" / "tierflight.toml"
ROAPI_VENV = BENCH_DIR / ".venv-roapi"
ROAPI_PACKAGE = "roapi"


def log(message: str) -> None:
    """Progress output (stderr, so stdout stays clean for whoever pipes it)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- machine, commit, date ------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return float("nan")


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "?"))


def machine_info() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": _version("pyarrow"),
        "duckdb": _version("duckdb"),
        "adbc_driver_flightsql": _version("adbc_driver_flightsql"),
        "nice": os.nice(0) if hasattr(os, "nice") else 0,
    }


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": sha, "dirty": dirty}


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- statistics and timing ---------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize_ms(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(samples_ms),
        "p50": percentile(samples_ms, 50),
        "p90": percentile(samples_ms, 90),
        "p99": percentile(samples_ms, 99),
        "mean": sum(samples_ms) / len(samples_ms) if samples_ms else float("nan"),
        "min": min(samples_ms) if samples_ms else float("nan"),
        "max": max(samples_ms) if samples_ms else float("nan"),
    }


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC pauses of the benchmark process inside a measurement."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def measure_latency(fn: Callable[[], object], calls: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``calls`` sequential calls of ``fn``, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = [0.0] * calls
    clock = time.perf_counter_ns
    with gc_paused():
        for i in range(calls):
            t0 = clock()
            fn()
            samples[i] = (clock() - t0) / 1e6
    return samples


@dataclass
class Stopwatch:
    seconds: float = 0.0
    _t0: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


# -- processes under test ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# The benchmark servers' settings on top of conf/tierflight.toml: no metrics port clash, no
# background maintenance moving partitions while a measurement runs, and no autonomous rollups
# (they would change routes mid-measurement, and persist into the shared data dirs under
# bench/data; bench/auto_rollups.py turns them on, on a copy of its own).
BENCH_SERVER_ENV = {
    "TIERFLIGHT_METRICS__PORT": "0",
    "TIERFLIGHT_TIERS__MAINTENANCE_INTERVAL": "0s",
    "TIERFLIGHT_ROLLUPS__AUTO": "false",
}


@dataclass
class TierflightServer:
    """A ``tierflight serve`` subprocess."""

    proc: subprocess.Popen[str]
    uri: str
    host: str
    port: int
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)


def start_tierflight(
    data_dir: Path,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    *,
    config: Path = CONFIG,
    log_path: Path | None = None,
    timeout: float = 180.0,
) -> TierflightServer:
    """Start ``tierflight serve --port 0`` on ``data_dir``; returns once it prints its ready line.

    The server's log (stderr) goes to ``log_path`` (or nowhere), like a production log file.
    """
    started = launch(
        serve_argv(config, data_dir, *extra_args),
        env={**os.environ, **BENCH_SERVER_ENV, **(env or {})},
        cwd=ROOT,
        log_path=log_path,
        timeout=timeout,
        drain=True,
    )
    return TierflightServer(started.proc, started.uri, started.host, started.port, log_path)


def link_or_copy(src: str, dst: str) -> object:
    """``shutil.copytree``'s copy function for a data dir: data files are never rewritten in
    place (new files, renames), so they are shared; everything else (the SQLite catalog,
    state files, the WAL) is copied."""
    if src.endswith((".parquet", ".arrow")):
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass
    return shutil.copy2(src, dst)


def server_copy(data_dir: Path, tag: str) -> Path:
    """A copy of ``data_dir`` for a second server beside the first on the same data (one
    writer per data dir: ``serve`` locks it). Data files are hard-linked, the rest copied, the
    lock file left out; an embedded Iceberg catalog follows its copy (tiers.relocate). Take it
    before a server starts on ``data_dir``."""
    copy = data_dir.parent / f"{data_dir.name}.{tag}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(
        data_dir, copy, copy_function=link_or_copy, ignore=shutil.ignore_patterns(".tierflight.lock")
    )
    return copy


@contextlib.contextmanager
def tierflight_server(data_dir: Path, **kwargs: Any) -> Iterator[TierflightServer]:
    server = start_tierflight(data_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


class Unavailable(Exception):
    """A comparison system could not be installed or started; the message says why."""


def ensure_roapi() -> Path:
    """The ``roapi`` binary from PyPI, installed into ``bench/.venv-roapi`` on first use."""
    exe = ROAPI_VENV / "bin" / "roapi"
    if exe.exists():
        return exe
    python = shutil.which("python3") or sys.executable
    log(f"installing {ROAPI_PACKAGE} into {ROAPI_VENV.relative_to(ROOT)} (first run only)")
    try:
        if not (ROAPI_VENV / "bin" / "python").exists():
            subprocess.run(
                [python, "-m", "venv", str(ROAPI_VENV)], check=True, capture_output=True, timeout=300
            )
        subprocess.run(
            [str(ROAPI_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", ROAPI_PACKAGE],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise Unavailable(f"`pip install {ROAPI_PACKAGE}` failed: {detail[-1] if detail else exc}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"could not create {ROAPI_VENV}: {exc}") from None
    if not exe.exists():
        raise Unavailable(f"`pip install {ROAPI_PACKAGE}` installed no `roapi` executable")
    return exe


@dataclass
class ExternalServer:
    proc: subprocess.Popen[bytes]
    uri: str
    version: str
    _log_file: IO[bytes] | None = None

    def stop(self) -> None:
        stop_process(self.proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def start_roapi(
    tables: dict[str, Path | str], log_path: Path | None = None, timeout: float = 60.0
) -> ExternalServer:
    """``roapi -t name=file.parquet ... --addr-flight-sql 127.0.0.1:PORT`` (a table source may
    carry ROAPI's options: ``dir,format=parquet``); raises :class:`Unavailable`."""
    exe = ensure_roapi()
    try:
        version = subprocess.run(
            [str(exe), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"`roapi --version` failed: {exc}") from None
    port, http_port, pg_port = free_port(), free_port(), free_port()
    cmd = [str(exe)]
    for name, path in tables.items():
        cmd += ["-t", f"{name}={path}"]
    # roapi always serves HTTP and Postgres too; keep them off the default ports.
    cmd += [
        "--addr-flight-sql",
        f"127.0.0.1:{port}",
        "--addr-http",
        f"127.0.0.1:{http_port}",
        "--addr-postgres",
        f"127.0.0.1:{pg_port}",
    ]
    log_file: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("wb")
    proc = subprocess.Popen(
        cmd,
        stdout=log_file or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        wait_for_port("127.0.0.1", port, timeout, proc)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(proc)
        if log_file is not None:
            log_file.close()
        raise Unavailable(f"roapi did not start: {exc}") from None
    return ExternalServer(proc, f"grpc://127.0.0.1:{port}", version, log_file)


def start_floor(timeout: float = 60.0) -> ExternalServer:
    """The minimal pyarrow.flight server of :mod:`bench.floor`, as a subprocess."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    assert proc.stdout is not None
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        line = lines.get(timeout=timeout).decode()
    except queue.Empty:
        line = ""
    match = re.search(r"floor ready at (grpc://\S+)", line)
    if not match:
        stop_process(proc)
        raise Unavailable(f"the floor server did not start (output {line!r})")
    return ExternalServer(proc, match.group(1), "pyarrow.flight floor server")


def flightsql_command(sql: str) -> bytes:
    """A serialized ``Any(CommandStatementQuery)`` for a raw pyarrow.flight descriptor."""
    from google.protobuf import any_pb2

    from tierflight.protocol import flightsql_pb2 as pb

    msg = any_pb2.Any()
    msg.Pack(pb.CommandStatementQuery(query=sql), type_url_prefix="type.googleapis.com/")
    return msg.SerializeToString()


# -- the context every benchmark gets ------------------------------------------------------------


@dataclass
class BenchContext:
    rows: int = 20_000_000
    quick: bool = False
    repeats: int = 3
    results_dir: Path = RESULTS_DIR
    data_root: Path = DATA_ROOT
    command: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def scratch(self, name: str) -> Path:
        """A per-benchmark directory for logs and small files (under the gitignored results dir)."""
        path = self.results_dir / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def demo_data(self, rows: int, days: int = 30, seed: int = 42) -> tuple[Path, dict[str, str]]:
        """A data dir with ``rows`` demo events over ``days`` days ending on a pinned date.

        Generated once with ``tierflight generate`` and kept under bench/data/. Returns the
        directory and the environment a server on it needs (the pinned clock).
        """
        now = dt.date(2025, 1, 1)
        start = now - dt.timedelta(days=days - 1)
        env = {"TIERFLIGHT_TIERS__NOW": now.isoformat()}
        path = self.data_root / f"events-{rows}-{days}d-s{seed}"
        stamp = path / ".complete"
        if stamp.exists():
            return path, env
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        log(f"generating {rows:,} demo events over {days} days into {path.relative_to(ROOT)}")
        subprocess.run(
            [
                *tierflight_cmd(),
                "--config",
                str(CONFIG),
                "--data-dir",
                str(path),
                "generate",
                "--rows",
                str(rows),
                "--start",
                start.isoformat(),
                "--days",
                str(days),
                "--seed",
                str(seed),
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, **BENCH_SERVER_ENV, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stamp.write_text(utc_now())
        return path, env
