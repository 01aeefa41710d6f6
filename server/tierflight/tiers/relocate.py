"""A data dir that can be moved or copied, although Iceberg records absolute paths.

pyiceberg's SQL catalog stores each table's metadata location in its SQLite database, the
metadata JSON the table location and its manifest lists, and the (immutable, Avro) manifests
every data file's path: all absolute. Rewriting them after a move means rewriting every
manifest. Instead, the embedded catalog keeps naming files under the data dir it was created
in (its *stored root*, recorded in ``catalog/root.json``), and the one FileIO pyiceberg uses
(:class:`RebasingFileIO`, ``py-io-impl``) reads and writes any such name under the current data
dir. tierflight's own file handling (DuckDB reads of planned files, files a demotion or a flush
writes and then registers) translates at the same boundary (:class:`Rebase`). The mapping is
applied whenever the roots differ, not only when the stored root is gone: a copy must never
write into the data dir it was copied from.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyiceberg.io import InputFile, OutputFile
from pyiceberg.io.pyarrow import ONE_MEGABYTE, PyArrowFile, PyArrowFileIO
from pyiceberg.typedef import EMPTY_DICT, Properties

from tierflight.core.durable import write_json_atomic
from tierflight.core.log import get_logger

log = get_logger("tierflight.relocate")

ROOT_FILE = "root.json"  # in <data_dir>/catalog, next to iceberg.db
STORED_ROOT = "tierflight.stored-root"
CURRENT_ROOT = "tierflight.current-root"
_BUFFER_SIZE = "buffer-size"


def _forms(root: str) -> tuple[str, ...]:
    """The spellings a path under ``root`` (a plain absolute path) takes in Iceberg metadata:
    the file:// URI (percent-encoded as Path.as_uri writes it, and not), and the bare path
    (data files tierflight registers)."""
    return (Path(root).as_uri(), f"file://{root}", root)


@dataclass(frozen=True)
class Rebase:
    """Names under ``stored`` (the data dir the catalog was created in) <-> files under
    ``current`` (the data dir served now). Both plain absolute paths."""

    stored: str
    current: str

    @property
    def moved(self) -> bool:
        return self.stored != self.current

    @staticmethod
    def _swap(location: str, old: str, new: str) -> str:
        for before, after in zip(_forms(old), _forms(new), strict=True):
            if location == before or location.startswith(before + "/"):
                return after + location[len(before) :]
        return location

    def physical(self, location: str) -> str:
        """Where a name the catalog recorded is on disk now (other names: unchanged)."""
        return self._swap(location, self.stored, self.current) if self.moved else location

    def logical(self, location: str) -> str:
        """The name to record in the catalog for a file written under the current data dir."""
        return self._swap(location, self.current, self.stored) if self.moved else location

    @classmethod
    def from_properties(cls, properties: Mapping[str, str]) -> Rebase | None:
        stored, current = properties.get(STORED_ROOT), properties.get(CURRENT_ROOT)
        return cls(stored, current) if stored and current else None


class RebasingFileIO(PyArrowFileIO):
    """PyArrowFileIO whose files keep the names the catalog records (manifests store
    ``OutputFile.location``) while their bytes are read and written under the current data dir."""

    def __init__(self, properties: Properties = EMPTY_DICT) -> None:
        super().__init__(properties)
        self.rebase = Rebase.from_properties(properties)

    def _file(self, location: str) -> PyArrowFile:
        physical = self.rebase.physical(location) if self.rebase else location
        scheme, netloc, path = self.parse_location(physical, self.properties)
        return PyArrowFile(
            location=location,
            path=path,
            fs=self.fs_by_scheme(scheme, netloc),
            buffer_size=int(self.properties.get(_BUFFER_SIZE, ONE_MEGABYTE)),
        )

    def new_input(self, location: str) -> PyArrowFile:
        return self._file(location)

    def new_output(self, location: str) -> PyArrowFile:
        return self._file(location)

    def delete(self, location: str | InputFile | OutputFile) -> None:
        name = location.location if isinstance(location, InputFile | OutputFile) else location
        super().delete(self.rebase.physical(name) if self.rebase else name)


def _root_from_catalog(db: Path, namespace: str) -> str | None:
    """The data dir a catalog made before root.json existed was created in, from a table's
    metadata location (``<root>/iceberg/<namespace>/<table>/metadata/...``)."""
    marker = f"/iceberg/{namespace}/"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT metadata_location FROM iceberg_tables").fetchall()
    except sqlite3.Error:
        return None
    for (location,) in rows:
        if isinstance(location, str) and marker in location:
            root = location[: location.index(marker)]
            for prefix in ("file://", ""):
                if root.startswith(prefix) and root[len(prefix) :].startswith("/"):
                    return root[len(prefix) :]
    return None


def stored_root(data_dir: Path, namespace: str) -> str:
    """The data dir the embedded catalog names its files under; recorded on first use."""
    catalog_dir = data_dir / "catalog"
    record = catalog_dir / ROOT_FILE
    current = str(data_dir.absolute())
    try:
        data: Any = json.loads(record.read_text())
        if isinstance(data, dict) and isinstance(data.get("root"), str) and data["root"].startswith("/"):
            return str(data["root"])
    except (FileNotFoundError, ValueError):
        pass
    db = catalog_dir / "iceberg.db"
    root = (_root_from_catalog(db, namespace) if db.exists() else None) or current
    try:
        catalog_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, {"root": root})
    except OSError as exc:  # a read-only data dir still serves; the next writable start records it
        log.warning("catalog_root_not_recorded", error=str(exc))
    return root


def rebase_properties(data_dir: Path, namespace: str) -> dict[str, str]:
    """Catalog properties for the embedded catalog under ``data_dir``: its warehouse under the
    stored root, and the FileIO that maps it to ``data_dir``."""
    stored = stored_root(data_dir, namespace)
    current = str(data_dir.absolute())
    if stored != current:
        log.info("data_dir_moved", created_in=stored, served_from=current)
    return {
        "warehouse": f"{Path(stored).as_uri()}/iceberg",
        "py-io-impl": f"{RebasingFileIO.__module__}.{RebasingFileIO.__name__}",
        STORED_ROOT: stored,
        CURRENT_ROOT: current,
    }


# -- other files in the data dir that name files ---------------------------------------------


def relative_name(root: Path, location: str) -> str:
    """``location`` relative to the data dir ``root`` when it is under it (else as given: an
    s3:// URI, a warm_uri elsewhere), so a record of it stays right after a move."""
    path = Path(location)
    if "://" in location or not path.is_absolute():
        return location
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return location


def resolve_name(root: Path, name: str) -> str:
    """The location a :func:`relative_name` stands for in the data dir ``root``."""
    return name if "://" in name or Path(name).is_absolute() else str(root / name)
