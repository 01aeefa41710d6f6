"""The raw planner: each table reference reads only the tiers and partitions it needs.

A reference to a configured table is replaced by a subquery over the pruned sources of its
tiers (cold files planned by pyiceberg, warm day partitions, the hot tail), with the derived
columns added; DuckDB then pushes the statement's predicates and projection into the scans.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlglot import exp

from tierflight.core.config import TableConfig
from tierflight.core.errors import InvalidArgument
from tierflight.core.lru import LRU
from tierflight.core.names import SYSTEM_STORAGE_SCHEMA, Kind, Names, visible_ctes
from tierflight.core.sql import derived_columns_sql, quote_literal, table_view_sql
from tierflight.core.statement import DIALECT, Statement
from tierflight.router.catalog import CatalogRelations
from tierflight.router.route import PartTier, Route, RoutePart
from tierflight.router.timerange import derived_grains, table_time_range
from tierflight.router.trees import faithful_copy
from tierflight.tiers.base import TierKind, TimeRange
from tierflight.tiers.dimension import DimensionStore
from tierflight.tiers.store import Source, TableStore
from tierflight.tiers.timetravel import columns_at, relation_at

StoreLookup = Callable[[], Mapping[str, TableStore]]
DimensionLookup = Callable[[], Mapping[str, DimensionStore]]


def _no_dimensions() -> Mapping[str, DimensionStore]:
    return {}


def _fmt_range(parts: tuple[object, ...]) -> str:
    days = sorted(p.partition.removeprefix("day=") for p in parts)  # type: ignore[attr-defined]
    if not days:
        return ""
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def describe_source(table: str, src: Source) -> str:
    if src.tier is TierKind.HOT:
        return f"{table}: hot tail"
    span = _fmt_range(src.partitions)
    return f"{table}: {len(src.partitions)} partitions, {src.files} files [{span}]"


@cache
def _date_column(derived: tuple[tuple[str, str], ...], time_column: str) -> str | None:
    """The derived column defined as the time column's date (``CAST(ts AS DATE)``), if any."""
    import sqlglot

    for name, sql in derived:
        tree = sqlglot.parse_one(sql, read=DIALECT)
        if (
            isinstance(tree, exp.Cast)
            and tree.to.is_type(exp.DataType.Type.DATE)
            and isinstance(tree.this, exp.Column)
            and tree.this.name.lower() == time_column.lower()
        ):
            return name
    return None


def sources_view_sql(table: TableConfig, sources: Sequence[Source], derived: frozenset[str] | None) -> str:
    """``table_view_sql`` for sources some of which give derived columns themselves: each
    branch has those columns (computed where its source lacks them), unioned by name."""
    carried = {c.lower() for s in sources for c in s.carries}
    if not carried:
        return table_view_sql(table, [s.sql for s in sources], derived)
    branches = []
    for s in sources:
        add = derived_columns_sql(table, carried, without={c.lower() for c in s.carries})
        branches.append(f"SELECT *{add} FROM ({s.sql})" if add else s.sql)
    body = " UNION ALL BY NAME ".join(f"({b})" for b in branches)
    return f"SELECT *{derived_columns_sql(table, derived, without=carried)} FROM ({body})"


@cache
def _grains(store_id: int, derived: tuple[tuple[str, str], ...], time_column: str) -> dict[str, str]:
    return derived_grains(dict(derived), time_column)


def derived_read(tree: exp.Expr, derived: Mapping[str, str], relations: Collection[str]) -> frozenset[str] | None:
    """The derived columns (lower-case names of ``derived``: name -> SQL) a query can read, or
    None for all of them: a star, COLUMNS(...), a NATURAL join, a PIVOT (it groups by every
    column it is not told about), a relation read as a row value (a column named like one of
    ``relations``), or anything but a query may see every column."""
    if not isinstance(tree, exp.Query):
        return None
    names: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            return None
        if isinstance(node, exp.Columns | exp.Pivot) or (isinstance(node, exp.Join) and node.args.get("method")):
            return None
        if isinstance(node, exp.Column):
            names.add(node.name.lower())
        elif isinstance(node, exp.Join):
            names.update(i.name.lower() for i in node.args.get("using") or ())
    if names & {r.lower() for r in relations}:
        return None
    wanted = {name for name in derived if name in names}
    # A derived column may be defined on another one: keep what it reads too.
    for name in list(wanted):
        wanted.update(other for other in derived if other != name and other in derived[name].lower())
    return frozenset(wanted)


