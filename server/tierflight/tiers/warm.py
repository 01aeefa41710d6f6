"""Warm tier: recent partitions as Parquet files in a hive layout by day.

``<data_dir>/<table>/warm/day=YYYY-MM-DD/part-*.parquet``. Partition pruning happens here
(the file list handed to DuckDB only holds the days a time range touches); DuckDB then prunes
row groups by their statistics.

Every file's footer is read once (cached by mtime and size) when the tier is listed: a file
that cannot be read or whose columns are not the table's is kept in the listing with its
problem, so a query that needs its day fails with an error naming the file, while every other
day keeps being served.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tierflight.core.errors import StorageUnavailable
from tierflight.core.log import get_logger
from tierflight.core.sql import quote_ident, quote_literal
from tierflight.tiers.base import ALL_TIME, Partition, TimeRange
from tierflight.tiers.objects import Objects
from tierflight.tiers.s3 import Registration, S3Settings, strip_scheme

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


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected:
        return True
    strings = (pa.string(), pa.large_string(), pa.string_view())
    return actual in strings and expected in strings


def schema_problem(actual: pa.Schema, expected: pa.Schema) -> str | None:
    """Why a file's columns are not the table's (None when they are)."""
    names = set(actual.names)
    missing = [f.name for f in expected if f.name not in names]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    wrong = [
        f"{f.name} is {actual.field(f.name).type}, expected {f.type}"
        for f in expected
        if not _same_type(actual.field(f.name).type, f.type)
    ]
    if wrong:
        return "wrong column type(s): " + "; ".join(wrong)
    return None


def inspect_file(path: Path | str, expected: pa.Schema | None, filesystem: Any = None) -> tuple[int, str | None]:
    """(rows, problem) from a Parquet file's footer; problem is None for a good file."""
    try:
        if filesystem is not None:
            with filesystem.open_input_file(str(path)) as fh:
                pf = pq.ParquetFile(fh)
                rows, actual = pf.metadata.num_rows, pf.schema_arrow
        else:
            pf = pq.ParquetFile(path)
            rows, actual = pf.metadata.num_rows, pf.schema_arrow
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is reported the same way
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return 0, f"cannot read Parquet file {path}: {detail}"
    problem = schema_problem(actual, expected) if expected is not None else None
    if problem:
        return 0, f"Parquet file {path} does not have the table's schema: {problem}"
    return rows, None


@dataclass(frozen=True)
class WarmListing:
    """One consistent view of the tier: the days it serves and their files."""

    since: dt.datetime | None
    parts: tuple[tuple[Partition, tuple[Path, ...]], ...]


