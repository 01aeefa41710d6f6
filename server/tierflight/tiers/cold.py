"""Cold tier: older partitions in an Apache Iceberg table, planned by pyiceberg.

Default catalog: pyiceberg's SQL catalog on SQLite in the data dir (nothing to start). A
REST catalog with S3 storage is configured under ``[iceberg]``. File planning pushes the
statement's time range into the scan and is cached per (snapshot, range), so a repeated
query does not read manifests again.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tierflight.engine.database import quote_literal
from tierflight.errors import StorageUnavailable
from tierflight.log import get_logger
from tierflight.tiers.base import ALL_TIME, Partition, TimeRange

log = get_logger("tierflight.cold")

_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class IcebergSettings:
    catalog_type: str  # "sql" or "rest"
    properties: Mapping[str, str]
    namespace: str

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], data_dir: Path) -> IcebergSettings:
        kind = str(raw.get("type", "sql"))
        props = {str(k): str(v) for k, v in raw.items() if k not in ("type", "namespace")}
        if kind == "sql":
            catalog_dir = data_dir / "catalog"
            catalog_dir.mkdir(parents=True, exist_ok=True)
            props.setdefault("uri", f"sqlite:///{catalog_dir / 'iceberg.db'}")
            props.setdefault("warehouse", (data_dir / "iceberg").absolute().as_uri())
        elif kind != "rest":
            raise StorageUnavailable(f"iceberg.type = {kind!r} is not supported; use 'sql' (embedded) or 'rest'")
        return cls(kind, props, str(raw.get("namespace", "tierflight")))


def load_catalog(settings: IcebergSettings) -> Any:
    try:
        if settings.catalog_type == "sql":
            from pyiceberg.catalog.sql import SqlCatalog

            return SqlCatalog("tierflight", **settings.properties)
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog("tierflight", **settings.properties)
    except Exception as exc:
        where = settings.properties.get("uri", "?")
        raise StorageUnavailable(f"cannot reach the Iceberg catalog at {where}: {exc}") from None


def local_path(uri: str) -> str:
    """DuckDB reads local files by path; Iceberg records them as file:// URIs."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


