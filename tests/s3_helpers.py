"""SeaweedFS (``weed mini``) for the object-storage tests: S3 and an Iceberg REST catalog on
loopback. The ``weed`` fixture (conftest.py) starts one per session; tests keep apart by
their own prefixes and Iceberg namespaces."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "tierflight-test"
SECRET_KEY = "tierflight-test-secret"
BUCKET = "tierflight"
TABLE_BUCKET = "warehouse"


def weed_binary() -> str | None:
    local = Path(sys.executable).with_name("weed")
    return str(local) if local.exists() else shutil.which("weed")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """Free loopback ports whose +10000 neighbour is free too (weed derives gRPC ports so)."""
    out: list[int] = []
    while len(out) < n:
        p = random.randint(20_000, 50_000)
        if any(abs(p - q) in (0, 10_000) for q in out):
            continue
        if _bindable(p) and _bindable(p + 10_000):
            out.append(p)
    return out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Weed:
    s3_endpoint: str
    catalog_uri: str

    def overrides(self) -> dict[str, Any]:
        return {
            "storage.warm_uri": f"s3://{BUCKET}/data",
            "s3.endpoint": self.s3_endpoint,
            "s3.access_key": ACCESS_KEY,
            "s3.secret_key": SECRET_KEY,
            "iceberg.type": "rest",
            "iceberg.uri": self.catalog_uri,
            "iceberg.warehouse": f"s3://{TABLE_BUCKET}",
        }


def _ready(weed: Weed) -> bool:
    import pyarrow.fs as pafs

    from tierflight.tiers.s3 import S3Settings

    try:
        urllib.request.urlopen(f"{weed.catalog_uri}/v1/config", timeout=1).close()
    except urllib.error.HTTPError:
        pass  # answering (e.g. 401 without credentials) is up
    except OSError:
        return False
    fs = S3Settings(weed.s3_endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY, 1.0).filesystem()
    try:
        return all(fs.get_file_info(b).type == pafs.FileType.Directory for b in (BUCKET, TABLE_BUCKET))
    except OSError:
        return False


@contextmanager
def running_weed(binary: str, root: Path) -> Iterator[Weed]:
    """``weed mini`` on free loopback ports under ``root``, stopped on exit."""
    names = ["master", "volume", "filer", "s3", "admin"]
    *picked, iceberg_port = free_ports(len(names) + 1)
    ports = dict(zip(names, picked, strict=True))
    args = [
        binary,
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-bucket={BUCKET}",
        f"-tableBucket={TABLE_BUCKET}",
        f"-s3.port.iceberg={iceberg_port}",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port + 10_000}" for name, port in ports.items()),
    ]
    (root / "data").mkdir()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = open(root / "weed.log", "w")  # noqa: SIM115 - closed after the process ends
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    weed = Weed(f"http://127.0.0.1:{ports['s3']}", f"http://127.0.0.1:{iceberg_port}")
    try:
        deadline = time.monotonic() + 30
        while not _ready(weed):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "weed.log").read_text()[-2000:]
                pytest.fail(f"weed mini did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.2)
        yield weed
    finally:
        # Killed, not stopped: its data is thrown away with ``root``, and a graceful stop of
        # weed mini's five servers takes over 2 s.
        proc.kill()
        proc.wait()
        log.close()


