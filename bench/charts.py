"""Charts for docs/benchmarks.md, drawn from the stored results (PNG under docs/benchmarks/).

Each chart is drawn from a result's own tables, so ``--report-only`` draws them again from
what is stored; a benchmark without a chart here is only tables.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.registry import Result

Chart = tuple[str, str]  # (file name under the chart directory, caption)


def _table(result: Result, title_prefix: str) -> dict[str, Any] | None:
    return next(
        (t for t in result.get("tables") or [] if str(t.get("title", "")).startswith(title_prefix)), None
    )


def _column(table: dict[str, Any], name: str) -> list[Any]:
    i = table["columns"].index(name)
    return [row[i] for row in table["rows"]]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _bars(
    path: Path,
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    unit: str,
    log: bool = False,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.2), dpi=110)
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(unit)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _select1(result: Result, out: Path) -> list[Chart]:
    table = _table(result, "Per server and client path")
    if table is None:
        return []
    servers = list(dict.fromkeys(_column(table, "server")))
    paths = list(dict.fromkeys(_column(table, "client path")))
    p50 = {
        (s, p): _number(v)
        for s, p, v in zip(
            _column(table, "server"), _column(table, "client path"), _column(table, "p50 ms"), strict=True
        )
    }
    short = [p.split(" (")[0] for p in paths]
    _bars(
        out / "select1.png",
        "SELECT 1, p50 per client path",
        short,
        {s: [p50.get((s, p), float("nan")) for p in paths] for s in servers},
        "ms",
    )
    return [("select1.png", "SELECT 1 round trip, p50 (ms) per server and client path")]


def _statement_bars(
    name: str, caption: str, columns: dict[str, str]
) -> Callable[[Result, Path], list[Chart]]:
    """Per statement p50 of several systems, one chart per workload table."""

    def draw(result: Result, out: Path) -> list[Chart]:
        charts = []
        for i, table in enumerate(t for t in result.get("tables") or [] if "statement" in t["columns"]):
            if not all(c in table["columns"] for c in columns.values()):
                continue
            keep = [i for i, s in enumerate(_column(table, "statement")) if not str(s).startswith("**")]  # no totals
            labels = [str(_column(table, "statement")[i]) for i in keep]
            series = {label: [_number(_column(table, col)[i]) for i in keep] for label, col in columns.items()}
            workload = str(table.get("title", "")).split(" (")[0]
            file = f"{name}-{i}.png"
            _bars(out / file, f"{workload}: p50 per statement", labels, series, "ms (log scale)", log=True)
            charts.append((file, f"{workload}: {caption}"))
        return charts

    return draw


def _hot_load(result: Result, out: Path) -> list[Chart]:
    """The load tester's own chart of the run (latency percentiles over time, per statement)."""
    source = Path(__file__).resolve().parent / "results" / "work" / "hot_load" / "hot_load_report.png"
    if not source.exists():
        return []
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out / "hot_load.png")
    return [("hot_load.png", "hot-tier load test: latency percentiles over time and per statement")]


def _hot_load_varying(result: Result, out: Path) -> list[Chart]:
    """The load tester's chart of the headline run (one process, result cache off)."""
    source = (
        Path(__file__).resolve().parent / "results" / "work" / "hot_load_varying"
        / "one-process-result-cache-off_report.png"
    )  # fmt: skip
    if not source.exists():
        return []
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out / "hot_load_varying.png")
    return [("hot_load_varying.png", "varying statements, one process, result cache off: latency over time")]


def _tiers(result: Result, out: Path) -> list[Chart]:
    table = _table(result, "Scans")
    if table is None:
        return []
    weeks = [str(w).split(":")[0] for w in _column(table, "week")]
    series = {
        "tierflight (ADBC)": [_number(v) for v in _column(table, "tierflight p50 ms")],
        "DuckDB in-process": [_number(v) for v in _column(table, "DuckDB p50 ms")],
    }
    _bars(out / "tiers.png", "pruned week scans, p50", weeks, series, "ms")
    return [("tiers.png", "a week of the warm and of the cold tier, p50 (ms)")]


CHARTS: dict[str, Callable[[Result, Path], list[Chart]]] = {
    "select1": _select1,
    "tiers": _tiers,
    "router": _statement_bars(
        "router",
        "routing on (alone) vs routing off vs DuckDB",
        {"routing on": "on, alone", "routing off": "off", "DuckDB": "DuckDB raw"},
    ),
    "roapi_workloads": _statement_bars(
        "roapi_workloads",
        "tierflight vs ROAPI vs DuckDB",
        {"tierflight": "tierflight", "ROAPI": "ROAPI", "DuckDB": "DuckDB"},
    ),
    "hot_load": _hot_load,
    "hot_load_varying": _hot_load_varying,
}


def draw(name: str, result: Result, out: Path) -> list[Chart]:
    """The charts of one result, drawn into ``out``; none when drawing fails (tables stay)."""
    fn = CHARTS.get(name)
    if fn is None:
        return []
    try:
        return fn(result, out)
    except Exception:
        return []
