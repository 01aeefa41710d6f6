"""Table names as DuckDB resolves them: the one place a name becomes a configured table.

DuckDB compares identifiers case-insensitively whether they are quoted or not, takes a
two-part name ``a.b`` as schema ``a`` or else catalog ``a`` (its default schema), and lets a
CTE shadow an unqualified table name from where the CTE is visible. Every component that
looks at table names (the router, the raw planner, the system-table refresh, ingest targets,
metadata) asks :class:`Names`, so no spelling reaches the tiers one way and something else
another way. Nothing named like a configured table exists in DuckDB's catalog: a spelling
this module did not resolve fails with "does not exist", never reads stale rows.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from sqlglot import exp

from tierflight.core.errors import NotFound

# The server's DuckDB database is attached under this name (engine.database): what
# current_database() and the metadata calls report, and what a three-part name starts with.
CATALOG = "tierflight"
MAIN_SCHEMA = "main"
SYSTEM_SCHEMA = "system"
# DuckDB has a built-in catalog called "system", which makes ``system.x`` ambiguous; the
# system tables live in this schema and the raw planner rewrites ``system.x`` to it.
SYSTEM_STORAGE_SCHEMA = "tf_system"
ROLLUP_DATABASE = "tf_rollup"  # the rollups' in-memory database
DIMENSION_DATABASE = "tf_dimension"  # the dimension tables' versions (in-memory database)
JOINED_DATABASE = "tf_joined"  # joined rollups (router/joined.py; in-memory database)
# Internal storage: a client reference to it is answered as if it did not exist.
INTERNAL_NAMESPACES = frozenset({SYSTEM_STORAGE_SCHEMA, ROLLUP_DATABASE, DIMENSION_DATABASE, JOINED_DATABASE})


class Kind(enum.Enum):
    TABLE = "table"  # a configured fact table (schema main)
    DIMENSION = "dimension"  # a configured dimension table (schema main, held in memory)
    SYSTEM = "system"  # a system table (schema system)


@dataclass(frozen=True)
class Resolved:
    kind: Kind
    name: str  # as configured / registered


def visible_ctes(table: exp.Table) -> frozenset[str]:
    """Lower-case names of the CTEs visible where ``table`` is written: every CTE of each
    enclosing WITH, but within a WITH's own CTE list only the earlier ones (and the CTE
    itself when the WITH is RECURSIVE), as DuckDB binds them."""
    names: set[str] = set()
    child: exp.Expr = table
    parent = table.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = parent.expressions
            index = next((i for i, c in enumerate(ctes) if c is child), len(ctes))
            upto = index + 1 if parent.args.get("recursive") else index
            names.update(c.alias_or_name.lower() for c in ctes[:upto])
        else:
            with_ = parent.args.get("with_")
            if isinstance(with_, exp.With) and with_ is not child:
                names.update(c.alias_or_name.lower() for c in with_.expressions)
        child, parent = parent, parent.parent
    return frozenset(names)


class Names:
    """Resolves table references to configured tables and system tables."""

    def __init__(
        self,
        tables: Iterable[str],
        system_tables: Callable[[], Collection[str]] = frozenset,
        dimensions: Iterable[str] = (),
    ) -> None:
        self._tables = {name.lower(): name for name in tables}
        self._dimensions = {name.lower(): name for name in dimensions}
        self._system_tables = system_tables

    @property
    def tables(self) -> tuple[str, ...]:
        """The configured fact tables."""
        return tuple(self._tables.values())

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self._dimensions.values())

    def table(self, name: str) -> str | None:
        """The configured table an (unqualified) name means, or None."""
        return self._tables.get(name.lower())

    def lookup(self, name: str, schema: str | None = None, catalog: str | None = None) -> Resolved | None:
        """What ``[catalog.][schema.]name`` means (each part as DuckDB compares it), or None
        when it is not one of ours (a CTE, a DuckDB catalog function, a typo).

        Raises NotFound for internal storage and for unknown system tables: those names
        must not reach DuckDB, whose message would name the internal schema."""
        schema_l = (schema or "").lower()
        catalog_l = (catalog or "").lower()
        if catalog_l in INTERNAL_NAMESPACES or schema_l in INTERNAL_NAMESPACES:
            raise NotFound(f"table {_shown(name, schema, catalog)} does not exist")
        if catalog_l and catalog_l != CATALOG:
            return None
        if not schema_l or schema_l == MAIN_SCHEMA or (schema_l == CATALOG and not catalog_l):
            configured = self._tables.get(name.lower())
            if configured is not None:
                return Resolved(Kind.TABLE, configured)
            dimension = self._dimensions.get(name.lower())
            return Resolved(Kind.DIMENSION, dimension) if dimension is not None else None
        if schema_l == SYSTEM_SCHEMA:
            known = {n.lower(): n for n in self._system_tables()}
            system = known.get(name.lower())
            if system is None:
                listed = ", ".join(f"system.{n}" for n in sorted(known.values()))
                raise NotFound(f"table {_shown(name, schema, catalog)} does not exist; system tables: {listed}")
            return Resolved(Kind.SYSTEM, system)
        return None

    def resolve(self, table: exp.Table) -> Resolved | None:
        """What a table reference of a parsed statement reads: a configured table, a system
        table, or None (a CTE in scope, a table function, anything not ours)."""
        if not isinstance(table.this, exp.Identifier) or not table.name:
            return None
        schema, catalog = table.db, table.catalog
        if not schema and not catalog and table.name.lower() in visible_ctes(table):
            return None
        return self.lookup(table.name, schema or None, catalog or None)


def _shown(name: str, schema: str | None, catalog: str | None) -> str:
    return ".".join(p for p in (catalog, schema, name) if p)
