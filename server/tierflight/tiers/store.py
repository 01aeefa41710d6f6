"""One table's tiers and the boundary between them.

The boundary ``cold_until`` (a day) is the single source of truth for where a day lives:
the cold tier serves days before it, the warm tier the days from it on. It is stored in
``<data_dir>/<table>/tiers.json`` (next to the warm tier in the bucket when that is on S3,
see tiers.shared) and replaced atomically, so a demotion that crashes between copying a
day into Iceberg and deleting it from warm never shows the day twice.

What statements are planned against is one consistent view (the boundary, the Iceberg
snapshot, the warm listing), built aside by :meth:`TableStore.refresh` and swapped in whole.
A change made by another process (``tierflight tiers demote`` next to a running server) is
noticed on the next planned statement: maintenance bumps ``<table>/.generation`` and the
boundary file, and a statement whose store sees either change re-lists the tiers first.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tierflight.core.config import CatalogType, Config, OnUnavailable, TableConfig
from tierflight.core.errors import StorageUnavailable
from tierflight.core.log import get_logger
from tierflight.tiers.base import ALL_TIME, Partition, Registration, Scan, Tier, TierKind, TimeRange
from tierflight.tiers.cold import ColdTier, IcebergSettings, load_catalog
from tierflight.tiers.evolution import Change, SchemaRegistry, arrow_schema
from tierflight.tiers.hot import HotTail
from tierflight.tiers.objects import Objects
from tierflight.tiers.parquet import write_options
from tierflight.tiers.s3 import S3Settings, is_s3_uri
from tierflight.tiers.shared import TableState
from tierflight.tiers.warm import WarmTier, warm_storage

log = get_logger("tierflight.store")

# The implementation of each tier kind (the warm tier's storage kinds: warm.WARM_STORAGE).
TIER_IMPLEMENTATIONS: dict[TierKind, type[Tier[Any]]] = {
    TierKind.HOT: HotTail,
    TierKind.WARM: WarmTier,
    TierKind.COLD: ColdTier,
}

# What TableStore.prepare_listing builds: one listing per tier, in TableStore.tiers order.
Listings = tuple[object, ...]


@dataclass(frozen=True)
class Source:
    tier: TierKind
    sql: str
    partitions: tuple[Partition, ...]
    files: int
    # (name, Arrow object) pairs ``sql`` reads by name (S3 data): register them on the cursor.
    registrations: tuple[Registration, ...] = ()
    # Derived columns ``sql`` already gives (last): the date, from day partition directories.
    carries: tuple[str, ...] = ()


class TableStore:
    def __init__(self, config: Config, table: TableConfig) -> None:
        self.config = config
        self.root = config.data_dir / table.name
        # The configured columns, and what ingest added to them (tiers.evolution).
        self.base = table
        self.registry = SchemaRegistry.load(self.root)
        self.table = self.registry.effective(table)
        self.schema = arrow_schema(self.table)
        table = self.table
        self._view_lock = threading.Lock()  # what statements see: swapped whole, read whole
        self._refresh_lock = threading.Lock()
        self._seen: tuple[object, ...] | None = None
        # Bumped each time a new view is swapped in: plans cached by a router must key on it.
        self.generation = 0
        self.s3 = S3Settings.from_config(config.s3)
        base = (config.storage.warm_uri or "").rstrip("/") or str(config.data_dir)
        storage = warm_storage(f"{base}/{table.name}/warm", self.s3)
        self.warm = WarmTier(storage, table.name, self.schema)
        poll = config.storage.poll_interval.total_seconds()
        self.shared: TableState = storage.table_state(f"{base}/{table.name}", self.root, poll)
        settings = IcebergSettings.from_config(config.iceberg, config.data_dir, self.s3)
        try:
            catalog = load_catalog(settings)
        except StorageUnavailable as exc:
            if settings.on_unavailable is not OnUnavailable.SKIP:
                raise
            log.warning("cold_tier_unavailable", table=table.name, error=exc.message)
            catalog = None  # connect again on the next refresh
        self.cold = ColdTier(catalog, settings, table.name, self.schema, table.time_column)
        self.cold.evolved = self.registry.version > 0
        self.warm.evolved = self.registry.columns
        self.warm.aliases = self.cold.aliases = self.registry.aliases()
        self.hot = HotTail(table, self.schema)
        # Oldest first: the order of system.partitions and of a table's UNION ALL.
        self.tiers: tuple[Tier[Any], ...] = (self.cold, self.warm, self.hot)
        self._cold_objects: Objects | None = None
        self.refresh()

    # -- the schema ---------------------------------------------------------------------

    def evolve(self, changes: list[Change]) -> TableConfig:
        """Record ``changes`` in the schema registry (durably) and return the table they make;
        what statements see changes only with :meth:`apply_schema` (under the swap lock)."""
        registry = self.registry.with_changes(changes)
        registry.save(self.root)
        self.registry = registry
        return registry.effective(self.base)

    def reload_registry(self) -> TableConfig | None:
        """The table's columns if another process (the primary of ``serve --workers``, or
        ``tables alter``) changed the schema registry since this one read it; else None.
        Apply them with :meth:`apply_schema`."""
        registry = SchemaRegistry.load(self.root)
        if registry.version == self.registry.version:
            return None
        self.registry = registry
        return registry.effective(self.base)

    def apply_schema(self, table: TableConfig) -> None:
        """Serve ``table``'s columns: the hot rows are conformed to them, the tiers read older
        files with NULLs / casts. The caller holds the swap lock."""
        schema = arrow_schema(table)
        self.table, self.schema = table, schema
        self.warm.schema = schema
        self.warm.evolved = self.registry.columns
        self.warm.aliases = self.cold.aliases = self.registry.aliases()
        self.cold.arrow_schema = schema
        self.cold.evolved = True
        self.hot.apply_schema(table, schema)
        self.generation += 1

    @property
    def warm_on_s3(self) -> bool:
        return self.warm.objects.s3 is not None

    @property
    def cold_on_s3(self) -> bool:
        settings = self.cold.settings
        return settings.catalog_type is not CatalogType.SQL and not settings.properties.get("warehouse", "").startswith("file:")

    # -- the boundary ---------------------------------------------------------------------

    def cold_until(self) -> dt.date | None:
        value = self.shared.read().get("cold_until")
        return dt.date.fromisoformat(value) if value else None

    def set_cold_until(self, day: dt.date) -> None:
        self.shared.write({"cold_until": day.isoformat()})

    def warm_boundary(self) -> dt.date:
        """Days before this are older than the warm window and belong in cold."""
        return (self.config.tiers.current_time() - self.config.tiers.warm_window).date()

    def bump_generation(self) -> None:
        """Tell every process serving this table that its files changed (see the module doc)."""
        self.shared.bump()

    def refresh(self) -> None:
        """Re-list the tiers and swap the new view in whole: a statement sees the old or the new."""
        with self._refresh_lock:
            self._relist()

    def _relist(self) -> None:
        # Callers hold the refresh lock. The signature is read first: a change made while
        # listing shows as a changed signature next time, and is listed then.
        seen = self.shared.signature(fresh=True)
        self.apply_listing(self.prepare_listing())
        self._seen = seen

    def prepare_listing(self) -> Listings:
        """The tiers as the files are now (slow: lists warm, reads the Iceberg snapshot),
        without changing what statements see; :meth:`apply_listing` swaps it in."""
        until = self.cold_until()
        return tuple(tier.build_listing(until) for tier in self.tiers)

    def apply_listing(self, listings: Listings) -> None:
        with self._view_lock:
            for tier, listing in zip(self.tiers, listings, strict=True):
                tier.apply(listing)
            self.generation += 1

    def announce_change(self) -> None:
        """Tell other processes the files changed (after this one applied them), and remember
        the new signature so this process does not list them again."""
        with self._refresh_lock:
            self.shared.bump()
            self._seen = self.shared.signature(fresh=True)

    @property
    def seen_signature(self) -> tuple[object, ...] | None:
        """The boundary and generation files as of the last refresh (comparable across processes)."""
        return self._seen

    def changed(self) -> bool:
        """Whether another process (or a maintenance run) changed the files since the last refresh."""
        return self.shared.signature() != self._seen

    def refresh_if_changed(self) -> bool:
        if not self.changed():
            return False
        with self._refresh_lock:
            # Checked again under the lock: a flush announcing its own change holds it while
            # it records the new signature, and this process already serves those files.
            if not self.changed():
                return False
            self._relist()
        return True

    # -- reading --------------------------------------------------------------------------

    def _listings(self) -> list[tuple[Tier[Any], Any]]:
        with self._view_lock:
            return [(tier, tier.listing()) for tier in self.tiers]

    def partitions(self) -> list[Partition]:
        return [p for tier, listing in self._listings() for p in tier.partitions(listing)]

    def sources(self, time_range: TimeRange | None = None, day_as: str | None = None) -> list[Source]:
        """The relations a statement over ``time_range`` reads, one per tier that has rows in it.

        ``day_as``: the derived column that is the time column's date; a tier that can give
        it without computing it (local warm and cold files, from their day directories) does.

        With a time range (a statement's plan), a warm file that cannot be read or has the
        wrong schema fails the call with an error naming it. Without one (the table's view,
        a rollup build) it stays in the scan, last, and DuckDB fails if the scan reaches it.
        """
        scan = Scan(time_range or ALL_TIME, strict=time_range is not None, day_as=day_as)
        self.refresh_if_changed()
        out = []
        for tier, listing in self._listings():
            rel = tier.relation(listing, scan)
            if rel is not None:
                parts = tuple(tier.partitions(listing, scan.time_range))
                out.append(Source(tier.kind, rel.sql, parts, sum(p.files for p in parts), rel.registrations, rel.carries))
        return out

    def has_data(self) -> bool:
        return any(t.partitions() for t in self.tiers)

    def days_with_data(self) -> set[dt.date]:
        return {p.start.date() for p in self.partitions() if p.tier is not TierKind.HOT}

    # -- bulk load ------------------------------------------------------------------------

    def cold_file_location(self, day: dt.date, name: str) -> str:
        """Where a data file of ``day`` goes in the Iceberg table (a path or an s3:// URI);
        it is part of the table only once registered (ColdTier.add_files)."""
        location = self.cold.data_location(day)
        return f"{location}/{name}" if is_s3_uri(location) else str(Path(location.removeprefix("file://")) / name)

    @property
    def cold_objects(self) -> Objects:
        """The storage of the Iceberg table's data files (its catalog's S3 settings on S3)."""
        if self._cold_objects is None:
            self._cold_objects = Objects(self.cold.settings.s3) if self.cold_on_s3 else Objects()
        return self._cold_objects

    def write_cold_file(self, day: dt.date, name: str, table: pa.Table) -> tuple[str, int]:
        """Write one data file into the Iceberg table's location (local or S3): (location,
        bytes). It is part of the table only once registered (register_cold / add_files)."""
        location = self.cold_file_location(day, name)
        return location, self.write_object(table, location, cold=True)

    # -- objects a flush writes (local paths or s3:// URIs) --------------------------------

    def warm_location(self, day: dt.date, name: str) -> str:
        """Where a warm data file named ``name`` of ``day`` lives (a path or an s3:// URI).
        Names starting with "." or "_" are not listed: a flush stages files under such names."""
        return self.warm.location(day, name)

    def _objects_at(self, location: str, cold: bool = False) -> tuple[Objects, str]:
        if not is_s3_uri(location):
            return Objects(), Objects.path(location)
        return (self.cold_objects if cold else self.warm.objects), Objects.path(location)

    def write_options(self, rows: int) -> dict[str, Any]:
        """How a data file of ``rows`` rows of this table is written (tiers.parquet)."""
        return write_options(self.table, rows)

    def write_object(self, table: pa.Table, location: str, cold: bool = False) -> int:
        objects, path = self._objects_at(location, cold)
        return objects.write_parquet(table, path, self.write_options(table.num_rows))

    def object_exists(self, location: str) -> bool:
        objects, path = self._objects_at(location)
        return objects.exists(path)

    def move_object(self, source: str, target: str) -> None:
        """Rename a staged file into place (on S3: a server-side copy, then a delete)."""
        objects, path = self._objects_at(source)
        objects.move(path, Objects.path(target))

    def delete_object(self, location: str, cold: bool = False) -> None:
        objects, path = self._objects_at(location, cold)
        objects.delete(path)

    def write_warm_file(self, day: dt.date, name: str, table: pa.Table) -> int:
        """Write one data file into a warm partition (local hive directory or S3 prefix)."""
        return self.write_object(table, self.warm_location(day, name))

    def register_cold(self, paths: Iterable[str], boundary: dt.date) -> None:
        """One Iceberg commit for every file of a bulk load, then move the boundary."""
        self.cold.add_files(sorted(paths), {"tierflight.operation": "bulk-load"})
        current = self.cold_until()
        if current is None or boundary > current:
            self.set_cold_until(boundary)
        self.bump_generation()
        self.refresh()