class WarmTier:
    name = "warm"

    def __init__(self, root: Path, table_name: str, schema: pa.Schema | None = None) -> None:
        self.root = root
        self.table_name = table_name
        self.schema = schema
        self._lock = threading.Lock()
        # file -> (mtime_ns, size, rows, problem)
        self._cache: dict[Path, tuple[int, int, int, str | None]] = {}
        # The listing is read on every planned statement, so it is kept and swapped on apply().
        self._listing = WarmListing(None, ())
        self.objects = Objects()
        # Beside the tier, on the same disk: a day directory moves there with one rename.
        self.trash_path = str(root.parent / "trash")
        self.refresh()

    @property
    def since(self) -> dt.datetime | None:
        """Days before this belong to the cold tier (a demotion may not have deleted them yet)."""
        return self._listing.since

    def day_dirs(self) -> list[tuple[dt.date, Path]]:
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and d.name.startswith("day="):
                try:
                    out.append((dt.date.fromisoformat(d.name[4:]), d))
                except ValueError:
                    continue
        return sorted(out)

    def days(self) -> list[tuple[dt.date, str]]:
        """Every day directory, served or not (maintenance works on all of them)."""
        return [(day, str(path)) for day, path in self.day_dirs()]

    def live(self, day_path: str) -> list[pafs.FileInfo]:
        return live_entries(self.objects, self.objects.entries(day_path))

    def files(
        self, time_range: TimeRange = ALL_TIME, listing: WarmListing | None = None, strict: bool = True
    ) -> list[Path]:
        """The files a time range needs.

        ``strict``: a problem file among them fails the statement with an error naming it.
        Otherwise problem files are listed last (DuckDB takes a scan's schema from its first
        file) and a read of them fails in DuckDB, which names the file too.
        """
        out: list[Path] = []
        for part, files in (listing or self._listing).parts:
            if time_range.overlaps(part.start, part.end):
                out.extend(files)
        bad = [(f, p) for f in out if (p := self.problem(f))]
        if bad and strict:
            f, problem = bad[0]
            raise StorageUnavailable(f"{self.table_name}, warm partition {f.parent.name}: {problem}")
        if bad:
            names = {f for f, _ in bad}
            out = [f for f in out if f not in names] + [f for f, _ in bad]
        return out

    def problem(self, path: Path) -> str | None:
        """Why a listed file cannot be served (unreadable, wrong schema), or None."""
        with self._lock:
            cached = self._cache.get(path)
        return cached[3] if cached else None

    def inspect(self, path: Path) -> tuple[int, str | None]:
        """(rows, problem) of a file, from the cache while the file is unchanged."""
        st = path.stat()
        with self._lock:
            cached = self._cache.get(path)
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2], cached[3]
        rows, problem = inspect_file(path, self.schema)
        if problem:
            log.warning("warm_file_unreadable", table=self.table_name, file=str(path), problem=problem)
        with self._lock:
            self._cache[path] = (st.st_mtime_ns, st.st_size, rows, problem)
        return rows, problem

    def partitions(self) -> list[Partition]:
        return [p for p, _ in self._listing.parts]

    def build_listing(self, since: dt.datetime | None) -> WarmListing:
        """List the days from ``since`` on without changing what the tier serves."""
        for attempt in range(_LIST_ATTEMPTS):
            try:
                return self._list(since)
            except FileNotFoundError:
                # A maintenance run in another process moved a file while we listed: list again.
                if attempt == _LIST_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _list(self, since: dt.datetime | None) -> WarmListing:
        parts = []
        for day, path in self.day_dirs():
            start = dt.datetime.combine(day, dt.time())
            if since is not None and start < since:
                continue
            files = live_files(path)
            infos = [(f, *self.inspect(f)) for f in files]
            parts.append(
                (
                    Partition(
                        table_name=self.table_name,
                        tier=self.name,
                        partition=path.name,
                        start=start,
                        end=start + _DAY,
                        files=len(files),
                        rows=sum(rows for _, rows, _ in infos),
                        bytes=sum(f.stat().st_size for f in files),
                    ),
                    tuple(files),
                )
            )
        return WarmListing(since, tuple(parts))

    def apply(self, listing: WarmListing) -> None:
        self._listing = listing
        keep = {f for _, files in listing.parts for f in files}
        with self._lock:
            for path in [p for p in self._cache if p not in keep]:
                del self._cache[path]

    def listing(self) -> WarmListing:
        return self._listing

    def refresh(self, since: dt.datetime | None = None) -> None:
        self.apply(self.build_listing(since if since is not None else self._listing.since))

    def relation_sql(
        self,
        time_range: TimeRange = ALL_TIME,
        listing: WarmListing | None = None,
        strict: bool = True,
        day_as: str | None = None,
    ) -> str | None:
        """The files of ``time_range``; with ``day_as``, also each row's day read from its
        partition directory as that column (a day directory holds only rows of its day), so
        DuckDB prunes a filter on it by file and never evaluates it per row."""
        files = self.files(time_range, listing, strict)
        if not files:
            return None
        listing_sql = ", ".join(quote_literal(str(f)) for f in files)
        # Columns by name: a file that stores them in another order still lines up with the
        # other tiers in the table's UNION ALL.
        cols = ", ".join(quote_ident(n) for n in self.schema.names) if self.schema is not None else "*"
        if day_as is not None and self.schema is not None and DAY_KEY not in self.schema.names:
            return (
                f"SELECT {cols}, {quote_ident(DAY_KEY)} AS {quote_ident(day_as)} FROM read_parquet([{listing_sql}], "
                f"hive_partitioning = true, hive_types = {{'{DAY_KEY}': DATE}})"
            )
        return f"SELECT {cols} FROM read_parquet([{listing_sql}], hive_partitioning = false)"

    def relation(
        self,
        time_range: TimeRange = ALL_TIME,
        listing: WarmListing | None = None,
        strict: bool = True,
        day_as: str | None = None,
    ) -> tuple[str, tuple[Registration, ...]] | None:
        sql = self.relation_sql(time_range, listing, strict, day_as)
        return None if sql is None else (sql, ())

    def carries_day(self) -> bool:
        """Whether :meth:`relation` can give each row's day from its partition directory."""
        return self.schema is not None and DAY_KEY not in self.schema.names


@dataclass(frozen=True)
class S3WarmListing:
    since: dt.datetime | None
    parts: tuple[tuple[Partition, tuple[str, ...]], ...]


