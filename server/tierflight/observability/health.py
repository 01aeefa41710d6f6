"""Readiness: may a load balancer send this instance statements?

Ready means: not shutting down, every enabled rollup has been loaded (or has failed and the
router falls back to the raw tiers for it), and the Iceberg catalog of every table answers.
``/readyz`` and the Flight ``healthcheck`` action report the same JSON (``App.health()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tierflight.core.errors import first_line

if TYPE_CHECKING:
    from tierflight.observability.served import Served

READY = "ready"
NOT_READY = "not_ready"
# A rollup in one of these is not in memory yet: statements it would answer scan raw tiers.
_NOT_LOADED = frozenset({"pending", "building"})


def readiness(app: Served) -> dict[str, Any]:
    """``{"status": "ready" | "not_ready", "reasons": [...], "tables": [...], "checks": {...}}``."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    if getattr(app, "draining", False):
        reasons.append("shutting down: finishing in-flight statements")

    registry = getattr(app, "rollups", None)
    if registry is not None and getattr(registry, "enabled", True):
        by_status: dict[str, list[str]] = {}
        for name, state in sorted(registry.states.items()):
            by_status.setdefault(state.status, []).append(name)
        checks["rollups"] = by_status
        waiting = sorted(n for status in _NOT_LOADED for n in by_status.get(status, []))
        if waiting:
            reasons.append(f"rollups not loaded yet: {', '.join(waiting)}")

    catalog: dict[str, str] = {}
    for name, store in sorted(app.stores.items()):
        # table_exists is the cheapest call that proves the catalog answers (one SQLite
        # query, or one HEAD request to a REST catalog, bounded by [iceberg] timeout).
        try:
            store.cold.exists()
            catalog[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure to answer means not ready
            catalog[name] = first_line(exc)
            reasons.append(f"Iceberg catalog unreachable for table {name}: {catalog[name]}")
    checks["catalog"] = catalog

    return {
        "status": NOT_READY if reasons else READY,
        "reasons": reasons,
        "tables": sorted(app.config.tables),
        "checks": checks,
    }
