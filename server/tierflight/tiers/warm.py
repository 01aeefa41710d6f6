"""Warm tier: recent partitions as Parquet files in a hive layout by day.

``<data_dir>/<table>/warm/day=YYYY-MM-DD/part-*.parquet``, or the same under ``[storage]
warm_uri`` (a local directory or an S3 prefix). Partition pruning happens here (the file list
handed to DuckDB only holds the days a time range touches); DuckDB then prunes row groups by
their statistics.

One :class:`WarmTier` lists both kinds of storage through tiers.objects (one recursive
listing, grouped by day directory); what differs, how DuckDB reads the files, is a
:class:`WarmStorage` chosen from :data:`WARM_STORAGE` by the warm_uri's scheme.

Every file's footer is read once (cached by mtime and size) when the tier is listed: a file
that cannot be read or whose columns are not the table's is kept in the listing with its
problem, so a query that needs its day fails with an error naming the file, while every other
day keeps being served.
"""

from __future__ import annotations

import datetime as dt
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tierflight.core.errors import ConfigError, StorageUnavailable
from tierflight.core.log import get_logger
from tierflight.tiers.base import ALL_TIME, Partition, Relation, Scan, Tier, TierKind, TimeRange
from tierflight.tiers.evolution import parquet_relation, stored_name, stored_widens
from tierflight.tiers.objects import Objects
from tierflight.tiers.s3 import S3Settings
from tierflight.tiers.shared import LocalTableState, S3TableState, TableState

log = get_logger("tierflight.warm")

_DAY = dt.timedelta(days=1)
COMPACTION_JOURNAL = "_compaction.json"
_LIST_ATTEMPTS = 5


def live_names(names: Iterable[str], journal: Any) -> list[str]:
    """A partition's data file names, sorted, minus those a compaction replaced and has not
    trashed yet (its journal names the new file and the old ones: once the new one is in
    place, the old ones are hidden). Names starting with "." or "_" are staged or internal."""
    files = sorted(n for n in names if n.endswith(".parquet") and not n.startswith((".", "_")))
    if isinstance(journal, dict) and journal.get("new") in files:
        old = set(journal.get("old", ()))
        files = [f for f in files if f not in old]
    return files


def live_entries(objects: Objects, infos: Iterable[pafs.FileInfo]) -> list[pafs.FileInfo]:
    """The live data files among a day directory's entries (see live_names), on either
    storage; their sizes come with them."""
    by_name = {i.base_name: i for i in infos if i.type == pafs.FileType.File}
    journal = objects.read_json(by_name[COMPACTION_JOURNAL].path) if COMPACTION_JOURNAL in by_name else None
    return [by_name[n] for n in live_names(by_name, journal)]


def live_files(day_dir: Path) -> list[Path]:
    """The partition's files (local), minus those a finished compaction replaced."""
    local = Objects()
    return [Path(i.path) for i in live_entries(local, local.entries(str(day_dir)))]


DAY_KEY = "day"  # the partition key of the hive layout: <table>/warm/day=YYYY-MM-DD/


def day_dir_name(day: dt.date) -> str:
    return f"{DAY_KEY}={day.isoformat()}"


def _same_type(actual: pa.DataType, expected: pa.DataType, evolved: bool = False) -> bool:
    if actual == expected or (evolved and stored_widens(actual, expected)):
        return True
    strings = (pa.string(), pa.large_string(), pa.string_view())
    return actual in strings and expected in strings


