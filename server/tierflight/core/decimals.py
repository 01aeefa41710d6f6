"""DOUBLE columns declared to hold short decimals (``[tables.<t>] decimals``).

Prices are decimals stored as DOUBLE: 1.2345 is kept as the nearest double. Declaring how
many digits such a column has after the point lets rollups keep its sums exactly (as
DECIMAL arithmetic does) and compactly; in exchange every value must have at most those
digits (and fit a DECIMAL(18, digits)), which ingest checks before anything is written and
a rollup build checks of the stored rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# DECIMAL(18, d): the widest decimal DuckDB sums in 64-bit steps.
DECIMAL_WIDTH = 18


def magnitude_limit(digits: int) -> float:
    return float(10 ** (DECIMAL_WIDTH - digits))


def bad_value_sql(column_sql: str, digits: int) -> str:
    """True for a value that is not a decimal with ``digits`` places within DECIMAL(18, digits)
    (NaN and infinities included); NULL for NULL."""
    return f"NOT (round({column_sql}, {digits}) = {column_sql} AND abs({column_sql}) < {magnitude_limit(digits)!r})"


def first_violation(data: pa.Table, decimals: Mapping[str, int]) -> tuple[str, int, Any] | None:
    """The first (column, row, value) of ``data`` that breaks its declared digits, if any."""
    for column, digits in decimals.items():
        if column not in data.column_names:
            continue
        values = data[column]
        if values.null_count == len(values):
            continue
        ok = pc.and_(
            pc.equal(pc.round(values, ndigits=digits), values),
            pc.less(pc.abs(values), magnitude_limit(digits)),
        )
        bad = pc.invert(pc.fill_null(ok, True))
        if pc.any(bad).as_py():
            row = pc.index(bad, True).as_py()
            return column, row, values[row].as_py()
    return None


def describe(table: str, column: str, digits: int, value: Any) -> str:
    return (
        f"{column} = {value!r} is not a decimal with at most {digits} digits after the point "
        f"(below {magnitude_limit(digits):.0e}), as [tables.{table}] decimals.{column} = {digits} declares"
    )
