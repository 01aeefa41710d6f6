"""The load test's outputs: the summary printed at the end, the JSON report and its chart.

The chart is drawn with matplotlib's object API on an Agg canvas (no pyplot), so the load
tester never touches the process-wide backend of whoever imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tierflight.loadtest.runner import LoadTestResult


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def print_summary(result: LoadTestResult, console: Console) -> None:
    cfg = result.config
    s = result.figures["summary"]
    mode = cfg["mode"] + (f" at {cfg['rate_qps']:g}/s" if cfg["rate_qps"] else "")
    console.print(
        f"[bold]tierflight loadtest[/bold] {cfg['uri']}: {cfg['concurrency']} clients in {cfg['processes']} "
        f"processes, {mode}, {s['elapsed_s']:.1f} s measured"
    )
    console.print(
        f"  {s['ok']:,} statements ok, {s['errors']:,} errors; [bold]{s['qps']:,.1f} QPS[/bold]; "
        f"latency ms p50 {_ms(s['p50'])}  p95 {_ms(s['p95'])}  [bold]p99 {_ms(s['p99'])}[/bold]  max {_ms(s['max'])}; "
        f"{s['rows']:,} rows, {_bytes(s['bytes'])}"
    )
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for col, justify in (
        ("statement", "left"),
        ("ok", "right"),
        ("errors", "right"),
        ("QPS", "right"),
        ("p50 ms", "right"),
        ("p95 ms", "right"),
        ("p99 ms", "right"),
        ("max ms", "right"),
        ("rows", "right"),
        ("tier", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for st in result.figures["statements"]:
        tiers = ", ".join(f"{t} {share:.0%}" if share < 1 else t for t, share in st["tiers"].items())
        table.add_row(
            st["name"],
            f"{st['ok']:,}",
            f"{st['errors']:,}",
            f"{st['qps']:,.1f}",
            _ms(st["p50"]),
            _ms(st["p95"]),
            _ms(st["p99"]),
            _ms(st["max"]),
            f"{st['rows']:,}",
            tiers or "-",
        )
    console.print(table)
    gen = result.figures.get("load_generator") or {}
    if gen.get("cpu_ms_per_statement") is not None:
        console.print(
            f"  load generator CPU: {gen['cpu_s']:.1f} s, {gen['cpu_ms_per_statement']:.2f} ms per statement"
        )
    vary = result.figures.get("variation") or {}
    if vary.get("varying_statements") and vary.get("counted"):
        console.print(
            f"  varying statements: {vary['varying_statements']} ({vary['parameter_mode']}); "
            f"{vary['distinct_value_sets']:,} distinct value sets in {vary['counted']:,} statements, "
            f"repeat rate {vary['repeat_rate']:.2%}"
        )
    tiers = result.figures["tiers"]
    if tiers:
        console.print("  answered by tier: " + ", ".join(f"{t} {share:.1%}" for t, share in tiers.items()))
    for code, err in result.figures["errors"].items():
        console.print(f"  [red]{code}[/red] x{err['count']:,}, e.g. {err['example']}")
    for note in result.notes:
        console.print(f"  note: {note}")


def write_report(result: LoadTestResult, path: Path) -> Path:
    """Write the JSON report to ``path`` and the chart next to it; returns the chart's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    chart = path.with_suffix(".png")
    write_chart(result, chart)
    return chart


def write_chart(result: LoadTestResult, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figures: dict[str, Any] = result.figures
    cfg = result.config
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    over_time, per_statement = fig.subplots(1, 2, width_ratios=[3, 2])

    points = [p for p in figures["timeline"] if p["p50"] is not None]
    t = [p["t"] for p in points]
    for key, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        over_time.plot(t, [p[key] for p in points], style, label=key, linewidth=1.5)
    over_time.set_xlabel("seconds into the measurement")
    over_time.set_ylabel("latency (ms)")
    over_time.set_ylim(bottom=0)
    over_time.grid(alpha=0.3)
    qps_axis = over_time.twinx()
    qps_axis.plot(t, [p["qps"] for p in points], color="0.6", linewidth=1, label="QPS")
    qps_axis.set_ylabel("statements / s", color="0.4")
    qps_axis.set_ylim(bottom=0)
    lines, labels = over_time.get_legend_handles_labels()
    more, more_labels = qps_axis.get_legend_handles_labels()
    over_time.legend(lines + more, labels + more_labels, loc="upper left", fontsize="small")
    s = figures["summary"]
    over_time.set_title(
        f"{cfg['concurrency']} clients, {cfg['mode']}: {s['qps']:,.0f} QPS, p99 {_ms(s['p99'])} ms, {s['errors']} errors",
        fontsize="medium",
    )

    stats = [st for st in figures["statements"] if st["p50"] is not None]
    names = [st["name"] for st in stats]
    height = 0.27
    for offset, key in ((-height, "p50"), (0.0, "p95"), (height, "p99")):
        per_statement.barh([i + offset for i in range(len(stats))], [st[key] for st in stats], height, label=key)
    per_statement.set_yticks(range(len(stats)), names, fontsize="small")
    per_statement.invert_yaxis()
    per_statement.set_xlabel("latency (ms)")
    per_statement.grid(axis="x", alpha=0.3)
    per_statement.legend(fontsize="small", loc="best")
    per_statement.set_title("per statement", fontsize="medium")
    fig.savefig(path, dpi=110)
