"""Compare tierflight's answers with DuckDB over a flat copy of the same rows."""

from __future__ import annotations

import math
import re
from typing import Any

import pyarrow as pa

REL_TOL = 1e-9


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else v
    return v


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def rows_of(table: pa.Table) -> list[tuple[Any, ...]]:
    cols = [c.to_pylist() for c in table.columns]
    return [tuple(c[i] for c in cols) for i in range(table.num_rows)]


def is_ordered(sql: str) -> bool:
    """Whether the outermost query fixes the row order (then order is compared too)."""
    tail = sql.rsplit(")", 1)[-1] if sql.count("(") else sql
    return re.search(r"\border\s+by\b", tail, re.IGNORECASE) is not None


def assert_same(actual: pa.Table, expected: pa.Table, sql: str, ordered: bool | None = None) -> None:
    assert actual.num_columns == expected.num_columns, f"column count differs for: {sql}"
    a, e = rows_of(actual), rows_of(expected)
    assert len(a) == len(e), f"{len(a)} rows vs {len(e)} expected for: {sql}"
    if not (is_ordered(sql) if ordered is None else ordered):

        def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple((x is None, str(type(x)), _norm(x) if x is not None else 0) for x in row)

        a, e = sorted(a, key=key), sorted(e, key=key)
    for i, (ra, re_) in enumerate(zip(a, e, strict=True)):
        assert all(_close(x, y) for x, y in zip(ra, re_, strict=True)), f"row {i}: {ra} != {re_} for: {sql}"


def parse_workload(text: str) -> list[tuple[str, str]]:
    """``-- name: X`` followed by a statement ending in ``;`` (the contract's workload format)."""
    out = []
    for block in re.split(r"^--\s*name:\s*", text, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        sql = "\n".join(line for line in body.splitlines() if not line.strip().startswith("--")).strip()
        out.append((name.strip(), sql.rstrip(";").strip()))
    return out