@dataclass(frozen=True)
class _Reference:
    """A table reference of a statement, replaced by ``marker`` in the template."""

    marker: str
    table: str
    alias: str
    rng: TimeRange
    when: exp.Expr | None  # AT (VERSION|TIMESTAMP => ...): time travel


@dataclass(frozen=True)
class _Template:
    """What planning a statement on the raw tiers needs that depends on its text alone: the
    SQL with a marker for each table reference, and the time range each one needs. Data
    changes (an ingest, a flush) empty the plan cache; the sources are listed again, the
    template is not rebuilt."""

    sql: str | None  # None: no configured table is read; the statement runs as it is
    references: tuple[_Reference, ...]
    parts: tuple[RoutePart, ...]  # system tables read
    derived: Mapping[str, frozenset[str] | None]  # per table: the derived columns to add (None: all)
    # Per table: the date column to read from partition directories (None: compute it). Only
    # where the statement names its columns: a star's column order must not depend on which
    # tiers answer.
    day_as: Mapping[str, str | None]
    shape_only: bool = False  # DESCRIBE: the tables' columns are read, never their rows
    # Catalog relations (information_schema.tables, duckdb_tables(), ...): evaluated on the
    # shadow catalog (engine.catalog) and registered under the marker.
    catalog: tuple[tuple[str, exp.Table], ...] = ()
    whole_catalog: bool = False  # the statement is a catalog command run on the shadow
    # Dimension tables read: (marker, table); each marker stands for the current version's
    # DuckDB table (or the name its rows are registered under on the statement's cursor).
    dimensions: tuple[tuple[str, str], ...] = ()


