"""Object storage (S3) for the warm and cold tiers, through pyarrow's S3 filesystem.

DuckDB cannot load its httpfs extension here, so S3 data reaches it as pyarrow datasets
registered on the statement's cursor (DuckDB scans them with projection and filter
pushdown). ``[s3]`` configures the endpoint and credentials; the access key and secret
default to ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from tierflight.core.config import S3Config
from tierflight.core.errors import StorageUnavailable
from tierflight.core.sql import quote_ident
from tierflight.tiers.base import Registration


def is_s3_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(("s3://", "s3a://"))


def strip_scheme(uri: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key`` (how pyarrow's S3 filesystem names objects)."""
    for prefix in ("s3://", "s3a://"):
        if uri.startswith(prefix):
            return uri[len(prefix) :].rstrip("/")
    return uri.rstrip("/")


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None = None  # e.g. http://127.0.0.1:8333; None: AWS
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    timeout: float = 10.0
    _fs: list[pafs.S3FileSystem] = field(default_factory=list, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: S3Config, environ: Mapping[str, str] | None = None) -> S3Settings:
        """The ``[s3]`` section, each unset key taken from the AWS_* environment."""
        env = os.environ if environ is None else environ
        return cls(
            endpoint=config.endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=config.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key=config.access_key or env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=config.secret_key or env.get("AWS_SECRET_ACCESS_KEY") or None,
            timeout=config.timeout.total_seconds(),
        )

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"

    def iceberg_properties(self) -> dict[str, str]:
        """The same endpoint and credentials as pyiceberg FileIO properties."""
        props = {"s3.region": self.region}
        if self.endpoint:
            props["s3.endpoint"] = self.endpoint
        if self.access_key:
            props["s3.access-key-id"] = self.access_key
        if self.secret_key:
            props["s3.secret-access-key"] = self.secret_key
        return props

    @classmethod
    def from_iceberg_properties(cls, props: Mapping[str, str], fallback: S3Settings, timeout: float) -> S3Settings:
        return cls(
            endpoint=props.get("s3.endpoint", fallback.endpoint),
            region=props.get("s3.region", fallback.region),
            access_key=props.get("s3.access-key-id", fallback.access_key),
            secret_key=props.get("s3.secret-access-key", fallback.secret_key),
            timeout=timeout,
        )

    def filesystem(self) -> pafs.S3FileSystem:
        with self._lock:
            if not self._fs:
                kwargs: dict[str, Any] = {
                    "region": self.region,
                    "connect_timeout": self.timeout,
                    "request_timeout": self.timeout,
                    # One attempt: an unreachable endpoint fails within the timeout, not after retries.
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1),
                }
                if self.access_key and self.secret_key:
                    kwargs["access_key"] = self.access_key
                    kwargs["secret_key"] = self.secret_key
                if self.endpoint:
                    parts = urlsplit(self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}")
                    kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
                    kwargs["scheme"] = parts.scheme or "http"
                    kwargs["force_virtual_addressing"] = False
                self._fs.append(pafs.S3FileSystem(**kwargs))
            return self._fs[0]

    def unavailable(self, what: str, exc: BaseException) -> StorageUnavailable:
        text = str(exc).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__
        return StorageUnavailable(f"cannot {what} (S3 endpoint {self.where}): {detail}")

    # -- reading and writing ----------------------------------------------------------------

    def registration(self, uris: Sequence[str], schema: pa.Schema) -> tuple[str, Registration]:
        """SQL over a dataset of the objects (columns by name) and the registration it needs."""
        name = f"__tf_s3_{uuid.uuid4().hex[:16]}"
        # Nullable: a file written without the NOT NULL flags still lines up with the table.
        loose = pa.schema([f.with_nullable(True) for f in schema])
        dataset = ds.dataset(
            [strip_scheme(u) for u in uris], schema=loose, format="parquet", filesystem=self.filesystem()
        )
        cols = ", ".join(quote_ident(n) for n in schema.names)
        return f"SELECT {cols} FROM {quote_ident(name)}", (name, dataset)
