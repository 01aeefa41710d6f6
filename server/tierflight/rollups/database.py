"""What the rollup registry asks of the server's DuckDB connection (engine.database.Database).

The engine owns the connection (its sandbox settings, system tables, the attached
``tf_rollup`` database) and hands it to the registry; rollups name only this interface, so
they never import the engine above them.
"""

from __future__ import annotations

from typing import Any, Protocol

import duckdb


class RollupDatabase(Protocol):
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for one piece of work."""
        ...

    def execute_internal(self, sql: str, cursor: duckdb.DuckDBPyConnection | None = None) -> None:
        """Server-side DDL/DML, serialised with the other internal writes."""
        ...

    def compress(self, database: str, cursor: duckdb.DuckDBPyConnection | None = None) -> bool:
        """Checkpoint an in-memory database (compresses what changed); False when DuckDB refused."""
        ...

    def query_internal(self, sql: str) -> list[tuple[Any, ...]]: ...
