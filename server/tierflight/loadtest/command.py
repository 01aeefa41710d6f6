"""What ``tierflight loadtest`` does, kept out of cli.py: progress line, summary, report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from tierflight.loadtest.report import print_summary, write_report
from tierflight.loadtest.runner import LoadTestConfig, LoadTestResult, run_loadtest
from tierflight.loadtest.vary import ParameterMode
from tierflight.loadtest.workload import load_workload


def _progress_line(status: dict[str, Any], total: float | None) -> Text:
    p99 = status["p99"]
    elapsed = f"{status['elapsed']:.1f}" + (f"/{total:g}" if total else "") + " s"
    phase = "warming up" if status["warming_up"] else elapsed
    return Text(
        f"loadtest {phase}  {status['statements']:,} statements  {status['qps']:,.0f} QPS  "
        f"p99 {'-' if p99 is None else f'{p99:.1f}'} ms  {status['errors']:,} errors"
    )


def run_command(
    *,
    uri: str,
    workload: Path,
    concurrency: int,
    duration: float | None,
    statements: int | None,
    rate: float | None,
    processes: int | None,
    warmup: float,
    timeout: float,
    report: Path | None,
    user: str | None,
    password: str | None,
    token: str | None,
    tls_root_certs: Path | None = None,
    parameters: ParameterMode = ParameterMode.LITERAL,
    seed: int = 0,
) -> LoadTestResult:
    """Run the load test with a live progress line on stderr, print the summary on stdout and
    write the report (JSON, and a PNG chart next to it) when asked."""
    config = LoadTestConfig(
        uri=uri,
        statements=tuple(load_workload(workload)),
        concurrency=concurrency,
        duration=duration,
        max_statements=statements,
        rate=rate,
        processes=processes,
        warmup=warmup,
        request_timeout=timeout,
        user=user,
        password=password,
        token=token,
        tls_root_certs=tls_root_certs,
        workload=str(workload),
        parameter_mode=parameters,
        seed=seed,
    )
    err = Console(stderr=True)
    if err.is_terminal:
        with Live(Text("loadtest: starting workers"), console=err, refresh_per_second=4, transient=True) as live:
            result = run_loadtest(config, lambda s: live.update(_progress_line(s, duration)))
    else:
        result = run_loadtest(config)
    print_summary(result, Console(file=sys.stdout, width=max(Console().width, 120)))
    if report is not None:
        chart = write_report(result, report)
        err.print(f"report: {report} and {chart}")
    return result