class S3WarmTier:
    """The warm tier under an S3 prefix: ``<warm_uri>/<table>/warm/day=YYYY-MM-DD/*.parquet``.

    Listed with one recursive LIST; each object's footer is read once (cached by its size
    and mtime) for the row counts and the schema check. Statements read the files through a
    pyarrow dataset registered on their cursor. A day holding a compaction journal
    (``_compaction.json``) is read through it, as locally.
    """

    name = "warm"

    def __init__(self, uri: str, s3: S3Settings, table_name: str, schema: pa.Schema) -> None:
        self.uri = uri.rstrip("/")
        self.s3 = s3
        self.table_name = table_name
        self.schema = schema
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, int, int, str | None]] = {}
        self._listing = S3WarmListing(None, ())
        self.objects = Objects(s3)
        self.trash_path = strip_scheme(self.uri).rsplit("/", 1)[0] + "/trash"
        self.refresh()

    @property
    def since(self) -> dt.datetime | None:
        return self._listing.since

    def day_uri(self, day: dt.date) -> str:
        return f"{self.uri}/{day_dir_name(day)}"

    def partitions(self) -> list[Partition]:
        return [p for p, _ in self._listing.parts]

    def _objects(self) -> list[pafs.FileInfo]:
        prefix = self.uri.removeprefix("s3://").removeprefix("s3a://")
        try:
            infos = self.s3.filesystem().get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise self.s3.unavailable(f"list the warm tier of {self.table_name} at {self.uri}", exc) from None
        return [i for i in infos if i.type == pafs.FileType.File]

    def _by_day(self) -> dict[dt.date, list[pafs.FileInfo]]:
        """Every object of every day directory (data files, staged files and journals)."""
        by_day: dict[dt.date, list[pafs.FileInfo]] = {}
        for info in self._objects():
            day_name = info.path.rpartition("/")[0].rpartition("/")[2]
            if not day_name.startswith("day="):
                continue
            try:
                day = dt.date.fromisoformat(day_name[4:])
            except ValueError:
                continue
            by_day.setdefault(day, []).append(info)
        return by_day

    def days(self) -> list[tuple[dt.date, str]]:
        """Every day directory, served or not (maintenance works on all of them)."""
        return [(day, strip_scheme(self.day_uri(day))) for day in sorted(self._by_day())]

    def live(self, day_path: str) -> list[pafs.FileInfo]:
        return live_entries(self.objects, self.objects.entries(day_path))

    def build_listing(self, since: dt.datetime | None) -> S3WarmListing:
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
            part = Partition(self.table_name, self.name, day_dir_name(day), start, start + _DAY, len(files), rows,
                             sum(int(f.size or 0) for f in files))
            parts.append((part, tuple(f"s3://{f.path}" for f in files)))
        return S3WarmListing(since, tuple(parts))

    def inspect(self, info: pafs.FileInfo) -> tuple[int, str | None]:
        mtime = int(info.mtime_ns or 0)
        size = int(info.size or 0)
        with self._lock:
            cached = self._cache.get(info.path)
        if cached and cached[0] == mtime and cached[1] == size:
            return cached[2], cached[3]
        rows, problem = inspect_file(info.path, self.schema, self.s3.filesystem())
        if problem:
            log.warning("warm_file_unreadable", table=self.table_name, file=f"s3://{info.path}", problem=problem)
        with self._lock:
            self._cache[info.path] = (mtime, size, rows, problem)
        return rows, problem

    def problem(self, uri: str) -> str | None:
        with self._lock:
            cached = self._cache.get(uri.removeprefix("s3://"))
        return cached[3] if cached else None

    def apply(self, listing: S3WarmListing) -> None:
        self._listing = listing

    def listing(self) -> S3WarmListing:
        return self._listing

    def refresh(self, since: dt.datetime | None = None) -> None:
        self.apply(self.build_listing(since if since is not None else self._listing.since))

    def files(self, time_range: TimeRange = ALL_TIME, listing: S3WarmListing | None = None, strict: bool = True) -> list[str]:
        out = [f for part, files in (listing or self._listing).parts if time_range.overlaps(part.start, part.end) for f in files]
        bad = [(f, p) for f in out if (p := self.problem(f))]
        if bad and strict:
            f, problem = bad[0]
            raise StorageUnavailable(f"{self.table_name}, warm partition {f.rsplit('/', 2)[-2]}: {problem}")
        if bad:
            names = {f for f, _ in bad}
            out = [f for f in out if f not in names]
            log.warning("warm_files_skipped", table=self.table_name, files=sorted(names))
        return out

    def carries_day(self) -> bool:
        return False  # the dataset registered per statement has no partition column

    def relation(
        self,
        time_range: TimeRange = ALL_TIME,
        listing: S3WarmListing | None = None,
        strict: bool = True,
        day_as: str | None = None,
    ) -> tuple[str, tuple[Registration, ...]] | None:
        files = self.files(time_range, listing, strict)
        if not files:
            return None
        sql, reg = self.s3.registration(files, self.schema)
        return sql, (reg,)
