"""Start ``tierflight serve`` as a subprocess and wait for its ready line.

The one launcher the tests and the benchmarks share: it lives in the package (next to the
command that prints ``tierflight ready at URI``) so that both import it the same way, from
the repository root or an installed copy, and the line is parsed in one place.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# `serve` prints it once it accepts queries; `serve --workers N` adds " (N workers)".
READY_RE = re.compile(r"tierflight ready at (?P<uri>(?P<scheme>grpc(?:\+tls)?)://(?P<host>\S+):(?P<port>\d+))")


def tierflight_cmd() -> list[str]:
    """The ``tierflight`` command of this interpreter's environment."""
    exe = Path(sys.executable).with_name("tierflight")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tierflight"]


def serve_argv(config: Path, data_dir: Path, *extra: str) -> list[str]:
    """``tierflight serve`` on ``config`` and ``data_dir``, any free port, no demo data."""
    return [*tierflight_cmd(), "--config", str(config), "--data-dir", str(data_dir), "serve", "--port", "0", "--no-demo", *extra]


@dataclass
class Launched:
    """A ``tierflight serve`` process that has printed its ready line."""

    proc: subprocess.Popen[str]
    uri: str  # as printed: the bind address (0.0.0.0 for a public bind)
    host: str
    port: int
    ready_line: str
    before: list[str] = field(default_factory=list)  # stdout lines before the ready line
    log_path: Path | None = None

    @property
    def local_uri(self) -> str:
        """Where a client on this machine connects (a wildcard bind is reached on loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "[::]") else self.host
        return self.uri.replace(f"://{self.host}:", f"://{host}:", 1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return dict(os.environ if env is None else env)


def launch(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    stderr: int | None = None,
    timeout: float = 60.0,
    drain: bool = False,
) -> Launched:
    """Run ``argv`` (a ``tierflight serve`` command) and return once it prints its ready line.

    stderr goes to ``log_path`` if given, else to ``stderr`` (a subprocess constant; default:
    nowhere). Past ``timeout`` seconds, or if the process exits first, it is killed and
    RuntimeError says what it printed. The rest of stdout is left to the caller (the ready
    line should be all there is), unless ``drain``: then it is read and dropped, so a chatty
    process cannot block on a full pipe.
    """
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child writes through its own copy of the descriptor; ours is closed at once.
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=log_file, text=True, env=_env(env), cwd=cwd
            )
    else:
        err = subprocess.DEVNULL if stderr is None else stderr
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=err, text=True, env=_env(env), cwd=cwd)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read(fd: int) -> None:
        # Byte by byte from the descriptor, not through proc.stdout: a buffered reader would
        # take what follows the ready line too, and the caller (communicate() reads the
        # descriptor) would never see it. A few short lines: the cost is nothing.
        line = bytearray()
        while chunk := os.read(fd, 1):
            line += chunk
            if chunk != b"\n":
                continue
            text = line.decode(errors="replace")
            line.clear()
            lines.put(text)
            if READY_RE.search(text):
                if drain:
                    while os.read(fd, 1 << 16):
                        pass
                return
        if line:
            lines.put(line.decode(errors="replace"))  # a last line without its newline
        lines.put(None)

    threading.Thread(target=read, args=(proc.stdout.fileno(),), daemon=True, name="tierflight-ready").start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            if proc.poll() is not None and lines.empty():
                break
            continue
        if line is None:
            break
        match = READY_RE.search(line)
        if match:
            return Launched(proc, match["uri"], match["host"], int(match["port"]), line, seen, log_path)
        seen.append(line)
    proc.kill()
    proc.wait(10)
    log_tail = log_path.read_text(errors="replace")[-3000:] if log_path is not None else ""
    raise RuntimeError(
        f"tierflight serve did not report ready within {timeout:.0f} s (exit code {proc.returncode}); "
        f"stdout: {''.join(seen[-5:])!r}" + (f"; log:\n{log_tail}" if log_tail else "")
    )
