"""Turning per-statement records into the load test's figures.

Latency percentiles are over successful statements only (an error's latency says little
about the server's answers); errors are counted by gRPC status. In open-loop runs latency is
measured from the *scheduled* send time, so time spent waiting for a free client counts:
that is what a user arriving at that moment would have seen (no coordinated omission).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from tierflight.loadtest.worker import Record

PERCENTILES = (50, 95, 99)


def latency_summary(latencies_ms: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = (float(x) for x in np.percentile(values, PERCENTILES))
    return {
        "mean": round(float(values.mean()), 3),
        "p50": round(p50, 3),
        "p95": round(p95, 3),
        "p99": round(p99, 3),
        "max": round(float(values.max()), 3),
    }


def measured_seconds(records: Sequence[Record]) -> float:
    """From the start of the measurement to the last completion (at least the last start)."""
    if not records:
        return 0.0
    return max(max(r[1] + r[2] / 1000.0 for r in records), 1e-9)


def shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))} if total else {}


def timeline(records: Sequence[Record], elapsed: float) -> list[dict[str, Any]]:
    """Percentiles and throughput per time bucket (by send time): about 1 s buckets for long
    runs, about 20 buckets for short ones."""
    if not records or elapsed <= 0:
        return []
    width = 1.0 if elapsed >= 20 else max(elapsed / 20, 0.05)
    buckets: dict[int, list[float]] = defaultdict(list)
    errors: Counter[int] = Counter()
    for r in records:
        b = int(r[1] // width)
        if r[6] is None:
            buckets[b].append(r[2])
        else:
            errors[b] += 1
    out = []
    for b in range(int(max(r[1] for r in records) // width) + 1):
        lat = buckets.get(b, [])
        out.append(
            {
                "t": round((b + 1) * width, 3),
                "qps": round(len(lat) / width, 1),
                "errors": errors[b],
                **{k: v for k, v in latency_summary(lat).items() if k != "mean"},
            }
        )
    return out


def summarize(records: Sequence[Record], names: Sequence[str]) -> dict[str, Any]:
    """The report's figures: overall, per statement, errors by code, tier shares, timeline."""
    elapsed = measured_seconds(records)
    ok = [r for r in records if r[6] is None]
    failed = [r for r in records if r[6] is not None]
    per_rate = 1.0 / elapsed if elapsed > 0 else 0.0

    error_counts: Counter[str] = Counter(r[6] for r in failed if r[6] is not None)
    error_examples: dict[str, str] = {}
    for r in failed:
        if r[6] is not None and r[6] not in error_examples:
            error_examples[r[6]] = f"{names[r[0]]}: {r[7]}"
    tiers: Counter[str] = Counter(r[5] for r in ok)

    statements = []
    for i, name in enumerate(names):
        mine_ok = [r for r in ok if r[0] == i]
        mine_failed = [r for r in failed if r[0] == i]
        statements.append(
            {
                "name": name,
                "ok": len(mine_ok),
                "errors": len(mine_failed),
                "qps": round(len(mine_ok) * per_rate, 2),
                **latency_summary([r[2] for r in mine_ok]),
                "rows": sum(r[3] for r in mine_ok),
                "bytes": sum(r[4] for r in mine_ok),
                "tiers": shares(Counter(r[5] for r in mine_ok)),
                "errors_by_code": dict(Counter(r[6] for r in mine_failed if r[6] is not None)),
            }
        )
    return {
        "summary": {
            "elapsed_s": round(elapsed, 3),
            "statements": len(records),
            "ok": len(ok),
            "errors": len(failed),
            "qps": round(len(ok) * per_rate, 2),
            "error_rate": round(len(failed) / len(records), 6) if records else 0.0,
            **latency_summary([r[2] for r in ok]),
            "rows": sum(r[3] for r in ok),
            "bytes": sum(r[4] for r in ok),
        },
        "statements": statements,
        "errors": {code: {"count": n, "example": error_examples[code]} for code, n in error_counts.most_common()},
        "tiers": shares(tiers),
        "timeline": timeline(records, elapsed),
    }
