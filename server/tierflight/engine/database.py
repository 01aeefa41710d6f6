"""The DuckDB side: one in-memory database, named ``tierflight``, with the system tables.

The configured tables are not in DuckDB's catalog: the raw planner replaces every reference
to one (core.names resolves the spellings) by its current tier sources, so no object in
the catalog can answer with rows of an earlier listing.

DuckDB is the second fence of the sandbox: external access is off except for the data
directory, extensions cannot be installed or loaded, and the configuration is locked so a
statement cannot turn any of that back on.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from tierflight.core.config import Config
from tierflight.core.errors import IngestTooLarge, StatementRefused, StorageUnavailable
from tierflight.core.log import get_logger
from tierflight.core.lru import LRU
from tierflight.core.names import (
    CATALOG,
    DIMENSION_DATABASE,
    JOINED_DATABASE,
    ROLLUP_DATABASE,
    SYSTEM_STORAGE_SCHEMA,
)
from tierflight.core.sql import quote_ident, quote_literal
from tierflight.engine.guards import MACROS

log = get_logger("tierflight.engine")

_ALLOWED_STATEMENT_TYPES = frozenset({"SELECT", "EXPLAIN"})

SystemTableSource = Callable[[], pa.Table]
# The rows a caller may see: all of them (None) or those of one user.
CallerTableSource = Callable[[str | None], pa.Table]


def use_catalog(con: duckdb.DuckDBPyConnection) -> None:
    """Name the connection's database ``tierflight`` (the catalog of the contract): DuckDB
    names an in-memory database ``memory`` and has no setting for it, so attach one under
    the name, make it the default and drop ``memory``. Cursors opened afterwards default to
    it (the only database left that is not internal)."""
    con.execute(f"ATTACH ':memory:' AS {CATALOG}")
    con.execute(f"USE {CATALOG}")
    con.execute("DETACH memory")


def _caller_relation(name: str) -> str:
    return f"__tf_caller_{name}"


class Database:
    """Owns the DuckDB connection; hands out one cursor per statement."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._system_sources: dict[str, SystemTableSource] = {}
        self._caller_sources: dict[str, CallerTableSource] = {}
        self._reads_checked: LRU[str, bool] = LRU(4096)
        data_dir = config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(
            ":memory:",
            config={
                "threads": config.duckdb.threads,
                "memory_limit": config.duckdb.memory_limit,
                # Spill goes where the operator chose and never past its cap (DuckDB's own default
                # is .tmp in the working directory, up to 90% of that disk).
                "temp_directory": config.duckdb.temp_directory or str(data_dir / ".duckdb_tmp"),
                "max_temp_directory_size": f"{config.duckdb.max_temp_directory_size}B",
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            },
        )
        use_catalog(self._con)
        self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {SYSTEM_STORAGE_SCHEMA}")
        # Rollups live in an in-memory database that DuckDB compresses at checkpoints
        # (dictionary, RLE, bit packing, ALP): a quarter of their Arrow size, and scans that
        # read less memory.
        self._con.execute(f"ATTACH ':memory:' AS {ROLLUP_DATABASE} (COMPRESS)")
        # Dimension tables: each version a table of its own (install_dimension), read by name
        # like a rollup rather than registered as an Arrow table on every statement's cursor.
        self._con.execute(f"ATTACH ':memory:' AS {DIMENSION_DATABASE} (COMPRESS)")
        # Joined rollups (engine/joined.py): short-lived, not worth a checkpoint's compression.
        self._con.execute(f"ATTACH ':memory:' AS {JOINED_DATABASE}")
        self._dimension_seq = itertools.count(1)
        from tierflight.rollups import hll, kll

        hll.register_functions(self._con)
        kll.register_functions(self._con)
        self._allowed = [str(data_dir) + "/"]
        self._con.execute(f"SET allowed_directories = [{', '.join(quote_literal(d) for d in self._allowed)}]")
        # Data files are never rewritten in place (new data, compaction and demotion write
        # new names), so a file's footer is read once, not per statement. (A Parquet option:
        # set once the built-in extension is loaded, not at connect.)
        self._con.execute("SET parquet_metadata_cache = true")
        for macro in MACROS:
            self._con.execute(macro)
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    @property
    def data_dir(self) -> Path:
        return self._config.data_dir

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()

    def register_system_table(self, name: str, source: SystemTableSource) -> None:
        """A ``system.<name>`` table whose rows come from ``source`` when a statement reads it."""
        self._system_sources[name] = source
        self.refresh_system_tables([name])

    def register_caller_table(self, name: str, source: CallerTableSource) -> None:
        """A ``system.<name>`` table whose rows depend on who reads it (``system.queries``:
        each user's own statements). It is a view over a name each statement's cursor
        registers with that caller's rows (:meth:`caller_registrations`): DuckDB
        registrations are per cursor, so concurrent statements of different users never
        see each other's rows, which one shared table refreshed per statement could not
        promise."""
        self._caller_sources[name] = source
        self._system_sources[name] = lambda: source(None)
        local = _caller_relation(name)
        with self._lock:
            # The view binds at creation, against an empty stand-in on this connection.
            self._con.register(local, source(None).schema.empty_table())
            self._con.execute(
                f"CREATE OR REPLACE VIEW {SYSTEM_STORAGE_SCHEMA}.{quote_ident(name)} AS SELECT * FROM {local}"
            )

    def caller_registrations(self, names: Iterable[str], user: str | None) -> list[tuple[str, pa.Table]]:
        """What a statement's cursor registers for the caller-dependent tables it reads
        (``user`` None: a caller who may see every user's rows)."""
        return [
            (_caller_relation(n), self._caller_sources[n](user)) for n in names if n in self._caller_sources
        ]

    @property
    def system_tables(self) -> Mapping[str, SystemTableSource]:
        return self._system_sources

    def refresh_system_tables(self, names: Iterable[str]) -> None:
        for name in names:
            source = self._system_sources.get(name) if name not in self._caller_sources else None
            if source is None:
                continue
            data = source()
            with self._lock:
                cur = self._con.cursor()
                try:
                    cur.register("__tf_system_src", data)
                    cur.execute(
                        f"CREATE OR REPLACE TABLE {SYSTEM_STORAGE_SCHEMA}.{quote_ident(name)} AS SELECT * FROM __tf_system_src"
                    )
                    cur.unregister("__tf_system_src")
                finally:
                    cur.close()

    def execute_internal(self, sql: str, cursor: duckdb.DuckDBPyConnection | None = None) -> None:
        """Server-side DDL/DML (never client SQL)."""
        with self._lock:
            (cursor or self._con).execute(sql)

    def compress(self, database: str, cursor: duckdb.DuckDBPyConnection | None = None) -> bool:
        """Checkpoint an in-memory database, which compresses what changed since the last
        one. DuckDB refuses while another transaction has uncommitted changes; the data then
        stays as it is (correct, only larger) until the next checkpoint."""
        try:
            with self._lock:
                (cursor or self._con).execute(f"CHECKPOINT {quote_ident(database)}")
        except duckdb.Error as exc:
            log.info("checkpoint_skipped", database=database, reason=str(exc).splitlines()[0])
            return False
        return True

    def query_internal(self, sql: str) -> list[tuple[Any, ...]]:
        cur = self._con.cursor()
        try:
            return cur.execute(sql).fetchall()
        finally:
            cur.close()

    def append_internal(self, qualified_table: str, data: pa.Table) -> None:
        with self._lock:
            cur = self._con.cursor()
            try:
                cur.register("__tf_append_src", data)
                cur.execute(f"INSERT INTO {qualified_table} SELECT * FROM __tf_append_src")
                cur.unregister("__tf_append_src")
            finally:
                cur.close()

    def install_dimension(self, table: str, version: int, data: pa.Table) -> str:
        """A DuckDB table holding one version of a dimension table; its qualified name.

        Each install gets a name no other install had (the table, the version and a
        sequence number of this process): a route, a cached plan or a cached result that
        names it can only ever mean these rows."""
        name = f"{table}_v{version}_{next(self._dimension_seq)}"
        qualified = f"{DIMENSION_DATABASE}.main.{quote_ident(name)}"
        cur = self._con.cursor()
        try:
            cur.register("__tf_dimension_src", data)
            self.execute_internal(f"CREATE TABLE {qualified} AS SELECT * FROM __tf_dimension_src", cursor=cur)
            cur.unregister("__tf_dimension_src")
        except duckdb.OutOfMemoryException:
            raise IngestTooLarge(
                f"dimension table {table}: version {version} ({data.nbytes:,} bytes) does not fit in DuckDB's memory "
                "([duckdb] memory_limit); nothing was written"
            ) from None
        except duckdb.Error as exc:
            # DuckDB's text names internal tables: it goes to the log, not to the client.
            log.error("dimension_install_failed", table=table, version=version, error=str(exc).splitlines()[:1])
            raise StorageUnavailable(f"dimension table {table}: version {version} could not be loaded; see the server log") from None
        finally:
            cur.close()
        self.compress(DIMENSION_DATABASE)
        return qualified

    def drop_dimension(self, qualified: str) -> None:
        """Drop a version no longer served. A statement already running on it keeps reading
        it (DuckDB's catalog is transactional); a new statement is planned on its successor."""
        self.execute_internal(f"DROP TABLE IF EXISTS {qualified}")

    def check_statement_type(self, cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
        """DuckDB's own parser decides the statement type: only reads get through."""
        if self._reads_checked.get(sql):
            return  # the verdict depends on the text alone; dashboards repeat statements
        statements = cursor.extract_statements(sql)
        if len(statements) != 1:
            raise StatementRefused("only one statement per request is allowed; send them one at a time")
        kind = str(statements[0].type).rsplit(".", 1)[-1].upper()
        if kind not in _ALLOWED_STATEMENT_TYPES:
            raise StatementRefused(f"{kind} statements are not allowed: tierflight is read-only")
        self._reads_checked.put(sql, True)

    def close(self) -> None:
        # Wait for server-side work on the connection (view swaps, maintenance) to finish:
        # closing it while another thread is in a call fails with "connection is busy".
        with self._lock:
            self._con.close()
