"""Password guessing against a server with users: guesses per second, and what it does to a
legitimate user's ``SELECT 1`` meanwhile.

    PYTHONPATH=server:client python -m bench.login_bruteforce [--threads 16] [--seconds 20]

Starts ``tierflight serve`` (the code on PYTHONPATH, the real 600,000-iteration PBKDF2 hash)
with users ``alice`` (the target) and ``bob`` (the legitimate user, logged in before the
attack, who then runs ``SELECT 1`` with his session token). Reports the guesses the server
answered per second (refused or checked), how many it checked with the hash (the answers
"invalid username or password"), and bob's ``SELECT 1`` p50 before and during the attack.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.flight as flight

from tierflight.protocol import flightsql_pb2 as pb
from tierflight.protocol.auth import hash_password
from tierflight.protocol.wire import pack

ROOT = Path(__file__).resolve().parent.parent


def _start(data_dir: str) -> tuple[subprocess.Popen[str], str]:
    users = f"alice:{hash_password('alice-secret')}:read,bob:{hash_password('bob-secret')}:read"
    env = dict(os.environ, TIERFLIGHT_USERS=users, TIERFLIGHT_METRICS__PORT="0")
    argv = [sys.executable, "-m", "tierflight", "--config", str(ROOT / "conf" / "tierflight.toml"),
            "--data-dir", data_dir, "serve", "--port", "0", "--no-demo"]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"tierflight ready at (grpc://\S+)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("the server did not start")


def _select1_ms(
    client: flight.FlightClient, options: flight.FlightCallOptions, seconds: float
) -> list[float]:
    descriptor = flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query="SELECT 1")))
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        info = client.get_flight_info(descriptor, options)
        client.do_get(info.endpoints[0].ticket, options).read_all()
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.02)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, uri = _start(data_dir)
        try:
            bob = flight.connect(uri)
            options = flight.FlightCallOptions(headers=[bob.authenticate_basic_token("bob", "bob-secret")])
            quiet = _select1_ms(bob, options, 3.0)
            counts = {"checked": 0, "refused": 0}
            lock = threading.Lock()
            stop = threading.Event()

            def guess(n: int) -> None:
                with flight.connect(uri) as client:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        try:
                            client.authenticate_basic_token("alice", f"guess-{n}-{i}")
                        except flight.FlightUnauthenticatedError as exc:
                            kind = "refused" if "too many failed logins" in str(exc) else "checked"
                            with lock:
                                counts[kind] += 1

            threads = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(args.threads)]
            for t in threads:
                t.start()
            attacked = _select1_ms(bob, options, args.seconds)
            stop.set()
            for t in threads:
                t.join()
            total = counts["checked"] + counts["refused"]
            print(f"threads={args.threads} seconds={args.seconds:g}")
            print(f"guesses answered: {total / args.seconds:.1f}/s; checked with the hash: "
                  f"{counts['checked'] / args.seconds:.2f}/s ({counts['checked']} in all)")  # fmt: skip
            print(f"SELECT 1 p50: {statistics.median(quiet):.1f} ms quiet, "
                  f"{statistics.median(attacked):.1f} ms under attack ({len(attacked)} calls)")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
