"""Validation of an ingest batch before anything is written: all of it, or none of it."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from tierflight.config import TableConfig
from tierflight.decimals import describe, first_violation
from tierflight.errors import InvalidArgument


def _first_bad_row(column: pa.ChunkedArray, target: pa.DataType) -> tuple[int, object]:
    """The first value that does not cast safely (only on the error path, so a loop is fine)."""
    for i, value in enumerate(column.to_pylist()):
        if value is None:
            continue
        try:
            pa.array([value], column.type).cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return i, value
    return -1, None


def validate_batch(
    data: pa.Table,
    table: TableConfig,
    schema: pa.Schema,
    now: dt.datetime,
    max_past: dt.timedelta,
    max_future: dt.timedelta,
) -> pa.Table:
    """Return ``data`` cast to the table's schema, or raise naming the column (and row)."""
    names = data.column_names
    expected = schema.names
    missing = [n for n in expected if n not in names]
    if missing:
        raise InvalidArgument(f"ingest into {table.name}: missing column(s) {', '.join(missing)}; nothing was written")
    extra = [n for n in names if n not in expected]
    if extra:
        raise InvalidArgument(f"ingest into {table.name}: unknown column(s) {', '.join(extra)}; nothing was written")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"ingest into {table.name}: duplicate column names; nothing was written")
    columns = []
    for field in schema:
        col = data[field.name]
        if col.type != field.type:
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                row, value = _first_bad_row(data[field.name], field.type)
                where = f" at row {row} (value {value!r})" if row >= 0 else ""
                raise InvalidArgument(
                    f"ingest into {table.name}: column {field.name} is {data[field.name].type}, "
                    f"which does not convert safely to {field.type}{where}; nothing was written"
                ) from None
        if not field.nullable and col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            raise InvalidArgument(
                f"ingest into {table.name}: column {field.name} is NOT NULL but row {row} is NULL; nothing was written"
            )
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=schema)
    broken = first_violation(out, table.decimals)
    if broken is not None:
        column, row, value = broken
        raise InvalidArgument(
            f"ingest into {table.name}: row {row}: {describe(table.name, column, table.decimals[column], value)}; "
            "nothing was written"
        )
    ts = out[table.time_column]
    if out.num_rows and ts.null_count < out.num_rows:
        lo, hi = now - max_past, now + max_future
        bad = pc.or_(pc.less(ts, pa.scalar(lo, ts.type)), pc.greater(ts, pa.scalar(hi, ts.type)))
        if pc.any(bad).as_py():
            row = pc.index(bad, True).as_py()
            raise InvalidArgument(
                f"ingest into {table.name}: {table.time_column} at row {row} ({ts[row].as_py()}) is outside the "
                f"accepted range [{lo.isoformat(sep=' ')}, {hi.isoformat(sep=' ')}] "
                "(ingest.max_past / ingest.max_future); nothing was written"
            )
    return out
