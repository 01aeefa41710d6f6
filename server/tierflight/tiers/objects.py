"""Where the tiers' files live, local disk or S3, behind one small interface.

Maintenance (demotion, compaction, the trash) and ingest flushes are written once against
:class:`Objects`; pyarrow's filesystems do the work on both kinds of storage. Paths are the
filesystem's own: absolute local paths, or ``bucket/key`` on S3; :meth:`Objects.uri` gives
the name DuckDB and Iceberg use (the local path, or ``s3://bucket/key``).

What differs is kept inside: a local rename is atomic and a directory moves whole, while an
S3 "move" is a server-side copy then a delete, object by object; a local copy within one
disk is a hard link. S3 failures become :class:`StorageUnavailable` naming the endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tierflight.core.durable import write_json_atomic
from tierflight.tiers.s3 import S3Settings, is_s3_uri, strip_scheme

T = TypeVar("T")


class Objects:
    def __init__(self, s3: S3Settings | None = None) -> None:
        self.s3 = s3
        self.fs: pafs.FileSystem = s3.filesystem() if s3 is not None else pafs.LocalFileSystem()

    def uri(self, path: str) -> str:
        return path if self.s3 is None else f"s3://{path}"

    @staticmethod
    def path(uri: str) -> str:
        """The filesystem path of a location (``s3://b/k`` -> ``b/k``; ``file:///p`` -> ``/p``)."""
        return strip_scheme(uri) if is_s3_uri(uri) else uri.removeprefix("file://")

    def _io(self, what: str, fn: Callable[[], T]) -> T:
        if self.s3 is None:
            return fn()
        try:
            return fn()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self.s3.unavailable(what, exc) from None

    # -- looking ----------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        info = self._io(f"look up {self.uri(path)}", lambda: self.fs.get_file_info(path))
        return bool(info.type == pafs.FileType.File)

    def entries(self, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """What is under ``path`` (nothing if it does not exist), sorted by path."""
        selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
        infos = self._io(f"list {self.uri(path)}", lambda: self.fs.get_file_info(selector))
        return sorted(infos, key=lambda i: i.path)

    def files(self, path: str) -> list[str]:
        return [i.path for i in self.entries(path) if i.type == pafs.FileType.File]

    def read_json(self, path: str) -> Any:
        """The parsed file, or None when it is missing or not JSON (a torn local write)."""

        def read() -> bytes:
            with self.fs.open_input_stream(path) as fh:
                return bytes(fh.read())

        try:
            return json.loads(self._io(f"read {self.uri(path)}", read))
        except (FileNotFoundError, ValueError):
            return None

    # -- changing ---------------------------------------------------------------------------

    def write_json(self, path: str, data: object) -> None:
        """Readers see the old or the new content (locally: fsynced rename; S3: one PUT)."""
        if self.s3 is None:
            write_json_atomic(Path(path), data)
            return

        def put() -> None:
            with self.fs.open_output_stream(path) as fh:
                fh.write(json.dumps(data).encode())

        self._io(f"write {self.uri(path)}", put)

    def write_parquet(self, table: pa.Table, path: str, options: dict[str, Any]) -> int:
        """Write one data file with ``options`` (tiers.parquet.write_options); returns its
        size. Locally it appears whole (written aside, renamed in); an S3 object appears
        whole when complete."""
        from tierflight.tiers.parquet import write_file

        if self.s3 is None:
            return write_file(table, Path(path), options)

        def put() -> int:
            pq.write_table(table, path, filesystem=self.fs, **options)
            return int(self.fs.get_file_info(path).size or 0)

        return self._io(f"write {self.uri(path)}", put)

    def read_parquet(self, path: str, columns: list[str]) -> pa.Table:
        return self._io(f"read {self.uri(path)}", lambda: pq.read_table(path, columns=columns, filesystem=self.fs))

    def move(self, source: str, target: str) -> None:
        """Rename a file or a directory. Locally atomic; on S3 each object is copied, then
        deleted, so callers order their steps to survive a crash in between."""
        if self.s3 is None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            return
        infos = self.entries(source, recursive=True)
        moves = [(i.path, target + i.path[len(source) :]) for i in infos if i.type == pafs.FileType.File]
        if not infos:
            moves = [(source, target)]
        for src, dst in moves:
            self._io(f"move {self.uri(src)} to {self.uri(dst)}", lambda s=src, d=dst: self.fs.move(s, d))  # type: ignore[misc]

    def delete(self, path: str) -> None:
        """Delete a file; a missing one is fine."""
        with contextlib.suppress(FileNotFoundError):
            self._io(f"delete {self.uri(path)}", lambda: self.fs.delete_file(path))

    def delete_tree(self, path: str) -> None:
        if self.s3 is None:
            p = Path(path)
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            return
        self._io(f"delete {self.uri(path)}", lambda: self.fs.delete_dir(path))

    def copy(self, source: str, target: Objects, target_path: str) -> None:
        """Copy a file to ``target`` storage, replacing what is there (on one local disk: a
        hard link, no bytes copied)."""
        if self.s3 is None and target.s3 is None:
            # Linked (or copied) aside, then renamed over the target: a copy made again
            # replaces the earlier one, as on S3.
            tmp = Path(target_path).with_name(f".{Path(target_path).name}.copying")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copy2(source, tmp)
            os.replace(tmp, target_path)
            return
        where = target if target.s3 is not None else self
        where._io(
            f"copy {self.uri(source)} to {target.uri(target_path)}",
            lambda: pafs.copy_files(source, target_path, source_filesystem=self.fs, destination_filesystem=target.fs),
        )
