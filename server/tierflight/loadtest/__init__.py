"""``tierflight loadtest``: a multi-process Flight SQL load generator with per-tier accounting.

Use from Python::

    from tierflight.loadtest import LoadTestConfig, load_workload, run_loadtest, write_report

    statements = tuple(load_workload("../shared/workloads/adtech-dashboard.sql"))
    result = run_loadtest(LoadTestConfig("grpc://127.0.0.1:31337", statements, concurrency=8, duration=10))
    print(result.figures["summary"]["qps"])

Modules: :mod:`.workload` (the ``-- name:`` file format), :mod:`.worker` (processes with
client threads over raw pyarrow.flight), :mod:`.runner` (orchestration and bounds),
:mod:`.stats` (percentiles, tiers, timeline), :mod:`.report` (summary, JSON, PNG).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierflight.loadtest.report import print_summary, write_report
    from tierflight.loadtest.runner import LoadTestConfig, LoadTestError, LoadTestResult, run_loadtest
    from tierflight.loadtest.workload import Statement, WorkloadError, load_workload, parse_workload

# Names load on first use: every spawned worker imports this package on its way to
# .worker, and should not pay for numpy, rich and matplotlib it never uses.
_LAZY = {
    "LoadTestConfig": "runner",
    "LoadTestError": "runner",
    "LoadTestResult": "runner",
    "run_loadtest": "runner",
    "Statement": "workload",
    "WorkloadError": "workload",
    "load_workload": "workload",
    "parse_workload": "workload",
    "print_summary": "report",
    "write_report": "report",
}
__all__ = [
    "LoadTestConfig",
    "LoadTestError",
    "LoadTestResult",
    "Statement",
    "WorkloadError",
    "load_workload",
    "parse_workload",
    "print_summary",
    "run_loadtest",
    "write_report",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tierflight.loadtest' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tierflight.loadtest.{module}"), name)