class RawPlanner:
    def __init__(
        self,
        stores: StoreLookup,
        names: Names | None = None,
        catalog: CatalogRelations | None = None,
        dimensions: DimensionLookup = _no_dimensions,
    ) -> None:
        self._stores = stores
        self._dimensions = dimensions
        self._names = names
        self._catalog = catalog
        self._templates: LRU[tuple[str, str], _Template] = LRU(4096)

    def _template(self, statement: Statement, stores: Mapping[str, TableStore]) -> _Template:
        key = (statement.kind, statement.sql)
        known = self._templates.get(key)
        if known is not None:
            return known
        names = self._names or Names(stores)
        parts: list[RoutePart] = []
        references: list[_Reference] = []
        system = False
        tree = faithful_copy(statement.tree)  # the cached statement's tree is shared: never edit it
        if self._catalog is not None and _is_catalog_command(tree, names, self._catalog):
            template = _Template(_marker(), (), (), {}, {}, whole_catalog=True)
            self._templates.put(key, template)
            return template
        special = _describe_or_show(tree, names, stores, self._dimensions())
        if special is not None:
            template = _Template(special, (), (), {}, {})
            self._templates.put(key, template)
            return template
        if isinstance(tree, exp.Summarize) and isinstance(tree.this, exp.Table) and names.resolve(tree.this):
            # SUMMARIZE <table> summarizes its rows: the same as SUMMARIZE SELECT * FROM it.
            tree.set("this", exp.Select(expressions=[exp.Star()]).from_(tree.this.copy()))
        unaliased: set[tuple[Kind, str]] = set()
        catalog: list[tuple[str, exp.Table]] = []
        dimensions: list[tuple[str, str]] = []
        for t in list(tree.find_all(exp.Table)):
            resolved = names.resolve(t)
            if resolved is None:
                if self._catalog is not None and self._is_catalog_reference(t):
                    marker = _marker()
                    catalog.append((marker, t.copy()))
                    alias = t.args.get("alias") or exp.TableAlias(this=exp.to_identifier(t.name or t.this.name))
                    t.replace(exp.Table(this=exp.to_identifier(marker), alias=alias.copy()))
                continue
            if resolved.kind is Kind.SYSTEM:
                system = True
                parts.append(RoutePart(PartTier.SYSTEM, f"system.{resolved.name}", 0, "system table", system_table=resolved.name))
                if not t.alias:
                    # Named as written, so that ``system.rollups.name`` binds (SQLAlchemy
                    # qualifies columns with schema and table).
                    t.set("alias", exp.TableAlias(this=exp.to_identifier(t.name)))
                    unaliased.add((Kind.SYSTEM, resolved.name))
                t.set("this", exp.to_identifier(resolved.name, quoted=True))
                t.set("db", exp.to_identifier(SYSTEM_STORAGE_SCHEMA))
                t.set("catalog", None)
                continue
            if resolved.kind is Kind.DIMENSION:
                if t.args.get("when") is not None:
                    raise InvalidArgument(f"{resolved.name} is a dimension table: it has no history to travel in (AT ...)")
                marker = _marker()
                if not t.alias:
                    unaliased.add((Kind.DIMENSION, resolved.name))
                dimensions.append((marker, resolved.name))
                t.replace(exp.Table(this=exp.to_identifier(marker), alias=exp.TableAlias(this=exp.to_identifier(t.alias or t.name))))
                continue
            store = stores[resolved.name]
            cfg = store.table
            grains = _grains(id(store), tuple(cfg.derived.items()), cfg.time_column)
            rng = table_time_range(t, cfg.time_column, grains)
            when = t.args.get("when")
            marker = _marker()
            # Without an alias DuckDB names the relation as it is written (``EVENTS``).
            alias = t.alias or t.name
            if not t.alias:
                unaliased.add((Kind.TABLE, resolved.name))
            references.append(_Reference(marker, resolved.name, alias, rng, when.copy() if when is not None else None))
            t.replace(exp.Table(this=exp.to_identifier(marker), alias=exp.TableAlias(this=exp.to_identifier(alias))))
        if unaliased:
            _unqualify_columns(tree, names, unaliased)
        # Our own copy, read no more: the generator need not copy it again (a deep copy).
        sql = tree.sql(dialect=DIALECT, copy=False) if references or system or catalog or dimensions else None
        relations = {name for r in references for name in (r.table, r.alias)}
        derived = {
            r.table: derived_read(statement.tree, {k.lower(): v for k, v in stores[r.table].table.derived.items()}, relations)
            for r in references
        }
        day_as = {}
        for r in references:
            cfg = stores[r.table].table
            date_column = _date_column(tuple(cfg.derived.items()), cfg.time_column)
            wanted = derived[r.table]
            day_as[r.table] = date_column if wanted is not None and date_column and date_column.lower() in wanted else None
        template = _Template(
            sql,
            tuple(references),
            tuple(parts),
            derived,
            day_as,
            isinstance(tree, exp.Describe),
            tuple(catalog),
            dimensions=tuple(dimensions),
        )
        self._templates.put(key, template)
        return template

    def _is_catalog_reference(self, table: exp.Table) -> bool:
        """A reference the names did not resolve that reads DuckDB's catalog (not a CTE)."""
        assert self._catalog is not None
        if not table.db and not table.catalog and table.name.lower() in visible_ctes(table):
            return False
        return self._catalog.is_catalog_relation(table)

    def plan(self, statement: Statement) -> Route:
        stores = self._stores()
        template = self._template(statement, stores)
        if template.whole_catalog and self._catalog is not None and template.sql is not None:
            table = self._catalog.statement(statement.sql)
            part = RoutePart(PartTier.CATALOG, "catalog command", table.num_rows, "answered from the catalog")
            return Route(sql=f"SELECT * FROM {template.sql}", parts=(part,), registrations=((template.sql, table),))
        if template.sql is None:
            return Route(sql=statement.sql, parts=template.parts)
        parts = list(template.parts)
        registrations: list[tuple[str, Any]] = []
        sql = template.sql
        for marker, relation in template.catalog:
            assert self._catalog is not None
            rows = self._catalog.relation(relation)
            registrations.append((marker, rows))
            parts.append(RoutePart(PartTier.CATALOG, relation.sql(dialect=DIALECT), rows.num_rows, "catalog relation"))
        if template.dimensions:
            held = self._dimensions()
            # One version per table, however often the statement names it.
            versions = {name: held[name].current for _, name in template.dimensions}
            for marker, name in template.dimensions:
                version = versions[name]
                if version.relation is not None:
                    # The version's own DuckDB table: nothing to register per statement, and
                    # the text (so any plan or result cached by it) names the version.
                    sql = sql.replace(marker, version.relation, 1)
                else:
                    registrations.append((marker, version.data))
                parts.append(RoutePart(PartTier.DIMENSION, f"{name}: version {version.version}", version.rows, "dimension table (in memory)"))
        for ref in template.references:
            store = stores[ref.table]
            if template.shape_only:
                # DESCRIBE SELECT ...: only the columns matter; no file is listed or opened.
                columns = store.table if ref.when is None else columns_at(store, ref.when)
                body = table_view_sql(columns, [], template.derived[ref.table])
            elif ref.when is not None:
                sql_at, snapshot_id, files, regs, columns = relation_at(store, ref.when, ref.rng)
                registrations.extend(regs)
                body = table_view_sql(columns, [sql_at] if sql_at else [], template.derived[ref.table])
                parts.append(RoutePart(PartTier.COLD, f"{ref.table}: Iceberg snapshot {snapshot_id}, {files} files", 0, "time travel"))
            else:
                sources = store.sources(ref.rng, template.day_as[ref.table])
                registrations.extend(r for s in sources for r in s.registrations)
                body = sources_view_sql(store.table, sources, template.derived[ref.table])
                parts.extend(
                    RoutePart(PartTier(s.tier), describe_source(ref.table, s), sum(p.rows for p in s.partitions), _reason(ref.rng))
                    for s in sources
                )
                if not sources:
                    parts.append(RoutePart(PartTier.NONE, f"{ref.table}: no partitions in range", 0, _reason(ref.rng)))
            # File lists are long; splicing them in as text keeps sqlglot from parsing them per query.
            sql = sql.replace(ref.marker, f"({body})", 1)
        if statement.kind == "explain":
            sql = "EXPLAIN " + sql
        return Route(sql=sql, parts=tuple(parts), registrations=tuple(registrations))


