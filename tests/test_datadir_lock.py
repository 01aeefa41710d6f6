"""One writer per data dir: a second serve (or rollups build) on it is refused clearly."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path

import pytest
from tierflight.core.datadir import lock_data_dir, unlock_data_dir
from tierflight.core.errors import ConfigError

from conftest import CONFIG, ROOT, serve_argv, serve_env, start_subprocess
from tierflight.launch import tierflight_cmd

pytestmark = pytest.mark.subprocess


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=serve_env(), cwd=ROOT, timeout=60)


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_subprocess(data)
    try:
        second = _run(serve_argv(data))
        assert second.returncode != 0
        message = f"data dir {data.resolve()} is in use by another tierflight process (pid {first.proc.pid}); stop it or use --data-dir"
        assert message in second.stderr
        assert "Traceback" not in second.stderr
        build = _run(
            [*tierflight_cmd(), "--config", str(CONFIG), "--data-dir", str(data), "rollups", "build"]
        )
        assert build.returncode != 0 and "is in use by another tierflight process" in build.stderr
    finally:
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
    again = start_subprocess(data)  # kill -9 released the lock
    again.proc.terminate()
    assert again.proc.wait(timeout=60) == 0


def test_the_lock_in_process(tmp_path: Path) -> None:
    lock_data_dir(tmp_path)
    lock_data_dir(tmp_path)  # this process holds it already
    # Another open file description (as another process would have) is refused.
    fd = os.open(tmp_path / ".tierflight.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    unlock_data_dir(tmp_path)
    lock_data_dir(tmp_path)
    unlock_data_dir(tmp_path)


def test_the_message_names_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('locked', flush=True); time.sleep(60)",
         str(tmp_path / ".tierflight.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=r"in use by another tierflight process \(pid 4242\)"):
            lock_data_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait()
