"""The raw planner: statements run as written over the tables' views (all tiers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlglot import exp

from tierflight.engine.database import SYSTEM_SCHEMA, SYSTEM_STORAGE_SCHEMA
from tierflight.engine.sandbox import Statement
from tierflight.router.route import Route, RoutePart
from tierflight.tiers.base import Tier

TierLookup = Callable[[], Mapping[str, list[Tier]]]


class RawPlanner:
    """Every configured table is read whole from its tiers; DuckDB prunes row groups."""

    def __init__(self, tiers: TierLookup) -> None:
        self._tiers = tiers

    def plan(self, statement: Statement) -> Route:
        tables = self._tiers()
        parts: list[RoutePart] = []
        seen: set[str] = set()
        for t in statement.tree.find_all(exp.Table):
            name = t.name
            if not name or name in seen:
                continue
            seen.add(name)
            if t.db.lower() == SYSTEM_SCHEMA:
                parts.append(RoutePart("system", f"system.{name}", 0, "system table"))
                continue
            for tier in tables.get(name, []):
                partitions = tier.partitions()
                if partitions:
                    rows = sum(p.rows for p in partitions)
                    parts.append(
                        RoutePart(tier.name, f"{name}: {len(partitions)} partitions", rows, "raw scan (routing: none)")
                    )
        sql = statement.sql
        if any(p.tier == "system" for p in parts):
            sql = qualify_system_tables(statement.tree).sql(dialect="duckdb")
            if statement.kind == "explain":
                sql = "EXPLAIN " + sql
        return Route(sql=sql, parts=tuple(parts))


def qualify_system_tables(tree: exp.Expression) -> exp.Expression:
    """Point ``system.x`` at the schema the system tables are stored in."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.db.lower() == SYSTEM_SCHEMA and not node.catalog:
            node = node.copy()
            node.set("db", exp.to_identifier(SYSTEM_STORAGE_SCHEMA))
        return node

    return tree.transform(rewrite)
