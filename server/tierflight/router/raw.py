"""The raw planner: each table reference reads only the tiers and partitions it needs.

A reference to a configured table is replaced by a subquery over the pruned sources of its
tiers (cold files planned by pyiceberg, warm day partitions, the hot tail), with the derived
columns added; DuckDB then pushes the statement's predicates and projection into the scans.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from sqlglot import exp

from tierflight.engine.database import SYSTEM_SCHEMA, SYSTEM_STORAGE_SCHEMA, table_view_sql
from tierflight.engine.sandbox import DIALECT, Statement
from tierflight.router.route import Route, RoutePart
from tierflight.router.timerange import derived_grains, table_time_range
from tierflight.tiers.base import TimeRange
from tierflight.tiers.store import Source, TableStore
from tierflight.tiers.timetravel import relation_at

StoreLookup = Callable[[], Mapping[str, TableStore]]


def _fmt_range(parts: tuple[object, ...]) -> str:
    days = sorted(p.partition.removeprefix("day=") for p in parts)  # type: ignore[attr-defined]
    if not days:
        return ""
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def describe_source(table: str, src: Source) -> str:
    if src.tier == "hot":
        return f"{table}: hot tail"
    span = _fmt_range(src.partitions)
    return f"{table}: {len(src.partitions)} partitions, {src.files} files [{span}]"


@cache
def _grains(store_id: int, derived: tuple[tuple[str, str], ...], time_column: str) -> dict[str, str]:
    return derived_grains(dict(derived), time_column)


class RawPlanner:
    def __init__(self, stores: StoreLookup) -> None:
        self._stores = stores

    def plan(self, statement: Statement) -> Route:
        stores = self._stores()
        parts: list[RoutePart] = []
        bodies: dict[str, str] = {}
        registrations: list[tuple[str, Any]] = []
        system = False
        tree = statement.tree.copy()  # the cached statement's tree is shared: never edit it
        for t in list(tree.find_all(exp.Table)):
            if t.db.lower() == SYSTEM_SCHEMA:
                system = True
                parts.append(RoutePart("system", f"system.{t.name}", 0, "system table"))
                if not t.catalog:
                    t.set("db", exp.to_identifier(SYSTEM_STORAGE_SCHEMA))
                continue
            store = stores.get(t.name) if not t.db or t.db.lower() == "main" else None
            if store is None or not t.name:
                continue
            cfg = store.table
            grains = _grains(id(store), tuple(cfg.derived.items()), cfg.time_column)
            rng = table_time_range(t, cfg.time_column, grains)
            when = t.args.get("when")
            if when is not None:
                sql_at, snapshot_id, files, regs = relation_at(store, when, rng)
                registrations.extend(regs)
                marker = f"__tf_source_{uuid.uuid4().hex[:12]}"
                bodies[marker] = table_view_sql(store.table, [sql_at] if sql_at else [])
                t.replace(
                    exp.Table(this=exp.to_identifier(marker), alias=exp.TableAlias(this=exp.to_identifier(t.alias or t.name)))
                )
                parts.append(RoutePart("cold", f"{t.name}: Iceberg snapshot {snapshot_id}, {files} files", 0, "time travel"))
                continue
            sources = store.sources(rng)
            registrations.extend(r for s in sources for r in s.registrations)
            marker = f"__tf_source_{uuid.uuid4().hex[:12]}"
            bodies[marker] = table_view_sql(store.table, [s.sql for s in sources])
            t.replace(
                exp.Table(this=exp.to_identifier(marker), alias=exp.TableAlias(this=exp.to_identifier(t.alias or t.name)))
            )
            parts.extend(
                RoutePart(s.tier, describe_source(t.name, s), sum(p.rows for p in s.partitions), _reason(rng))
                for s in sources
            )
            if not sources:
                parts.append(RoutePart("none", f"{t.name}: no partitions in range", 0, _reason(rng)))
        if not bodies and not system:
            return Route(sql=statement.sql, parts=tuple(parts))
        sql = tree.sql(dialect=DIALECT)
        # File lists are long; splicing them in as text keeps sqlglot from parsing them per query.
        for marker, body in bodies.items():
            sql = sql.replace(marker, f"({body})", 1)
        if statement.kind == "explain":
            sql = "EXPLAIN " + sql
        return Route(sql=sql, parts=tuple(parts), registrations=tuple(registrations))


def _reason(rng: TimeRange) -> str:
    if rng.start is None and rng.end is None:
        return "raw scan: no time bound in the statement"
    lo = rng.start.isoformat(sep=" ") if rng.start else "-inf"
    hi = rng.end.isoformat(sep=" ") if rng.end else "+inf"
    return f"raw scan pruned to [{lo}, {hi})"
