"""Compare tierflight's answers with DuckDB over a flat copy of the same rows."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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


def _columns_match(actual: pa.Table, expected: pa.Table, ordered: bool) -> bool:
    """Whether the rows pair up as they are (ordered) or once both tables are sorted by Arrow
    on every column, each pair within tolerance: column by column, a list comparison in C
    where the values are equal outright. Only a shortcut for large answers (a minute grouping
    is 70,000 rows): False sends the caller to the row-by-row comparison, which then decides
    (values sorted apart by a last-bit difference, types Arrow cannot sort)."""
    try:
        if not ordered and actual.num_rows > 1:
            names = [f"c{i}" for i in range(actual.num_columns)]
            keys = [(n, "ascending") for n in names]
            actual, expected = (
                t.take(pc.sort_indices(t.rename_columns(names), sort_keys=keys))
                for t in (actual, expected)
            )
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    for col_a, col_e in zip(actual.columns, expected.columns, strict=True):
        va, ve = col_a.to_pylist(), col_e.to_pylist()
        if va != ve and not all(_close(x, y) for x, y in zip(va, ve, strict=True)):
            return False
    return True


def assert_same(actual: pa.Table, expected: pa.Table, sql: str, ordered: bool | None = None) -> None:
    assert actual.num_columns == expected.num_columns, f"column count differs for: {sql}"
    assert actual.num_rows == expected.num_rows, f"{actual.num_rows} rows vs {expected.num_rows} expected for: {sql}"
    in_order = is_ordered(sql) if ordered is None else ordered
    if _columns_match(actual, expected, in_order):
        return
    a, e = rows_of(actual), rows_of(expected)
    if not in_order:
        a, e = sorted(a, key=_key), sorted(e, key=_key)
        _assert_rows(a, e, sql)
        return
    # Ordered: row by row, except that rows tied on a floating-point sort key may come out
    # in either order (a sum merged from partial states differs from a direct one in the
    # last bits), so a short run of rows may match as a set.
    i = 0
    while i < len(a):
        if _same_row(a[i], e[i]):
            i += 1
            continue
        for width in range(2, TIE_WINDOW + 1):
            window_a, window_e = sorted(a[i : i + width], key=_key), sorted(e[i : i + width], key=_key)
            if (
                len(window_a) == width
                and _tied(window_e)
                and all(_same_row(x, y) for x, y in zip(window_a, window_e, strict=True))
            ):
                i += width
                break
        else:
            raise AssertionError(f"row {i}: {a[i]} != {e[i]} for: {sql}")


TIE_WINDOW = 4


def _tied(rows: list[tuple[Any, ...]]) -> bool:
    """Whether some floating-point column has (nearly) the same value in every row."""
    for values in zip(*rows, strict=True):
        if all(isinstance(v, float) for v in values) and all(_close(v, values[0]) for v in values):
            return True
    return False


def _key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((x is None, str(type(x)), _norm(x) if x is not None else 0) for x in row)


def _same_row(ra: tuple[Any, ...], re_: tuple[Any, ...]) -> bool:
    return all(_close(x, y) for x, y in zip(ra, re_, strict=True))


def _assert_rows(a: list[tuple[Any, ...]], e: list[tuple[Any, ...]], sql: str) -> None:
    for i, (ra, re_) in enumerate(zip(a, e, strict=True)):
        assert _same_row(ra, re_), f"row {i}: {ra} != {re_} for: {sql}"


def expected_cases(path: Path) -> list[tuple[str, str, str]]:
    """A fixture file of statements, each after ``-- name: X`` and ``-- expect: ...`` lines:
    (name, SQL, expectation)."""
    text = path.read_text()
    expects = dict(re.findall(r"--\s*name:\s*(\S+)\s*\n--\s*expect:\s*(.+)", text))
    return [(name, sql, expects[name].strip()) for name, sql in parse_workload(text)]


def parse_workload(text: str) -> list[tuple[str, str]]:
    """``-- name: X`` followed by a statement ending in ``;`` (the contract's workload format)."""
    out = []
    for block in re.split(r"^--\s*name:\s*", text, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        sql = "\n".join(line for line in body.splitlines() if not line.strip().startswith("--")).strip()
        out.append((name.strip(), sql.rstrip(";").strip()))
    return out
