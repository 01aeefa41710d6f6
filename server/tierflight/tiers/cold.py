"""Cold tier: older partitions in an Apache Iceberg table, planned by pyiceberg.

Default catalog: pyiceberg's SQL catalog on SQLite in the data dir (nothing to start). A
REST catalog with S3 storage is configured under ``[iceberg]``. File planning pushes the
statement's time range into the scan and is cached per (snapshot, range), so a repeated
query does not read manifests again.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tierflight.core.config import CatalogType, IcebergAuth, IcebergConfig, OnUnavailable
from tierflight.core.errors import StorageUnavailable, first_line
from tierflight.core.log import get_logger
from tierflight.core.lru import LRU
from tierflight.core.sql import quote_literal
from tierflight.tiers.base import ALL_TIME, Partition, Relation, Scan, Tier, TierKind, TimeRange
from tierflight.tiers.evolution import parquet_relation
from tierflight.tiers.relocate import Rebase, rebase_properties
from tierflight.tiers.s3 import S3Settings, is_s3_uri

log = get_logger("tierflight.cold")

_DAY = dt.timedelta(days=1)


# Properties that already configure how pyiceberg authenticates to a REST catalog.
_AUTH_KEYS = ("credential", "token", "rest.sigv4-enabled", "oauth2-server-uri")


@dataclass(frozen=True)
class IcebergSettings:
    catalog_type: CatalogType
    properties: Mapping[str, str]
    namespace: str
    # Seconds a catalog (REST) or object store request may take before it fails.
    timeout: float = 10.0
    # ERROR: a statement that needs the cold tier fails while it is unavailable; SKIP: it is
    # answered from the other tiers, and the log says so.
    on_unavailable: OnUnavailable = OnUnavailable.ERROR
    # The object store the table's files live on (REST catalogs): endpoint and credentials.
    s3: S3Settings = field(default_factory=S3Settings)

    @property
    def where(self) -> str:
        return self.properties.get("uri", "?")

    @property
    def rebase(self) -> Rebase | None:
        """How names the embedded catalog records map to files in this data dir (None: other
        catalogs, and a configured warehouse, record real locations)."""
        return Rebase.from_properties(self.properties)

    @classmethod
    def from_config(cls, config: IcebergConfig, data_dir: Path, s3: S3Settings | None = None) -> IcebergSettings:
        s3 = s3 or S3Settings()
        kind = config.type
        props = dict(config.properties)
        if config.uri:
            props["uri"] = config.uri
        if config.warehouse:
            props["warehouse"] = config.warehouse
        timeout = config.timeout.total_seconds()
        # pyarrow's S3 client otherwise waits for the OS to give up on an unreachable endpoint.
        props.setdefault("s3.connect-timeout", f"{timeout:g}")
        props.setdefault("s3.request-timeout", f"{timeout:g}")
        if kind is CatalogType.SQL:
            catalog_dir = data_dir / "catalog"
            catalog_dir.mkdir(parents=True, exist_ok=True)
            props.setdefault("uri", f"sqlite:///{catalog_dir / 'iceberg.db'}")
            if "warehouse" not in props:
                # The default warehouse moves with the data dir (tiers.relocate).
                props.update(rebase_properties(data_dir, config.namespace))
        else:
            # The table's files are on the [s3] endpoint unless s3.* properties say otherwise.
            for key, value in s3.iceberg_properties().items():
                props.setdefault(key, value)
            # SeaweedFS (and other S3-tables catalogs) accept the S3 key pair as OAuth2 client
            # credentials; explicit credential/token/SigV4 properties take precedence.
            if config.auth is IcebergAuth.KEYS and not any(k in props for k in _AUTH_KEYS) and s3.access_key and s3.secret_key:
                props["credential"] = f"{props.get('s3.access-key-id', s3.access_key)}:{props.get('s3.secret-access-key', s3.secret_key)}"
        files = S3Settings.from_iceberg_properties(props, s3, timeout)
        return cls(kind, props, config.namespace, timeout, config.on_unavailable, files)


def _rest_catalog(settings: IcebergSettings) -> Any:
    from pyiceberg.catalog.rest import RestCatalog

    timeout = settings.timeout

    class _TimedRestCatalog(RestCatalog):
        """pyiceberg sends REST requests without a timeout: a catalog that accepts the
        connection and never answers would hang start-up and every statement."""

        @staticmethod
        def _timed(session: Any) -> Any:
            if getattr(session, "_tierflight_timed", False):
                return session
            send = session.request

            def request(method: str, url: str, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", timeout)
                return send(method, url, **kwargs)

            session.request = request
            session._tierflight_timed = True
            return session

        def _create_legacy_oauth2_auth_manager(self, session: Any) -> Any:
            # The OAuth2 token (credential = key:secret) is fetched here, on the new session.
            return super()._create_legacy_oauth2_auth_manager(self._timed(session))

        def _create_session(self) -> Any:
            return self._timed(super()._create_session())

    return _TimedRestCatalog("tierflight", **settings.properties)


def load_catalog(settings: IcebergSettings) -> Any:
    try:
        if settings.catalog_type is CatalogType.SQL:
            from pyiceberg.catalog.sql import SqlCatalog

            return SqlCatalog("tierflight", **settings.properties)
        return _rest_catalog(settings)
    except Exception as exc:  # noqa: BLE001 - pyiceberg and its HTTP/SQL clients raise many types
        raise StorageUnavailable(f"cannot reach the Iceberg catalog at {settings.where}: {first_line(exc)}") from None


def _iceberg_type(arrow_type: pa.DataType) -> Any:
    """The Iceberg type of a table column's Arrow type (tiers.evolution.DUCK_TO_ARROW)."""
    from pyiceberg import types as t

    if pa.types.is_timestamp(arrow_type):
        return t.TimestamptzType() if arrow_type.tz else t.TimestampType()
    kinds = {
        pa.int16(): t.IntegerType(),  # Iceberg has no 16-bit integer
        pa.int32(): t.IntegerType(),
        pa.int64(): t.LongType(),
        pa.float32(): t.FloatType(),
        pa.float64(): t.DoubleType(),
        pa.string(): t.StringType(),
        pa.bool_(): t.BooleanType(),
        pa.date32(): t.DateType(),
    }
    return kinds[arrow_type]


