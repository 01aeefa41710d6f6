"""docs/benchmarks.md: rewriting it from the results at hand keeps the other sections."""

from __future__ import annotations

from typing import Any

from bench.report import render


def _result(value: float, date: str) -> dict[str, Any]:
    return {
        "title": "T",
        "summary": [{"metric": "speed", "value": value, "unit": "x", "target": "≥ 2x", "ok": value >= 2}],
        "meta": {"date": date, "git": {"commit": "abc"}},
    }


def test_a_section_without_a_result_is_kept_and_one_with_a_result_replaced() -> None:
    first = render({"a": _result(1.0, "d1"), "b": _result(3.0, "d1")}, ["a", "b"])
    second = render({"b": _result(1.5, "d2")}, ["a", "b"], previous=first)
    assert second.count('<a id="a"></a>') == 1 and second.count('<a id="b"></a>') == 1
    glance = second.split("## Targets at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in glance.splitlines() if line.startswith("| [")]
    assert rows[0].startswith("| [a](#a) | speed | 1 x |") and "d1" in rows[0]
    assert rows[1].startswith("| [b](#b) | speed | 1.5 x |") and "d2" in rows[1] and "**missed**" in rows[1]
    assert second.index('<a id="a"></a>') < second.index('<a id="b"></a>')
    assert render({}, ["a", "b"], previous=second).split("\n", 12)[12:] == second.split("\n", 12)[12:]
