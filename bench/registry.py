"""The benchmark registry: ``BENCHMARKS[name](ctx) -> result dict``.

A benchmark is a function taking a :class:`bench.common.BenchContext` and returning a dict
in the shape :mod:`bench.report` renders (all keys optional except ``title``)::

    {
        "title": "SELECT 1 round trip",
        "description": "what is measured and how (one paragraph of markdown)",
        "data": "what data the figures are for, e.g. '10,000,000 rows x 5 columns'",
        "summary": [  # the headline figures
            {"metric": "...", "value": 1.23, "unit": "ms", "target": "<= 1.3 ms", "ok": True},
        ],
        "tables": [{"title": "...", "columns": ["a", "b"], "rows": [[1, 2]]}],
        "notes": ["free text, markdown"],
        "raw": {...},  # anything else worth keeping in the JSON
    }

:mod:`bench.run` adds ``name`` and ``meta`` (machine, git commit, date, command, duration).
To add a benchmark, create ``bench/<something>.py`` with a function decorated with
``@benchmark("name")``; it is discovered automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.common import BenchContext

Result = dict[str, Any]
BenchFn = Callable[["BenchContext"], Result]

BENCHMARKS: dict[str, BenchFn] = {}
# Benchmark modules that failed to import, with the error (run.py reports them).
BROKEN: dict[str, str] = {}
# Modules of this package that are infrastructure, not benchmarks.
_NOT_BENCHMARKS = frozenset({"common", "dataset", "floor", "registry", "report", "run"})


def benchmark(name: str) -> Callable[[BenchFn], BenchFn]:
    """Register ``fn`` as benchmark ``name`` (the order of registration is the report's order)."""

    def register(fn: BenchFn) -> BenchFn:
        if name in BENCHMARKS and BENCHMARKS[name] is not fn:
            raise ValueError(f"benchmark {name!r} is registered twice")
        BENCHMARKS[name] = fn
        return fn

    return register


# Report order for the modules known so far; modules not listed here come after, by name.
MODULE_ORDER = (
    "select1",
    "select1_profile",
    "large_result",
    "data_gen",
    "tiers",
    "rollups",
    "router",
    "star_schema",
    "ingest",
)


def discover() -> dict[str, BenchFn]:
    """Import every benchmark module of the package (which registers its benchmarks)."""
    import bench

    found = [m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in _NOT_BENCHMARKS]
    ordered = [m for m in MODULE_ORDER if m in found] + sorted(m for m in found if m not in MODULE_ORDER)
    for module in ordered:
        try:
            importlib.import_module(f"bench.{module}")
        except Exception as exc:  # one broken module must not stop the others
            BROKEN[module] = f"{type(exc).__name__}: {exc}"
    return BENCHMARKS