def local_path(uri: str) -> str:
    """DuckDB reads local files by path; Iceberg records them as file:// URIs."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _partition_dir(path: str) -> str | None:
    """The key of a path's only ``key=value`` directory (None: none, or more than one)."""
    keys = [part.split("=", 1)[0] for part in path.split("/")[:-1] if "=" in part]
    return keys[0] if len(keys) == 1 else None


@dataclass(frozen=True)
class ColdState:
    """One consistent view of the tier: the table snapshot it serves and the days before ``until``."""

    table: Any  # a pyiceberg Table, or None when there is none yet (or it is unavailable)
    until: dt.datetime | None
    partitions: tuple[Partition, ...] = ()
    unavailable: str | None = None  # why the tier is skipped (iceberg.on_unavailable = "skip")

    @property
    def snapshot_id(self) -> int | None:
        if self.table is None:
            return None
        snap = self.table.current_snapshot()
        return None if snap is None else int(snap.snapshot_id)


class ColdTier(Tier[ColdState]):
    kind = TierKind.COLD

    def __init__(
        self, catalog: Any, settings: IcebergSettings, table_name: str, arrow_schema: pa.Schema, time_column: str
    ) -> None:
        self._catalog = catalog  # None: connect on first use (see the catalog property)
        self.settings = settings
        self.table_name = table_name
        self.identifier = f"{settings.namespace}.{table_name}"
        self.arrow_schema = arrow_schema
        self.time_column = time_column
        self._lock = threading.Lock()
        self._plans: LRU[tuple[int | None, TimeRange], list[str]] = LRU(1024)
        # Whether the files of a plan above all sit in local day partition directories
        # (asked of every file on every statement otherwise); keyed by the list itself,
        # which is kept in the entry so that its id is not reused while it is remembered.
        self._in_day_dirs: LRU[int, tuple[list[str], bool]] = LRU(1024)
        self._plain_relations: LRU[int, tuple[Sequence[str], Relation]] = LRU(256)
        self._day_relations: LRU[tuple[int, str], tuple[list[str], pa.Schema, dict[str, tuple[str, ...]], Relation]] = LRU(256)
        self._location: str | None = None
        self._rebase = settings.rebase
        # What statements are planned against, swapped whole by apply(). Rows at or after
        # ``until`` belong to the warm tier; the cold tier ignores them (a demotion commits
        # days to Iceberg before it moves the boundary).
        self._state = ColdState(None, None)
        self.planned = 0  # manifest reads, for tests and benchmarks
        # Whether the table's schema evolved (tiers.evolution): files may then store fewer
        # columns or narrower types, and are read by the columns their footers name.
        self.evolved = False
        self.aliases: dict[str, tuple[str, ...]] = {}  # renamed columns: their former names
        self._footers: LRU[str, pa.Schema] = LRU(65536)

    @property
    def catalog(self) -> Any:
        if self._catalog is None:
            self._catalog = load_catalog(self.settings)
        return self._catalog

    @property
    def until(self) -> dt.datetime | None:
        return self._state.until

    def _unavailable(self, what: str, exc: BaseException) -> StorageUnavailable:
        where = f"catalog {self.settings.where}"
        if endpoint := self.settings.properties.get("s3.endpoint"):
            where += f", S3 endpoint {endpoint}"
        return StorageUnavailable(f"cannot {what} Iceberg table {self.identifier} ({where}): {first_line(exc)}")

    # -- table lifecycle ------------------------------------------------------------------

    def table(self) -> Any:
        """The current table for writing (loaded afresh: another process may have committed)."""
        with self._lock:
            return self._load_or_create()

    def _load_or_create(self) -> Any:
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.transforms import DayTransform

        try:
            return self.catalog.load_table(self.identifier)
        except NoSuchTableError:
            pass
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any catalog failure is reported as the catalog's
            raise self._unavailable("load", exc) from None
        try:
            self.catalog.create_namespace_if_not_exists(self.settings.namespace)
            table = self.catalog.create_table(self.identifier, schema=self.arrow_schema)
            with table.update_spec() as spec:
                spec.add_field(self.time_column, DayTransform(), f"{self.time_column}_day")
            return self.catalog.load_table(self.identifier)
        except Exception as exc:  # noqa: BLE001 - any catalog failure is reported as the catalog's
            raise self._unavailable("create", exc) from None

    def _exists(self) -> bool:
        try:
            return bool(self.catalog.table_exists(self.identifier))
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any catalog failure is reported as the catalog's
            raise self._unavailable("look up", exc) from None

    def exists(self) -> bool:
        """Whether the table exists; an unreachable catalog is an error (False when skipped)."""
        try:
            return self._exists()
        except StorageUnavailable as exc:
            if self.settings.on_unavailable is not OnUnavailable.SKIP:
                raise
            log.warning("cold_tier_skipped", table=self.table_name, error=exc.message)
            return False

    def load_state(self, until: dt.datetime | None) -> ColdState:
        """Read the current snapshot and its partitions without changing what the tier serves."""
        try:
            if not self._exists():
                return ColdState(None, until)
            try:
                table = self.catalog.load_table(self.identifier)
                parts = self._read_partitions(table, until)
            except Exception as exc:  # noqa: BLE001 - any catalog failure is reported as the catalog's
                raise self._unavailable("load", exc) from None
        except StorageUnavailable as exc:
            if self.settings.on_unavailable is not OnUnavailable.SKIP:
                raise
            log.warning(
                "cold_tier_unavailable",
                table=self.table_name,
                error=exc.message,
                action="statements are answered from the warm and hot tiers only (iceberg.on_unavailable = skip)",
            )
            return ColdState(None, until, (), exc.message)
        return ColdState(table, until, tuple(parts))

    def build_listing(self, cold_until: dt.date | None) -> ColdState:
        # No boundary yet: nothing was demoted, the cold tier serves no day.
        day = cold_until if cold_until is not None else dt.date(1970, 1, 1)
        return self.load_state(dt.datetime.combine(day, dt.time()))

    def apply(self, listing: ColdState) -> None:
        self._state = listing

    def listing(self) -> ColdState:
        return self._state

    def state(self) -> ColdState:
        return self._state

    def snapshot_id(self) -> int | None:
        return self._state.snapshot_id

    def physical(self, location: str) -> str:
        """Where a file the catalog names is now (a path, or a URI on S3)."""
        return local_path(self._rebase.physical(location) if self._rebase else location)

    def data_location(self, day: dt.date) -> str:
        """Where a data file of ``day`` is written (under the current data dir)."""
        if self._location is None:
            self._location = str(self.table().location())
        return self.physical(f"{self._location}/data/{self.time_column}_day={day.isoformat()}")

    # -- reading --------------------------------------------------------------------------

    def _read_partitions(self, table: Any, until: dt.datetime | None) -> list[Partition]:
        if table.current_snapshot() is None:
            return []
        info = table.inspect.partitions().to_pylist()
        parts = []
        for row in info:
            day = row["partition"][f"{self.time_column}_day"]
            if isinstance(day, int):
                day = dt.date(1970, 1, 1) + dt.timedelta(days=day)
            start = dt.datetime.combine(day, dt.time())
            if until is not None and start >= until:
                continue
            parts.append(
                Partition(
                    table_name=self.table_name,
                    tier=self.kind,
                    partition=f"day={day.isoformat()}",
                    start=start,
                    end=start + _DAY,
                    files=int(row["file_count"]),
                    rows=int(row["record_count"]),
                    bytes=int(row.get("total_data_file_size_in_bytes") or 0),
                )
            )
        return sorted(parts, key=lambda p: p.start)

    def partitions(self, listing: ColdState | None = None, time_range: TimeRange = ALL_TIME) -> list[Partition]:
        return [p for p in (listing or self._state).partitions if time_range.overlaps(p.start, p.end)]

    @staticmethod
    def _effective(time_range: TimeRange, until: dt.datetime | None) -> TimeRange | None:
        end = time_range.end
        if until is not None:
            end = until if end is None else min(end, until)
        if time_range.start is not None and end is not None and time_range.start >= end:
            return None
        return TimeRange(time_range.start, end)

    def files(self, time_range: TimeRange = ALL_TIME, state: ColdState | None = None) -> list[str]:
        state = state or self._state
        if state.unavailable:
            log.warning("cold_tier_skipped", table=self.table_name, error=state.unavailable)
            return []
        snap = state.snapshot_id
        rng = self._effective(time_range, state.until)
        if snap is None or rng is None:
            return []
        key = (snap, rng)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        try:
            files = self._plan(state.table, rng)
        except StorageUnavailable as exc:
            if self.settings.on_unavailable is not OnUnavailable.SKIP:
                raise
            log.warning("cold_tier_skipped", table=self.table_name, error=exc.message)
            return []
        self._plans.put(key, files)
        return files

    def _plan(self, table: Any, rng: TimeRange) -> list[str]:
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan

        expr: Any = AlwaysTrue()
        if rng.start is not None:
            expr = And(expr, GreaterThanOrEqual(self.time_column, rng.start.isoformat()))  # type: ignore[call-arg,arg-type]
        if rng.end is not None:
            expr = And(expr, LessThan(self.time_column, rng.end.isoformat()))  # type: ignore[call-arg,arg-type]
        try:
            tasks = list(table.scan(row_filter=expr).plan_files())
        except Exception as exc:  # noqa: BLE001 - any planning failure is reported with the table
            raise self._unavailable("plan the scan of", exc) from None
        self.planned += 1
        if any(t.delete_files for t in tasks):
            raise StorageUnavailable(f"{self.identifier} has delete files, which tierflight does not read yet")
        return sorted(self.physical(t.file.file_path) for t in tasks)

    def relation(self, listing: ColdState, scan: Scan) -> Relation | None:
        if scan.day_as is not None and (rel := self._day_relation(scan.time_range, listing, scan.day_as)):
            return rel
        return self.relation_of(self.files(scan.time_range, listing))

    def _day_relation(self, time_range: TimeRange, state: ColdState, day_as: str) -> Relation | None:
        """As :meth:`relation`, with each row's date as column ``day_as``, read from the day
        partition directory its file sits in (``<time column>_day=YYYY-MM-DD``, where the
        table's day transform puts it), so DuckDB prunes a filter on it by file. None when a
        file is elsewhere (or on S3): then the date is computed."""
        key = f"{self.time_column}_day"
        files = self.files(time_range, state)
        if not files or key in self.arrow_schema.names:
            return None
        known = self._in_day_dirs.get(id(files))
        if known is None or known[0] is not files:
            known = (files, not any(is_s3_uri(f) or _partition_dir(f) != key for f in files))
            self._in_day_dirs.put(id(files), known)
        if not known[1]:
            return None
        if self.evolved:
            return parquet_relation(self._with_schemas(files), self.arrow_schema, key, day_as, self.aliases)
        # Before any evolution the SQL is a function of the file list, the table's columns
        # and their former names alone: built once per planned list (hundreds of paths).
        memo = self._day_relations.get((id(files), day_as))
        if memo is not None and memo[0] is files and memo[1] is self.arrow_schema and memo[2] == self.aliases:
            return memo[3]
        rel = parquet_relation(self._with_schemas(files), self.arrow_schema, key, day_as, self.aliases)
        self._day_relations.put((id(files), day_as), (files, self.arrow_schema, dict(self.aliases), rel))
        return rel

    def _with_schemas(self, files: Sequence[str]) -> list[tuple[str, pa.Schema | None]]:
        """Each local file with the columns it stores, once the table's schema evolved (a
        file written before lacks new columns or stores a narrower type); before, none is
        read. Data files never change, so their footers are cached by path."""
        if not self.evolved:
            return [(f, None) for f in files]
        out: list[tuple[str, pa.Schema | None]] = []
        for f in files:
            schema = self._footers.get(f)
            if schema is None:
                try:
                    schema = pq.read_schema(f)
                except FileNotFoundError:
                    raise
                except Exception:  # noqa: BLE001 - read by name: DuckDB's error names the file
                    schema = None
                else:
                    self._footers.put(f, schema)
            out.append((f, schema))
        return out

    def relation_of(self, files: Sequence[str], schema: pa.Schema | None = None) -> Relation | None:
        """SQL over data files: local ones by path, S3 ones through a registered dataset;
        in ``schema``'s columns (default: the table's; time travel: a snapshot's)."""
        if not files:
            return None
        schema = schema or self.arrow_schema
        if any(is_s3_uri(f) for f in files):
            # A dataset with the table's schema reads older files with NULLs and casts itself.
            sql, reg = self.settings.s3.registration(files, schema)
            return Relation(sql, (reg,))
        if not self.evolved:
            memo = self._plain_relations.get(id(files))
            if memo is not None and memo[0] is files:
                return memo[1]
            listing = ", ".join(quote_literal(f) for f in files)
            rel = Relation(f"SELECT * FROM read_parquet([{listing}], hive_partitioning = false)")
            # Kept with the list itself, so that its id is not reused while remembered.
            self._plain_relations.put(id(files), (files, rel))
            return rel
        return parquet_relation(self._with_schemas(files), schema, "", None, self.aliases)

    def sync_schema(self, table: Any) -> Any:
        """Make the Iceberg table's schema the table's (columns added, types widened by
        ingest, tiers.evolution) before files that store them are registered. Returns the
        table as committed."""
        renames = [
            (old, f.name)
            for f in self.arrow_schema
            if f.name not in {c.name for c in table.schema().fields}
            for old in self.aliases.get(f.name, ())[:1]
            if old in {c.name for c in table.schema().fields}
        ]
        if renames:
            try:
                with table.update_schema() as update:
                    for old, new in renames:
                        update.rename_column(old, new)  # same field id: older files stay its data
            except Exception as exc:  # noqa: BLE001 - any commit failure is reported with the table
                raise self._unavailable("rename columns of", exc) from None
            table = self.catalog.load_table(self.identifier)
            log.info("cold_columns_renamed", table=self.table_name, renamed=renames)
        current = table.schema()
        names = {f.name: f for f in current.fields}
        added = [f for f in self.arrow_schema if f.name not in names]
        widened = [
            f for f in self.arrow_schema if f.name in names and _iceberg_type(f.type) != names[f.name].field_type
        ]
        if not added and not widened:
            return table
        try:
            with table.update_schema() as update:
                for f in added:
                    update.add_column(f.name, _iceberg_type(f.type))  # optional: new columns are nullable
                for f in widened:
                    update.update_column(f.name, field_type=_iceberg_type(f.type))
        except Exception as exc:  # noqa: BLE001 - any commit failure is reported with the table
            raise self._unavailable("evolve the schema of", exc) from None
        todo = added + widened
        log.info("cold_schema_evolved", table=self.table_name, columns=[f.name for f in todo])
        return self.catalog.load_table(self.identifier)

    # -- writing --------------------------------------------------------------------------

    def add_files(self, paths: Sequence[str], properties: Mapping[str, str] | None = None) -> None:
        """Register already-written Parquet files in one commit.

        What statements see changes only when the owner applies a new state (TableStore.refresh).
        """
        if not paths:
            return
        table = self.sync_schema(self.table())
        # Recorded under the catalog's stored root, as every other name in it (tiers.relocate).
        names = [self._rebase.logical(p) for p in paths] if self._rebase else list(paths)
        try:
            table.add_files(names, snapshot_properties=dict(properties or {}))
        except Exception as exc:  # noqa: BLE001 - any commit failure is reported with the table
            raise StorageUnavailable(
                f"cannot commit {len(paths)} files to {self.identifier} (catalog {self.settings.where}): {first_line(exc)}"
            ) from None