def schema_problem(
    actual: pa.Schema,
    expected: pa.Schema,
    evolved: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> str | None:
    """Why a file's columns are not the table's (None when they are). A file written before
    the table's schema evolved may lack a column ingest added or store a column ingest
    widened in its narrower type (``evolved``, tiers.evolution): it is read with NULLs
    there, or cast. Any other missing column or other type is damage."""
    if not aliases and actual.equals(expected):
        # The usual file: asked for every file a plan reads, so the field-by-field check
        # below (tens of µs per file) is kept for the files that differ.
        return None
    if aliases:
        # A column renamed since the file was written is checked under the name it stores.
        renamed = {stored_name(f.name, actual.names, aliases) or f.name: f.name for f in expected}
        actual = pa.schema([f.with_name(renamed.get(f.name, f.name)) for f in actual if f.name in renamed])
    names = set(actual.names)
    missing = [f.name for f in expected if f.name not in names and f.name not in evolved]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    wrong = [
        f"{f.name} is {actual.field(f.name).type}, expected {f.type}"
        for f in expected
        if f.name in names and not _same_type(actual.field(f.name).type, f.type, f.name in evolved)
    ]
    if wrong:
        return "wrong column type(s): " + "; ".join(wrong)
    return None


def read_footer(path: Path | str, filesystem: Any = None) -> tuple[int, pa.Schema | None, str | None]:
    """(rows, schema, error) from a Parquet file's footer; error is None for a readable file."""
    try:
        if filesystem is not None:
            with filesystem.open_input_file(str(path)) as fh:
                pf = pq.ParquetFile(fh)
                return pf.metadata.num_rows, pf.schema_arrow, None
        pf = pq.ParquetFile(path)
        return pf.metadata.num_rows, pf.schema_arrow, None
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is reported the same way
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return 0, None, f"cannot read Parquet file {path}: {detail}"


def file_problem(
    path: Path | str,
    actual: pa.Schema | None,
    error: str | None,
    expected: pa.Schema | None,
    evolved: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> str | None:
    if error or actual is None or expected is None:
        return error
    problem = schema_problem(actual, expected, evolved, aliases)
    return f"Parquet file {path} does not have the table's schema: {problem}" if problem else None


def inspect_file(
    path: Path | str,
    expected: pa.Schema | None,
    filesystem: Any = None,
    evolved: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> tuple[int, str | None]:
    """(rows, problem) from a Parquet file's footer; problem is None for a good file."""
    rows, actual, error = read_footer(path, filesystem)
    problem = file_problem(path, actual, error, expected, evolved, aliases)
    return (0, problem) if problem else (rows, None)


@dataclass(frozen=True)
class WarmListing:
    """One consistent view of the tier: the days it serves and their files (local paths or
    s3:// URIs)."""

    since: dt.datetime | None
    parts: tuple[tuple[Partition, tuple[str, ...]], ...]


class WarmStorage(ABC):
    """One storage kind of the warm tier: where its files are and how DuckDB reads them."""

    # Without a strict scan (a table's view, a rollup build), a file that cannot be served
    # stays in a local scan, last, so DuckDB's error names it if the scan reaches it; an S3
    # dataset takes its schema up front and would fail at once, so there it is left out.
    keeps_unservable: ClassVar[bool]

    def __init__(self, uri: str, s3: S3Settings) -> None:
        self.objects = self.open_objects(s3)
        self.root = Objects.path(uri).rstrip("/")  # the tier's directory, as the filesystem names it

    @staticmethod
    @abstractmethod
    def open_objects(s3: S3Settings) -> Objects:
        """The files of this storage kind."""

    @abstractmethod
    def table_state(self, table_uri: str, data_root: Path, poll_interval: float) -> TableState:
        """Where the table's boundary and change marker live (tiers.shared)."""

    @abstractmethod
    def read(
        self,
        files: list[tuple[str, pa.Schema | None]],
        schema: pa.Schema,
        day_as: str | None,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ) -> Relation:
        """SQL over ``files`` (each with the columns it stores, if known) in the table's
        columns and order; with ``day_as`` and if the storage can, each row's day from its
        partition directory as that column."""


class LocalWarmStorage(WarmStorage):
    keeps_unservable = True

    def __init__(self, uri: str, s3: S3Settings) -> None:
        super().__init__(str(Path(Objects.path(uri)).expanduser().absolute()), s3)

    @staticmethod
    def open_objects(s3: S3Settings) -> Objects:
        return Objects()

    def table_state(self, table_uri: str, data_root: Path, poll_interval: float) -> TableState:
        # One machine: the boundary stays in the data dir even when warm files are elsewhere.
        return LocalTableState(data_root)

    def read(
        self,
        files: list[tuple[str, pa.Schema | None]],
        schema: pa.Schema,
        day_as: str | None,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ) -> Relation:
        return parquet_relation(files, schema, DAY_KEY, day_as, aliases)


class S3WarmStorage(WarmStorage):
    """Files under an S3 prefix, read through a pyarrow dataset registered per statement."""

    keeps_unservable = False

    def __init__(self, uri: str, s3: S3Settings) -> None:
        super().__init__(uri, s3)
        self.s3 = s3

    @staticmethod
    def open_objects(s3: S3Settings) -> Objects:
        return Objects(s3)

    def table_state(self, table_uri: str, data_root: Path, poll_interval: float) -> TableState:
        # In the bucket: replicas on other machines share the boundary.
        return S3TableState(self.s3, table_uri, poll_interval)

    def read(
        self,
        files: list[tuple[str, pa.Schema | None]],
        schema: pa.Schema,
        day_as: str | None,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ) -> Relation:
        # A dataset with the table's schema reads older files with NULLs and casts itself.
        sql, reg = self.s3.registration([f for f, _ in files], schema)  # the dataset has no partition column
        return Relation(sql, (reg,))


# The storage kinds by the warm_uri's scheme ("": a plain local path).
WARM_STORAGE: dict[str, Callable[[str, S3Settings], WarmStorage]] = {
    "": LocalWarmStorage,
    "file": LocalWarmStorage,
    "s3": S3WarmStorage,
    "s3a": S3WarmStorage,
}


def warm_storage(uri: str, s3: S3Settings) -> WarmStorage:
    """The storage kind of ``uri`` (a local path, file://, s3:// or s3a://).

    Raises:
        ConfigError: the scheme is not one of WARM_STORAGE.
    """
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    try:
        kind = WARM_STORAGE[scheme]
    except KeyError:
        known = ", ".join(f"{k}://" for k in WARM_STORAGE if k)
        raise ConfigError(f"storage.warm_uri: {scheme}:// is not supported; use a local directory or {known}") from None
    return kind(uri, s3)


class WarmTier(Tier[WarmListing]):
    """The warm tier on one storage kind.

    Listed with one recursive listing; each file's footer is read once (cached by its size
    and mtime) for the row counts and the schema check. A day holding a compaction journal
    (``_compaction.json``) is read through it (see live_names).
    """

    kind = TierKind.WARM

    def __init__(self, storage: WarmStorage, table_name: str, schema: pa.Schema) -> None:
        self.storage = storage
        self.objects = storage.objects
        self.root = storage.root
        self.table_name = table_name
        self.schema = schema
        # Columns ingest added or widened (tiers.evolution): older files may lack them or
        # store them narrower.
        self.evolved: frozenset[str] = frozenset()
        self.aliases: dict[str, tuple[str, ...]] = {}  # renamed columns: their former names
        self._lock = threading.Lock()
        # file path -> (mtime_ns, size, rows, footer schema, read error): whether the schema
        # is the table's is decided when asked (the table's schema may evolve).
        self._cache: dict[str, tuple[int, int, int, pa.Schema | None, str | None]] = {}
        # The listing is read on every planned statement, so it is kept and swapped on apply().
        self._listing = WarmListing(None, ())
        # Beside the tier, on the same storage: a local day directory moves there with one rename.
        self.trash_path = self.root.rsplit("/", 1)[0] + "/trash"

    @property
    def since(self) -> dt.datetime | None:
        """Days before this belong to the cold tier (a demotion may not have deleted them yet)."""
        return self._listing.since

    def day_path(self, day: dt.date) -> str:
        return f"{self.root}/{day_dir_name(day)}"

    def location(self, day: dt.date, name: str) -> str:
        """Where a data file named ``name`` of ``day`` lives (a path or an s3:// URI)."""
        return self.objects.uri(f"{self.day_path(day)}/{name}")

    def _by_day(self) -> dict[dt.date, list[pafs.FileInfo]]:
        """Every file of every day directory (data files, staged files and journals)."""
        by_day: dict[dt.date, list[pafs.FileInfo]] = {}
        for info in self.objects.entries(self.root, recursive=True):
            if info.type != pafs.FileType.File:
                continue
            parent = info.path.rpartition("/")[0]
            if parent.rpartition("/")[0] != self.root or not parent.rpartition("/")[2].startswith(f"{DAY_KEY}="):
                continue
            try:
                day = dt.date.fromisoformat(parent.rpartition("/")[2][len(DAY_KEY) + 1 :])
            except ValueError:
                continue
            by_day.setdefault(day, []).append(info)
        return by_day

    def days(self) -> list[tuple[dt.date, str]]:
        """Every day directory holding a file, served or not (maintenance works on all)."""
        return [(day, self.day_path(day)) for day in sorted(self._by_day())]

    def live(self, day_path: str) -> list[pafs.FileInfo]:
        return live_entries(self.objects, self.objects.entries(day_path))

    def build_listing(self, cold_until: dt.date | None) -> WarmListing:
        since = dt.datetime.combine(cold_until, dt.time()) if cold_until is not None else None
        for attempt in range(_LIST_ATTEMPTS):
            try:
                return self._list(since)
            except FileNotFoundError:
                # A maintenance run in another process moved a file while we listed: list again.
                if attempt == _LIST_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _list(self, since: dt.datetime | None) -> WarmListing:
        by_day = self._by_day()
        parts = []
        for day in sorted(by_day):
            start = dt.datetime.combine(day, dt.time())
            if since is not None and start < since:
                continue
            files = live_entries(self.objects, by_day[day])
            if not files:
                continue
            rows = sum(self.inspect(f)[0] for f in files)
            size = sum(int(f.size or 0) for f in files)
            part = Partition(self.table_name, self.kind, day_dir_name(day), start, start + _DAY, len(files), rows, size)
            parts.append((part, tuple(self.objects.uri(f.path) for f in files)))
        return WarmListing(since, tuple(parts))

    def inspect(self, info: pafs.FileInfo) -> tuple[int, str | None]:
        """(rows, problem) of a file, from the cache while the file is unchanged."""
        mtime, size = int(info.mtime_ns or 0), int(info.size or 0)
        with self._lock:
            cached = self._cache.get(info.path)
        if cached and cached[0] == mtime and cached[1] == size:
            problem = file_problem(info.path, cached[3], cached[4], self.schema, self.evolved, self.aliases)
            return (0, problem) if problem else (cached[2], None)
        rows, actual, error = read_footer(info.path, self.objects.fs)
        problem = file_problem(info.path, actual, error, self.schema, self.evolved, self.aliases)
        if problem:
            log.warning("warm_file_unreadable", table=self.table_name, file=self.objects.uri(info.path), problem=problem)
        with self._lock:
            self._cache[info.path] = (mtime, size, rows, actual, error)
        return (0, problem) if problem else (rows, None)

    def problem(self, location: str) -> str | None:
        """Why a listed file cannot be served (unreadable, wrong schema), or None."""
        path = Objects.path(location)
        with self._lock:
            cached = self._cache.get(path)
        return file_problem(path, cached[3], cached[4], self.schema, self.evolved, self.aliases) if cached else None

    def file_schema(self, location: str) -> pa.Schema | None:
        """The columns a listed file stores (None: unknown, or it cannot be served)."""
        with self._lock:
            cached = self._cache.get(Objects.path(location))
        return cached[3] if cached and not cached[4] else None

    def apply(self, listing: WarmListing) -> None:
        self._listing = listing
        keep = {Objects.path(f) for _, files in listing.parts for f in files}
        with self._lock:
            for path in [p for p in self._cache if p not in keep]:
                del self._cache[path]

    def listing(self) -> WarmListing:
        return self._listing

    def partitions(self, listing: WarmListing | None = None, time_range: TimeRange = ALL_TIME) -> list[Partition]:
        return [p for p, _ in (listing or self._listing).parts if time_range.overlaps(p.start, p.end)]

    def files(self, time_range: TimeRange = ALL_TIME, listing: WarmListing | None = None, strict: bool = True) -> list[str]:
        """The files a time range needs.

        ``strict``: a problem file among them fails the statement with an error naming it.
        Otherwise the storage kind decides (WarmStorage.keeps_unservable): listed last (DuckDB
        takes a scan's schema from its first file, and a read of them fails naming the file),
        or left out.
        """
        return [f for f, _ in self._served(time_range, listing, strict)]

    def _served(
        self, time_range: TimeRange, listing: WarmListing | None, strict: bool
    ) -> list[tuple[str, pa.Schema | None]]:
        """``files``, each with the columns it stores (``file_schema``): the footer cache is
        read once for all of them (a plan reads every file of its range)."""
        out = [f for part, files in (listing or self._listing).parts if time_range.overlaps(part.start, part.end) for f in files]
        paths = [Objects.path(f) for f in out]
        with self._lock:
            cached = [self._cache.get(path) for path in paths]
        schema: dict[str, pa.Schema | None] = {}
        bad: list[tuple[str, str]] = []
        for f, path, c in zip(out, paths, cached, strict=True):
            schema[f] = c[3] if c and not c[4] else None
            problem = file_problem(path, c[3], c[4], self.schema, self.evolved, self.aliases) if c else None
            if problem:
                bad.append((f, problem))
        if bad and strict:
            f, problem = bad[0]
            raise StorageUnavailable(f"{self.table_name}, warm partition {f.rsplit('/', 2)[-2]}: {problem}")
        if bad:
            names = {f for f, _ in bad}
            out = [f for f in out if f not in names]
            if self.storage.keeps_unservable:
                out += [f for f, _ in bad]
            else:
                log.warning("warm_files_skipped", table=self.table_name, files=sorted(names))
        return [(f, schema[f]) for f in out]

    def relation(self, listing: WarmListing, scan: Scan) -> Relation | None:
        files = self._served(scan.time_range, listing, scan.strict)
        if not files:
            return None
        return self.storage.read(files, self.schema, scan.day_as, self.aliases)
