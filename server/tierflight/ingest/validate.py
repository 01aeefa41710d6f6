"""Validation of an ingest batch before anything is written: all of it, or none of it.

A column must arrive as the table's type or as a type that widens to it without loss; any
other type is refused (naming the column and both types) rather than cast, since a cast
guesses: strings parsed as timestamps, booleans as 0/1 prices, numbers as text. Lossless:

* integers: a signed integer of at most as many bits, an unsigned one of fewer bits;
* DOUBLE: float16/float32, and integers of at most 32 bits (int64 is refused: past 2^53 a
  double rounds it); FLOAT: float16, and integers of at most 16 bits;
* TIMESTAMP (microseconds, UTC): timestamps in s, ms, us, and ns when every value is a whole
  microsecond (checked per value); with a time zone, the instant is kept (as UTC);
* DATE: date64 when every value is a whole day (checked per value);
* VARCHAR: string, large_string, string_view;
* a dictionary of an accepted type, and a column of only nulls (type null), for any column.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from tierflight.core.config import Evolve, TableConfig
from tierflight.core.decimals import describe, first_violation
from tierflight.core.errors import InvalidArgument


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


def _integer_into(target_bits: int, source: pa.DataType) -> bool:
    """Whether every value of ``source`` fits a signed integer of ``target_bits``: a signed
    integer of at most as many bits, or an unsigned one of fewer."""
    if not pa.types.is_integer(source):
        return False
    bits: int = source.bit_width
    return bits <= target_bits if pa.types.is_signed_integer(source) else bits < target_bits


def _integer_exact_in_float(mantissa_bits: int, source: pa.DataType) -> bool:
    """Whether every value of ``source`` is exact in a float with a ``mantissa_bits`` mantissa
    (53 for double, 24 for float): integers of at most 32 resp. 16 bits, either sign."""
    return bool(pa.types.is_integer(source)) and source.bit_width <= (32 if mantissa_bits >= 53 else 16)


def widens_losslessly(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether a column of type ``source`` may be stored as ``target`` (see the module doc)."""
    if source == target or pa.types.is_null(source):
        return True
    if pa.types.is_dictionary(source):
        return widens_losslessly(source.value_type, target)
    if pa.types.is_integer(target):
        return _integer_into(target.bit_width, source)
    if pa.types.is_float64(target):
        return bool(pa.types.is_float16(source) or pa.types.is_float32(source)) or _integer_exact_in_float(53, source)
    if pa.types.is_float32(target):
        return bool(pa.types.is_float16(source)) or _integer_exact_in_float(24, source)
    if pa.types.is_timestamp(target):
        return bool(pa.types.is_timestamp(source))
    if pa.types.is_date32(target):
        return bool(pa.types.is_date64(source))
    if pa.types.is_string(target):
        return bool(pa.types.is_large_string(source) or pa.types.is_string_view(source))
    return False


_ACCEPTED = {
    "int16": "int8, int16, uint8",
    "int32": "int8, int16, int32, uint8, uint16",
    "int64": "int8, int16, int32, int64, uint8, uint16, uint32",
    "double": "double, float, halffloat, and integers (signed or unsigned) of at most 32 bits",
    "float": "float, halffloat, and integers (signed or unsigned) of at most 16 bits",
    "timestamp[us]": "timestamps in s, ms, us (ns: whole microseconds), with or without a time zone",
    "date32[day]": "date32, date64 (whole days)",
    "string": "string, large_string, string_view",
}


def _refuse_type(table: TableConfig, field: pa.Field, source: pa.DataType) -> InvalidArgument:
    declared = next((c.type for c in table.columns if c.name == field.name), "")
    accepted = _ACCEPTED.get(str(field.type), str(field.type))
    return InvalidArgument(
        f"ingest into {table.name}: column {field.name} is {source}, but the table's column is "
        f"{field.type}{f' ({declared})' if declared else ''}; accepted: {accepted} "
        "(or a dictionary of those); nothing was written"
    )


def conform(data: pa.Table, table: TableConfig, schema: pa.Schema) -> pa.Table:
    """``data`` with exactly the table's columns, each of its type (or a lossless widening,
    cast) and NOT NULL where declared; else raise naming the column (and row)."""
    names = data.column_names
    expected = schema.names
    # A table that evolves takes batches of older producers: a nullable column they lack is NULL.
    lenient = table.evolve is Evolve.ADD_COLUMNS
    missing = [f.name for f in schema if f.name not in names and not (lenient and f.nullable)]
    if missing:
        raise InvalidArgument(f"ingest into {table.name}: missing column(s) {', '.join(missing)}; nothing was written")
    extra = [n for n in names if n not in expected]
    if extra:
        hint = "" if lenient else f' (tables.{table.name}.evolve = "{table.evolve.value}": "add_columns" adds them)'
        raise InvalidArgument(f"ingest into {table.name}: unknown column(s) {', '.join(extra)}{hint}; nothing was written")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"ingest into {table.name}: duplicate column names; nothing was written")
    columns = []
    for field in schema:
        if field.name not in names:
            columns.append(pa.chunked_array([pa.nulls(data.num_rows, field.type)]))
            continue
        col = data[field.name]
        if not widens_losslessly(col.type, field.type):
            raise _refuse_type(table, field, col.type)
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
    return pa.Table.from_arrays(columns, schema=schema)


def validate_batch(
    data: pa.Table,
    table: TableConfig,
    schema: pa.Schema,
    now: dt.datetime,
    max_past: dt.timedelta,
    max_future: dt.timedelta,
) -> pa.Table:
    """Return ``data`` cast to the table's schema, or raise naming the column (and row)."""
    out = conform(data, table, schema)
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
