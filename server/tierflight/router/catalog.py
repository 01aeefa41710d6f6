"""What the raw planner asks of the shadow catalog (engine.catalog.ShadowCatalog).

Catalog relations (information_schema, pg_catalog, duckdb_*(), SHOW ALL TABLES) are answered
on a DuckDB of empty tables of the visible shape. The engine owns that DuckDB and hands it to
the router; the router names only this interface, so it never imports the engine above it.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa
from sqlglot import exp


class CatalogRelations(Protocol):
    def is_catalog_relation(self, table: exp.Table) -> bool:
        """Whether a table reference (one the names did not resolve) reads DuckDB's catalog."""
        ...

    def relation(self, table: exp.Table) -> pa.Table:
        """The rows of one catalog relation."""
        ...

    def statement(self, sql: str) -> pa.Table:
        """A whole catalog command (SHOW ..., DESCRIBE of a catalog relation) run there."""
        ...
