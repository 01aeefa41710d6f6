"""Writing a query result for ``tierflight query``: aligned text, CSV, JSON lines or Arrow IPC.

The text table is a plain formatter rather than pandas or rich: the CLI must not need pandas,
and plain text stays readable when piped into ``less`` or a file.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Iterable
from typing import IO, Any

import pyarrow as pa

FORMATS = ("table", "csv", "json", "arrow")
NULL = "NULL"


def _text(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return f"{value:.1f}"
    return str(value)


def _numeric(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype))


def format_table(table: pa.Table, max_rows: int | None = None) -> str:
    """``table`` as aligned text: a header, a rule, one line per row (numbers right-aligned)."""
    if table.num_columns == 0:
        return "(no columns)\n"
    shown = table if max_rows is None else table.slice(0, max_rows)
    names = table.schema.names
    # Column by column: rows as dicts would collapse duplicate names (SELECT 1 AS a, 2 AS a).
    columns = [[_text(v) for v in col.to_pylist()] for col in shown.columns]
    cells = [list(r) for r in zip(*columns, strict=True)]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    right = [_numeric(f.type) for f in table.schema]

    def line(values: Iterable[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [line(names), line("-" * w for w in widths)]
    lines.extend(line(r) for r in cells)
    if table.num_rows == 0:
        lines.append("(no rows)")
    return "\n".join(lines) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def write_result(table: pa.Table, fmt: str, out: IO[bytes], max_rows: int | None = None) -> None:
    """Write ``table`` to ``out`` in ``fmt`` (one of :data:`FORMATS`); ``max_rows`` limits only
    the text table (the machine formats always carry every row)."""
    if fmt == "table":
        out.write(format_table(table, max_rows).encode())
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)
    elif fmt == "json":
        # JSON lines: one object per row, so results stream into jq / pandas.read_json(lines=True).
        for batch in table.to_batches():
            for row in batch.to_pylist():
                out.write(json.dumps(_json_value(row), ensure_ascii=False).encode() + b"\n")
    elif fmt == "arrow":
        with pa.ipc.new_stream(out, table.schema) as writer:
            writer.write_table(table)
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def describe_route(route: dict[str, Any] | None) -> str:
    """One line for stderr: ``route: hot (rollup day_type)``."""
    if not route:
        return "route: (not reported by the server)"
    text = f"route: {route.get('tier', '?')}"
    if route.get("rollup"):
        text += f" (rollup {route['rollup']})"
    return text