class ColdTier:
    name = "cold"

    def __init__(self, catalog: Any, settings: IcebergSettings, table_name: str, arrow_schema: pa.Schema, time_column: str) -> None:
        self.catalog = catalog
        self.settings = settings
        self.table_name = table_name
        self.identifier = f"{settings.namespace}.{table_name}"
        self.arrow_schema = arrow_schema
        self.time_column = time_column
        self._lock = threading.Lock()
        self._plans: OrderedDict[tuple[int | None, TimeRange], list[str]] = OrderedDict()
        self._table: Any = None
        self._partitions: list[Partition] = []
        # Rows at or after this instant belong to the warm tier; the cold tier ignores them
        # (see tiers.manager for why a demotion in progress needs this).
        self.until: dt.datetime | None = None
        self.planned = 0  # manifest reads, for tests and benchmarks

    # -- table lifecycle ------------------------------------------------------------------

    def table(self) -> Any:
        with self._lock:
            if self._table is None:
                self._table = self._load_or_create()
            return self._table

    def _load_or_create(self) -> Any:
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.transforms import DayTransform

        try:
            return self.catalog.load_table(self.identifier)
        except NoSuchTableError:
            pass
        except Exception as exc:
            raise StorageUnavailable(f"cannot load Iceberg table {self.identifier}: {exc}") from None
        self.catalog.create_namespace_if_not_exists(self.settings.namespace)
        table = self.catalog.create_table(self.identifier, schema=self.arrow_schema)
        with table.update_spec() as spec:
            spec.add_field(self.time_column, DayTransform(), f"{self.time_column}_day")
        return self.catalog.load_table(self.identifier)

    def exists(self) -> bool:
        try:
            return bool(self.catalog.table_exists(self.identifier))
        except Exception:  # noqa: BLE001 - an unreachable catalog is reported when it is used
            return False

    def refresh(self) -> None:
        if self._table is None and not self.exists():
            self._partitions = []
            return
        try:
            self._table = self.catalog.load_table(self.identifier)
        except Exception as exc:
            raise StorageUnavailable(f"cannot load Iceberg table {self.identifier}: {exc}") from None
        self._partitions = self._read_partitions()

    def snapshot_id(self) -> int | None:
        if self._table is None:
            return None
        snap = self._table.current_snapshot()
        return None if snap is None else int(snap.snapshot_id)

    def data_location(self, day: dt.date) -> str:
        return f"{self.table().location()}/data/{self.time_column}_day={day.isoformat()}"

    # -- reading --------------------------------------------------------------------------

    def _read_partitions(self) -> list[Partition]:
        if self.snapshot_id() is None:
            return []
        info = self._table.inspect.partitions().to_pylist()
        parts = []
        for row in info:
            day = row["partition"][f"{self.time_column}_day"]
            if isinstance(day, int):
                day = dt.date(1970, 1, 1) + dt.timedelta(days=day)
            start = dt.datetime.combine(day, dt.time())
            if self.until is not None and start >= self.until:
                continue
            parts.append(
                Partition(
                    table_name=self.table_name,
                    tier=self.name,
                    partition=f"day={day.isoformat()}",
                    start=start,
                    end=start + _DAY,
                    files=int(row["file_count"]),
                    rows=int(row["record_count"]),
                    bytes=int(row.get("total_data_file_size_in_bytes") or 0),
                )
            )
        return sorted(parts, key=lambda p: p.start)

    def partitions(self) -> list[Partition]:
        return self._partitions

    def _effective(self, time_range: TimeRange) -> TimeRange | None:
        end = time_range.end
        if self.until is not None:
            end = self.until if end is None else min(end, self.until)
        if time_range.start is not None and end is not None and time_range.start >= end:
            return None
        return TimeRange(time_range.start, end)

    def files(self, time_range: TimeRange = ALL_TIME) -> list[str]:
        snap = self.snapshot_id()
        rng = self._effective(time_range)
        if snap is None or rng is None:
            return []
        key = (snap, rng)
        with self._lock:
            cached = self._plans.get(key)
            if cached is not None:
                self._plans.move_to_end(key)
                return cached
        files = self._plan(rng)
        with self._lock:
            self._plans[key] = files
            while len(self._plans) > 1024:
                self._plans.popitem(last=False)
        return files

    def _plan(self, rng: TimeRange) -> list[str]:
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan

        expr: Any = AlwaysTrue()
        if rng.start is not None:
            expr = And(expr, GreaterThanOrEqual(self.time_column, rng.start.isoformat()))
        if rng.end is not None:
            expr = And(expr, LessThan(self.time_column, rng.end.isoformat()))
        try:
            tasks = list(self._table.scan(row_filter=expr).plan_files())
        except Exception as exc:
            raise StorageUnavailable(f"cannot plan the Iceberg scan of {self.identifier}: {exc}") from None
        self.planned += 1
        if any(t.delete_files for t in tasks):
            raise StorageUnavailable(f"{self.identifier} has delete files, which tierflight does not read yet")
        return sorted(local_path(t.file.file_path) for t in tasks)

    def relation_sql(self, time_range: TimeRange = ALL_TIME) -> str | None:
        files = self.files(time_range)
        if not files:
            return None
        listing = ", ".join(quote_literal(f) for f in files)
        return f"SELECT * FROM read_parquet([{listing}], hive_partitioning = false)"

    # -- writing --------------------------------------------------------------------------

    def add_files(self, paths: Sequence[str], properties: Mapping[str, str] | None = None) -> None:
        """Register already-written Parquet files in one commit (a bulk load's only commit)."""
        if not paths:
            return
        table = self.table()
        try:
            table.add_files(list(paths), snapshot_properties=dict(properties or {}))
        except Exception as exc:
            raise StorageUnavailable(f"cannot commit {len(paths)} files to {self.identifier}: {exc}") from None
        self._table = self.catalog.load_table(self.identifier)