def _marker() -> str:
    return f"__tf_source_{uuid.uuid4().hex[:12]}"


def _is_catalog_command(tree: exp.Expr, names: Names, catalog: CatalogRelations) -> bool:
    """A statement that is itself about the catalog: any SHOW but SHOW TABLES (which lists
    the configured tables), DESCRIBE or SUMMARIZE of a catalog relation."""
    if isinstance(tree, exp.Show):
        return tree.name.upper() != "TABLES"
    if isinstance(tree, exp.Describe | exp.Summarize) and isinstance(tree.this, exp.Table):
        return names.resolve(tree.this) is None and catalog.is_catalog_relation(tree.this)
    return False


def _describe_or_show(
    tree: exp.Expr, names: Names, stores: Mapping[str, TableStore], dimensions: Mapping[str, DimensionStore]
) -> str | None:
    """The SQL answering ``DESCRIBE <configured table>`` or ``SHOW TABLES`` (the tables are
    not in DuckDB's catalog), or None for any other statement."""
    if isinstance(tree, exp.Show) and tree.name.upper() == "TABLES":
        rows = ", ".join(f"({quote_literal(n)})" for n in sorted([*names.tables, *names.dimensions]))
        return f"SELECT name FROM (VALUES {rows}) AS t(name) ORDER BY name" if rows else "SELECT NULL::VARCHAR AS name WHERE false"
    if not isinstance(tree, exp.Describe) or not isinstance(tree.this, exp.Table):
        return None
    resolved = names.resolve(tree.this)
    if resolved is not None and resolved.kind is Kind.DIMENSION:
        return describe_sql(dimensions[resolved.name].table)
    if resolved is None or resolved.kind is not Kind.TABLE:
        return None
    return describe_sql(stores[resolved.name].table)


def describe_sql(table: TableConfig) -> str:
    """DuckDB's DESCRIBE columns for a configured table: its stored and derived columns with
    their types as DuckDB binds them, NOT NULL where the table declares it."""
    not_null = [quote_literal(c.name) for c in table.columns if not c.nullable]
    null = f"CASE WHEN column_name IN ({', '.join(not_null)}) THEN 'NO' ELSE \"null\" END" if not_null else '"null"'
    return (
        f'SELECT column_name, column_type, {null} AS "null", "key", "default", extra '
        f"FROM (DESCRIBE SELECT * FROM ({table_view_sql(table, [])}))"
    )


def _unqualify_columns(tree: exp.Expr, names: Names, tables: Collection[tuple[Kind, str]]) -> None:
    """``main.events.ts`` (``system.rollups.name``) names the column through the table's
    schema (and catalog); once the table is a subquery (or the internal system relation)
    aliased ``events`` (``rollups``), only ``events.ts`` binds."""
    for column in tree.find_all(exp.Column):
        if not column.args.get("db"):
            continue
        resolved = names.lookup(column.table, column.db, column.catalog or None)
        if resolved is not None and (resolved.kind, resolved.name) in tables:
            column.set("db", None)
            column.set("catalog", None)


def _reason(rng: TimeRange) -> str:
    if rng.start is None and rng.end is None:
        return "raw scan: no time bound in the statement"
    lo = rng.start.isoformat(sep=" ") if rng.start else "-inf"
    hi = rng.end.isoformat(sep=" ") if rng.end else "+inf"
    return f"raw scan pruned to [{lo}, {hi})"
